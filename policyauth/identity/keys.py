"""The issuers' signing keys (JWKS) for `validate = "jwt"`, fetched rarely and shared.

Keys come only from the JWKS URL the policy names (`jwks`) or the issuer's discovery document
names (`jwks_uri`), through the engine's HTTP client (so `transport=` replaces it in tests),
never from a token. The rules of production.md section 1:

- a key set is kept for its `Cache-Control: max-age`, clamped to 5 minutes .. 24 hours (1 hour
  without one); a stale set is refetched, and kept in use while the refetch fails;
- a token naming an unknown `kid` refetches at once, and then at most once a minute per
  provider, so a flood of made-up kids costs the issuer one request;
- one fetch per provider at a time, however many requests (threads or tasks) need it: the others
  wait for it and use what it found;
- no usable key and no way to get one: Unavailable (503), never cached.

This module knows JWKs only as JSON objects; jwt.py turns them into keys (`convert`), so the
JWT library stays in one module.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from policyauth.identity.source import Invalid, Unavailable
from policyauth.identity.userinfo import (
    USER_AGENT,
    Request,
    Response,
    UserinfoClient,
    _acceptable_url,
    discovery_request,
    parse_document,
)
from policyauth.language.model import ProviderSpec

log = logging.getLogger("policyauth.identity")

DEFAULT_MAX_AGE = 3600.0
MIN_MAX_AGE = 300.0
MAX_MAX_AGE = 86_400.0
UNKNOWN_KID_INTERVAL = 60.0  # after a refetch for an unknown kid, the next waits this long
RETRY_AFTER_FAILURE = 60.0  # a failed refetch of a stale set is retried after this long
MAX_KEYS = 100  # a JWKS with more keys is not one we should trust to be what it says
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d{1,10})\"?\s*(?:,|$)", re.IGNORECASE)
_ASYMMETRIC = frozenset({"RSA", "EC", "OKP"})

Convert = Callable[[Mapping[str, Any]], object | None]


@attrs.frozen
class Key:
    """One usable signing key: the JWK's public facts and the library's key object."""

    kid: str | None
    kty: str
    crv: str | None
    alg: str | None  # the JWK's own `alg`, when it names one: the key is for that alone
    key: object = attrs.field(eq=False, repr=False)


@attrs.frozen
class Due:
    """A fetch is needed before the token can be judged; `unknown` when for an unknown kid."""

    unknown: bool


class _State:
    """One provider's keys and fetch timing (monotonic seconds)."""

    def __init__(self) -> None:
        self.keys: dict[str | None, list[Key]] = {}
        self.all: list[Key] = []  # for a token without `kid`: every key is a candidate
        self.expires = 0.0
        self.last_unknown = float("-inf")
        self.jwks_uri: str | None = None
        self.lock = threading.Lock()  # one sync fetch at a time per provider


