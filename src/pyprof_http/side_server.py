"""``serve_in_background``: the endpoints on a side port, from a thread of their own.

For processes whose main app cannot mount a sub-app (WSGI, workers, scripts), or to keep the
profiler off the public port. The thread's own event loop answers even while the main loop is
blocked, which is when a stack dump is most wanted.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time

import uvicorn

from . import request_cycle
from .app import PprofApp, PrefixRouter, not_found
from .config import Settings
from .switches import Claims
from .workers.membership import WORKERS

WORKER_PORTS = 64
"""In a worker, ``port`` is a base: the first free of ``port`` .. ``port + 63``, else any."""
_LOG = logging.getLogger("pyprof_http")


class BackgroundServer:
    """A pprof server running on its own thread and event loop; ``stop()`` ends both."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread, prefix: str,
                 claims: Claims | None = None) -> None:
        self._server, self.thread, self.prefix = server, thread, prefix
        self._claims = claims
        self._served_at = ""

    @property
    def port(self) -> int:
        sockets = [s for srv in getattr(self._server, "servers", []) for s in srv.sockets]
        return int(sockets[0].getsockname()[1]) if sockets else 0

    @property
    def url(self) -> str:
        return f"http://{self._server.config.host}:{self.port}{self.prefix}/"

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the profiles this server started, let go of its switches, end the thread."""
        request_cycle.no_longer_served(self._served_at)
        if self._claims is not None:
            self._claims.release_all()
        self._server.should_exit = True
        self.thread.join(timeout)


def serve_in_background(
    port: int = 6060,
    host: str = "127.0.0.1",
    settings: Settings | None = None,
    prefix: str = "/debug/pprof",
    startup_timeout: float = 10.0,
) -> BackgroundServer:
    """Serve the endpoints on a side port from a daemon thread (``pyprof_http-server``).

    For processes whose main app cannot mount a sub-app (WSGI, workers, scripts), or to keep the
    profiler off the public port. The thread's own event loop answers even while the main loop
    is blocked, which is when a stack dump is most wanted. Raises ``OSError`` if the port cannot
    be bound; ``port=0`` picks a free one (see ``.port``).

    In a worker of a multi-worker server (uvicorn ``--workers``, gunicorn; see
    ``workers_rendezvous``) every worker calls this with the same port: the port is then a base,
    and each worker takes the first free one from ``port`` up (the first worker ``port``, the next
    ``port + 1``, ...; any free port if all 64 are taken), logged at INFO, never a crash loop.
    Any worker's side port serves every worker's profiles (``?worker=PID``, ``?workers=all``).
    """
    prefix = "/" + prefix.strip("/")
    pprof = PprofApp(settings)
    pprof.watch_serving_loop = False  # this thread's loop is ours; install() watches the app's
    sockets = None
    if port and WORKERS.role(pprof.settings.workers_rendezvous).worker:
        sockets = [_worker_port(host, port)]
    app = PrefixRouter(not_found, prefix, pprof)
    # log_config=None and log_level=None: uvicorn must not reconfigure the host's logging
    config = uvicorn.Config(app, host=host, port=port, lifespan="off", log_config=None,
                            log_level=None)
    server = uvicorn.Server(config)

    def run() -> None:
        with contextlib.suppress(SystemExit):  # uvicorn exits on a bind failure; we raise below
            server.run(sockets=sockets)

    thread = threading.Thread(target=run, name="pyprof_http-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    if not server.started:
        server.should_exit = True
        thread.join(startup_timeout)
        pprof.claims.release_all()  # nobody will call stop(): let go of its switches now
        raise OSError(f"pyprof_http could not serve on {host}:{port} (see the log above)")
    pprof.claims.join_workers()  # siblings see this worker before its first request
    background = BackgroundServer(server, thread, prefix, pprof.claims)
    # where install(prefix=None)'s middleware points an asked-for request's profile
    background._served_at = background.url
    request_cycle.served_elsewhere(background.url)
    return background


def _worker_port(host: str, base: int) -> socket.socket:
    """A listening socket on the first free port from ``base`` (any free one as a last resort)."""
    for port in [*range(base, min(base + WORKER_PORTS, 65536)), 0]:
        try:
            sock = socket.create_server((host, port))
        except OSError:
            continue
        _LOG.info("pyprof_http: this worker's side port is %d", sock.getsockname()[1])
        return sock
    raise OSError(f"pyprof_http found no free port on {host}")
