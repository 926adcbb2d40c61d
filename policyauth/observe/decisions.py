"""Decision logs: one JSON object per line per decision, written off the request path.

`settings { decision_log = "off" | "stderr" | "<file>" }`. The request path only puts a small
tuple on a bounded queue; a writer thread canonicalizes the path, formats the line and writes
it. Fields (production.md section 4): `time`, `method`, `path` (canonical; never the query),
`status`, `reason`, `route` and `rule` (`file:line`), `provider`, `user`, `cached`,
`duration_us`.

What never reaches the log: a token, an Authorization or Cookie header, a query string. The
queue receives the request target already cut at `?`, and nothing of the headers; the
decision's free-text message (which may quote the request) is not logged either.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import sys
import threading
import time
from datetime import UTC, datetime
from typing import IO

from policyauth.decision import Decision
from policyauth.diagnostics import Span
from policyauth.request import Rejection, canonical_target

log = logging.getLogger("policyauth.decisions")
QUEUE_SIZE = 10_000  # decisions waiting for the writer; beyond that they are dropped, counted

_Entry = tuple[float, str, str, Decision, bool | None, int]
_STOP = object()


class DecisionLog:
    """A decision log writing to `destination` ("stderr" or a file path, appended to)."""

    def __init__(self, destination: str) -> None:
        self.destination = destination
        self._queue: queue.Queue[_Entry | object] = queue.Queue(QUEUE_SIZE)
        self._dropped = 0
        self._stream: IO[str] | None = None
        self._thread = threading.Thread(
            target=self._run, name="policyauth-decision-log", daemon=True
        )
        self._thread.start()

    def record(
        self, method: str, target: str, decision: Decision, cached: bool | None, seconds: float
    ) -> None:
        """Called on the request path: no formatting, no I/O, never blocks."""
        path = target.partition("?")[0]  # the query never leaves the request path
        try:
            self._queue.put_nowait(
                (time.time(), method, path, decision, cached, int(seconds * 1e6))
            )
        except queue.Full:
            self._dropped += 1

    def close(self) -> None:
        """Write what is queued, then stop the writer (once; closing again does nothing)."""
        if not self._thread.is_alive():
            return
        with contextlib.suppress(queue.Full):  # a writer stuck on its disk: give up waiting
            self._queue.put(_STOP, timeout=5)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            self._stream = (
                sys.stderr
                if self.destination == "stderr"
                else open(self.destination, "a", encoding="utf-8")  # noqa: SIM115 (kept open)
            )
        except OSError as exc:
            log.error("cannot open the decision log %s: %s", self.destination, exc.strerror)
            self._stream = None
        while True:
            entry = self._queue.get()
            if entry is _STOP:
                break
            if self._stream is None:
                continue
            try:
                self._stream.write(line(entry) + "\n")  # type: ignore[arg-type]
                if self._queue.empty():
                    self._stream.flush()
                    self._report_drops()
            except (OSError, ValueError) as exc:
                log.error("cannot write the decision log %s: %s", self.destination, exc)
        if self._stream is not None:
            self._stream.flush()
            if self._stream is not sys.stderr:
                self._stream.close()

    def _report_drops(self) -> None:
        if self._dropped:
            dropped, self._dropped = self._dropped, 0
            log.warning("the decision log fell behind: %d decisions were not logged", dropped)


def line(entry: _Entry) -> str:
    """One decision as a JSON line."""
    when, method, raw_path, decision, cached, duration_us = entry
    request = canonical_target(method, raw_path)
    principal = decision.principal
    return json.dumps(
        {
            "time": datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds"),
            "method": method if method.isascii() and method.isprintable() else None,
            "path": None if isinstance(request, Rejection) else request.path,
            "status": decision.status,
            "reason": str(decision.reason),
            "route": _where(decision.route),
            "rule": _where(decision.rule),
            "provider": principal.provider if principal else None,
            "user": principal.username if principal else None,
            "cached": cached,
            "duration_us": duration_us,
        },
        ensure_ascii=True,
    )


def _where(span: Span | None) -> str | None:
    return None if span is None else f"{span.file}:{span.line}"
