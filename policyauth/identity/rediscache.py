"""The shared identity cache on Redis: one provider call per token per TTL across processes.

The only module that imports `redis` (extra `redis`) and `cryptography`'s AES-GCM.

What Redis holds is useless without the token (production.md section 2):
- keys are HMAC-SHA256, under `cache_secret`, of the authenticator, a fingerprint of its
  settings and the token: one Redis serves several policies and rolling deploys, and a dump
  does not even tell which tokens are cached;
- values are AES-GCM under a key derived from the token, the Redis key as associated data
  (an entry cannot be moved under another key) and the absolute expiry inside (an old entry
  written back is refused once expired): no identity is readable, none can be forged.

One call per token across processes: a lock key (SET NX PX, its lifetime covering the whole
validation) elects the caller; the others wait on a pub/sub channel for its outcome
("unavailable" included, which is never stored), not by polling; a waiter whose holder died
(the lock vanished without a message) calls the provider itself.

Two clients of the official `redis` package: the sync one for `identify_sync` (WSGI, threads)
and `redis.asyncio` for `identify`, so that an event loop never gives a thread to a lookup.
The protocol is written out twice (`resolve`, `aresolve`) step for step; what is not I/O
(keys, sealing, lifetimes, the outage state) is shared.

Redis down or slow: every command has a socket timeout well under the provider's (ours, even
when the URL names another), and the client's own retries are off, said explicitly:
`redis.Redis(...)` in redis-py 6 and later retries a timed-out command ten times with backoff
(7 s a lookup against a Redis that accepts and never answers), and what `from_url` inherits of
that has changed between versions. The caller goes on without it (the in-process cache in
front, direct provider calls), with one warning per outage, and tries Redis again a second
later. Redis failing never turns into an allow: it only costs calls.

In front of Redis, each process keeps its own identity cache (cache.py): a hit never leaves
the process. An identity read from Redis carries the time its entry has left, and the
in-process copy lives no longer, so a revocation the provider sees is seen by every process
within `cache_ttl` of the provider call, as with the memory cache alone.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable

import redis
import redis.asyncio
import redis.asyncio.retry
import redis.backoff
import redis.retry
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from policyauth.identity.source import Identity, IdentityResult, Invalid, Unavailable

log = logging.getLogger("policyauth.identity")

RETRY_AFTER_OUTAGE = 1.0  # seconds without Redis after a failure, so requests do not all wait
MAX_REDIS_TIMEOUT = 0.25  # seconds per Redis command, at most a quarter of the provider timeout
# What a failing Redis raises: the client's own errors, and the socket's should one slip through.
REDIS_FAILED = (redis.RedisError, OSError)
WAIT_STEP = 0.2  # seconds a waiter listens before checking that the lock holder still lives
PUBLISHED_LIFETIME = 5.0  # seconds an outcome told to waiters (and never stored) stays valid


def _value_key(token: str) -> bytes:
    """The AES key of a token's entries: derived from the token, which Redis never sees."""
    return hmac.new(
        b"policyauth cache value", token.encode("utf-8", "backslashreplace"), hashlib.sha256
    ).digest()


