"""A Starlette app whose routes mirror raw.policy, with no policyauth in front of it.

Each handler answers with its own name, so a test that talks to the server over a raw socket
can tell which handler a hostile request target reached. The app echoes, in headers, the path
and raw path uvicorn handed it, which makes failures readable.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route


def _shown(text: str) -> str:
    """Printable ASCII for a response header, whatever the path held."""
    return text.encode("unicode_escape").decode("ascii")


def _answer(name: str) -> Callable[[Request], Awaitable[PlainTextResponse]]:
    async def handler(request: Request) -> PlainTextResponse:
        raw: bytes = request.scope.get("raw_path", b"")
        headers = {
            "X-Handler": name,
            "X-Scope-Path": _shown(request.scope["path"]),
            "X-Raw-Path": _shown(raw.decode("latin-1")),
        }
        return PlainTextResponse(name, headers=headers)

    return handler


app = Starlette(
    routes=[
        Route("/public", _answer("public")),
        Route("/public/{rest:path}", _answer("public")),
        Route("/admin", _answer("admin")),
        Route("/admin/{rest:path}", _answer("admin")),
    ]
)
