"""The server's side of the ASGI lifespan protocol, for the lifecycle and switches tests."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Iterator
from typing import Any

from pyprof_http import switches
from pyprof_http.collectors import threads


class LifespanDriver:
    """Plays the server's side of the ASGI lifespan protocol, step by step."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.inbox: asyncio.Queue[dict] = asyncio.Queue()
        self.sent: list[dict] = []
        self._event = asyncio.Event()
        self.task: asyncio.Task | None = None

    async def _receive(self) -> dict:
        return await self.inbox.get()

    async def _send(self, message: dict) -> None:
        self.sent.append(message)
        self._event.set()

    async def _wait_for(self, kind: str) -> None:
        while not any(m["type"] == kind for m in self.sent):
            self._event.clear()
            await asyncio.wait_for(self._event.wait(), 5)

    async def startup(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"},
                 "state": {}}
        self.task = asyncio.create_task(self.app(scope, self._receive, self._send))
        await self.inbox.put({"type": "lifespan.startup"})
        await self._wait_for("lifespan.startup.complete")

    async def shutdown(self) -> None:
        await self.inbox.put({"type": "lifespan.shutdown"})
        await self._wait_for("lifespan.shutdown.complete")
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)


async def plain_lifespan_app(scope, receive, send) -> None:
    """A minimal ASGI app that speaks lifespan (as any framework does)."""
    assert scope["type"] == "lifespan"
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def collect_dropped_apps() -> None:
    """Apps that were dropped without a shutdown let go of their claims."""
    gc.collect()
    switches.release_orphans()


@contextlib.contextmanager
def alone() -> Iterator[None]:
    """Run as if no other app lived in this process: the claims that apps of other tests still
    hold (a module-level app is never shut down) are set aside, their switches turned off, and
    both given back afterwards. Tests of switching then see exactly their own apps' effect."""
    collect_dropped_apps()
    with switches._lock:
        hooks, fractions = dict(switches._thread_hooks), dict(switches._lock_claims)
        switches._thread_hooks.clear()
        switches._lock_claims.clear()
        threads.THREAD_STARTS.uninstall()
        switches._apply_locks()
    try:
        yield
    finally:
        collect_dropped_apps()
        with switches._lock:
            switches._thread_hooks.update(hooks)
            switches._lock_claims.update(fractions)
            if switches._thread_hooks:
                threads.THREAD_STARTS.install(max(switches._thread_hooks.values()))
            switches._apply_locks()
