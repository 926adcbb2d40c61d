"""RFC 7662 token introspection as a way to validate tokens (`validate = "introspection"`).

The request: `POST token=...&token_type_hint=access_token` with HTTP Basic authentication as
our client (`client_id`, `client_secret`: they authenticate us, they are not the audience
check). The answer is judged as strictly as userinfo's (userinfo.py): only a 200 with one JSON
object counts; `active` must be `true`; `audience`, when the policy gives it, must be in `aud`;
an `exp` in the past is refused and otherwise bounds the cache. A 401 or 403 means our own
credentials are wrong, which is an outage (503), not the caller's fault; every outage is
Unavailable, never cached.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

from policyauth.compiler import ProviderPlan
from policyauth.identity.keys import discovered
from policyauth.identity.source import Identity, IdentityResult, Invalid, Unavailable
from policyauth.identity.userinfo import (
    USER_AGENT,
    Request,
    Response,
    UserinfoClient,
    discovery_request,
    parse_document,
)

Endpoints = dict[str, str]  # provider name -> introspection endpoint found by discovery


def introspection_request(provider: ProviderPlan, url: str, token: str) -> Request:
    """The POST of RFC 7662 2.1, authenticated as in RFC 6749 2.3.1 (form-encoded id/secret)."""
    spec = provider.spec
    user = quote(spec.client_id or "", safe="")
    secret = quote(spec.client_secret or "", safe="")
    basic = "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()
    headers = (("Accept", "application/json"), ("User-Agent", USER_AGENT), ("Authorization", basic))
    form = (("token", token), ("token_type_hint", "access_token"))
    return Request("POST", url, headers, form=form)


def judge_introspection(provider: ProviderPlan, response: Response, now: float) -> IdentityResult:
    """An introspection answer as an identity, an invalid token, or an outage."""
    status = response.status
    if status in (401, 403):
        return Unavailable(f"the introspection endpoint refused our client credentials ({status})")
    if status != 200:
        return Unavailable(f"the introspection endpoint answered {status}")
    document = parse_document(response)
    if isinstance(document, Unavailable):
        return document
    if document.get("active") is not True:
        return Invalid("the token is not active")
    spec = provider.spec
    if spec.audiences:
        audiences = document.get("aud")
        listed = audiences if isinstance(audiences, list) else [audiences]
        if not any(isinstance(a, str) and a in spec.audiences for a in listed):
            return Invalid("the token was issued for another audience")
    exp: Any = document.get("exp")
    lifetime = None
    if exp is not None:
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            return Unavailable("the introspection answer has an `exp` that is not a number")
        lifetime = float(exp) - now
        if lifetime <= 0:
            return Invalid("the token has expired")
    if not provider.accepts(document):
        return Invalid("the response does not meet the provider's `success` condition")
    return Identity(provider.claims_from(document), lifetime=lifetime)


def _endpoint_from(
    provider: ProviderPlan, found: Endpoints, response: Response | Unavailable
) -> str | Unavailable:
    assert provider.spec.issuer is not None
    url = discovered(
        provider.spec.issuer,
        response,
        "introspection_endpoint",
        insecure_http=provider.spec.outbound.insecure_http,
    )
    if isinstance(url, str):
        found[provider.name] = url
    return url


def _known_endpoint(provider: ProviderPlan, found: Endpoints) -> str | None:
    return provider.spec.introspection or found.get(provider.name)


def introspect_sync(
    client: UserinfoClient, found: Endpoints, provider: ProviderPlan, token: str, now: float
) -> IdentityResult:
    return call_sync(client, found, provider, token, now)[2]


def call_sync(
    client: UserinfoClient, found: Endpoints, provider: ProviderPlan, token: str, now: float
) -> tuple[str | None, Response | None, IdentityResult]:
    """The introspection call laid open (for `policyauth inspect`): the endpoint, the raw
    response, and the verdict."""
    url: str | Unavailable | None = _known_endpoint(provider, found)
    if url is None:
        assert provider.spec.issuer is not None  # the checker requires one of the two
        url = _endpoint_from(
            provider,
            found,
            client.send_sync(discovery_request(provider.spec.issuer), provider.spec.outbound),
        )
    if isinstance(url, Unavailable):
        return None, None, url
    response = client.send_sync(introspection_request(provider, url, token), provider.spec.outbound)
    if isinstance(response, Unavailable):
        return url, None, response
    return url, response, judge_introspection(provider, response, now)


async def introspect(
    client: UserinfoClient, found: Endpoints, provider: ProviderPlan, token: str, now: float
) -> IdentityResult:
    url: str | Unavailable | None = _known_endpoint(provider, found)
    if url is None:
        assert provider.spec.issuer is not None
        url = _endpoint_from(
            provider,
            found,
            await client.send(discovery_request(provider.spec.issuer), provider.spec.outbound),
        )
    if isinstance(url, Unavailable):
        return url
    response = await client.send(
        introspection_request(provider, url, token), provider.spec.outbound
    )
    if isinstance(response, Unavailable):
        return response
    return judge_introspection(provider, response, now)
