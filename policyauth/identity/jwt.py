"""Local verification of JWT access tokens (`validate = "jwt"`): the one module importing PyJWT.

Why PyJWT (with `cryptography`): it is the most used JWT library for Python, its algorithm
objects verify every asymmetric algorithm we allow with `cryptography`, its PyJWK turns a
published key into a key object, and its `decode` is the yardstick the benchmark compares
with. Keys are taken only from the issuer's JWKS (keys.py): `jku`, `x5u`, `jwk` and `x5c` in a
token are never looked at. Around the signature check, this module does:

- a size cap (8 KiB) and the strict compact form (three base64url parts) before any parsing;
- `alg` in the provider's `algorithms`, which never include `none` or an HMAC algorithm, and
  consistent with the key (an RSA key verifies RS*/PS* only, a P-256 key ES256 only, ...);
- a `crit` header is refused (RFC 7515 4.1.11: we understand no extension);
- the unverified `iss` must be one of the provider's issuers before any key is looked up, so a
  foreign token never makes the engine fetch anything;
- the required `typ` (RFC 9068 `at+jwt`) and the preset's `required_claims` (Cognito's
  `token_use`), and an audience claim other than `aud` (Cognito's `client_id`);
- after the signature, the registered claims as `jwt.decode` checks them (RFC 7519 4.1): `iss`
  exactly, `aud`, `exp` required and not past, `nbf` and `iat` not in the future, each with the
  policy's `clock_skew`, on the payload parsed once, strictly (no duplicate keys).

Messages are fixed strings: no part of a token reaches a log, an exception or a repr.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import jwt as pyjwt
from jwt.exceptions import PyJWKError, PyJWTError

from policyauth.compiler import ProviderPlan
from policyauth.identity.keys import Due, Key, KeySets
from policyauth.identity.source import Identity, IdentityResult, Invalid, Unavailable
from policyauth.identity.userinfo import UserinfoClient
from policyauth.language.model import ProviderSpec

MAX_TOKEN = (
    8 * 1024
)  # characters; the request layer's cap too (MAX_CREDENTIALS), kept for direct callers
# Which keys each algorithm may be verified with: (kty, crv or None for any).
_FAMILY: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", ("P-256",)),
    "ES384": ("EC", ("P-384",)),
    "ES512": ("EC", ("P-521",)),
    "EdDSA": ("OKP", ("Ed25519", "Ed448")),
}

_ALGORITHMS = {name: pyjwt.get_algorithm_by_name(name) for name in _FAMILY}
# The compact form, strictly (RFC 7515 7.1): base64url without padding, three non-empty parts.
_COMPACT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


@attrs.frozen
class Header:
    """The parts of a JOSE header we act on; nothing else in it is trusted or used."""

    alg: str
    kid: str | None
    typ: str | None


@attrs.frozen
class Verified:
    """A verified token laid open, for `policyauth inspect`; never logged."""

    header: dict[str, Any] = attrs.field(repr=False)
    payload: dict[str, Any] = attrs.field(repr=False)
    identity: Identity = attrs.field(repr=False)


def _bytes(part: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (ValueError, binascii.Error):
        return None


def _segment(part: str) -> dict[str, Any] | None:
    """One base64url JSON object of a compact JWS, strictly: no duplicate keys, no NaN."""
    raw = _bytes(part)
    if raw is None:
        return None
    try:
        value = json.loads(raw, object_pairs_hook=_no_duplicates, parse_constant=_refuse)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _numeric(value: object) -> bool:
    """A NumericDate (RFC 7519 2): a JSON number, not a boolean."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        raise ValueError("duplicate key")
    return found


def _refuse(name: str) -> Any:
    raise ValueError(name)


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and len(token) <= MAX_TOKEN


def unverified_issuer(token: str) -> str | None:
    """The `iss` a token claims, unverified: only for choosing which provider verifies it."""
    if not looks_like_jwt(token):
        return None
    payload = _segment(token.split(".", 2)[1])
    issuer = payload.get("iss") if payload is not None else None
    return issuer if isinstance(issuer, str) else None


