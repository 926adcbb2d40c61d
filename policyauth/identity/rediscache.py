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

Redis down or slow (socket timeout well under the provider's): the caller goes on without it
(the in-process cache in front, direct provider calls), with one warning per outage, and tries
Redis again a second later. Redis failing never turns into an allow: it only costs calls.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import Callable

import redis
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from policyauth.identity.source import Identity, IdentityResult, Invalid, Unavailable

log = logging.getLogger("policyauth.identity")

RETRY_AFTER_OUTAGE = 1.0  # seconds without Redis after a failure, so requests do not all wait
MIN_SECRET_BYTES = 32


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
        self._timeout = min(0.25, provider_timeout / 4)
        self._redis = redis.Redis.from_url(
            url, socket_timeout=self._timeout, socket_connect_timeout=self._timeout
        )
        self._down_until = 0.0
        self._down = False
        self._state = threading.Lock()

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

    def _open(self, key: str, token: str, sealed: bytes) -> IdentityResult | None:
        """The result sealed for this key and token, None if forged, moved or expired."""
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
            return Unavailable(str(body["detail"]), body.get("retry"))
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
        try:
            result = self._resolve(key, token, fetch)
        except redis.RedisError as error:
            self._failed(error)
            return fetch()
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
                    message = pubsub.get_message(timeout=0.2)
                    if message is not None and isinstance(message.get("data"), bytes):
                        outcome = self._open(key, token, message["data"])
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
                self._share(key, token, lock, channel, result)
            except redis.RedisError as error:  # the answer stands: never a second call for it
                self._failed(error)
        return result

    def _share(self, key: str, token: str, lock: str, channel: str, result: IdentityResult) -> None:
        lifetime = self._lifetime(result)
        if lifetime > 0:
            sealed = self._seal(key, token, result, time.time() + lifetime)
            # Redis expiry never past the entry's (and so the token's) lifetime.
            self._redis.set(key, sealed, px=max(1, int(lifetime * 1000)))
        expires = time.time() + max(lifetime, 5.0)
        self._redis.publish(channel, self._seal(key, token, result, expires))
        self._redis.delete(lock)