class SharedCache:
    """Identities and refusals shared through one Redis, sealed under their tokens."""

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        ttl: float,
        negative_ttl: float,
        provider_timeout: float,
    ) -> None:
        self._secret = secret.encode()
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        # The whole validation: discovery, userinfo and audience check, each up to `timeout`.
        self._lock_ms = int((provider_timeout * 3 + 1) * 1000)
        self._url = url
        self._timeout = min(MAX_REDIS_TIMEOUT, provider_timeout / 4)
        self._redis = redis.Redis.from_url(
            url,
            socket_timeout=self._timeout,
            socket_connect_timeout=self._timeout,
            retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0),
        )
        self._bound(self._redis)
        # The asyncio client belongs to the event loop it was made in (its connections do).
        self._async: tuple[asyncio.AbstractEventLoop, redis.asyncio.Redis] | None = None
        self._down_until = 0.0
        self._down = False
        self._state = threading.Lock()

    def _bound(self, client: redis.Redis | redis.asyncio.Redis) -> None:
        """Our timeouts over the URL's: `from_url` lets `?socket_timeout=10` in the URL win
        over its arguments, and a Redis that stalls must never hold a lookup that long."""
        client.connection_pool.connection_kwargs.update(
            socket_timeout=self._timeout, socket_connect_timeout=self._timeout
        )

    def key(self, authenticator: str, fingerprint: str, token: str) -> str:
        mac = hmac.new(self._secret, digestmod=hashlib.sha256)
        mac.update(f"{authenticator}\0{fingerprint}\0".encode())
        mac.update(token.encode("utf-8", "backslashreplace"))
        return "policyauth:" + mac.hexdigest()

    # --- sealing -------------------------------------------------------------------------------

    def _seal(self, key: str, token: str, result: IdentityResult, expires: float) -> bytes:
        if isinstance(result, Identity):
            body: dict[str, object] = {"kind": "identity", "claims": dict(result.claims)}
        elif isinstance(result, Invalid):
            body = {"kind": "invalid", "detail": result.detail}
        else:
            body = {"kind": "unavailable", "detail": result.detail, "retry": result.retry_after}
        body["expires"] = expires
        nonce = os.urandom(12)
        plain = json.dumps(body, separators=(",", ":")).encode()
        return nonce + AESGCM(_value_key(token)).encrypt(nonce, plain, key.encode())

    def _open(
        self, key: str, token: str, sealed: bytes, *, told: bool = False
    ) -> IdentityResult | None:
        """The result sealed for this key and token, None if forged, moved or expired.

        "Unavailable" is only ever told to waiters (`told`), never stored: one found stored
        was written back by someone replaying a message, and is a miss."""
        try:
            plain = AESGCM(_value_key(token)).decrypt(sealed[:12], sealed[12:], key.encode())
            body = json.loads(plain)
            left = float(body["expires"]) - time.time()
            if left <= 0:
                return None
            if body["kind"] == "identity":
                return Identity(claims=body["claims"], lifetime=left)
            if body["kind"] == "invalid":
                return Invalid(str(body["detail"]))
            if body["kind"] == "unavailable" and told:
                return Unavailable(str(body["detail"]), body.get("retry"))
            return None
        except Exception:  # a forged or corrupt entry is a miss, never an identity
            return None

    # --- outage --------------------------------------------------------------------------------

    def _usable(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, error: Exception) -> None:
        with self._state:
            self._down_until = time.monotonic() + RETRY_AFTER_OUTAGE
            if not self._down:
                self._down = True
                log.warning(
                    "the Redis identity cache is unavailable (%s): "
                    "each process validates tokens on its own until it is back",
                    type(error).__name__,
                )

    def _working(self) -> None:
        # A failure while sharing an answer (already fetched, so not raised) keeps it down.
        if self._down and self._usable():
            with self._state:
                if self._down:
                    self._down = False
                    log.warning("the Redis identity cache is back")

    # --- the shared call -----------------------------------------------------------------------

    def _lifetime(self, result: IdentityResult) -> float:
        if isinstance(result, Identity):
            return self._ttl if result.lifetime is None else min(self._ttl, result.lifetime)
        if isinstance(result, Invalid):
            return self._negative_ttl
        return 0.0

    def resolve(self, key: str, token: str, fetch: Callable[[], IdentityResult]) -> IdentityResult:
        """The entry under `key`, else the outcome of the one caller fleet-wide (maybe us)."""
        if not self._usable():
            return fetch()
        fetched: list[IdentityResult] = []

        def once() -> IdentityResult:
            fetched.append(fetch())
            return fetched[0]

        try:
            result = self._resolve(key, token, once)
        except REDIS_FAILED as error:
            self._failed(error)
            # A failure after the provider answered (closing the subscription) costs no call.
            return fetched[0] if fetched else fetch()
        self._working()
        return result

    def _resolve(self, key: str, token: str, fetch: Callable[[], IdentityResult]) -> IdentityResult:
        lock, channel = key + ":lock", key + ":done"
        deadline = time.monotonic() + self._lock_ms / 1000 + 1
        with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:  # type: ignore[no-untyped-call]
            pubsub.subscribe(channel)  # before the lock: no outcome is missed in between
            while True:
                sealed = self._redis.get(key)
                if isinstance(sealed, bytes):
                    found = self._open(key, token, sealed)
                    if found is not None:
                        return found
                if self._redis.set(lock, b"1", nx=True, px=self._lock_ms):
                    return self._lead(key, token, lock, channel, fetch)
                # Someone else is calling: wait for its outcome, checking that it still lives.
                while time.monotonic() < deadline:
                    message = pubsub.get_message(timeout=WAIT_STEP)
                    if message is not None and isinstance(message.get("data"), bytes):
                        outcome = self._open(key, token, message["data"], told=True)
                        if outcome is not None:
                            return outcome
                    if not self._redis.exists(lock):
                        break  # done (the entry is read above) or its holder died: go again
                else:
                    return fetch()

    def _lead(
        self, key: str, token: str, lock: str, channel: str, fetch: Callable[[], IdentityResult]
    ) -> IdentityResult:
        result: IdentityResult = Unavailable("the shared provider call did not finish")
        try:
            result = fetch()
        finally:
            try:
                with self._redis.pipeline(transaction=False) as pipe:
                    self._share(pipe, key, token, lock, channel, result)
                    pipe.execute()
            except REDIS_FAILED as error:  # the answer stands: never a second call for it
                self._failed(error)
        return result

    def _share(
        self,
        pipe: redis.client.Pipeline | redis.asyncio.client.Pipeline,
        key: str,
        token: str,
        lock: str,
        channel: str,
        result: IdentityResult,
    ) -> None:
        """Queue the outcome on `pipe` (one round trip): stored when it may be, published to
        the waiters in any case, and the lock released."""
        lifetime = self._lifetime(result)
        if lifetime > 0:
            sealed = self._seal(key, token, result, time.time() + lifetime)
            # Redis expiry never past the entry's (and so the token's) lifetime.
            pipe.set(key, sealed, px=max(1, int(lifetime * 1000)))
        # What waiters are told is sealed too, with a short life: a copy of it written back
        # later (under the entry's key) is refused once that passes.
        expires = time.time() + (lifetime if lifetime > 0 else PUBLISHED_LIFETIME)
        pipe.publish(channel, self._seal(key, token, result, expires))
        pipe.delete(lock)

    # --- the shared call, on asyncio ------------------------------------------------------------

    def _async_client(self) -> redis.asyncio.Redis:
        loop = asyncio.get_running_loop()
        current = self._async
        if current is None or current[0] is not loop:
            client = redis.asyncio.Redis.from_url(
                self._url,
                socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout,
                retry=redis.asyncio.retry.Retry(redis.backoff.NoBackoff(), 0),
            )
            self._bound(client)
            current = self._async = (loop, client)
        return current[1]

    async def aresolve(
        self, key: str, token: str, fetch: Callable[[], Awaitable[IdentityResult]]
    ) -> IdentityResult:
        """`resolve` on the event loop: the same protocol through `redis.asyncio`."""
        if not self._usable():
            return await fetch()
        fetched: list[IdentityResult] = []

        async def once() -> IdentityResult:
            fetched.append(await fetch())
            return fetched[0]

        try:
            result = await self._aresolve(self._async_client(), key, token, once)
        except REDIS_FAILED as error:
            self._failed(error)
            return fetched[0] if fetched else await fetch()
        self._working()
        return result

    async def _aresolve(
        self,
        client: redis.asyncio.Redis,
        key: str,
        token: str,
        fetch: Callable[[], Awaitable[IdentityResult]],
    ) -> IdentityResult:
        lock, channel = key + ":lock", key + ":done"
        deadline = time.monotonic() + self._lock_ms / 1000 + 1
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(channel)  # before the lock: no outcome is missed in between
            while True:
                sealed = await client.get(key)
                if isinstance(sealed, bytes):
                    found = self._open(key, token, sealed)
                    if found is not None:
                        return found
                if await client.set(lock, b"1", nx=True, px=self._lock_ms):
                    return await self._alead(client, key, token, lock, channel, fetch)
                while time.monotonic() < deadline:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=WAIT_STEP
                    )
                    if message is not None and isinstance(message.get("data"), bytes):
                        outcome = self._open(key, token, message["data"], told=True)
                        if outcome is not None:
                            return outcome
                    if not await client.exists(lock):
                        break  # done (the entry is read above) or its holder died: go again
                else:
                    return await fetch()
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _alead(
        self,
        client: redis.asyncio.Redis,
        key: str,
        token: str,
        lock: str,
        channel: str,
        fetch: Callable[[], Awaitable[IdentityResult]],
    ) -> IdentityResult:
        result: IdentityResult = Unavailable("the shared provider call did not finish")
        try:
            result = await fetch()
        finally:
            try:
                async with client.pipeline(transaction=False) as pipe:
                    self._share(pipe, key, token, lock, channel, result)
                    await pipe.execute()
            except REDIS_FAILED as error:  # the answer stands: never a second call for it
                self._failed(error)
        return result

    # --- closing -------------------------------------------------------------------------------

    def close(self) -> None:
        self._redis.close()

    async def aclose(self) -> None:
        self._redis.close()
        current, self._async = self._async, None
        if current is not None and current[0] is asyncio.get_running_loop():
            await current[1].aclose()
