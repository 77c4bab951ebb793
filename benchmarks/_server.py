"""The child uvicorn server every benchmark measures, and the wrapper that starts and stops it.

A benchmark runs its app in a child process (its own file with ``--serve``) so that load
generator and server do not share a GIL. The child binds a free 127.0.0.1 port, prints
``PORT <n>`` as its first line and serves until SIGINT; :class:`ServerProcess` reads that line
and always stops the child.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from typing import Any


def serve_on_free_port(app: Any, *, lifespan: str = "on", loop: str = "asyncio",
                       backlog: int = 256, graceful_s: int | None = 2) -> None:
    """Serve ``app`` with uvicorn on a free loopback port, announced as ``PORT <n>``."""
    import uvicorn

    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on accepted sockets whose proto says
    # TCP, and without it keep-alive responses wait ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(backlog)
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan=lifespan,
                            loop=loop, timeout_graceful_shutdown=graceful_s)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the signal it stopped on
        uvicorn.Server(config).run(sockets=[sock])


class ServerProcess:
    """The child server started with ``args``; a context manager that always stops it."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None,
                 stop_grace_s: float = 10.0) -> None:
        self.args, self.env, self.stop_grace_s = args, env, stop_grace_s
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0

    def __enter__(self) -> ServerProcess:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, text=True, env=self.env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the child prints its port first, or dies
        if not line.startswith("PORT "):
            self.__exit__()
            raise RuntimeError(f"server did not start (got {line!r})")
        self.port = int(line.split()[1])
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown
            try:
                self.proc.wait(timeout=self.stop_grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=self.stop_grace_s)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def cpu_seconds(self) -> float:
        """The child's user + system CPU so far (Linux ``/proc``)."""
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
