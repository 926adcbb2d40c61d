"""A process that uses token stores as the unprivileged user `nobody`, driven over stdin.

Root ignores permission bits, so a test of what an unreadable or foreign-owned store does must
run its reader (or writer) as another user, and CI runs as root. `setpriv`/`runuser` cannot
start this interpreter as `nobody` when it lives under /root (mode 0700, as with pyenv), so this
process is started by root and drops to `nobody` itself, with the same system calls `setpriv
--reuid --regid --clear-groups` makes (after which the kernel leaves it no capability). Python
imports modules lazily and `nobody` cannot read the standard library under /root either, so
before dropping it first runs everything it will be asked to do once, as root, on a scratch
store. It then checks that the drop took: a file only root may read must be refused to it.

Protocol: one JSON object per line on stdin, one JSON answer per line on stdout.
- `{"op": "load", "policy": PATH}`: build an Engine for the policy (its stores are read now);
- `{"op": "decide", "token": TOKEN}`: `GET /x` with `Authorization: Bearer TOKEN`, answered
  with the decision's status, reason and message;
- `{"op": "cli", "argv": [...]}`: run `policyauth ARGV...` in this process, answered with its
  exit code, stdout and stderr.
The first line on stdout is `{"ready": [uid, gid]}`, once the drop is done. The only argument
is the path of a file only root may read.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pwd
import sys
import tempfile
from pathlib import Path
from typing import Any

import policyauth
from policyauth.cli.main import main

POLICY = """\
settings {{
  store_grace = {grace}
}}

tokens ci {{
  store = "{store}"
}}

route GET /x {{
  auth ci
  allow
}}
"""


def run_cli(argv: list[str]) -> dict[str, Any]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return {"code": code, "out": out.getvalue(), "err": err.getvalue()}


def decide(engine: policyauth.Engine, token: str) -> dict[str, Any]:
    decision = engine.authorize_sync("GET", "/x", [("authorization", f"Bearer {token}")])
    return {"status": decision.status, "reason": str(decision.reason), "message": decision.message}


def warm_up() -> None:
    """Everything the protocol can ask for, once, as root: every module it needs is imported."""
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder) / "warm.tokens"
        policy = Path(folder) / "warm.policy"
        policy.write_text(POLICY.format(grace="1s", store=store), encoding="utf-8")
        token = run_cli(["token", "create", "--store", str(store), "--user", "warm"])["out"]
        run_cli(["token", "create", "--store", str(store), "--user", "x", "--expires", "1d"])
        with policyauth.Engine(policyauth.load(policy)) as engine:
            decide(engine, token.strip())
            decide(engine, "pa_malformed")
        run_cli(["token", "revoke", "--store", str(store), token.strip()])
        run_cli(["token", "list", "--store", str(store), "--format", "json"])
        run_cli(["token", "list", "--store", str(store)])


def drop_to_nobody(probe: Path) -> tuple[int, int]:
    """Become `nobody` for good; `probe` is a file only root may read, to prove it took."""
    nobody = pwd.getpwnam("nobody")
    os.setgroups([])
    os.setresgid(nobody.pw_gid, nobody.pw_gid, nobody.pw_gid)
    os.setresuid(nobody.pw_uid, nobody.pw_uid, nobody.pw_uid)
    try:
        probe.read_bytes()
    except PermissionError:
        return os.getuid(), os.getgid()
    raise SystemExit("the privilege drop did not take: a root-only file could be read")


def serve() -> None:
    engine: policyauth.Engine | None = None
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "load":
            engine = policyauth.Engine(policyauth.load(request["policy"]))
            answer: dict[str, Any] = {"loaded": True}
        elif request["op"] == "decide":
            assert engine is not None, "load a policy first"
            answer = decide(engine, request["token"])
        else:
            answer = run_cli(request["argv"])
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    warm_up()
    print(json.dumps({"ready": list(drop_to_nobody(Path(sys.argv[1])))}), flush=True)
    serve()
