"""The ASGI sub-application and ``install()``.

``PprofApp`` dispatches ``/<name>`` to the registry row of that name, so every profile gets the
same allowlist, parameter and error handling by construction. Work that needs the app's
lifespan (registering the serving loop and the task factory at startup, putting things back at
shutdown) lives in :class:`~pyprof_http.lifecycle.LifecycleMiddleware`, which ``install()`` adds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from .config import Settings
from .errors import SECURITY_HEADERS, NotFound, PprofError, error_response
from .lifecycle import LifecycleMiddleware
from .loops import LOOPS
from .model import subtract
from .params import parse_query
from .registry import BY_NAME, Capture, ProfileCapture, ProfileSpec, allowed
from .render import Rendered
from .render.index import IndexRow, render_index

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ClientDisconnected(Exception):
    """The client went away; the work stops and nothing is sent."""


class PprofApp:
    """The pprof endpoints as one ASGI app; mount it anywhere (``/debug/pprof`` by convention)."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings if settings is not None else Settings()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # mounted apps do not get it; served directly, they do
            await LifecycleMiddleware(_lifespan_only)(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        LOOPS.register_running()
        request = Request(scope, receive)
        try:
            response = await self._dispatch(request)
        except ClientDisconnected:
            return
        except PprofError as exc:
            response = error_response(exc.status_code, exc.reason)
        response.headers.update(SECURITY_HEADERS)
        await response(scope, receive, send)

    async def _dispatch(self, request: Request) -> Response:
        path = _route_path(request.scope)
        if request.method not in ("GET", "HEAD"):
            response = error_response(405, "method not allowed; use GET")
            response.headers["Allow"] = "GET, HEAD"
            return response
        if path == "":
            return RedirectResponse(request.url.path + "/" + _query(request), status_code=301)
        if path == "/":
            return self._index()
        spec = BY_NAME.get(path[1:])
        if spec is None or not self.settings.allows(spec.name):
            raise NotFound("Unknown profile")
        return await self._serve(request, spec)

    def _index(self) -> Response:
        rows = [
            IndexRow(
                name=spec.name,
                description=spec.description,
                count=spec.count() if spec.count is not None else None,
                formats=[f for f in ("text", "pprof", "flamegraph") if f in spec.formats],
            )
            for spec in allowed(self.settings)
        ]
        return to_response(render_index("/debug/pprof/", rows))

    async def _serve(self, request: Request, spec: ProfileSpec) -> Response:
        query = parse_query(request.query_params, spec, self.settings)
        if spec.raw is not None:
            return to_response(spec.raw())
        if spec.collect is None:  # a row must have one of raw/collect; the table test holds it
            raise NotFound("Unknown profile")
        fmt = query.resolved_format(spec)
        capture: Capture
        if query.seconds is not None:
            before = await spec.collect(self.settings)
            await sleep_unless_disconnected(request, query.seconds)
            after = await spec.collect(self.settings)
            capture = ProfileCapture(subtract(after.profile, before.profile))
        else:
            capture = await spec.collect(self.settings)
        rendered = await run_in_threadpool(spec.formats[fmt].render, capture, spec.name)
        return to_response(rendered)


def to_response(rendered: Rendered) -> Response:
    """Headers follow from the rendered body: downloads get a file name, HTML gets its CSP."""
    response = Response(rendered.body, media_type=rendered.media_type)
    if rendered.filename is not None:
        response.headers["Content-Disposition"] = f'attachment; filename="{rendered.filename}"'
    if rendered.content_security_policy is not None:
        response.headers["Content-Security-Policy"] = rendered.content_security_policy
        response.headers["X-Frame-Options"] = "DENY"
    return response


async def sleep_unless_disconnected(request: Request, seconds: float) -> None:
    """Wait ``seconds``; raise :class:`ClientDisconnected` as soon as the client goes away."""
    deadline = time.monotonic() + seconds

    async def disconnected() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({watcher}, timeout=max(0.0, deadline - time.monotonic()))
    finally:
        watcher.cancel()
    if watcher.done() and not watcher.cancelled() and watcher.exception() is None:
        raise ClientDisconnected


def _route_path(scope: Scope) -> str:
    """The path below the mount point (Starlette keeps the full path and sets root_path)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


def _query(request: Request) -> str:
    return f"?{request.url.query}" if request.url.query else ""


async def _lifespan_only(scope: Scope, receive: Receive, send: Send) -> None:
    """Answer the lifespan protocol for a PprofApp served on its own."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def install(app: Any, settings: Settings | None = None, prefix: str = "/debug/pprof") -> Any:
    """Mount the endpoints at ``prefix`` and add the lifecycle middleware; returns the app to serve.

    A Starlette or FastAPI app is changed in place (and returned). Any other ASGI callable is
    wrapped: serve the returned app.
    """
    prefix = "/" + prefix.strip("/")
    pprof = PprofApp(settings)
    if hasattr(app, "mount") and hasattr(app, "add_middleware"):
        app.mount(prefix, pprof)
        app.add_middleware(LifecycleMiddleware)
        return app
    return LifecycleMiddleware(_PrefixRouter(app, prefix, pprof))


class _PrefixRouter:
    """Send ``prefix`` and below to the pprof app, everything else to the wrapped app."""

    def __init__(self, app: ASGIApp, prefix: str, pprof: PprofApp) -> None:
        self.app, self.prefix, self.pprof = app, prefix, pprof

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path == self.prefix or path.startswith(self.prefix + "/"):
                root = scope.get("root_path", "")
                scope = {**scope, "root_path": root + self.prefix}
                await self.pprof(scope, receive, send)
                return
        await self.app(scope, receive, send)
