"""The identity source the Engine uses by default: providers over HTTP, API tokens from stores.

For a provider, a credential is looked up in the identity cache first; on a miss exactly one
call per (provider, token) is in flight at a time, however many requests carry that token
(single flight): the others wait for its answer, and share it whether it is an identity, an
invalid token or an outage. The answer is cached by kind (see cache.py), so a failure is shared
but never remembered and never becomes an allow.

Before a new call, the provider's ration is asked (flood.py): while a flood of made-up tokens
lasts, calls over its cap are not made and answer "unavailable" with a Retry-After.

For a tokens block, the local store answers; it needs no cache.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import attrs

from policyauth.compiler import Policy, ProviderPlan
from policyauth.identity.cache import DEFAULT_MAX_BYTES, Entry, IdentityCache, Touch
from policyauth.identity.flood import CallRation
from policyauth.identity.introspection import call_sync, introspect, introspect_sync
from policyauth.identity.jwt import JwtVerifier, Verified
from policyauth.identity.source import (
    Credential,
    Identity,
    IdentityResult,
    Invalid,
    Unavailable,
)
from policyauth.identity.tokens import TokenStore

if TYPE_CHECKING:
    from policyauth.identity.pgstore import PgTokenStore
    from policyauth.identity.rediscache import SharedCache
    from policyauth.language.model import Settings
from policyauth.identity.userinfo import (
    Endpoints,
    Response,
    UserinfoClient,
    audience_request,
    discovery_request,
    judge,
    judge_audience,
    judge_discovery,
    now,
    parse_document,
    userinfo_request,
)
from policyauth.language.fleet_checks import is_store_url
from policyauth.language.presets import Audience
from policyauth.observe.metrics import METRICS
from policyauth.request import BearerCredential

log = logging.getLogger("policyauth.identity")
_TAGS = itertools.count()  # cache key tags, unique in the process


@attrs.frozen
class Inspection:
    """One provider call, laid open: where it went, what came back, what it means."""

    url: str | None
    status: int | None
    document: dict[str, Any] | None = attrs.field(repr=False)
    result: IdentityResult
    header: dict[str, Any] | None = attrs.field(default=None, repr=False)  # a verified JWT's


class _Flight:
    """One provider call that other threads wait for."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: IdentityResult = Unavailable("the shared provider call did not finish")


