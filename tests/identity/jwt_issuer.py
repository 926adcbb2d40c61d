"""A JWT issuer for tests: real keys (cryptography), real signatures (PyJWT), a JWKS endpoint.

The one test module that signs tokens. Every token it makes, and the signature part of it, is
registered with the leak watch, so test_zz_no_token_leaks.py proves neither was logged, put
into an exception or shown in a repr.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import Counter
from typing import Any

import httpx
import jwt as pyjwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from provider_server import WATCH

import policyauth

ISSUER = "https://sso.example.com/realms/corp"
JWKS = f"{ISSUER}/protocol/openid-connect/certs"
AUDIENCE = "reports-api"

POLICY = f"""
provider corp {{
  validate = "jwt"
  issuer   = "{ISSUER}"
  jwks     = "{JWKS}"
  audience = "{AUDIENCE}"
  token_type = "at+jwt"
  username = $.preferred_username
  groups   = $.realm_access.roles[*]
}}

route GET /reports {{
  auth corp
  allow if "reporting" in groups
}}
"""

_CURVES = {"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1(), "ES512": ec.SECP521R1()}


def private_key(alg: str) -> Any:
    if alg.startswith(("RS", "PS")):
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(_CURVES[alg])


def public_jwk(key: Any, kid: str | None, alg: str | None = None) -> dict[str, Any]:
    """The public JWK of a private key (RFC 7517), as an issuer publishes it."""
    algorithm = pyjwt.get_algorithm_by_name(
        "EdDSA"
        if isinstance(key, ed25519.Ed25519PrivateKey)
        else "ES256"
        if isinstance(key, ec.EllipticCurvePrivateKey)
        else "RS256"
    )
    jwk = json.loads(algorithm.to_jwk(key.public_key()))
    if isinstance(key, ec.EllipticCurvePrivateKey):
        jwk["crv"] = {256: "P-256", 384: "P-384", 521: "P-521"}[key.curve.key_size]
    if kid is not None:
        jwk["kid"] = kid
    if alg is not None:
        jwk["alg"] = alg
    jwk["use"] = "sig"
    return jwk


def public_pem(key: Any) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def register(token: str) -> str:
    """The token and its signature part, with the leak watch."""
    WATCH.register(token)
    signature = token.rsplit(".", 1)[-1]
    if len(signature) >= 16:
        WATCH.register(signature)
    return token


def sign(key: Any, alg: str, claims: dict[str, Any], headers: dict[str, Any] | None = None) -> str:
    return register(pyjwt.encode(claims, key, algorithm=alg, headers=headers))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Issuer:
    """Keys by kid, the JWKS they make, and tokens signed with them."""

    def __init__(
        self, issuer: str = ISSUER, jwks_url: str = JWKS, *, cache_control: str | None = None
    ) -> None:
        self.issuer = issuer
        self.jwks_url = jwks_url
        self.cache_control = cache_control
        self.keys: dict[str, tuple[Any, str]] = {}
        self.published: set[str] = set()
        self.requests: Counter[str] = Counter()
        self.fail = False  # the JWKS endpoint answers 503
        self.delay = 0.0
        self._serial = 0
        self._lock = threading.Lock()

    def add(self, kid: str, alg: str = "RS256", *, publish: bool = True) -> Any:
        key = private_key(alg)
        self.keys[kid] = (key, alg)
        if publish:
            self.published.add(kid)
        return key

    def jwks(self) -> dict[str, Any]:
        return {"keys": [public_jwk(self.keys[k][0], k) for k in sorted(self.published)]}

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": "f:1234:ada",
            "preferred_username": "ada",
            "realm_access": {"roles": ["reporting"]},
            "iat": now,
            "exp": now + 300,
        }
        self._serial += 1
        claims["jti"] = f"t{self._serial}"  # every token distinct, so none is a cache hit
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(
        self, kid: str = "k1", *, headers: dict[str, Any] | None = None, **claims: Any
    ) -> str:
        key, alg = self.keys[kid]
        return sign(
            key, alg, self.claims(**claims), {"kid": kid, "typ": "at+jwt", **(headers or {})}
        )

    # --- the JWKS endpoint, as an httpx transport (unit tests) --------------------------------

    def _answer(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        with self._lock:
            self.requests[url] += 1
        if url != self.jwks_url:
            return httpx.Response(404)
        if self.fail:
            return httpx.Response(503)
        headers = {"cache-control": self.cache_control} if self.cache_control else {}
        return httpx.Response(200, json=self.jwks(), headers=headers)

    def transport(self) -> httpx.MockTransport:
        def handler(request: httpx.Request) -> httpx.Response:
            if self.delay:
                time.sleep(self.delay)
            return self._answer(request)

        return httpx.MockTransport(handler)

    def async_transport(self) -> httpx.MockTransport:
        import asyncio

        async def handler(request: httpx.Request) -> httpx.Response:
            if self.delay:
                await asyncio.sleep(self.delay)
            return self._answer(request)

        return httpx.MockTransport(handler)

    @property
    def jwks_requests(self) -> int:
        return self.requests[self.jwks_url]

    @property
    def all_requests(self) -> int:
        return sum(self.requests.values())


def engine_for(
    issuer: Issuer, *, policy: str = POLICY, use_async: bool = False
) -> policyauth.Engine:
    transport = issuer.async_transport() if use_async else issuer.transport()
    return policyauth.Engine(policyauth.loads(policy, "jwt.policy"), transport)
