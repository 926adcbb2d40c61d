"""Remembered decisions (policyauth/recall.py) answer exactly what the full path answers.

The engine's full path runs whenever the headers come in a shape the remembered decisions do
not read (an iterator): so one engine, asked the same request both ways, must give the same
Decision, whatever happened in between (identities expiring, the provider changing its mind,
API tokens revoked, hostile targets, duplicate or malformed Authorization headers).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import policyauth
import policyauth.engine
from policyauth import evaluator
from policyauth.decision import Decision, Reason
from policyauth.identity.remote import RemoteIdentitySource
from policyauth.identity.tokens import create, revoke
from policyauth.recall import NAMES, SIZE
from policyauth.request import Rejection

HERE = Path(__file__).resolve().parent
CANONICAL = json.loads((HERE.parent / "request" / "cases" / "canonical.json").read_text())
# The path corpus of the canonicalizer's tests (hostile and benign raw targets), and targets
# that reach each route of the policy below.
TARGETS = [
    *sorted({case["target"] for case in CANONICAL}),
    "/admin/x",
    "/admin/x/",
    "/admin/x?q=1",
    "/admin/x?access_token=abc",
    "/admin/x?_method=DELETE",
    "/users/ann",
    "/users/api",
    "/public/a",
    "/nowhere",
    "*",
    "//admin/x",
]
METHODS = ["GET", "POST", "HEAD", "PUT", "get", "DELETE", "OPTIONS", "G\u00e9T"]
POLICY = """
settings {
  realm        = "recall"
  cache_ttl    = 60s
  negative_ttl = 10s
}

provider corp {
  userinfo = "https://sso.example.com/userinfo"
  username = $.preferred_username
  groups   = $.groups[*]
}

tokens automation {
  store = "automation.tokens"
}

route GET /public/** {
  public
}

route GET, POST /admin/** {
  auth corp
  deny  if "suspended" in groups
  allow if "admins" in groups
}

route GET /users/{id} {
  auth corp, automation
  allow if param.id == username
  allow if "admins" in groups
}
"""
USERS = {
    "t-ann": {"preferred_username": "ann", "groups": ["admins"]},
    "t-bob": {"preferred_username": "bob", "groups": ["admins", "suspended"]},
    "t-cat": {"preferred_username": "cat", "groups": []},
}
# Authorization values by name: API tokens are filled in when the store is made.
CREDENTIALS = {
    "ann": "Bearer t-ann",
    "bob": "Bearer t-bob",
    "cat": "Bearer t-cat",
    "eve": "Bearer t-eve",  # the provider refuses it: a negative cache entry
    "lower": "bearer t-ann",
    "spaced": "Bearer  t-ann",
    "junk": "Bearer t-ann!",
    "digest": "Digest x",
    "empty": "",
    "basic": "Basic YWxpY2U6c2VjcmV0",
}
EXTRA = [
    ("accept", "*/*"),
    ("host", "api.example.com"),
    ("x-http-method-override", "DELETE"),
    ("X-Method-Override", "GET"),
    ("x_forwarded_for", "10.0.0.1"),
    ("x_original_uri", "/public/a"),
]