def parse_header(token: str) -> Header | Invalid:
    if len(token) > MAX_TOKEN:
        return Invalid("the token is larger than 8 KiB")
    if _COMPACT.fullmatch(token) is None:
        return Invalid("the token is not a signed JWT in compact form")
    header = _segment(token.partition(".")[0])
    if header is None:
        return Invalid("the token's header is not a JSON object")
    alg, kid, typ = header.get("alg"), header.get("kid"), header.get("typ")
    if not isinstance(alg, str) or not isinstance(kid, str | None):
        return Invalid("the token's header has no usable `alg`")
    if "crit" in header:
        return Invalid("the token names critical header extensions (`crit`), which are refused")
    return Header(alg, kid, typ if isinstance(typ, str) else None)


def _convert(jwk: Mapping[str, Any]) -> object | None:
    """A JWK's public key as PyJWT verifies with; None for one it cannot use."""
    try:
        key: object = pyjwt.PyJWK(dict(jwk)).key
    except (PyJWKError, PyJWTError, ValueError, TypeError, KeyError):
        return None
    return key


def _fits(key: Key, alg: str) -> bool:
    """Whether `key` may verify `alg`: the family, the curve, and the JWK's own `alg`."""
    if key.alg is not None and key.alg != alg:
        return False
    kty, curves = _FAMILY[alg]
    return key.kty == kty and (curves is None or key.crv in curves)


def _typ(value: str | None) -> str | None:
    """RFC 7515 4.1.9: `typ` compares case-insensitively, `application/` may be left out."""
    if value is None:
        return None
    value = value.lower()
    return value[len("application/") :] if value.startswith("application/") else value