class KeySets:
    """Every jwt provider's keys for one engine."""

    def __init__(
        self,
        client: UserinfoClient,
        convert: Convert,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._convert = convert
        self._clock = clock
        self._states: dict[str, _State] = {}
        self._states_lock = threading.Lock()
        self._flights: dict[str, asyncio.Future[Unavailable | None]] = {}
        self._leaders: set[asyncio.Task[None]] = set()

    def _state(self, name: str) -> _State:
        state = self._states.get(name)
        if state is None:
            with self._states_lock:
                state = self._states.setdefault(name, _State())
        return state

    def lookup(
        self, spec: ProviderSpec, kid: str | None, *, may_fetch: bool = True
    ) -> list[Key] | Due | Invalid | Unavailable:
        """The provider's keys for `kid` when known and fresh; else whether a fetch is due
        (Due), or why there is no key (Invalid: an unknown kid, refetched too recently)."""
        state = self._state(spec.name)
        now = self._clock()
        if not state.keys:
            return Due(unknown=False) if may_fetch else Unavailable("no signing keys are known")
        if now >= state.expires and may_fetch:
            return Due(unknown=False)
        found = state.keys.get(kid) if kid is not None else state.all
        if found:
            return found
        if may_fetch and now >= state.last_unknown + UNKNOWN_KID_INTERVAL:
            return Due(unknown=True)
        return Invalid("the token names a key the issuer does not publish")

    # --- fetching ------------------------------------------------------------------------------

    def fetch_sync(self, spec: ProviderSpec, due: Due, kid: str | None) -> Unavailable | None:
        """Fetch once for everyone: a thread that waited for another's fetch uses its keys."""
        state = self._state(spec.name)
        with state.lock:
            again = self.lookup(spec, kid)
            if not isinstance(again, Due):
                return None  # another thread fetched meanwhile
            self._starting(state, again)
            try:
                discovered = self._jwks_uri_sync(spec, state)
                if isinstance(discovered, Unavailable):
                    return self._failed(spec, state, discovered)
                response = self._client.send_sync(_jwks_request(discovered), spec.outbound)
                return self._store(spec, state, response)
            except Exception:
                log.exception("fetching the keys of provider %s failed", spec.name)
                return self._failed(spec, state, Unavailable("internal error fetching keys"))

    async def fetch(self, spec: ProviderSpec, due: Due, kid: str | None) -> Unavailable | None:
        flight = self._flights.get(spec.name)
        if flight is None:
            if not isinstance(self.lookup(spec, kid), Due):
                return None  # a fetch finished since the caller looked
            flight = asyncio.get_running_loop().create_future()
            self._flights[spec.name] = flight
            state = self._state(spec.name)
            self._starting(state, due)
            task = asyncio.create_task(self._lead(spec, state, flight))
            self._leaders.add(task)
            task.add_done_callback(self._leaders.discard)
        return await asyncio.shield(flight)

    async def _lead(
        self, spec: ProviderSpec, state: _State, flight: asyncio.Future[Unavailable | None]
    ) -> None:
        result: Unavailable | None = Unavailable("the key set fetch was interrupted")
        try:
            discovered = await self._jwks_uri(spec, state)
            if isinstance(discovered, Unavailable):
                result = self._failed(spec, state, discovered)
            else:
                response = await self._client.send(_jwks_request(discovered), spec.outbound)
                result = self._store(spec, state, response)
        except Exception:
            log.exception("fetching the keys of provider %s failed", spec.name)
            result = self._failed(spec, state, Unavailable("internal error fetching keys"))
        finally:
            del self._flights[spec.name]
            flight.set_result(result)

    def _starting(self, state: _State, due: Due) -> None:
        if due.unknown:
            state.last_unknown = self._clock()

    def _jwks_uri_sync(self, spec: ProviderSpec, state: _State) -> str | Unavailable:
        if spec.jwks is not None or state.jwks_uri is not None:
            return spec.jwks or state.jwks_uri  # type: ignore[return-value]
        assert spec.issuer is not None  # the checker requires an issuer for jwt
        return self._remember(
            spec, state, self._client.send_sync(discovery_request(spec.issuer), spec.outbound)
        )

    async def _jwks_uri(self, spec: ProviderSpec, state: _State) -> str | Unavailable:
        if spec.jwks is not None or state.jwks_uri is not None:
            return spec.jwks or state.jwks_uri  # type: ignore[return-value]
        assert spec.issuer is not None
        return self._remember(
            spec, state, await self._client.send(discovery_request(spec.issuer), spec.outbound)
        )

    def _remember(
        self, spec: ProviderSpec, state: _State, response: Response | Unavailable
    ) -> str | Unavailable:
        assert spec.issuer is not None
        found = discovered(
            spec.issuer, response, "jwks_uri", insecure_http=spec.outbound.insecure_http
        )
        if isinstance(found, str):
            state.jwks_uri = found
        return found

    def _store(
        self, spec: ProviderSpec, state: _State, response: Response | Unavailable
    ) -> Unavailable | None:
        keys = self.judge_jwks(response)
        if isinstance(keys, Unavailable):
            return self._failed(spec, state, keys)
        grouped: dict[str | None, list[Key]] = {}
        for key in keys:
            grouped.setdefault(key.kid, []).append(key)
        assert isinstance(response, Response)
        state.keys, state.all = grouped, keys
        state.expires = self._clock() + max_age(response.headers)
        log.debug("provider %s: %d signing keys", spec.name, len(keys))
        return None

    def _failed(self, spec: ProviderSpec, state: _State, why: Unavailable) -> Unavailable:
        """Known keys stay in use through an outage; the next try waits a while."""
        if state.keys:
            state.expires = self._clock() + RETRY_AFTER_FAILURE
            log.warning("provider %s: keys kept, refetch failed: %s", spec.name, why.detail)
        return why

    def judge_jwks(self, response: Response | Unavailable) -> list[Key] | Unavailable:
        """The asymmetric signing keys of a JWKS response (RFC 7517 5); others are skipped."""
        if isinstance(response, Unavailable):
            return response
        if response.status != 200:
            return Unavailable(f"the key set URL answered {response.status}")
        document = parse_document(response)
        if isinstance(document, Unavailable):
            return document
        entries = document.get("keys")
        if not isinstance(entries, list) or len(entries) > MAX_KEYS:
            return Unavailable("the key set has no `keys` list")
        keys = []
        for jwk in entries:
            key = self._usable(jwk)
            if key is not None:
                keys.append(key)
        if not keys:
            return Unavailable("the key set has no usable signing key")
        return keys

    def _usable(self, jwk: object) -> Key | None:
        if not isinstance(jwk, dict) or jwk.get("kty") not in _ASYMMETRIC:
            return None  # `oct` (shared secrets) never; unknown types skipped
        if jwk.get("use", "sig") != "sig":
            return None
        ops = jwk.get("key_ops")
        if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
            return None
        kid, alg, crv = jwk.get("kid"), jwk.get("alg"), jwk.get("crv")
        if not isinstance(kid, str | None) or not isinstance(alg, str | None):
            return None
        # Only public members are read: a private key published by mistake is not used as one.
        public = {k: v for k, v in jwk.items() if k in ("kty", "crv", "n", "e", "x", "y", "alg")}
        converted = self._convert(public)
        if converted is None:
            return None
        return Key(kid, jwk["kty"], crv if isinstance(crv, str) else None, alg, converted)


def discovered(
    issuer: str, response: Response | Unavailable, field: str, *, insecure_http: bool
) -> str | Unavailable:
    """One endpoint named by an issuer's discovery document (OIDC Discovery 4.3: the document's
    `issuer` must be the one asked about). A plain http endpoint is taken under the rule of the
    provider's own URLs: on loopback, or anywhere with `insecure_http = true`."""
    if isinstance(response, Unavailable):
        return response
    if response.status != 200:
        return Unavailable(f"discovery answered {response.status}")
    document = parse_document(response)
    if isinstance(document, Unavailable):
        return document
    if str(document.get("issuer", "")).rstrip("/") != issuer.rstrip("/"):
        return Unavailable("the discovery document names another issuer")
    url = document.get(field)
    if not isinstance(url, str) or not _acceptable_url(url, insecure_http):
        return Unavailable(f"the discovery document has no usable `{field}`")
    return url


def max_age(headers: Mapping[str, str]) -> float:
    """How long a key set is kept: its max-age clamped to 5 minutes .. 24 hours, else 1 hour."""
    found = _MAX_AGE.search(headers.get("cache-control", ""))
    if found is None:
        return DEFAULT_MAX_AGE
    return min(MAX_MAX_AGE, max(MIN_MAX_AGE, float(found[1])))


def _jwks_request(url: str) -> Request:
    return Request("GET", url, (("Accept", "application/json"), ("User-Agent", USER_AGENT)))
