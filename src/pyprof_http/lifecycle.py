"""A pure-ASGI middleware that gives the profiler what a mounted sub-app cannot see.

A mount only receives its own requests, never the app's lifespan. This middleware, added by
``install()``, does at startup what must happen before the first request: it registers the
serving event loop and chains the task factory (so task creation sites are known from the first
task on), hooks ``Thread.start`` (threadcreate), switches lock profiling on if the settings ask,
and starts the loop-stall watchdog. The first request on a loop the lifespan did not see (servers
without lifespan support) registers it. At shutdown it stops the profiles its app started and
lets go of the rest (only of its loop's, while the same app still runs under another server);
so it does when the app's startup fails (``lifespan.startup.failed``: the server exits without
a shutdown, and another app in the process must not be left with this one's switches).

Every one of those switches is process-wide, so none is switched here: the app's
:class:`~pyprof_http.switches.Claims` holds them, and :mod:`pyprof_http.switches` keeps each on
while any app in the process holds it.
"""

from __future__ import annotations

import asyncio
from asyncio import _get_running_loop
from collections.abc import Awaitable
from time import monotonic_ns
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import markers, request_labels
from .collectors.recorder import RECORDER
from .config import Settings
from .loops import LOOPS
from .request_cycle import LINK_HEADER, RequestCycle
from .switches import Claims, wants_task_factory


class LifecycleMiddleware:
    """Wraps the whole app. Per HTTP request: one identity check of the running loop
    (registered once, by the lifespan or the first request on it), one pass over the headers
    (the request id, an asked-for profile), a context variable set and reset, the id echoed,
    and at the end two comparisons for keeping its profile; no route or frame is read until a
    profile asks. Every installed app pays this on every request, so the ordinary request runs
    in C (``_requestcycle``) and only the rest (an asked-for profile, a /trace window, a
    machine without a compiler) through the Python below. Without an asyncio loop (trio)
    requests and the lifespan pass through untouched."""

    _attached: asyncio.AbstractEventLoop | None = None
    """The loop registered last (with the task factory chained): later requests on it skip
    registration."""

    def __init__(self, app: ASGIApp, settings: Settings | None = None,
                 claims: Claims | None = None, prefix: str | None = None) -> None:
        """``claims``: the app's hold on process-wide switches, shared with the ``PprofApp``
        that ``install()`` mounts (so this app's shutdown stops the profiles it served).
        ``prefix``: where the endpoints are mounted (the link to an asked-for request's
        profile)."""
        self.app = app
        self.settings = settings if settings is not None else Settings()
        self.claims = claims if claims is not None else Claims()
        self._cycle = RequestCycle(self.settings, prefix)
        self._wants_factory = wants_task_factory(self.settings)
        self._fast: Any = request_labels.fast_cycles()
        self.claims.follow(self.settings)  # threads started from now on

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            loop = _get_running_loop()
            if loop is None:  # trio (or any other loop): nothing of ours can see it
                await self.app(scope, receive, send)
                return
            if loop is not self._attached:  # once per loop: the lifespan usually did it
                self._attach(LOOPS.register_running())
                self._attached = loop
            fast = self._fast
            if fast is not None and markers.ACTIVE is None:  # the common request, in C
                started = fast.begin(scope, loop, send)  # None: the path below takes it
                if started is not None:
                    try:
                        await self.app(scope, receive, started)  # it echoes the id
                    finally:
                        duration = started.end()
                        cycle = self._cycle
                        if ((duration >= cycle.slow_ns or cycle.rate) and cycle.profiles
                                and RECORDER.current is not None):
                            cycle.finish(scope, started.path, started.root_path,
                                         started.request, started.request_id, started.start,
                                         False, started.status)
                    return
            # The request cycle is written out here, not awaited in a helper: every request
            # pays for this coroutine, and a second one cost as much as the rest of it.
            cycle = self._cycle
            entered = request_labels.enter(scope, loop)
            request_id, asked_for = cycle.identify(scope)
            entered._request_id = request_id
            asked = asked_for is not None and await cycle.admits(asked_for, scope)
            tracing = markers.ACTIVE  # read once: a window may end on another loop
            traced = None if tracing is None else tracing.request(entered, scope)
            path, root_path = scope.get("path", ""), scope.get("root_path", "")
            status = None
            id_header = request_id.encode("ascii")
            link = cycle.begin_asked(root_path, request_id) if asked else b""
            to_client = send if traced is None else traced.wrap(send)

            def send_with_id(message: Message) -> Awaitable[None]:
                """Echoes the request id (a plain function returning the server's awaitable:
                no coroutine of its own per message)."""
                if message["type"] == "http.response.start":
                    nonlocal status
                    status = message["status"]
                    headers = [*message.get("headers", ())]  # a copy: the list is the app's
                    for name, _value in headers:  # ASGI header names are lower-case
                        if name == b"x-request-id":  # the app's own: left as it is
                            break
                    else:
                        headers.append((b"x-request-id", id_header))
                    if link:
                        headers.append((LINK_HEADER, link))
                    message = {**message, "headers": headers}
                return to_client(message)

            start = monotonic_ns()
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                request_labels.leave(entered)
                if traced is not None:
                    traced.close()
                if asked or (cycle.profiles and RECORDER.current is not None):
                    cycle.finish(scope, path, root_path, entered, request_id, start, asked,
                                 status)
            return
        if kind == "websocket":
            loop = _get_running_loop()
            if loop is None:
                await self.app(scope, receive, send)
                return
            if loop is not self._attached:
                self._attach(LOOPS.register_running())
                self._attached = loop
            entered = request_labels.enter(scope, loop)
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

        async def send_lifespan(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed":
                self.claims.shut_down(asyncio.get_running_loop())
            elif message["type"] == "lifespan.startup.complete":
                self._started(asyncio.get_running_loop())
            await send(message)

        await self.app(scope, receive_lifespan, send_lifespan)

    def _attach(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._wants_factory:
            self.claims.task_factory(loop)

    def _startup(self, loop: asyncio.AbstractEventLoop) -> None:
        self.claims.follow(self.settings)
        self.claims.start_on(loop, self.settings)
        self.claims.push(self.settings, loop)  # nothing unless push_url is set

    def _started(self, loop: asyncio.AbstractEventLoop) -> None:
        """After the app's own startup code: hooks it may have replaced meanwhile (a loop
        exception handler set in its lifespan) go back in front."""
        self.claims.after_startup(loop)

    def _shutdown(self, loop: asyncio.AbstractEventLoop) -> None:
        self.claims.shut_down(loop)
