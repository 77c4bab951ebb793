"""The private channel: a worker's endpoints served on its rendezvous socket, auth bypassed.

A uvicorn ``Server`` on a thread of its own (``pyprof_http-worker-channel``) with its own event
loop, on the pre-bound 0600 Unix socket, never on TCP. Chosen over a server on the app's loop
because a sibling can then read this worker while its loop is stuck (when a dump is most
wanted), and because a server on the main thread would take the host server's signal handlers;
an idle thread parked in ``epoll_wait`` costs the app nothing (benchmarks/workers.py). It is
the same machinery as ``serve_in_background``.

Requests arriving here were authenticated by the worker the client reached; the channel's only
gate is the socket's owner, mode 0600 in a 0700 directory, and, as a second line, the peer's
uid (``SO_PEERCRED``) checked on every connection: another uid's connection is closed unread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

from .hop import ROOT_HEADER

INTERNAL_KEY = "pyprof_http.internal"
"""Set in the scope of a request that came over the private channel."""


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of a Unix socket (Linux); None if unknown."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    raw = sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", raw)
    return int(uid)


class PeerCheckedProtocol(H11Protocol):
    """uvicorn's h11 protocol, but a connection from another uid is closed before a byte."""

    refused = 0
    """Connections refused so far (for the tests)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        uid = peer_uid(sock) if sock is not None else None
        if uid is not None and uid != os.getuid():
            self._refused = True
            PeerCheckedProtocol.refused += 1
            transport.close()
            return
        self._refused = False
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if getattr(self, "_refused", False):
            return
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if getattr(self, "_refused", False):
            return
        super().data_received(data)


class _QuietChannel(logging.Filter):
    """uvicorn logs "Started server process" for every server: the channel's would read, in a
    worker's log, as a second server starting. Its INFO lines are dropped; warnings stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.threadName != THREAD_NAME or record.levelno >= logging.WARNING


THREAD_NAME = "pyprof_http-worker-channel"
REFRESH_S = 3600
"""How often the channel marks its rendezvous as in use (``Rendezvous.keep_fresh``)."""
_QUIET = _QuietChannel()


class Channel:
    """Serve ``app`` on ``sock`` from a daemon thread until :meth:`stop`."""

    def __init__(self, app: ASGIApp, sock: socket.socket,
                 refresh: Callable[[], None] | None = None) -> None:
        """``refresh`` is called on the channel's thread every :data:`REFRESH_S` seconds."""
        self.sock = sock

        async def internal(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                root = ""  # only the index is titled by it: no path below is ever cut by it
                if scope["path"] == "/":
                    raw = dict(scope["headers"]).get(ROOT_HEADER, b"/")
                    root = raw.decode("utf-8", "replace").rstrip("/")
                await app({**scope, INTERNAL_KEY: True, "root_path": root}, receive, send)

        async def refreshed() -> None:
            if refresh is not None:
                refresh()

        config = uvicorn.Config(internal, lifespan="off", log_config=None, log_level=None,
                                http=PeerCheckedProtocol, loop="asyncio", access_log=False,
                                timeout_graceful_shutdown=1, callback_notify=refreshed,
                                timeout_notify=REFRESH_S)
        self._server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        logging.getLogger("uvicorn.error").addFilter(_QUIET)  # once: filters are a set

    def _run(self) -> None:
        with contextlib.suppress(SystemExit):
            self._server.run(sockets=[self.sock])

    def start(self, timeout: float = 10.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.005)
        if not self._server.started:
            self.stop()
            raise OSError("the worker channel did not start")

    def stop(self, timeout: float = 5.0) -> None:
        self._server.should_exit = True
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout)
        with contextlib.suppress(OSError):
            self.sock.close()

    def forget(self) -> None:
        """In a forked child: the thread does not exist here and the socket is the parent's;
        close this process's copy of the descriptor, unlink nothing."""
        with contextlib.suppress(OSError):
            self.sock.close()
