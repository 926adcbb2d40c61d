"""The embedding object: a Policy, an identity source, and `authorize`, sync or async.

One Engine per policy and process. It does no policy work of its own: the evaluator decides,
the identity source validates credentials; the engine only carries a request from one to the
other, so that every integration (ASGI, WSGI, the CLI) gets exactly the same decision.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Hashable, Iterable, Mapping
from time import perf_counter

from policyauth.compiler import Policy
from policyauth.decision import Decision
from policyauth.diagnostics import PolicyError
from policyauth.evaluator import Located, Pending, finish, locate, prepare
from policyauth.identity.remote import RemoteIdentitySource
from policyauth.identity.source import IdentityResult, IdentitySource, Invalid, Unavailable
from policyauth.loader import load
from policyauth.logline import DECISIONS, log_line
from policyauth.observe import METRICS, DecisionLog
from policyauth.recall import Recall
from policyauth.request import Rejection, normalize_headers

log = logging.getLogger("policyauth.engine")
_logging_decisions = DECISIONS.isEnabledFor  # the one switch: `policyauth.decisions` at INFO
_INFO = logging.INFO  # the level every decision line is logged at, read once
_LOCATED_SIZE = 4096  # recent (method, target) pairs whose canonical form and route are kept


HeadersIn = Mapping[str, str] | Iterable[tuple[str, str]] | Iterable[tuple[bytes, bytes]]


class Engine:
    """Authorizes requests against one policy.

    By default credentials are validated for real: bearer tokens by the provider's userinfo
    endpoint (through the identity cache), API tokens by their stores. `transport` replaces
    the HTTP transport of the providers' client (an httpx transport, for tests); `identities`
    replaces the whole identity source (tests and offline tools pass a StaticIdentitySource).
    Close the engine (or use it as a context manager) to release its HTTP connections.
    """

    def __init__(
        self,
        policy: Policy,
        transport: object | None = None,
        *,
        identities: IdentitySource | None = None,
        reload: bool = False,
        reload_interval: float = 1.0,
        cache_size: int | None = None,
    ) -> None:
        # `cache_size`: bytes the identity cache may hold (identity/cache.py says how counted).
        remote = (
            RemoteIdentitySource(policy, transport, cache_size=cache_size)
            if identities is None
            else None
        )
        self._given = identities
        self._state = _State(policy, remote, identities, _decision_log(policy))
        self._retired: list[RemoteIdentitySource] = []
        self._reload_lock = threading.Lock()
        self._watcher: _Watcher | None = None
        if reload:
            if policy.origin is None:
                raise ValueError("reload=True needs a policy loaded from a file (policyauth.load)")
            self._watcher = _Watcher(self, policy.origin.path, reload_interval)

    @property
    def policy(self) -> Policy:
        """The policy in force now (a reload may replace it)."""
        return self._state.policy

    def reload(self) -> bool:
        """Load the policy's file again and put it in force; False (the old policy stays, its
        diagnostics logged) when the file does not load.

        The new policy is compiled here, off the request path, and swapped in with one
        assignment: a decision reads the state once, so it uses one policy, old or new, from
        start to end. Reloads are serialized, so a storm of them ends with the file's last
        contents in force."""
        origin = self._state.policy.origin
        if origin is None:
            raise ValueError("this policy was not loaded from a file (policyauth.load)")
        with self._reload_lock:
            try:
                policy = load(origin.path, env=origin.env)
            except PolicyError as exc:
                METRICS.reload("failure")
                log.error("the policy %s did not reload; the old one stays:\n%s", origin.path, exc)
                return False
            old = self._state
            remote = None
            if old.remote is not None:
                remote = old.remote.successor(policy)
                if not remote.shares_client(old.remote):
                    self._retired.append(old.remote)
            decisions = old.decisions
            if policy.settings.decision_log != old.policy.settings.decision_log:
                decisions = _decision_log(policy)
            self._state = _State(policy, remote, self._given, decisions)
            if old.decisions is not None and old.decisions is not decisions:
                old.decisions.close()
            METRICS.reload("success")
        log.info("reloaded the policy %s", origin.path)
        return True

    def remembered(
        self, method: str, target: str | Rejection, headers: HeadersIn = ()
    ) -> Decision | None:
        """The decision `authorize` would make, when this engine remembers the request (a
        repeated request on a cached identity, policyauth/recall.py): answered at once, with
        no coroutine to create; else None, and `authorize` decides. For integrations, where
        that coroutine is a good part of the cost of a remembered decision."""
        state = self._state
        if type(target) is not str:  # a Rejection: decided by `authorize`
            return None
        if state.decisions is not None:  # the decision log wants the time: the usual way
            decision = state.remembered(method, target, headers)[1]
        else:  # the same, without the clock, straight from `Recall.find`
            decision = state.recall.find(method, target, headers)[1]
        if decision is not None and _logging_decisions(_INFO):
            log_line(method, target, state.locate(method, target), decision)
        return decision

    async def authorize(
        self, method: str, target: str | Rejection, headers: HeadersIn = ()
    ) -> Decision:
        """Decide one request; `target` is the raw request target (`/a/b?x=1`), or the
        Rejection an integration found in it (a mount that does not match), answered 400."""
        state = self._state  # read once: this decision uses one policy, whatever reloads
        key, decision, started = state.remembered(method, target, headers)
        if decision is None:
            step = state.begin(method, target, headers, key, started)
            # A decision made without an identity costs no second coroutine.
            decision = (
                await self._identify(state, method, target, step, key, started)
                if isinstance(step, Pending)
                else step
            )
        if _logging_decisions(_INFO):
            log_line(method, target, state.locate(method, target), decision)
        return decision

    def authorize_sync(
        self, method: str, target: str | Rejection, headers: HeadersIn = ()
    ) -> Decision:
        """The same decision as `authorize`, for synchronous servers (WSGI)."""
        state = self._state
        key, decision, started = state.remembered(method, target, headers)
        if decision is None:
            step = state.begin(method, target, headers, key, started)
            decision = (
                self._identify_sync(state, method, target, step, key, started)
                if isinstance(step, Pending)
                else step
            )
        if _logging_decisions(_INFO):
            log_line(method, target, state.locate(method, target), decision)
        return decision

    async def _identify(
        self,
        state: _State,
        method: str,
        target: str | Rejection,
        step: Pending,
        key: Hashable | None,
        started: float,
    ) -> Decision:
        """The rest of a decision that needs an identity: each authenticator in turn."""
        policy = state.policy
        outcome: IdentityResult | None = None
        at_hand = state.at_hand
        cached = True
        for name in step.authenticators:
            try:
                result = at_hand(name, step.credential) if at_hand is not None else None
                if result is None:
                    cached = False
                    result = await state.identities.identify(name, step.credential)
            except Exception:
                result = _failed(name)
            if not isinstance(result, Invalid):
                decision = finish(policy, step, name, result)
                break
            outcome = outcome or result
        else:
            assert outcome is not None  # `authenticators` is never empty
            decision = finish(policy, step, step.authenticators[0], outcome)
        return state.end(method, target, step, key, decision, result, cached, started)

    def _identify_sync(
        self,
        state: _State,
        method: str,
        target: str | Rejection,
        step: Pending,
        key: Hashable | None,
        started: float,
    ) -> Decision:
        """`_identify` for synchronous servers: the identity source's sync call."""
        policy = state.policy
        outcome: IdentityResult | None = None
        at_hand = state.at_hand
        cached = True
        for name in step.authenticators:
            try:
                result = at_hand(name, step.credential) if at_hand is not None else None
                if result is None:
                    cached = False
                    result = state.identities.identify_sync(name, step.credential)
            except Exception:
                result = _failed(name)
            if not isinstance(result, Invalid):
                decision = finish(policy, step, name, result)
                break
            outcome = outcome or result
        else:
            assert outcome is not None  # `authenticators` is never empty
            decision = finish(policy, step, step.authenticators[0], outcome)
        return state.end(method, target, step, key, decision, result, cached, started)

    def record(self, method: str, target: str, decision: Decision, seconds: float) -> None:
        """Report a decision an integration made without the engine (`policyauth serve`
        refusing an untrusted peer) to the decision log and the metrics, like any other."""
        state = self._state
        if state.observed:
            state.seen(method, target, decision, None, perf_counter() - seconds)

    def close(self) -> None:
        self._stop()
        for remote in self._remotes():
            remote.close()

    async def aclose(self) -> None:
        self._stop()
        for remote in self._remotes():
            await remote.aclose()

    def _stop(self) -> None:
        """Stop watching the file, and write out the decisions still queued."""
        if self._watcher is not None:
            self._watcher.stop()
        if self._state.decisions is not None:
            self._state.decisions.close()
        METRICS.flush()  # this process's last counts, before it may exit

    def _remotes(self) -> list[RemoteIdentitySource]:
        """The sources whose HTTP clients are still open: the current one, and those retired
        by reloads that changed the client (requests may have been using them)."""
        current = self._state.remote
        return self._retired + ([current] if current is not None else [])

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class _State:
    """One generation of an engine: a policy and everything remembered from it.

    Located targets belong to the plan they were located in, and the identity source to the
    policy whose providers it asks; a reload replaces the whole state at once."""

    __slots__ = (
        "_located",
        "at_hand",
        "decisions",
        "identities",
        "observed",
        "policy",
        "recall",
        "remote",
    )

    def __init__(
        self,
        policy: Policy,
        remote: RemoteIdentitySource | None,
        given: IdentitySource | None,
        decisions: DecisionLog | None,
    ) -> None:
        self.policy = policy
        self.remote = remote
        self.decisions = decisions
        # Whether anyone wants to hear of decisions: metrics (prometheus_client installed)
        # or a decision log. Without either, a decision costs no clock read.
        self.observed = METRICS.enabled or decisions is not None
        self.identities: IdentitySource = given if given is not None else remote  # type: ignore[assignment]
        # Sources that can answer some credentials at once (a cache hit) say so with
        # `identify_now`; `authorize` then awaits `identify` only when that is None.
        self.at_hand = getattr(self.identities, "identify_now", None)
        self._located: dict[tuple[str, str], Located] = {}
        # Requests seen lately, straight to their decision (policyauth/recall.py says when).
        self.recall = Recall(self.identities)

    def begin(
        self,
        method: str,
        target: str | Rejection,
        headers: HeadersIn,
        key: Hashable | None,
        started: float,
    ) -> Decision | Pending:
        """The part of a decision before any identity, shared by the async and sync paths
        when nothing was remembered (`Recall.find`): a decision made without an identity,
        or the step that needs one."""
        normalized = normalize_headers(headers)
        step = prepare(self.policy, method, target, normalized, self.locate(method, target))
        if not isinstance(step, Pending):
            if key is not None:
                self.recall.remember(key, step)
            if self.observed:
                self.seen(method, target, step, None, started)
        return step

    def remembered(
        self, method: str, target: str | Rejection, headers: HeadersIn
    ) -> tuple[Hashable | None, Decision | None, float]:
        """The first step of every decision, shared by both paths: the recall key (None: not
        rememberable), the remembered decision if any (`Recall.find` counts it in the
        metrics; the decision log is written here), and the start time for the metrics."""
        started = perf_counter() if self.observed else 0.0
        if not isinstance(target, str):
            return None, None, started
        key, decision, result = self.recall.find(method, target, headers)
        if decision is not None and self.decisions is not None:
            cached = None if result is None else True
            self.decisions.record(method, target, decision, cached, perf_counter() - started)
        return key, decision, started

    def end(
        self,
        method: str,
        target: str | Rejection,
        step: Pending,
        key: Hashable | None,
        decision: Decision,
        result: IdentityResult | None,
        cached: bool,
        started: float,
    ) -> Decision:
        """The part after the identity, shared by both paths: remember a decision that rests
        on one authenticator's cached answer, and report it."""
        if key is not None and len(step.authenticators) == 1:
            self.recall.remember(key, decision, step.authenticators[0], step.credential, result)
        if self.observed:
            self.seen(method, target, decision, cached, started)
        return decision

    def seen(
        self,
        method: str,
        target: str | Rejection,
        decision: Decision,
        cached: bool | None,
        started: float,
    ) -> Decision:
        """Report one decision to the metrics and the decision log (which formats and writes
        it on its own thread); `cached`: whether the identity was at hand without a call."""
        seconds = perf_counter() - started
        METRICS.decision(decision.status, decision.reason, seconds)
        if self.decisions is not None:
            # An integration's own Rejection (a mount that does not match) carries no target.
            raw = target if isinstance(target, str) else "-"
            self.decisions.record(method, raw, decision, cached, seconds)
        return decision

    def locate(self, method: str, target: str | Rejection) -> Located:
        """`locate`, remembered for recent targets: canonicalizing a target and finding its
        route are pure, and most traffic repeats its targets. Bounded: the memory is emptied
        when full, so a flood of distinct targets costs no more than no memory at all.

        Only targets without a query are remembered: a query may carry a token
        (`access_token=`, refused with 400), and no raw token is ever kept."""
        if isinstance(target, Rejection):
            return target
        if "?" in target:
            return locate(self.policy, method, target)
        key = (method, target)
        found = self._located.get(key)
        if found is None:
            found = locate(self.policy, method, target)
            if len(self._located) >= _LOCATED_SIZE:
                self._located.clear()
            self._located[key] = found
        return found


