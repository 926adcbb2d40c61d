"""Local verification of JWT access tokens (`validate = "jwt"`): the one module importing PyJWT.

Why PyJWT (with `cryptography`): it is the most used JWT library for Python, verifies every
asymmetric algorithm we allow, takes the key from the caller (never from the token: `jku`,
`x5u`, `jwk` and `x5c` are not looked at), and its `decode` is the yardstick the benchmark
compares with. What it leaves to the caller is done here, before it runs:

- a size cap (8 KiB) before any parsing, and the compact form (three parts) only;
- `alg` in the provider's `algorithms`, which never include `none` or an HMAC algorithm, and
  consistent with the key (an RSA key verifies RS*/PS* only, a P-256 key ES256 only, ...);
- a `crit` header is refused (RFC 7515 4.1.11: we understand no extension);
- the unverified `iss` must be one of the provider's issuers before any key is looked up, so a
  foreign token never makes the engine fetch anything;
- the required `typ` (RFC 9068 `at+jwt`) and the preset's `required_claims` (Cognito's
  `token_use`), and an audience claim other than `aud` (Cognito's `client_id`).

PyJWT then checks the signature, `iss` exactly, `aud`, `exp` (required), `nbf` and `iat`, with
the policy's `clock_skew`. Messages are fixed strings: no part of a token reaches a log, an
exception or a repr.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import jwt as pyjwt
from jwt.exceptions import (
    ExpiredSignatureError,
    ImmatureSignatureError,
    InvalidAudienceError,
    InvalidIssuerError,
    InvalidSignatureError,
    MissingRequiredClaimError,
    PyJWKError,
    PyJWTError,
)

from policyauth.compiler import ProviderPlan
from policyauth.identity.keys import Due, Key, KeySets
from policyauth.identity.source import Identity, IdentityResult, Invalid, Unavailable
from policyauth.identity.userinfo import UserinfoClient
from policyauth.language.claimpath import MISSING
from policyauth.language.model import ProviderSpec

MAX_TOKEN = 8 * 1024  # characters; above the request layer's own cap, kept for direct callers
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


def _segment(part: str) -> dict[str, Any] | None:
    """One base64url JSON object of a compact JWS, strictly: no duplicate keys, no NaN."""
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        value = json.loads(raw, object_pairs_hook=_no_duplicates, parse_constant=_refuse)
    except (ValueError, binascii.Error, RecursionError):
        return None
    return value if isinstance(value, dict) else None


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
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        return Invalid("the token is not a signed JWT in compact form")
    header = _segment(parts[0])
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
        header = self._start(provider.spec, token)
        if isinstance(header, Invalid):
            return header
        keys = self.keys.lookup(provider.spec, header.kid)
        if isinstance(keys, Due):
            return None
        if isinstance(keys, Invalid | Unavailable):
            return keys
        return self._finish(provider, token, header, keys)

    def verify_sync(self, provider: ProviderPlan, token: str) -> IdentityResult:
        at_hand = self.verify_now(provider, token)
        if at_hand is not None:
            return at_hand
        header = self._start(provider.spec, token)
        assert isinstance(header, Header)  # verify_now answered otherwise
        due = self.keys.lookup(provider.spec, header.kid)
        failure = (
            self.keys.fetch_sync(provider.spec, due, header.kid) if isinstance(due, Due) else None
        )
        return self._after_fetch(provider, token, header, failure)

    async def verify(self, provider: ProviderPlan, token: str) -> IdentityResult:
        at_hand = self.verify_now(provider, token)
        if at_hand is not None:
            return at_hand
        header = self._start(provider.spec, token)
        assert isinstance(header, Header)
        due = self.keys.lookup(provider.spec, header.kid)
        failure = (
            await self.keys.fetch(provider.spec, due, header.kid) if isinstance(due, Due) else None
        )
        return self._after_fetch(provider, token, header, failure)

    def inspect(self, provider: ProviderPlan, token: str) -> Verified | IdentityResult:
        """The verified header and payload (keys fetched as needed), or why there are none."""
        result = self.verify_sync(provider, token)
        if not isinstance(result, Identity):
            return result
        header, payload = token.split(".")[:2]
        return Verified(_segment(header) or {}, _segment(payload) or {}, result)

    def _after_fetch(
        self, provider: ProviderPlan, token: str, header: Header, failure: Unavailable | None
    ) -> IdentityResult:
        keys = self.keys.lookup(provider.spec, header.kid, may_fetch=False)
        if isinstance(keys, list):
            return self._finish(provider, token, header, keys)
        if isinstance(keys, Unavailable) and failure is not None:
            return failure
        if isinstance(keys, Due):  # not returned without may_fetch; kept for the type checker
            return Unavailable("no signing keys are known")
        return keys

    def _start(self, spec: ProviderSpec, token: str) -> Header | Invalid:
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
        return header

    def _finish(
        self, provider: ProviderPlan, token: str, header: Header, keys: list[Key]
    ) -> IdentityResult:
        candidates = [key for key in keys if _fits(key, header.alg)]
        if not candidates:
            return Invalid("no key of the issuer fits the token's algorithm")
        for key in candidates:
            payload = self._decode(provider.spec, token, header.alg, key)
            if payload is not None:
                return self._identity(provider, payload)
        return Invalid("the token's signature does not verify")

    def _decode(
        self, spec: ProviderSpec, token: str, alg: str, key: Key
    ) -> dict[str, Any] | Invalid | None:
        """The verified payload; None for a signature this key did not make."""
        by_aud = spec.audience_claim == "aud"
        try:
            return pyjwt.decode(
                token,
                key.key,  # type: ignore[arg-type]
                algorithms=[alg],
                audience=list(spec.audiences) if by_aud else None,
                issuer=list(spec.issuers),
                leeway=self._skew,
                options={
                    "require": ["exp", "iss", "aud"] if by_aud else ["exp", "iss"],
                    "verify_aud": by_aud,
                    "verify_sub": False,
                    "verify_jti": False,
                },
            )
        except InvalidSignatureError:
            return None
        except ExpiredSignatureError:
            return Invalid("the token has expired")
        except ImmatureSignatureError:
            return Invalid("the token is not valid yet (`nbf` or `iat` in the future)")
        except InvalidAudienceError:
            return Invalid("the token was issued for another audience")
        except InvalidIssuerError:
            return Invalid("the token is from another issuer")
        except MissingRequiredClaimError as exc:
            return Invalid(f"the token has no `{exc.claim}` claim")
        except PyJWTError:
            return Invalid("the token is not a valid JWT")

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
        for name, path in spec.fallbacks:
            if name not in claims:
                value = path.select(payload)
                if value is not MISSING:
                    claims[name] = value
        exp = payload["exp"]
        lifetime = float(exp) - self._clock() if isinstance(exp, int | float) else 0.0
        return Identity(claims, lifetime=lifetime)
