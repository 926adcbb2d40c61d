"""routed_target and the integrations' request_target: which raw path the policy judges.

The rule (issue 9, items 3 and 4): a mount is cut from the raw path only when the raw path
decodes to the mount followed by the path the application routes on; a raw path that decodes
to the routed path is judged whole (WSGI only: ASGI paths include their root_path); anything
else is a 400 that names the routed path. The real servers behind these cases are exercised in
tests/adapters/test_mounts.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from policyauth import asgi, wsgi
from policyauth.request import Rejection
from policyauth.request.mounts import routed_target


def _refused(found: str | Rejection) -> str:
    assert isinstance(found, Rejection), found
    assert (found.status, found.reason) == (400, "malformed_request")
    return found.detail


@pytest.mark.parametrize(
    ("raw", "routed", "mount", "judged"),
    [
        ("/a/b", b"/a/b", b"", "/a/b"),
        ("/m/a/b", b"/a/b", b"/m", "/a/b"),
        ("/m%6Fu/a", b"/a", b"/mou", "/a"),  # the mount matched through an escape
        ("/m/%61/b", b"/a/b", b"/m", "/%61/b"),  # the rest stays raw
        ("/m", b"", b"/m", "/"),  # the mount itself is the application's root
        ("/a/b", b"/a/b", b"/m", "/a/b"),  # ProxyFix: PATH_INFO whole, SCRIPT_NAME apart
        ("/%C3%A9/x", "/é/x".encode(), b"", "/%C3%A9/x"),
    ],
)
def test_what_is_judged(raw: str, routed: bytes, mount: bytes, judged: str) -> None:
    assert routed_target(raw, routed, mount) == judged


def test_a_raw_path_that_is_neither_is_refused_naming_the_routed_path() -> None:
    detail = _refused(routed_target("/x/a", b"/a", b"/m"))
    assert detail == (
        "the request path is not the path the application routes on, `/a` below the mount `/m`"
    )
    detail = _refused(routed_target("/x/a", b"/a", b""))
    assert detail == "the request path is not the path the application routes on, `/a`"


def test_the_canonicalizer_speaks_first_when_the_raw_path_is_malformed() -> None:
    assert _refused(routed_target("/x/%2e%2e/a", b"/a", b"/m")) == "dot segment `..` in the path"


def test_the_mount_part_is_held_to_the_same_rules() -> None:
    assert _refused(routed_target("/a%2Fb/x", b"/x", b"/a/b")) == "encoded `/` (%2F) in the path"
    assert _refused(routed_target("/a/../x", b"/x", b"/a/..")) == "dot segment `..` in the path"
    assert _refused(routed_target("/a/..", b"", b"/a/..")) == "dot segment `..` in the path"


def test_a_mount_that_ends_inside_a_segment_is_refused() -> None:
    """Django's ASGI handler cuts FORCE_SCRIPT_NAME `/api` from `/apiadmin/x` too."""
    detail = _refused(routed_target("/apiadmin/x", b"admin/x", b"/api", whole=False))
    assert detail.endswith("`admin/x` below the mount `/api`")


def test_without_whole_a_raw_path_missing_its_mount_is_refused() -> None:
    assert routed_target("/m/a", b"/a", b"/m", whole=False) == "/a"
    _refused(routed_target("/a", b"/a", b"/m", whole=False))
    assert routed_target("/a", b"/a", b"", whole=False) == "/a"


def _environ(raw: str, script: str, path_info: str) -> dict[str, Any]:
    return {"REQUEST_URI": raw, "SCRIPT_NAME": script, "PATH_INFO": path_info}


def test_wsgi_proxyfix_prefix_is_not_cut_from_a_whole_path_info() -> None:
    attack = "/reports/bob/reports/ci/q1"
    environ = _environ(attack + "?x=1", "/reports/bob", attack)
    assert wsgi.request_target(environ) == attack + "?x=1"
    assert wsgi.request_target(_environ("/mount/a?x=1", "/mount", "/a")) == "/a?x=1"
    _refused(wsgi.request_target(_environ("/other/a", "/mount", "/a")))


def _scope(raw: bytes | None, path: str, root: str = "") -> dict[str, Any]:
    scope: dict[str, Any] = {"type": "http", "path": path, "root_path": root, "query_string": b""}
    if raw is not None:
        scope["raw_path"] = raw
    return scope


def test_asgi_cuts_root_path_only_from_a_raw_path_that_is_path() -> None:
    assert asgi.request_target(_scope(b"/api/admin/x", "/api/admin/x", "/api")) == "/admin/x"
    assert asgi.request_target(_scope(b"/apix/admin", "/apix/admin", "/api")) == "/apix/admin"
    assert asgi.request_target(_scope(b"/api//admin", "/api//admin", "/api/")) == "/admin"
    assert asgi.request_target(_scope(None, "/api/é", "/api")) == "/%C3%A9"
    # root_path put in front of `path` but not of `raw_path`: something changed the path.
    shifted = _scope(b"/reports/bob/q1", "/reports/bob/reports/bob/q1", "/reports/bob")
    _refused(asgi.request_target(shifted))
    _refused(asgi.request_target(_scope(b"/a", "/b")))