class _Watcher:
    """Reloads an engine when its policy file changes: a stat of the file every `interval`
    seconds, in a daemon thread, so the request path never touches the file system."""

    def __init__(self, engine: Engine, path: str, interval: float) -> None:
        self._engine = engine
        self._path = path
        self._interval = interval
        self._stopped = threading.Event()
        self._seen = self._signature()
        self._thread = threading.Thread(target=self._run, name="policyauth-reload", daemon=True)
        self._thread.start()

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            info = os.stat(self._path)
        except OSError:
            return None
        return (info.st_mtime_ns, info.st_size, info.st_ino)

    def _run(self) -> None:
        """A change is acted on once the file has stayed the same for one more interval: a
        file being written in several steps is not loaded half-way."""
        changed: tuple[int, int, int] | None = None
        while not self._stopped.wait(self._interval):
            seen = self._signature()
            if seen is None or seen == self._seen:
                changed = None
            elif seen != changed:
                changed = seen
            else:
                self._seen, changed = seen, None  # a broken file is tried once, not every time
                try:
                    self._engine.reload()
                except Exception:
                    log.exception("reloading the policy %s failed", self._path)

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)


def _decision_log(policy: Policy) -> DecisionLog | None:
    destination = policy.settings.decision_log
    return None if destination == "off" else DecisionLog(destination)


def _failed(authenticator: str) -> Unavailable:
    """An identity source that raised decides nothing: the request is refused with 503."""
    log.exception("the identity source failed for `%s`", authenticator)
    return Unavailable("the identity source failed")
