"""This process's membership of its server's rendezvous (one per process): ``WORKERS``.

Joined and left only through :mod:`pyprof_http.switches` (a claim per app: the last app's
shutdown leaves). In a single-process server nothing here is ever started: :meth:`Workers.join`
returns at once when :func:`~pyprof_http.workers.identity.detect` says it is no worker.

Fork: a child gets the parent's membership half-alive (a socket without its thread), so it
forgets it at once (closes its copy of the socket, unlinks nothing: the file is the parent's)
and may join its own server's rendezvous later, as any process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from .channel import Channel
from .identity import Mode, Role, detect
from .rendezvous import Member, Rendezvous, RendezvousRefused, directory_for

_LOG = logging.getLogger("pyprof_http")
PROBE_TIMEOUT_S = 1.0


class Workers:
    """The rendezvous this process joined (if any), its channel, and the apps it serves."""

    def __init__(self) -> None:
        self.rendezvous: Rendezvous | None = None
        self.channel: Channel | None = None
        self._apps: dict[int, ASGIApp] = {}
        self._roles: dict[str, Role] = {}
        self.refusal: str | None = None
        """Why the rendezvous could not be joined (shown on the index)."""
        self._lock = threading.Lock()

    def role(self, mode: Mode) -> Role:
        role = self._roles.get(mode)
        if role is None:
            role = self._roles[mode] = detect(mode)
        return role

    @property
    def joined(self) -> bool:
        return self.rendezvous is not None

    def join(self, claim_id: int, app: ASGIApp, mode: Mode) -> None:
        """Serve ``app`` to siblings (the latest joined app serves); start the channel once."""
        with self._lock:
            role = self.role(mode)
            if not role.worker:
                return
            self._apps[claim_id] = app
            if self.rendezvous is not None or self.refusal is not None:
                return
            rendezvous = Rendezvous(directory_for(role.server))
            try:
                rendezvous.open()
                sock = rendezvous.listen(os.getpid())
            except (OSError, RendezvousRefused) as exc:
                self.refusal = f"rendezvous refused: {exc}"
                _LOG.warning("pyprof_http: worker=/workers= unavailable in pid %d: %s",
                             os.getpid(), exc)
                return
            pid = os.getpid()
            channel = Channel(self._serve, sock, lambda: rendezvous.keep_fresh(pid))
            try:
                channel.start()
            except OSError as exc:
                rendezvous.leave(os.getpid())
                self.refusal = str(exc)
                return
            self.rendezvous, self.channel = rendezvous, channel

    def leave(self, claim_id: int) -> None:
        """Drop ``claim_id``'s app; the last one out stops the channel and leaves."""
        with self._lock:
            self._apps.pop(claim_id, None)
            if self._apps:
                return
            channel, rendezvous = self.channel, self.rendezvous
            self.channel = self.rendezvous = None
            self.refusal = None
        if rendezvous is not None:
            rendezvous.leave(os.getpid())  # first: siblings stop sending here at once
        if channel is not None:
            channel.stop()

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        apps = list(self._apps.values())
        if not apps:  # leaving: nothing serves any more
            await send({"type": "http.response.start", "status": 503, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await apps[-1](scope, receive, send)

    def members(self) -> list[Member]:
        """Live siblings and this process (a directory scan; no connection)."""
        rendezvous = self.rendezvous
        return rendezvous.members() if rendezvous is not None else []

    def place(self) -> tuple[int, int] | None:
        """(1-based place of this worker among its siblings by start, how many), if joined."""
        members = self.members()
        pids = [m.pid for m in members]
        me = os.getpid()
        if me not in pids:
            return None
        return pids.index(me) + 1, len(pids)

    def describe(self, place: tuple[int, int] | None = None) -> str:
        """How views name this process: ``pid 1234`` or ``pid 1234 (worker 2 of 3)``."""
        if place is None and self.rendezvous is not None:
            place = self.place()
        if place is None:
            return f"pid {os.getpid()}"
        return f"pid {os.getpid()} (worker {place[0]} of {place[1]})"

    async def live(self) -> list[Member]:
        """Members that accept a connection now; stale sockets (a reused pid) are removed."""
        rendezvous = self.rendezvous
        if rendezvous is None:
            return []
        members = rendezvous.members()
        me = os.getpid()
        answers = await asyncio.gather(*(
            _accepts(m.path) if m.pid != me else _true() for m in members))
        for member, ok in zip(members, answers, strict=True):
            if not ok:
                rendezvous.remove(member.pid)
        return [m for m, ok in zip(members, answers, strict=True) if ok]

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        channel = self.channel
        self.channel = self.rendezvous = None
        self._apps.clear()
        self._roles.clear()
        self.refusal = None
        if channel is not None:
            channel.forget()


async def _true() -> bool:
    return True


async def _accepts(path: str) -> bool:
    """False only when nobody listens there (refused, or gone): a full backlog or a slow
    connect under load is a live sibling, not a dead one."""
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path),
                                                 PROBE_TIMEOUT_S)
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except (OSError, asyncio.TimeoutError):
        return True
    writer.close()
    return True


WORKERS = Workers()

_hook: Callable[[], None] = lambda: WORKERS.after_fork_in_child()  # noqa: E731
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_hook)
