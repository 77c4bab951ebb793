"""Waiting and off-loop work for handlers: honour disconnects and shutdown, never the app's pool.

A profile request waits for seconds; it must end as soon as the client goes away (Go waits on
the request context too) or the app shuts down. Rendering a big profile is CPU work that must
not hold the event loop, and must not queue behind the app's own threadpool either: a FastAPI
service whose 40 threadpool workers are all stuck is exactly when a stack dump is wanted.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from starlette.requests import Request

from .collectors.session import SESSIONS

_T = TypeVar("_T")
_STOP_POLL_S = 0.1
"""How often a wait checks for shutdown (a threading.Event, as shutdown may come from any loop)."""
_RENDERS = threading.BoundedSemaphore(4)
"""Renders at once; more wait their turn (each is bounded work)."""


class ClientDisconnected(Exception):
    """The client went away; the work stops and nothing is sent."""


async def sleep_unless_disconnected(
    request: Request, seconds: float, stop: threading.Event | None = None
) -> None:
    """Wait ``seconds``; raise :class:`ClientDisconnected` as soon as the client goes away.

    ``stop`` (set at app shutdown) ends the wait early; the profile then covers what elapsed.
    """
    deadline = time.monotonic() + seconds

    async def disconnected() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.get_running_loop().create_task(
        disconnected(), name="pyprof_http-disconnect-watch"
    )
    try:
        while not watcher.done() and not (stop is not None and stop.is_set()) \
                and not SESSIONS.shutting_down:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            await asyncio.wait({watcher}, timeout=min(left, _STOP_POLL_S))
    finally:
        watcher.cancel()
    if watcher.done() and not watcher.cancelled() and watcher.exception() is None:
        raise ClientDisconnected


async def render_in_thread(fn: Callable[..., _T], *args: object) -> _T:
    """Run ``fn(*args)`` on a fresh daemon thread named ``pyprof_http-render``."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()

    def deliver(ok: bool, value: object) -> None:
        if future.done():  # the request was cancelled meanwhile
            return
        if ok:
            future.set_result(value)  # type: ignore[arg-type]
        else:
            future.set_exception(value)  # type: ignore[arg-type]

    def run() -> None:
        with _RENDERS:
            try:
                result: tuple[bool, object] = (True, fn(*args))
            except BaseException as exc:  # handed to the waiting request
                result = (False, exc)
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
            loop.call_soon_threadsafe(deliver, *result)

    threading.Thread(target=run, name="pyprof_http-render", daemon=True).start()
    return await future
