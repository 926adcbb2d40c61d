"""Serve `module:attribute` from tests/adapters/apps on a listening socket inherited from the test.

    python serve.py uvicorn|waitress MODULE:ATTRIBUTE FD

`SERVE_ROOT_PATH` in the environment is uvicorn's `--root-path`.

The test binds the socket (port 0: the system picks a free one) and passes its descriptor, so
no other process can take the port between choosing it and serving on it.
"""

from __future__ import annotations

import importlib
import os
import socket
import sys
from pathlib import Path


def main(server: str, target: str, fd: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent / "apps"))
    module, _, attribute = target.partition(":")
    app = getattr(importlib.import_module(module), attribute)
    sock = socket.socket(fileno=int(fd))
    if server == "uvicorn":
        import uvicorn

        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            root_path=os.environ.get("SERVE_ROOT_PATH", ""),
        )
        uvicorn.Server(config).run(sockets=[sock])
    elif server == "waitress":
        import waitress

        waitress.serve(app, sockets=[sock], threads=4, _quiet=True)
    else:
        raise SystemExit(f"unknown server {server!r}")


if __name__ == "__main__":
    main(*sys.argv[1:])
