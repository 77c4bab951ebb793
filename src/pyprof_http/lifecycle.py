"""A pure-ASGI middleware that gives the profiler what a mounted sub-app cannot see.

A mount only receives its own requests, never the app's lifespan. This middleware, added by
``install()``, does at startup what must happen before the first request: it registers the
serving event loop and chains the task factory (so task creation sites are known from the first
task on), hooks ``Thread.start`` (threadcreate), switches lock profiling on if the settings ask,
and starts the loop-stall watchdog. The first request on a loop the lifespan did not see (servers
without lifespan support) registers it. At shutdown it undoes all of it: every profiler
stopped, the watchdog joined, the factory, the hook and the lock classes put back.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from types import FrameType
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import request_labels
from .collectors import locks, threads
from .collectors.loop import WATCHDOGS
from .collectors.session import SESSIONS
from .config import Settings
from .loops import LOOPS, ORIGINS


class LifecycleMiddleware:
    """Wraps the whole app. Per request: one identity check of the running loop (registered
    once, by the lifespan or the first request on it) and a context variable set and reset;
    no header, route or frame is read until a profile asks. Without an asyncio loop (trio)
    requests and the lifespan pass through untouched."""

    _attached: asyncio.AbstractEventLoop | None = None
    """The loop registered last (with the task factory chained): later requests on it skip
    registration."""

    def __init__(self, app: ASGIApp, settings: Settings | None = None) -> None:
        self.app = app
        self.settings = settings if settings is not None else Settings()
        self._signals = _ShutdownSignals()
        threads.ORIGINS.install(self.settings.max_stack_depth)  # threads started from now on
        apply_lock_fraction(self.settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" or kind == "websocket":
            loop = asyncio._get_running_loop()
            if loop is None:  # trio (or any other loop): nothing of ours can see it
                await self.app(scope, receive, send)
                return
            if loop is not self._attached:  # once per loop: the lifespan usually did it
                self._attach(LOOPS.register_running())
                self._attached = loop
            entered = request_labels.enter(scope)
            try:
                await self.app(scope, receive, send)
            finally:
                request_labels.leave(entered)
            return
        if kind != "lifespan" or asyncio._get_running_loop() is None:
            await self.app(scope, receive, send)
            return

        async def receive_lifespan() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._startup(LOOPS.register_running())
                self._attached = asyncio.get_running_loop()
            elif message["type"] == "lifespan.shutdown":
                self._attached = None
                self._shutdown(asyncio.get_running_loop())
            return message

        await self.app(scope, receive_lifespan, send)

    @staticmethod
    def _attach(loop: asyncio.AbstractEventLoop) -> None:
        ORIGINS.install_factory(loop)

    def _startup(self, loop: asyncio.AbstractEventLoop) -> None:
        self._attach(loop)
        SESSIONS.shutting_down = False
        self._signals.chain()
        threads.ORIGINS.install(self.settings.max_stack_depth)
        apply_lock_fraction(self.settings)
        if self.settings.allows("block"):
            WATCHDOGS.start(loop, self.settings.loop_stall_ms, self.settings.max_stack_depth)

    def _shutdown(self, loop: asyncio.AbstractEventLoop) -> None:
        ORIGINS.uninstall_factory(loop)
        SESSIONS.stop_all()
        self._signals.restore()
        WATCHDOGS.stop_all()
        threads.ORIGINS.uninstall()
        wanted = self.settings.lock_profile_fraction
        if wanted and locks.fraction() == wanted:  # ours, not set since by the app itself
            locks.set_fraction(0)


def apply_lock_fraction(settings: Settings) -> None:
    """Switch lock profiling on as configured; never off (the app may have set it itself)."""
    if settings.lock_profile_fraction and locks.fraction() != settings.lock_profile_fraction:
        locks.set_fraction(settings.lock_profile_fraction)


class _ShutdownSignals:
    """Stop running profilers as soon as the server is told to stop.

    Servers wait for open requests before they run the lifespan shutdown (uvicorn: "Waiting for
    connections to close"), so a 60-second profile would hold the process for its full length.
    Chaining in front of the server's own SIGINT/SIGTERM handlers ends the profile first; the
    server's handler then runs as before. Only Python handlers are chained (a default handler
    terminates the process anyway), only from the main thread, and ours are put back at shutdown.
    """

    def __init__(self) -> None:
        self._previous: dict[signal.Signals, Any] = {}

    def chain(self) -> None:
        if threading.current_thread() is not threading.main_thread() or self._previous:
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(signum)
            if not callable(previous) or previous is signal.default_int_handler:
                continue

            def handler(number: int, frame: FrameType | None, previous: Any = previous) -> None:
                # a plain store: a handler that took a lock could deadlock with the code it
                # interrupted; every wait polls this flag within 0.1 s
                SESSIONS.shutting_down = True
                previous(number, frame)

            signal.signal(signum, handler)
            self._previous[signum] = (previous, handler)

    def restore(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, (previous, ours) in self._previous.items():
            if signal.getsignal(signum) is ours:  # someone else's since: leave theirs
                signal.signal(signum, previous)
        self._previous.clear()