class RemoteIdentitySource:
    def __init__(
        self,
        policy: Policy,
        transport: object | None = None,
        *,
        cache_size: int | None = None,  # bytes; overrides the policy's `cache_size`
        clock: Callable[[], float] | None = None,
    ) -> None:
        settings = policy.settings
        self._policy = policy
        self._transport = transport
        self._cache_size = cache_size
        self._clock = clock or time.monotonic
        self._timeout = settings.timeout_ms / 1000
        self._client = UserinfoClient(self._timeout, transport)
        self._jwt = JwtVerifier(self._client, settings.clock_skew_ms / 1000)
        self._cache = self._new_cache(policy)
        self._ration = CallRation()
        self._shared = _shared_cache(settings)
        grace = timedelta(milliseconds=settings.store_grace_ms)
        self._stores = {name: _store(spec.store, grace) for name, spec in policy.tokens.items()}
        self._providers = dict(policy.providers)  # a plain dict: looked up on every request
        # Each provider's cache entries are keyed under a tag that names its settings: a
        # successor (after a reload) keeps the tag of a provider whose settings are unchanged,
        # so its cached identities stay, and gives a changed one a new tag, so they are gone.
        self._tags = {name: f"{name}\0{next(_TAGS)}" for name in policy.providers}
        self._endpoints: dict[str, Endpoints] = {}  # provider -> what discovery found
        self._introspection: dict[str, str] = {}  # provider -> its discovered RFC 7662 endpoint
        self._async_flights: dict[bytes, asyncio.Future[IdentityResult]] = {}
        self._leaders: set[asyncio.Task[None]] = set()  # running calls, kept from the GC
        self._sync_flights: dict[bytes, _Flight] = {}
        self._lock = threading.Lock()

    def _new_cache(self, policy: Policy) -> IdentityCache:
        """The identity cache `policy`'s settings ask for (`Engine(cache_size=)` wins)."""
        settings = policy.settings
        return IdentityCache(
            ttl=settings.cache_ttl_ms / 1000,
            negative_ttl=settings.negative_ttl_ms / 1000,
            max_bytes=self._cache_size or settings.cache_size or DEFAULT_MAX_BYTES,
            clock=self._clock,
        )

    # --- async ---------------------------------------------------------------------------------

    def identify_now(self, authenticator: str, credential: Credential) -> IdentityResult | None:
        """The answer when it is at hand without waiting (a local token store, an identity
        cache hit), else None. The engine asks this first, so that the common case costs no
        coroutine; `identify` asks it too (without counting it in the metrics again)."""
        found = self._now(authenticator, credential)
        if authenticator in self._providers:
            kind = type(found)
            METRICS.cache("miss" if found is None else "hit" if kind is Identity else "negative")
        return found

    def _now(self, authenticator: str, credential: Credential) -> IdentityResult | None:
        if authenticator in self._stores:
            return self._stores[authenticator].verify(credential)
        provider, token = self._providers.get(authenticator), _token(credential)
        if provider is None or token is None:
            return Invalid("this authenticator does not take this credential")
        key = self._cache.key(self._tags[authenticator], token)
        cached = self._cache.get(key)
        if cached is None and provider.spec.validate == "jwt":
            # Keys at hand: verifying is local work, answered at once (None: keys to fetch).
            started = time.perf_counter()
            cached = self._jwt.verify_now(provider, token)
            if cached is not None:
                self._cache.put(key, cached)
                _log_result(provider.name, cached, time.perf_counter() - started)
        return cached

    def cache_key(self, authenticator: str, credential: Credential) -> bytes | None:
        """The identity cache's key (a MAC) for a provider's token; None for a tokens block,
        whose store is asked on every request. The engine's remembered decisions
        (policyauth/recall.py) rest on what the cache holds under this key."""
        token = _token(credential)
        if authenticator not in self._providers or token is None:
            return None
        return self._cache.key(self._tags[authenticator], token)

    def held(self, key: bytes) -> tuple[Entry, Touch] | None:
        """The identity cache's live entry under a key, and the call that marks it used
        (`IdentityCache.held`): a remembered decision checks that entry itself on every
        request (a source keeps its cache for life; a reload makes a successor)."""
        return self._cache.held(key)

    @property
    def cache_clock(self) -> Callable[[], float]:
        """The clock the identity cache's entries expire on."""
        return self._cache.clock

    async def identify(self, authenticator: str, credential: Credential) -> IdentityResult:
        at_hand = self._now(authenticator, credential)
        if at_hand is not None:
            return at_hand
        provider, token = self._policy.providers[authenticator], _token(credential)
        assert token is not None  # identify_now answered every other case
        key = self._cache.key(self._tags[authenticator], token)
        flight = self._async_flights.get(key)
        if flight is not None:
            return await asyncio.shield(flight)
        rationed = self._rationed(provider)
        if rationed is not None:
            return rationed
        flight = asyncio.get_running_loop().create_future()
        self._async_flights[key] = flight
        # The call runs in its own task, so that the request which started it being cancelled
        # (its client went away) does not fail every request waiting for the same answer.
        task = asyncio.create_task(self._lead(key, provider, token, flight))
        self._leaders.add(task)
        task.add_done_callback(self._leaders.discard)
        return await asyncio.shield(flight)

    async def _lead(
        self,
        key: bytes,
        provider: ProviderPlan,
        token: str,
        flight: asyncio.Future[IdentityResult],
    ) -> None:
        result: IdentityResult = Unavailable("the provider call was interrupted")
        started = time.perf_counter()
        try:
            if self._shared is None:
                result = await self._fetch(provider, token)
            else:
                result = await self._fetch_shared(provider, token)
            self._cache.put(key, result)
        except Exception:
            log.exception("identity lookup failed for provider %s", provider.name)
            result = Unavailable("internal error while validating the token")
        finally:
            if _rationable(provider):
                self._ration.record(provider.name, result)
            del self._async_flights[key]
            flight.set_result(result)
        _log_result(provider.name, result, time.perf_counter() - started)

    async def _fetch_shared(self, provider: ProviderPlan, token: str) -> IdentityResult:
        """Through the Redis cache, on this loop (redis.asyncio): no thread per lookup."""
        shared = self._shared
        assert shared is not None
        key = shared.key(provider.name, _fingerprint(provider), token)
        return await shared.aresolve(key, token, lambda: self._fetch(provider, token))

    async def _fetch(self, provider: ProviderPlan, token: str) -> IdentityResult:
        if provider.spec.validate == "jwt":
            return await self._jwt.verify(provider, token)
        if provider.spec.validate == "introspection":
            return await introspect(self._client, self._introspection, provider, token, now())
        endpoints = await self._endpoints_for(provider)
        if isinstance(endpoints, Unavailable):
            return endpoints
        response = await self._client.send(
            userinfo_request(provider, endpoints.userinfo, token), provider.spec.outbound
        )
        if isinstance(response, Unavailable):
            return response
        result = judge(provider, response, now())
        audience_url = _audience_url(provider, endpoints)
        if not isinstance(result, Identity) or audience_url is None:
            return result
        if isinstance(audience_url, Unavailable):
            return audience_url
        request = audience_request(provider.spec, audience_url, token)
        return _with_audience(
            provider, result, await self._client.send(request, provider.spec.outbound)
        )

    async def _endpoints_for(self, provider: ProviderPlan) -> Endpoints | Unavailable:
        spec = provider.spec
        if spec.userinfo is not None:
            return Endpoints(spec.userinfo, spec.audience_url)
        if provider.name in self._endpoints:
            return self._endpoints[provider.name]
        assert spec.issuer is not None  # the checker requires one of the two
        response = await self._client.send(discovery_request(spec.issuer), spec.outbound)
        return self._remember_endpoints(provider, response)

    # --- sync ----------------------------------------------------------------------------------

    def identify_sync(self, authenticator: str, credential: Credential) -> IdentityResult:
        at_hand = self._now(authenticator, credential)
        if at_hand is not None:
            return at_hand
        provider, token = self._policy.providers[authenticator], _token(credential)
        assert token is not None  # identify_now answered every other case
        key = self._cache.key(self._tags[authenticator], token)
        with self._lock:
            flight = self._sync_flights.get(key)
            leader = flight is None
            if flight is None:
                # A leader may have stored its answer and left since the lookup above.
                cached = self._cache.get(key)
                if cached is not None:
                    return cached
                rationed = self._rationed(provider)
                if rationed is not None:
                    return rationed
                flight = self._sync_flights[key] = _Flight()
        if not leader:
            flight.done.wait(self._timeout * 3 + 1)
            return flight.result
        started = time.perf_counter()
        try:
            if self._shared is None:
                flight.result = self._fetch_sync(provider, token)
            else:
                shared_key = self._shared.key(provider.name, _fingerprint(provider), token)
                flight.result = self._shared.resolve(
                    shared_key, token, lambda: self._fetch_sync(provider, token)
                )
            self._cache.put(key, flight.result)
        except Exception:
            log.exception("identity lookup failed for provider %s", provider.name)
            flight.result = Unavailable("internal error while validating the token")
        finally:
            if _rationable(provider):
                self._ration.record(provider.name, flight.result)
            with self._lock:
                del self._sync_flights[key]
            flight.done.set()
        _log_result(provider.name, flight.result, time.perf_counter() - started)
        return flight.result

    def _fetch_sync(self, provider: ProviderPlan, token: str) -> IdentityResult:
        if provider.spec.validate == "jwt":
            return self._jwt.verify_sync(provider, token)
        if provider.spec.validate == "introspection":
            return introspect_sync(self._client, self._introspection, provider, token, now())
        return self._call_sync(provider, token)[2]

    def _call_sync(
        self, provider: ProviderPlan, token: str
    ) -> tuple[str | None, Response | None, IdentityResult]:
        """The userinfo call (and audience check): the URL, the raw response, the verdict."""
        endpoints = self._endpoints_for_sync(provider)
        if isinstance(endpoints, Unavailable):
            return None, None, endpoints
        request = userinfo_request(provider, endpoints.userinfo, token)
        response = self._client.send_sync(request, provider.spec.outbound)
        if isinstance(response, Unavailable):
            return endpoints.userinfo, None, response
        result = judge(provider, response, now())
        audience_url = _audience_url(provider, endpoints)
        if not isinstance(result, Identity) or audience_url is None:
            return endpoints.userinfo, response, result
        if isinstance(audience_url, Unavailable):
            return endpoints.userinfo, response, audience_url
        check = audience_request(provider.spec, audience_url, token)
        return (
            endpoints.userinfo,
            response,
            _with_audience(provider, result, self._client.send_sync(check, provider.spec.outbound)),
        )

    def _endpoints_for_sync(self, provider: ProviderPlan) -> Endpoints | Unavailable:
        spec = provider.spec
        if spec.userinfo is not None:
            return Endpoints(spec.userinfo, spec.audience_url)
        if provider.name in self._endpoints:
            return self._endpoints[provider.name]
        assert spec.issuer is not None
        response = self._client.send_sync(discovery_request(spec.issuer), spec.outbound)
        return self._remember_endpoints(provider, response)

    def inspect_sync(self, authenticator: str, token: str) -> Inspection:
        """Ask a provider about `token` exactly as `identify_sync` would, without the cache,
        and keep the raw response: what `policyauth userinfo` shows a person."""
        provider = self._policy.providers[authenticator]
        if provider.spec.validate == "jwt":
            verified = self._jwt.inspect(provider, token)
            if isinstance(verified, Verified):
                return Inspection(None, None, verified.payload, verified.identity, verified.header)
            return Inspection(None, None, None, verified)
        if provider.spec.validate == "introspection":
            url, response, result = call_sync(
                self._client, self._introspection, provider, token, now()
            )
        else:
            url, response, result = self._call_sync(provider, token)
        if response is None:
            return Inspection(url, None, None, result)
        document = parse_document(response) if response.status == 200 else None
        shown = document if isinstance(document, dict) else None
        return Inspection(url, response.status, shown, result)

    # --- reload --------------------------------------------------------------------------------

    def successor(self, policy: Policy) -> RemoteIdentitySource:
        """The source for a reloaded `policy`, keeping what is still true of it.

        Providers whose settings did not change keep their cached identities and discovered
        endpoints; a changed provider starts afresh. Token stores of unchanged tokens blocks
        are kept (they follow their files themselves). The HTTP client is shared while the
        timeout is the same, so in-flight calls of this source finish on it; the cache is
        shared while its lifetimes are the same. This source stays usable for the requests
        that already hold it.
        """
        new = RemoteIdentitySource.__new__(RemoteIdentitySource)
        new.__dict__.update(self.__dict__)
        old, settings = self._policy, policy.settings
        new._policy = policy
        new._timeout = settings.timeout_ms / 1000
        if new._timeout != self._timeout:
            new._client = UserinfoClient(new._timeout, self._transport)
        if (settings.cache_ttl_ms, settings.negative_ttl_ms, settings.cache_size) != (
            old.settings.cache_ttl_ms,
            old.settings.negative_ttl_ms,
            old.settings.cache_size,
        ):
            new._cache = new._new_cache(policy)
        old_shared = (old.settings.cache, old.settings.cache_secret)
        if (settings.cache, settings.cache_secret) != old_shared:
            new._shared = _shared_cache(settings)
        new._providers = dict(policy.providers)
        unchanged = {
            name
            for name, plan in policy.providers.items()
            if name in old.providers
            and old.providers[name].spec == plan.spec
            and new._cache is self._cache
        }
        new._tags = {
            name: self._tags[name] if name in unchanged else f"{name}\0{next(_TAGS)}"
            for name in policy.providers
        }
        new._endpoints = {n: e for n, e in self._endpoints.items() if n in unchanged}
        new._stores = {
            name: self._stores[name]
            if name in old.tokens and old.tokens[name] == spec
            else _store(spec.store, timedelta(milliseconds=settings.store_grace_ms))
            for name, spec in policy.tokens.items()
        }
        return new

    def shares_client(self, other: RemoteIdentitySource) -> bool:
        return self._client is other._client

    # --- shared --------------------------------------------------------------------------------

    def _rationed(self, provider: ProviderPlan) -> Unavailable | None:
        """A 503 for a new call over the cap of a flood of unknown tokens (never a 401: this
        token was not looked at); None when the call may be made. A jwt provider is never
        rationed: a token is checked locally, and its one outbound call, the key set, is
        single-flight and rate-limited by keys.py already."""
        if not _rationable(provider):
            return None
        wait = self._ration.admit(provider.name)
        if wait is None:
            return None
        return Unavailable(
            f"calls to provider `{provider.name}` are rationed (a flood of unknown tokens, or too "
            "many calls unanswered); retry later",
            retry_after=wait,
        )

    def _remember_endpoints(
        self, provider: ProviderPlan, response: Response | Unavailable
    ) -> Endpoints | Unavailable:
        """Discovery succeeds once per process; a failure is retried on the next request."""
        if isinstance(response, Unavailable):
            return response
        assert provider.spec.issuer is not None
        endpoints = judge_discovery(
            provider.spec.issuer, response, insecure_http=provider.spec.outbound.insecure_http
        )
        if isinstance(endpoints, Endpoints):
            self._endpoints[provider.name] = endpoints
        return endpoints

    def close(self) -> None:
        self._client.close()
        self._close_stores()
        if self._shared is not None:
            self._shared.close()

    async def aclose(self) -> None:
        await self._client.aclose()
        self._close_stores()
        if self._shared is not None:
            await self._shared.aclose()

    def _close_stores(self) -> None:
        """Stop the readers of database stores (a file store has nothing to stop)."""
        for store in self._stores.values():
            if not isinstance(store, TokenStore):
                store.close()


