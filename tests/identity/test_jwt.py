"""`validate = "jwt"`: every check of production.md section 1, one test per way to be wrong.

The JWKS endpoint is an httpx.MockTransport (these are unit tests) that counts its requests,
so each test also states how many key fetches the case may cost. Sync and async both.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from jwt_issuer import (
    AUDIENCE,
    ISSUER,
    JWKS,
    POLICY,
    Issuer,
    b64,
    engine_for,
    public_pem,
    register,
    sign,
)
from provider_server import bearer, observe_decision

import policyauth
from policyauth import Decision, Invalid, Reason
from policyauth.identity.keys import max_age


def authorize(engine: policyauth.Engine, token: str, mode: str) -> Decision:
    if mode == "sync":
        decision = engine.authorize_sync("GET", "/reports", bearer(token))
    else:
        decision = asyncio.run(engine.authorize("GET", "/reports", bearer(token)))
    return observe_decision(decision)


def refused(decision: Decision, message: str) -> None:
    assert (decision.status, decision.reason) == (401, Reason.INVALID_TOKEN), decision.message
    assert decision.message == message
    assert decision.rule is None
    assert decision.principal is None


MODES = ["sync", "async"]


@pytest.fixture
def issuer() -> Issuer:
    made = Issuer()
    made.add("k1", "RS256")
    return made


@pytest.mark.parametrize("mode", MODES)
def test_a_valid_token_is_accepted_with_its_claims_and_keys_fetched_once(issuer, mode):
    engine = engine_for(issuer, use_async=mode == "async")
    for _ in range(3):
        decision = authorize(engine, issuer.token(), mode)
        assert (decision.status, decision.reason) == (200, Reason.ALLOWED), decision.message
        assert decision.principal is not None
        assert decision.principal.username == "ada"
        assert decision.principal.groups == ("reporting",)
        assert decision.rule is not None
        assert decision.rule.line == 14
    assert issuer.jwks_requests == 1


@pytest.mark.parametrize("alg", ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"])
def test_every_default_algorithm_with_its_key(alg):
    issuer = Issuer()
    issuer.add("k1", alg)
    decision = authorize(engine_for(issuer), issuer.token(), "sync")
    assert decision.status == 200, decision.message


@pytest.mark.parametrize("mode", MODES)
def test_hs256_signed_with_the_public_key_as_secret_is_refused(issuer, mode):
    key, _ = issuer.keys["k1"]
    header = b64(json.dumps({"alg": "HS256", "kid": "k1", "typ": "at+jwt"}).encode())
    payload = b64(json.dumps(issuer.claims()).encode())
    signing_input = f"{header}.{payload}".encode()
    mac = hmac.new(public_pem(key), signing_input, hashlib.sha256).digest()
    token = register(f"{header}.{payload}.{b64(mac)}")
    decision = authorize(engine_for(issuer, use_async=mode == "async"), token, mode)
    refused(decision, "the token's algorithm is not accepted")
    assert issuer.all_requests == 0


@pytest.mark.parametrize("mode", MODES)
def test_alg_none_is_refused(issuer, mode):
    header = b64(json.dumps({"alg": "none", "kid": "k1", "typ": "at+jwt"}).encode())
    payload = b64(json.dumps(issuer.claims()).encode())
    token = register(f"{header}.{payload}.")
    refused(
        authorize(engine_for(issuer), token, mode), "the token is not a signed JWT in compact form"
    )
    header = b64(json.dumps({"alg": "none", "kid": "k1", "typ": "at+jwt"}).encode())
    token = register(f"{header}.{payload}.AAAAAAAAAAAAAAAAAAAAAAAA")
    refused(authorize(engine_for(issuer), token, mode), "the token's algorithm is not accepted")
    assert issuer.all_requests == 0


@pytest.mark.parametrize("mode", MODES)
def test_a_tampered_payload_is_refused(issuer, mode):
    header, _, signature = issuer.token().split(".")
    forged = b64(json.dumps(issuer.claims(realm_access={"roles": ["admin"]})).encode())
    token = register(f"{header}.{forged}.{signature}")
    refused(authorize(engine_for(issuer), token, mode), "the token's signature does not verify")


@pytest.mark.parametrize("mode", MODES)
def test_a_foreign_key_with_a_known_kid_is_refused(issuer, mode):
    mallory = Issuer()
    mallory.add("k1", "RS256")  # same kid, another key
    token = mallory.token()
    refused(authorize(engine_for(issuer), token, mode), "the token's signature does not verify")


@pytest.mark.parametrize("mode", MODES)
def test_jku_x5u_jwk_and_x5c_are_ignored_and_never_fetched(issuer, mode):
    mallory = Issuer(jwks_url="https://evil.example/jwks.json")
    evil = mallory.add("k9", "RS256")
    from jwt_issuer import public_jwk

    headers = {
        "jku": "https://evil.example/jwks.json",
        "x5u": "https://evil.example/cert.pem",
        "jwk": public_jwk(evil, "k9"),
        "x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"],
    }
    token = mallory.token("k9", headers=headers)
    engine = engine_for(issuer)
    refused(authorize(engine, token, mode), "the token names a key the issuer does not publish")
    assert set(issuer.requests) == {JWKS}  # nothing asked of evil.example
    # The same headers on an honest token change nothing either.
    honest = issuer.token(headers=headers)
    assert authorize(engine, honest, mode).status == 200


@pytest.mark.parametrize("mode", MODES)
def test_a_crit_header_is_refused(issuer, mode):
    token = issuer.token(headers={"crit": ["exp"], "exp": 1})
    refused(
        authorize(engine_for(issuer), token, mode),
        "the token names critical header extensions (`crit`), which are refused",
    )


@pytest.mark.parametrize("mode", MODES)
def test_an_algorithm_that_does_not_fit_the_key_is_refused(mode):
    issuer = Issuer()
    issuer.add("k1", "ES256")
    rsa_key = issuer.add("r1", "RS256", publish=False)
    # An RS256 token whose kid names the EC key: the algorithm does not fit that key.
    token = sign(rsa_key, "RS256", issuer.claims(), {"kid": "k1", "typ": "at+jwt"})
    refused(
        authorize(engine_for(issuer), token, mode),
        "no key of the issuer fits the token's algorithm",
    )


@pytest.mark.parametrize("mode", MODES)
def test_an_algorithm_outside_the_allowlist_is_refused(mode):
    issuer = Issuer()
    issuer.add("k1", "PS256")
    policy = POLICY.replace(
        'token_type = "at+jwt"', 'token_type = "at+jwt"\n  algorithms = ["RS256"]'
    )
    refused(
        authorize(engine_for(issuer, policy=policy), issuer.token(), mode),
        "the token's algorithm is not accepted",
    )
    assert issuer.all_requests == 0


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"exp": int(time.time()) - 120}, "the token has expired"),
        ({"exp": None}, "the token has no `exp` claim"),
        (
            {"nbf": int(time.time()) + 600},
            "the token is not valid yet (`nbf` or `iat` in the future)",
        ),
        (
            {"iat": int(time.time()) + 600},
            "the token is not valid yet (`nbf` or `iat` in the future)",
        ),
        ({"aud": "another-api"}, "the token was issued for another audience"),
        ({"aud": None}, "the token has no `aud` claim"),
        ({"iss": ISSUER + "/"}, "the token is from another issuer"),
        ({"iss": None}, "the token is from another issuer"),
    ],
    ids=["expired", "no-exp", "nbf-future", "iat-future", "audience", "no-aud", "issuer", "no-iss"],
)
@pytest.mark.parametrize("mode", MODES)
def test_claims_that_refuse_a_token(issuer, claims, message, mode):
    refused(authorize(engine_for(issuer), issuer.token(**claims), mode), message)


@pytest.mark.parametrize("mode", MODES)
def test_clock_skew_applies_to_exp_nbf_and_iat(issuer, mode):
    now = int(time.time())
    within = [{"exp": now - 10}, {"nbf": now + 10}, {"iat": now + 10}]
    for claims in within:
        assert authorize(engine_for(issuer), issuer.token(**claims), mode).status == 200
    policy = POLICY + "\nsettings {\n  clock_skew = 0s\n}\n"
    for claims in within:
        assert (
            authorize(engine_for(issuer, policy=policy), issuer.token(**claims), mode).status == 401
        )


def test_audience_in_a_list_and_issuer_from_a_list():
    issuer = Issuer(issuer="https://sts.windows.net/t/")
    issuer.add("k1")
    policy = POLICY.replace(f'"{ISSUER}"', f'["{ISSUER}", "https://sts.windows.net/t/"]')
    policy = policy.replace(f'audience = "{AUDIENCE}"', f'audience = ["x", "{AUDIENCE}"]')
    token = issuer.token(aud=["other", AUDIENCE])
    assert authorize(engine_for(issuer, policy=policy), token, "sync").status == 200


@pytest.mark.parametrize("mode", MODES)
def test_the_wrong_typ_is_refused(issuer, mode):
    token = issuer.token(headers={"typ": "JWT"})
    refused(
        authorize(engine_for(issuer), token, mode), "the token is not of the required type (`typ`)"
    )
    token = issuer.token(headers={"typ": "application/AT+JWT"})
    assert authorize(engine_for(issuer), token, mode).status == 200


@pytest.mark.parametrize("mode", MODES)
def test_an_oversized_token_is_refused_before_parsing(issuer, mode):
    engine = engine_for(issuer)
    token = register(issuer.token(padding="x" * 9_000))
    # The request layer caps credentials first (400); the verifier has its own cap for callers
    # that reach it directly, checked before any parsing.
    decision = authorize(engine, token, mode)
    assert (decision.status, decision.reason) == (400, Reason.INVALID_REQUEST)
    remote = engine._state.remote
    assert remote is not None
    provider = engine.policy.providers["corp"]
    result = remote._jwt.verify_sync(provider, token)
    assert result == Invalid("the token is larger than 8 KiB")
    assert issuer.all_requests == 0


@pytest.mark.parametrize("mode", MODES)
def test_a_token_with_many_roles_past_4_kib_is_accepted(issuer, mode):
    """Entra ID and Keycloak tokens carrying hundreds of groups or roles pass 4 KiB."""
    roles = ["reporting", *(f"team-{n:04d}-readers" for n in range(250))]
    token = issuer.token(realm_access={"roles": roles})
    assert 4096 < len(token) <= 8192
    decision = authorize(engine_for(issuer), token, mode)
    assert (decision.status, decision.rule is not None) == (200, True), decision.message
    assert decision.principal is not None
    assert decision.principal.username == "ada"


@pytest.mark.parametrize("mode", MODES)
def test_a_token_from_another_issuer_causes_no_fetch(issuer, mode):
    other = Issuer(issuer="https://other.example")
    other.add("k1")
    refused(authorize(engine_for(issuer), other.token(), mode), "the token is from another issuer")
    assert issuer.all_requests == 0


@pytest.mark.parametrize("mode", MODES)
def test_garbage_is_refused(issuer, mode):
    for token in ["a.b.c", "not-a-jwt", "e30.e30.e30", b64(b"[1]") + ".e30.AAAA"]:
        register(token)
        decision = authorize(engine_for(issuer), token, mode)
        assert (decision.status, decision.reason) == (401, Reason.INVALID_TOKEN)
    assert issuer.all_requests == 0


def test_a_flood_of_unknown_kids_costs_one_extra_fetch(issuer):
    engine = engine_for(issuer)
    assert authorize(engine, issuer.token(), "sync").status == 200
    assert issuer.jwks_requests == 1
    mallory = issuer.add("mallory", publish=False)
    for i in range(200):
        token = sign(mallory, "RS256", issuer.claims(), {"kid": f"made-up-{i}", "typ": "at+jwt"})
        decision = authorize(engine, token, "sync" if i % 2 else "async")
        refused(decision, "the token names a key the issuer does not publish")
    assert issuer.jwks_requests == 2


def test_an_unknown_kid_refetches_at_once_then_once_a_minute(issuer):
    clock = [1000.0]
    engine = engine_for(issuer)
    engine._state.remote._jwt.keys._clock = lambda: clock[0]  # type: ignore[union-attr]
    assert authorize(engine, issuer.token(), "sync").status == 200
    issuer.add("k2")  # rotated in: the first token naming it fetches at once
    assert authorize(engine, issuer.token("k2"), "sync").status == 200
    assert issuer.jwks_requests == 2
    issuer.add("k3")  # rotated in again within the minute: not fetched yet
    refused(
        authorize(engine, issuer.token("k3"), "sync"),
        "the token names a key the issuer does not publish",
    )
    assert issuer.jwks_requests == 2
    clock[0] += 61
    assert authorize(engine, issuer.token("k3", jti="again"), "async").status == 200
    assert issuer.jwks_requests == 3


def test_keys_are_kept_for_their_max_age_and_through_an_outage(issuer):
    issuer.cache_control = "public, max-age=600"
    clock = [0.0]
    engine = engine_for(issuer)
    engine._state.remote._jwt.keys._clock = lambda: clock[0]  # type: ignore[union-attr]
    assert authorize(engine, issuer.token(), "sync").status == 200
    clock[0] += 599
    assert authorize(engine, issuer.token(), "sync").status == 200
    assert issuer.jwks_requests == 1
    clock[0] += 2  # stale: refetched, and the endpoint is down; the known key still serves
    issuer.fail = True
    assert authorize(engine, issuer.token(), "sync").status == 200
    assert authorize(engine, issuer.token(), "async").status == 200
    assert issuer.jwks_requests == 2  # the failed refetch waits a minute before the next


def test_max_age_is_clamped():
    assert max_age({}) == 3600
    assert max_age({"cache-control": "max-age=10"}) == 300
    assert max_age({"cache-control": "public, max-age=7200"}) == 7200
    assert max_age({"cache-control": "max-age=9999999"}) == 86_400
    assert max_age({"cache-control": "no-store"}) == 3600


@pytest.mark.parametrize("mode", MODES)
def test_no_key_and_the_jwks_down_is_503_and_not_cached(issuer, mode):
    issuer.fail = True
    engine = engine_for(issuer, use_async=mode == "async")
    token = issuer.token()
    decision = authorize(engine, token, mode)
    assert (decision.status, decision.reason) == (503, Reason.PROVIDER_UNAVAILABLE)
    assert decision.message == "the key set URL answered 503"
    issuer.fail = False
    assert authorize(engine, token, mode).status == 200


def test_a_jwks_without_usable_keys_is_503():
    issuer = Issuer()
    issuer.add("k1")
    engine = policyauth.Engine(
        policyauth.loads(POLICY, "jwt.policy"),
        httpx.MockTransport(
            lambda r: httpx.Response(
                200, json={"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "k1"}]}
            )
        ),
    )
    decision = authorize(engine, issuer.token(), "sync")
    assert (decision.status, decision.message) == (503, "the key set has no usable signing key")


def test_an_hmac_key_in_the_jwks_is_never_used():
    issuer = Issuer()
    issuer.add("k1")
    secret = b"shared-secret-of-thirty-two-bytes!"
    header = b64(json.dumps({"alg": "HS256", "kid": "h1", "typ": "at+jwt"}).encode())
    payload = b64(json.dumps(issuer.claims()).encode())
    mac = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    token = register(f"{header}.{payload}.{b64(mac)}")
    jwks = {"keys": [*issuer.jwks()["keys"], {"kty": "oct", "kid": "h1", "k": b64(secret)}]}
    policy = POLICY.replace(
        'token_type = "at+jwt"', 'token_type = "at+jwt"\n  algorithms = ["RS256"]'
    )
    engine = policyauth.Engine(
        policyauth.loads(policy, "jwt.policy"),
        httpx.MockTransport(lambda r: httpx.Response(200, json=jwks)),
    )
    refused(authorize(engine, token, "sync"), "the token's algorithm is not accepted")


def test_the_identity_is_cached_but_never_past_exp(issuer):
    engine = engine_for(issuer)
    token = issuer.token(exp=int(time.time()) + 2)
    assert authorize(engine, token, "sync").status == 200
    remote = engine._state.remote
    assert remote is not None
    key = remote._cache.key(remote._tags["corp"], token)
    expires, _, _ = remote._cache._entries[key]
    assert expires - time.monotonic() <= 2.1


def test_discovery_finds_the_jwks():
    issuer = Issuer(jwks_url="https://sso.example.com/keys")
    issuer.add("k1")
    discovery = {"issuer": ISSUER, "jwks_uri": "https://sso.example.com/keys"}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/.well-known/openid-configuration"):
            issuer.requests["discovery"] += 1
            return httpx.Response(200, json=discovery)
        return issuer._answer(request)

    policy = POLICY.replace(f'  jwks     = "{JWKS}"\n', "")
    engine = policyauth.Engine(policyauth.loads(policy, "jwt.policy"), httpx.MockTransport(handler))
    for _ in range(3):
        assert authorize(engine, issuer.token(), "sync").status == 200
        assert authorize(engine, issuer.token(), "async").status == 200
    assert issuer.requests["discovery"] == 1
    assert issuer.jwks_requests == 1


@pytest.mark.parametrize("opted_in", [False, True])
def test_a_discovered_plain_http_jwks_needs_the_providers_insecure_http(opted_in):
    """The discovery document is the provider's word, so its URLs follow the provider's rule:
    plain http off loopback only with `insecure_http = true`, never silently."""
    issuer = Issuer(jwks_url="http://keys.internal/keys")
    issuer.add("k1")
    discovery = {"issuer": ISSUER, "jwks_uri": "http://keys.internal/keys"}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/.well-known/openid-configuration"):
            return httpx.Response(200, json=discovery)
        return issuer._answer(request)

    policy = POLICY.replace(f'  jwks     = "{JWKS}"\n', "")
    if opted_in:
        policy = policy.replace(
            '  token_type = "at+jwt"\n', '  token_type = "at+jwt"\n  insecure_http = true\n'
        )
    engine = policyauth.Engine(policyauth.loads(policy, "jwt.policy"), httpx.MockTransport(handler))
    for mode in MODES:
        decision = authorize(engine, issuer.token(), mode)
        if opted_in:
            assert (decision.status, decision.rule is not None) == (200, True), decision.message
        else:
            assert (decision.status, decision.reason) == (503, Reason.PROVIDER_UNAVAILABLE)
            assert decision.message == "the discovery document has no usable `jwks_uri`"
    assert issuer.jwks_requests == (1 if opted_in else 0)


def test_500_concurrent_first_requests_with_one_new_kid_make_one_fetch_async(issuer):
    issuer.delay = 0.2
    engine = engine_for(issuer, use_async=True)
    tokens = [issuer.token(jti=str(i)) for i in range(500)]

    async def run() -> list[Decision]:
        return await asyncio.gather(
            *(engine.authorize("GET", "/reports", bearer(t)) for t in tokens)
        )

    decisions = asyncio.run(run())
    assert {(d.status, d.reason) for d in decisions} == {(200, Reason.ALLOWED)}
    assert issuer.jwks_requests == 1


def test_500_concurrent_first_requests_with_one_new_kid_make_one_fetch_threads(issuer):
    issuer.delay = 0.2
    engine = engine_for(issuer)
    tokens = [issuer.token(jti=str(i)) for i in range(500)]
    with ThreadPoolExecutor(50) as pool:
        decisions = list(
            pool.map(lambda t: engine.authorize_sync("GET", "/reports", bearer(t)), tokens)
        )
    assert {(d.status, d.reason) for d in decisions} == {(200, Reason.ALLOWED)}
    assert issuer.jwks_requests == 1


def test_a_token_without_kid_is_tried_against_the_fitting_keys(issuer):
    key, alg = issuer.keys["k1"]
    token = sign(key, alg, issuer.claims(), {"typ": "at+jwt"})
    assert authorize(engine_for(issuer), token, "sync").status == 200


def test_duplicate_header_keys_are_refused(issuer):
    header = base64.urlsafe_b64encode(b'{"alg":"RS256","alg":"none","typ":"at+jwt"}').rstrip(b"=")
    token = register(header.decode() + "." + issuer.token().split(".", 1)[1])
    refused(authorize(engine_for(issuer), token, "sync"), "the token's header is not a JSON object")


@pytest.mark.parametrize("mode", MODES)
def test_junk_in_the_signature_part_is_refused(issuer, mode):
    header, payload, signature = issuer.token().split(".")
    # All within RFC 6750's b64token (the request layer takes them), none base64url.
    for junk in (f"{signature}==", f"{signature[:10]}~{signature[10:]}", f"{signature}+/"):
        token = register(f"{header}.{payload}.{junk}")
        refused(
            authorize(engine_for(issuer), token, mode),
            "the token is not a signed JWT in compact form",
        )


@pytest.mark.parametrize(
    "claims",
    [{"exp": str(int(time.time()) + 600)}, {"exp": True}, {"nbf": "0"}, {"iat": [1]}],
    ids=["exp-string", "exp-bool", "nbf-string", "iat-list"],
)
def test_dates_must_be_numbers(issuer, claims):
    refused(
        authorize(engine_for(issuer), issuer.token(**claims), "sync"),
        "the token is not a valid JWT",
    )


def test_a_signature_of_another_algorithm_family_is_refused(issuer):
    header, payload, _ = issuer.token().split(".")
    token = register(f"{header}.{payload}.{b64(bytes(64))}")  # 64 bytes: an ES256-sized signature
    refused(authorize(engine_for(issuer), token, "sync"), "the token's signature does not verify")


def test_a_concurrent_flood_of_unknown_kids_costs_one_extra_fetch_async(issuer):
    engine = engine_for(issuer, use_async=True)
    mallory = issuer.add("mallory", publish=False)
    tokens = [
        sign(mallory, "RS256", issuer.claims(), {"kid": f"made-up-{i}", "typ": "at+jwt"})
        for i in range(300)
    ]

    async def run() -> list[Decision]:
        first = await engine.authorize("GET", "/reports", bearer(issuer.token()))
        assert first.status == 200
        issuer.delay = 0.1  # every request overlaps the refetch
        return await asyncio.gather(
            *(engine.authorize("GET", "/reports", bearer(t)) for t in tokens)
        )

    decisions = asyncio.run(run())
    assert {(d.status, d.message) for d in decisions} == {
        (401, "the token names a key the issuer does not publish")
    }
    assert issuer.jwks_requests == 2


@pytest.mark.parametrize("mode", MODES)
def test_discovery_down_and_no_keys_is_503(mode):
    issuer = Issuer()
    issuer.add("k1")
    policy = POLICY.replace(f'  jwks     = "{JWKS}"\n', "")
    engine = policyauth.Engine(
        policyauth.loads(policy, "jwt.policy"), httpx.MockTransport(lambda r: httpx.Response(502))
    )
    decision = authorize(engine, issuer.token(), mode)
    assert (decision.status, decision.reason) == (503, Reason.PROVIDER_UNAVAILABLE)
    assert decision.message == "discovery answered 502"