class JwtVerifier:
    """Verifies JWTs for every jwt provider of one engine, with keys from `KeySets`."""

    def __init__(
        self,
        client: UserinfoClient,
        clock_skew: float,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.keys = KeySets(client, _convert, monotonic)
        self._skew = clock_skew
        self._clock = clock

    def verify_now(self, provider: ProviderPlan, token: str) -> IdentityResult | None:
        """The verdict when the keys are at hand; None when they must be fetched first."""
        started = self._start(provider.spec, token)
        if isinstance(started, Invalid):
            return started
        header, payload = started
        keys = self.keys.lookup(provider.spec, header.kid)
        if isinstance(keys, Due):
            return None
        if isinstance(keys, Invalid | Unavailable):
            return keys
        return self._finish(provider, token, header, payload, keys)

    def verify_sync(self, provider: ProviderPlan, token: str) -> IdentityResult:
        at_hand = self.verify_now(provider, token)
        if at_hand is not None:
            return at_hand
        started = self._start(provider.spec, token)
        assert not isinstance(started, Invalid)  # verify_now answered otherwise
        header, payload = started
        due = self.keys.lookup(provider.spec, header.kid)
        failure = (
            self.keys.fetch_sync(provider.spec, due, header.kid) if isinstance(due, Due) else None
        )
        return self._after_fetch(provider, token, header, payload, failure)

    async def verify(self, provider: ProviderPlan, token: str) -> IdentityResult:
        at_hand = self.verify_now(provider, token)
        if at_hand is not None:
            return at_hand
        started = self._start(provider.spec, token)
        assert not isinstance(started, Invalid)
        header, payload = started
        due = self.keys.lookup(provider.spec, header.kid)
        failure = (
            await self.keys.fetch(provider.spec, due, header.kid) if isinstance(due, Due) else None
        )
        return self._after_fetch(provider, token, header, payload, failure)

    def inspect(self, provider: ProviderPlan, token: str) -> Verified | IdentityResult:
        """The verified header and payload (keys fetched as needed), or why there are none."""
        result = self.verify_sync(provider, token)
        if not isinstance(result, Identity):
            return result
        header, payload = token.split(".")[:2]
        return Verified(_segment(header) or {}, _segment(payload) or {}, result)

    def _after_fetch(
        self,
        provider: ProviderPlan,
        token: str,
        header: Header,
        payload: dict[str, Any],
        failure: Unavailable | None,
    ) -> IdentityResult:
        keys = self.keys.lookup(provider.spec, header.kid, may_fetch=False)
        if isinstance(keys, list):
            return self._finish(provider, token, header, payload, keys)
        if isinstance(keys, Unavailable) and failure is not None:
            return failure
        if isinstance(keys, Due):  # not returned without may_fetch; kept for the type checker
            return Unavailable("no signing keys are known")
        return keys

    def _start(self, spec: ProviderSpec, token: str) -> tuple[Header, dict[str, Any]] | Invalid:
        """Every check that needs no key, so that a bad token never causes a fetch."""
        header = parse_header(token)
        if isinstance(header, Invalid):
            return header
        if header.alg not in spec.algorithms or header.alg not in _FAMILY:
            return Invalid("the token's algorithm is not accepted")
        if spec.token_type is not None and _typ(header.typ) != _typ(spec.token_type):
            return Invalid("the token is not of the required type (`typ`)")
        payload = _segment(token.split(".", 2)[1])
        if payload is None:
            return Invalid("the token's payload is not a JSON object")
        if payload.get("iss") not in spec.issuers:
            return Invalid("the token is from another issuer")
        return header, payload

    def _finish(
        self,
        provider: ProviderPlan,
        token: str,
        header: Header,
        payload: dict[str, Any],
        keys: list[Key],
    ) -> IdentityResult:
        candidates = [key for key in keys if _fits(key, header.alg)]
        if not candidates:
            return Invalid("no key of the issuer fits the token's algorithm")
        for key in candidates:
            verified = self._decode(provider.spec, token, payload, header.alg, key)
            if verified is not None:
                return self._identity(provider, verified)
        return Invalid("the token's signature does not verify")

    def _decode(
        self, spec: ProviderSpec, token: str, payload: dict[str, Any], alg: str, key: Key
    ) -> dict[str, Any] | Invalid | None:
        """The verified payload; None for a signature this key did not make.

        The signature is checked by PyJWT's implementation of `alg` (with `cryptography`); the
        registered claims are checked here, as `jwt.decode` checks them (RFC 7519 4.1), on the
        payload already parsed strictly: PyJWT's `decode` would parse the token a second time.
        """
        signing_input, _, encoded = token.rpartition(".")
        signature = _bytes(encoded)
        if signature is None:
            return Invalid("the token is not a valid JWT")
        try:
            verified = _ALGORITHMS[alg].verify(signing_input.encode("ascii"), key.key, signature)
        except (PyJWTError, ValueError, TypeError):
            verified = False
        if not verified:
            return None
        refused = self._refused_claims(spec, payload)
        return payload if refused is None else refused

    def _refused_claims(self, spec: ProviderSpec, payload: dict[str, Any]) -> Invalid | None:
        """`iss` exact, `exp` required and not past, `nbf` and `iat` not in the future (all
        with `clock_skew`), and `aud` containing one of the audiences."""
        now, skew = self._clock(), self._skew
        if payload.get("iss") not in spec.issuers:
            return Invalid("the token is from another issuer")
        exp = payload.get("exp")
        if exp is None:
            return Invalid("the token has no `exp` claim")
        if not _numeric(exp):
            return Invalid("the token is not a valid JWT")
        if exp <= now - skew:
            return Invalid("the token has expired")
        for name in ("nbf", "iat"):
            value = payload.get(name)
            if value is None:
                continue
            if not _numeric(value):
                return Invalid("the token is not a valid JWT")
            if value > now + skew:
                return Invalid("the token is not valid yet (`nbf` or `iat` in the future)")
        if spec.audience_claim != "aud":
            return None  # checked with the other claim in _identity
        audience = payload.get("aud")
        if audience is None:
            return Invalid("the token has no `aud` claim")
        listed = [audience] if isinstance(audience, str) else audience
        if not isinstance(listed, list) or not any(
            isinstance(a, str) and a in spec.audiences for a in listed
        ):
            return Invalid("the token was issued for another audience")
        return None

    def _identity(
        self, provider: ProviderPlan, payload: dict[str, Any] | Invalid
    ) -> IdentityResult:
        if isinstance(payload, Invalid):
            return payload
        spec = provider.spec
        if spec.audience_claim != "aud":
            value = payload.get(spec.audience_claim)
            values = value if isinstance(value, list) else [value]
            if not any(isinstance(v, str) and v in spec.audiences for v in values):
                return Invalid("the token was issued for another audience")
        for name, expected in spec.required_claims:
            if payload.get(name) != expected:
                return Invalid(f"the token is not an access token (`{name}`)")
        if not provider.accepts(payload):
            return Invalid("the token does not meet the provider's `success` condition")
        claims = provider.claims_from(payload)
        exp = payload["exp"]
        lifetime = float(exp) - self._clock() if isinstance(exp, int | float) else 0.0
        return Identity(claims, lifetime=lifetime)