class Clock:
    """The identity cache's monotonic clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class World:
    """An engine over a real identity source: the provider is an httpx mock transport whose
    answers the test changes, API tokens live in a real store file."""

    def __init__(self, folder: Path) -> None:
        (folder / "recall.policy").write_text(POLICY)
        store = folder / "automation.tokens"
        self.store = store
        api, _ = create(store, "api", ["admins"])
        doomed, _ = create(store, "gone", ["admins"])
        self.credentials = {**CREDENTIALS, "api": f"Bearer {api}", "doomed": f"Bearer {doomed}"}
        self.doomed = doomed
        self.users: dict[str, dict[str, Any]] = {k: dict(v) for k, v in USERS.items()}
        self.calls = 0
        self.clock = Clock()
        policy = policyauth.load(folder / "recall.policy")
        source = RemoteIdentitySource(policy, httpx.MockTransport(self._userinfo), clock=self.clock)
        for tokens in source._stores.values():  # a revocation is seen at the next request
            tokens._interval = timedelta(0)
        self.source = source
        self.engine = policyauth.Engine(policy, identities=source)

    def _userinfo(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        document = self.users.get(token)
        return httpx.Response(200, json=document) if document else httpx.Response(401)

    def headers(self, names: list[str], spelled: str, extra: list[int], raw: bool) -> list[Any]:
        pairs = [EXTRA[i] for i in extra] + [(spelled, self.credentials[n]) for n in names]
        if raw:  # ASGI's shape
            return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in pairs]
        return pairs

    def both(self, method: str, target: str, headers: list[Any], run: Any) -> None:
        """The request as it comes, then on the full path, then as it comes again (now
        likely remembered): one Decision, three times."""
        first = run(method, target, headers)
        full = run(method, target, iter(headers))
        again = run(method, target, headers)
        assert first == full == again, (method, target, first, full, again)


def _sync(world: World) -> Any:
    return world.engine.authorize_sync


def _async(world: World) -> Any:
    return lambda m, t, h: asyncio.run(world.engine.authorize(m, t, h))


# Requests repeat (that is what is remembered): each example draws a few (method, target,
# credentials) and sends them again and again, with other headers, spellings and shapes.
requests = st.tuples(
    st.one_of(st.sampled_from(["GET", "POST"]), st.sampled_from(METHODS)),
    st.one_of(
        st.sampled_from(["/admin/x", "/users/ann", "/users/api", "/users/gone"]),
        st.sampled_from(TARGETS),
    ),
    st.one_of(
        st.lists(st.sampled_from(["ann", "bob", "cat", "eve", "api", "doomed"]), max_size=1),
        st.lists(st.sampled_from([*CREDENTIALS, "api", "doomed"]), max_size=2),
    ),
)
request_steps = st.tuples(
    st.just("request"),
    st.integers(0, 3),
    st.sampled_from(["authorization", "Authorization", "AUTHORIZATION"]),
    st.one_of(st.just([]), st.lists(st.integers(0, len(EXTRA) - 1), max_size=2)),
    st.booleans(),
)
other_steps = st.one_of(
    st.tuples(st.just("advance"), st.sampled_from([1.0, 9.5, 30.0, 61.0])),
    st.tuples(st.just("provider-refuses"), st.sampled_from(sorted(USERS))),
    st.tuples(st.just("provider-regroups"), st.sampled_from(sorted(USERS))),
    st.tuples(st.just("revoke")),
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@example(  # an identity outlives its cache_ttl while the provider stops knowing its token
    pool=[("GET", "/admin/x", ["ann"])] * 4,
    steps=[
        ("request", 0, "authorization", [], False),
        ("provider-refuses", "t-ann"),
        ("advance", 61.0),
        ("request", 0, "authorization", [], True),
    ],
    asynchronous=False,
)
@example(  # the same request with and without a header that refuses it
    pool=[("GET", "/admin/x", ["ann"])] * 4,
    steps=[("request", 0, "authorization", [2], False), ("request", 0, "authorization", [], True)],
    asynchronous=True,
)
@given(
    pool=st.lists(requests, min_size=4, max_size=4),
    steps=st.lists(st.one_of(request_steps, request_steps, other_steps), min_size=1, max_size=30),
    asynchronous=st.booleans(),
)
def test_remembered_and_full_path_decide_alike(
    tmp_path_factory: pytest.TempPathFactory,
    pool: list[tuple[str, str, list[str]]],
    steps: list[tuple[Any, ...]],
    asynchronous: bool,
) -> None:
    world = World(tmp_path_factory.mktemp("recall"))
    run = _async(world) if asynchronous else _sync(world)
    revoked = False
    for step in steps:
        kind = step[0]
        if kind == "request":
            _, index, spelled, extra, raw = step
            method, target, names = pool[index]
            world.both(method, target, world.headers(names, spelled, extra, raw), run)
        elif kind == "advance":
            world.clock.now += step[1]
        elif kind == "provider-refuses":
            world.users.pop(step[1], None)
        elif kind == "provider-regroups":
            world.users[step[1]] = {"preferred_username": step[1][2:], "groups": ["suspended"]}
        elif kind == "revoke" and not revoked:
            revoke(world.store, world.doomed)
            revoked = True


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    made = World(tmp_path)
    yield made
    made.engine.close()


def _admin(world: World, name: str = "ann") -> Decision:
    return world.engine.authorize_sync(
        "GET", "/admin/x", [("authorization", world.credentials[name])]
    )


def test_a_repeated_request_skips_the_full_path(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepared: list[str] = []
    real = evaluator.prepare

    def counting(*args: Any) -> Any:
        prepared.append(args[2])
        return real(*args)

    monkeypatch.setattr(policyauth.engine, "prepare", counting)
    first = _admin(world)
    second = _admin(world)
    assert (second.status, second.reason, second.principal) == (
        200,
        Reason.ALLOWED,
        first.principal,
    )
    assert second is first
    assert prepared == ["/admin/x"]  # the second request was answered from memory
    assert world.calls == 1


def test_an_expired_identity_is_asked_again(world: World) -> None:
    assert _admin(world).status == 200
    world.users.pop("t-ann")  # the provider no longer knows the token
    world.clock.now += 30
    assert _admin(world).status == 200  # within cache_ttl: the cached identity still holds
    world.clock.now += 31
    expired = _admin(world)
    assert (expired.status, expired.reason) == (401, Reason.INVALID_TOKEN)
    assert expired.headers[0][1] == 'Bearer realm="recall", error="invalid_token"'
    assert world.calls == 2


def test_an_identity_the_cache_lets_go_of_is_not_answered_from_memory(world: World) -> None:
    cache = world.engine._state.identities._cache  # type: ignore[attr-defined]
    cache._max_entries = 1  # room for one identity: the next one evicts it
    assert _admin(world).status == 200
    (held,) = cache._entries.values()  # the cache's entry, which ann's remembered decision holds
    assert _admin(world, "bob").status == 403  # bob is suspended; his identity evicts ann's
    assert held[1] is None  # let go of: nothing of ann's identity is kept alive by the memory
    world.users.pop("t-ann")  # so the next request must ask the provider
    gone = _admin(world)
    assert (gone.status, gone.reason) == (401, Reason.INVALID_TOKEN)
    assert world.calls == 3


def test_an_identity_answered_from_memory_stays_recent_in_the_cache(world: World) -> None:
    cache = world.engine._state.identities._cache  # type: ignore[attr-defined]
    cache._max_entries = 2
    assert (_admin(world).status, _admin(world, "bob").status) == (200, 403)
    assert _admin(world).status == 200  # answered from memory: ann is now the most recent
    assert world.calls == 2
    assert _admin(world, "cat").status == 403  # evicts the least recent: bob, not ann
    assert _admin(world).status == 200
    assert world.calls == 3
    assert _admin(world, "bob").status == 403
    assert world.calls == 4


def test_an_invalid_token_is_remembered_for_the_negative_ttl_only(world: World) -> None:
    assert _admin(world, "eve").status == 401
    world.users["t-eve"] = {"preferred_username": "eve", "groups": ["admins"]}
    world.clock.now += 9
    assert _admin(world, "eve").reason is Reason.INVALID_TOKEN
    world.clock.now += 2
    now_valid = _admin(world, "eve")
    assert (now_valid.status, now_valid.reason, now_valid.principal.username) == (  # type: ignore[union-attr]
        200,
        Reason.ALLOWED,
        "eve",
    )


def test_a_revoked_api_token_is_refused_at_once(world: World) -> None:
    request = ("GET", "/users/gone", [("authorization", world.credentials["doomed"])])
    assert world.engine.authorize_sync(*request).status == 200
    assert world.engine.authorize_sync(*request).status == 200
    revoke(world.store, world.doomed)
    refused = world.engine.authorize_sync(*request)
    assert (refused.status, refused.reason, refused.message) == (
        401,
        Reason.INVALID_TOKEN,
        "token revoked",
    )


def test_an_unavailable_provider_is_never_remembered(world: World) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502)

    policy = world.engine.policy
    source = RemoteIdentitySource(policy, httpx.MockTransport(down), clock=world.clock)
    engine = policyauth.Engine(policy, identities=source)
    first = engine.authorize_sync("GET", "/admin/x", [("authorization", "Bearer t-ann")])
    assert (first.status, first.reason) == (503, Reason.PROVIDER_UNAVAILABLE)
    assert len(engine._state.recall) == 0
    engine.close()


def test_no_raw_token_or_target_is_kept(world: World) -> None:
    secret_target = "/admin/x?session=s3cr3t-query"
    for name in ("ann", "eve", "junk", "basic"):
        world.engine.authorize_sync("GET", secret_target, [("authorization", CREDENTIALS[name])])
    recall = world.engine._state.recall
    assert len(recall) == 4
    kept = repr(recall._entries).encode()  # keys and values, bytes shown as they are
    for secret in (b"t-ann", b"t-eve", b"YWxpY2U6c2VjcmV0", b"s3cr3t", b"session"):
        assert secret not in kept


def test_memory_is_bounded(world: World) -> None:
    for number in range(SIZE + 50):
        world.engine.authorize_sync("GET", f"/public/{number}", ())
    assert len(world.engine._state.recall) == SIZE
    latest = world.engine.authorize_sync("GET", f"/public/{SIZE + 49}", ())
    assert (latest.status, latest.reason, latest.message) == (200, Reason.ALLOWED, "public route")


def test_a_reload_forgets_every_remembered_decision(tmp_path: Path) -> None:
    path = tmp_path / "reload.policy"
    path.write_text("route GET /a {\n  public\n}\n")
    engine = policyauth.Engine(
        policyauth.load(path), identities=policyauth.StaticIdentitySource(policyauth.load(path), {})
    )
    assert engine.authorize_sync("GET", "/a", ()).status == 200
    path.write_text("route GET /b {\n  public\n}\n")
    assert engine.reload()
    gone = engine.authorize_sync("GET", "/a", ())
    assert (gone.status, gone.reason, gone.message) == (
        403,
        Reason.NO_ROUTE,
        "no route matches GET /a",
    )
    engine.close()


def test_requests_with_an_override_or_underscore_header_are_not_remembered(world: World) -> None:
    for extra in (("x-http-method-override", "DELETE"), ("x_forwarded_for", "1.2.3.4")):
        refused = world.engine.authorize_sync(
            "GET", "/admin/x", [("authorization", CREDENTIALS["ann"]), extra]
        )
        assert (refused.status, refused.reason) == (400, Reason.MALFORMED_REQUEST)
    assert len(world.engine._state.recall) == 0


def test_a_name_holding_a_nul_is_not_read_as_two_names(world: World) -> None:
    """Names are judged one by one, as given: a name that holds a NUL is not the two names it
    looks like once split (an earlier version judged lists of names joined with NUL)."""
    two = [("authorization", CREDENTIALS["ann"]), ("x", "1")]
    assert _admin(world).status == 200
    assert world.engine.authorize_sync("GET", "/admin/x", two).status == 200
    assert world.engine.authorize_sync("GET", "/admin/x", two).status == 200
    one = [("authorization\0x", CREDENTIALS["ann"])]
    refused = world.engine.authorize_sync("GET", "/admin/x", one)
    assert (refused.status, refused.reason) == (401, Reason.NO_CREDENTIALS)


def test_header_names_are_judged_within_bounds(world: World) -> None:
    """Each new name is judged once and kept, up to NAMES (then the table starts afresh); a
    request with too many names, an overlong name or a pair that is not a pair is not looked
    up, and the full path decides it as it always does."""
    recall = world.engine._state.recall
    ann = ("authorization", CREDENTIALS["ann"])
    many = [*[(f"x-{i}", "1") for i in range(200)], ann]
    overlong = [("x" * 300, "1"), ann]
    for headers in (many, overlong, [("x-new", "1"), "junk"], [("x-new", "1"), ("x-new", 1, 2)]):
        assert recall.find("GET", "/admin/x", headers) == (None, None, None), headers
    for headers in (many, overlong):
        world.both("GET", "/admin/x", headers, _sync(world))
        assert world.engine.authorize_sync("GET", "/admin/x", headers).status == 200
    for batch in range(12):
        fresh = [*[(f"y-{batch}-{i}", "1") for i in range(100)], ann]
        assert recall.find("GET", "/admin/x", fresh)[0] is not None
        assert len(recall._verdicts) <= NAMES
    assert world.engine.authorize_sync("GET", "/admin/x", [ann]).status == 200
    assert recall.find("GET", "/admin/x", [ann])[1] is not None  # remembered after it all


def test_a_value_as_text_and_as_bytes_never_share_a_key(world: World) -> None:
    """ASGI's bytes are read as latin-1, text as it is: b"\xc3\xa9" and "\xe9" (whose UTF-8
    is b"\xc3\xa9") are different values, so they never share a key; equal values of one
    kind always do."""
    recall = world.engine._state.recall
    as_bytes = [(b"authorization", "Bearer \u00e9".encode())]
    as_text = [("authorization", "Bearer \u00e9")]
    keys = {recall.find("GET", "/admin/x", h)[0] for h in (as_bytes, as_text)}
    assert len(keys) == 2
    assert None not in keys
    again = recall.find("GET", "/admin/x", [("authorization", "Bearer \u00e9")])[0]
    assert again in keys


def test_remembered_answers_only_what_authorize_would(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """`Engine.remembered` (the integrations' call before `authorize`) answers a repeated
    request with the very Decision `authorize` made, logs it as `authorize` would, and
    answers None where nothing is remembered: a new request, a Rejection, a refused header."""
    headers = [(b"authorization", CREDENTIALS["ann"].encode())]
    assert world.engine.remembered("GET", "/admin/x", headers) is None
    made = asyncio.run(world.engine.authorize("GET", "/admin/x", headers))
    with caplog.at_level("INFO", logger="policyauth.decisions"):
        again = world.engine.remembered("GET", "/admin/x", headers)
    assert again is made
    assert (again.status, again.reason) == (200, Reason.ALLOWED)
    assert [r.getMessage() for r in caplog.records if r.name == "policyauth.decisions"]
    refused = [*headers, (b"x-http-method-override", b"DELETE")]
    assert world.engine.remembered("GET", "/admin/x", refused) is None
    mount = Rejection(400, "malformed_request", "a mount that does not match")
    assert world.engine.remembered("GET", mount, headers) is None
