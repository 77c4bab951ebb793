"""A pure-ASGI middleware that gives the profiler what a mounted sub-app cannot see.

A mount only receives its own requests, never the app's lifespan. This middleware, added by
``install()``, registers the serving event loop and chains the task factory at startup (so task
creation sites are known from the first task on), registers loops again on each request (servers
without lifespan support), and at shutdown puts the loop's task factory back.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import request_labels
from .collectors.session import SESSIONS
from .loops import LOOPS, ORIGINS


class LifecycleMiddleware:
    """Wraps the whole app; costs one dictionary lookup per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

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
                self._attach(LOOPS.register_running())
            elif message["type"] == "lifespan.shutdown":
                ORIGINS.uninstall_factory(asyncio.get_running_loop())
                SESSIONS.stop_all()
            return message

        await self.app(scope, receive_lifespan, send)

    @staticmethod
    def _attach(loop: asyncio.AbstractEventLoop) -> None:
        ORIGINS.install_factory(loop)
