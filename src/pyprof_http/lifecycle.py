"""A pure-ASGI middleware that gives the profiler what a mounted sub-app cannot see.

A mount only receives its own requests, never the app's lifespan. This middleware, added by
``install()``, does at startup what must happen before the first request: it registers the
serving event loop and chains the task factory (so task creation sites are known from the first
task on), hooks ``Thread.start`` (threadcreate), switches lock profiling on if the settings ask,
and starts the loop-stall watchdog. It registers loops again on each request (servers without
lifespan support). At shutdown it stops the profiles its app started and lets go of the rest
(only of its loop's, while the same app still runs under another server); so it does when the
app's startup fails (``lifespan.startup.failed``: the server exits without
a shutdown, and another app in the process must not be left with this one's switches).

Every one of those switches is process-wide, so none is switched here: the app's
:class:`~pyprof_http.switches.Claims` holds them, and :mod:`pyprof_http.switches` keeps each on
while any app in the process holds it.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import request_labels
from .config import Settings
from .loops import LOOPS
from .switches import Claims, wants_task_factory


class LifecycleMiddleware:
    """Wraps the whole app; costs one dictionary lookup per request."""

    def __init__(self, app: ASGIApp, settings: Settings | None = None,
                 claims: Claims | None = None) -> None:
        """``claims``: the app's hold on process-wide switches, shared with the ``PprofApp``
        that ``install()`` mounts (so this app's shutdown stops the profiles it served)."""
        self.app = app
        self.settings = settings if settings is not None else Settings()
        self.claims = claims if claims is not None else Claims()
        self._wants_factory = wants_task_factory(self.settings)
        self.claims.follow(self.settings)  # threads started from now on

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            if scope["type"] not in ("http", "websocket"):
                await self.app(scope, receive, send)
                return
            self._attach(LOOPS.register_running())
            token = request_labels.enter(scope)
            try:
                await self.app(scope, receive, send)
            finally:
                request_labels.leave(token)
            return

        async def receive_lifespan() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._startup(LOOPS.register_running())
            elif message["type"] == "lifespan.shutdown":
                self._shutdown(asyncio.get_running_loop())
            return message

        async def send_lifespan(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed":
                self.claims.shut_down(asyncio.get_running_loop())
            await send(message)

        await self.app(scope, receive_lifespan, send_lifespan)

    def _attach(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._wants_factory:
            self.claims.task_factory(loop)

    def _startup(self, loop: asyncio.AbstractEventLoop) -> None:
        self.claims.follow(self.settings)
        self.claims.start_on(loop, self.settings)

    def _shutdown(self, loop: asyncio.AbstractEventLoop) -> None:
        self.claims.shut_down(loop)