def _rationable(provider: ProviderPlan) -> bool:
    """Whether new calls for this provider's tokens go through its ration (flood.py)."""
    return provider.spec.validate != "jwt"


def _token(credential: Credential) -> str | None:
    return credential.token if isinstance(credential, BearerCredential) else None


def _audience_url(provider: ProviderPlan, endpoints: Endpoints) -> str | Unavailable | None:
    """Where to check the token's audience; None when no check is configured. A check that is
    configured but has nowhere to go (an `oidc` issuer without introspection) fails closed."""
    if provider.spec.audience is Audience.NONE:
        return None
    return endpoints.introspection or Unavailable("the issuer offers no introspection endpoint")


def _with_audience(
    provider: ProviderPlan, identity: Identity, response: Response | Unavailable
) -> IdentityResult:
    """The identity, if the provider confirms the token was issued to our client (rule 7)."""
    if isinstance(response, Unavailable):
        return response
    verdict = judge_audience(provider.spec, response, now())
    if isinstance(verdict, Invalid | Unavailable | Identity):
        return verdict
    lifetime = identity.lifetime if verdict is None else verdict
    return Identity(identity.claims, lifetime=lifetime)


def _log_result(provider: str, result: IdentityResult, seconds: float) -> None:
    """Outcomes at DEBUG, outages at WARNING; never the token, never the claims. Counted in
    the metrics as identity, invalid or unavailable."""
    METRICS.provider_request(provider, type(result).__name__.lower(), seconds)
    if isinstance(result, Unavailable):
        log.warning("provider %s unavailable: %s", provider, result.detail)
    elif isinstance(result, Invalid):
        log.debug("provider %s refused a token: %s", provider, result.detail)
    else:
        log.debug("provider %s validated a token", provider)


def _store(location: str, grace: timedelta) -> TokenStore | PgTokenStore:
    """The store a tokens block names: a PostgreSQL URL (psycopg is only needed then; the
    checker accepted only postgresql:// and postgres:// URLs), else a file."""
    if is_store_url(location):
        from policyauth.identity.pgstore import PgTokenStore

        return PgTokenStore(location, grace=grace)
    return TokenStore(location, grace=grace)


def _shared_cache(settings: Settings) -> SharedCache | None:
    """The Redis cache the settings ask for; the redis client is only needed then."""
    if settings.cache == "memory" or settings.cache_secret is None:
        return None
    from policyauth.identity.rediscache import SharedCache

    return SharedCache(
        settings.cache,
        settings.cache_secret,
        ttl=settings.cache_ttl_ms / 1000,
        negative_ttl=settings.negative_ttl_ms / 1000,
        provider_timeout=settings.timeout_ms / 1000,
    )


def _fingerprint(provider: ProviderPlan) -> str:
    """The provider's settings, hashed: a changed provider never reads another's entries."""
    fields = attrs.asdict(provider.spec, filter=lambda a, _v: a.name != "span")
    return hashlib.sha256(repr(fields).encode()).hexdigest()
