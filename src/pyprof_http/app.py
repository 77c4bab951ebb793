"""The ASGI sub-application and ``install()``.

``PprofApp`` dispatches ``/<name>`` to the registry row of that name, so every profile gets the
same allowlist, parameter and error handling by construction. Work that needs the app's
lifespan (registering the serving loop and the task factory at startup, putting things back at
shutdown) lives in :class:`~pyprof_http.lifecycle.LifecycleMiddleware`, which ``install()`` adds.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

import uvicorn
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ._gc import paused_gc
from .auth import AuthMiddleware
from .config import ConfigError, Settings
from .errors import SECURITY_HEADERS, NotFound, PprofError, TooManyRequests, error_response
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
        self.settings.check_secure()
        unknown = sorted((self.settings.profiles or frozenset()) - set(BY_NAME))
        if unknown:
            raise ConfigError(f"profiles lists unknown names: {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(BY_NAME))}")
        self._guarded = AuthMiddleware(self._serve_http, self.settings)
        self._windows: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # mounted apps do not get it; served directly, they do
            await LifecycleMiddleware(_lifespan_only)(scope, receive, send)
        elif scope["type"] == "http":
            await self._guarded(scope, receive, send)

    async def _serve_http(self, scope: Scope, receive: Receive, send: Send) -> None:
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
            return self._index(request)
        spec = BY_NAME.get(path[1:])
        if spec is None or not self.settings.allows(spec.name):
            raise NotFound("Unknown profile")
        return await self._serve(request, spec)

    def _index(self, request: Request) -> Response:
        rows = [
            IndexRow(
                name=spec.name,
                description=spec.description,
                count=spec.count() if spec.count is not None else None,
                formats=[f for f in ("text", "pprof", "flamegraph") if f in spec.formats],
            )
            for spec in allowed(self.settings)
        ]
        return to_response(render_index(request.scope.get("root_path", "") + "/", rows))

    async def _serve(self, request: Request, spec: ProfileSpec) -> Response:
        query = parse_query(request.query_params, spec, self.settings)
        if spec.raw is not None:
            return to_response(spec.raw())
        if spec.collect is None:  # a row must have one of raw/collect; the table test holds it
            raise NotFound("Unknown profile")
        fmt = query.resolved_format(spec)
        capture: Capture
        if query.seconds is not None:
            with self._window(spec.name):
                before = await spec.collect(self.settings)
                await sleep_unless_disconnected(request, query.seconds)
                after = await spec.collect(self.settings)
            capture = ProfileCapture(subtract(after.profile, before.profile))
        else:
            capture = await spec.collect(self.settings)
        rendered = await run_in_threadpool(_render, spec.formats[fmt].render, capture, spec.name)
        return to_response(rendered)


    @contextlib.contextmanager
    def _window(self, name: str) -> Iterator[None]:
        """Bound the ``seconds=N`` requests running at once per profile (each holds a request)."""
        limit = self.settings.max_concurrent_windows
        if self._windows[name] >= limit:
            raise TooManyRequests(f"{limit} {name} windows already running "
                                  "(max_concurrent_windows); retry when one finishes")
        self._windows[name] += 1
        try:
            yield
        finally:
            self._windows[name] -= 1


def _render(render: Callable[[Capture, str], Rendered], capture: Capture, name: str) -> Rendered:
    """Off the event loop, and without GC passes over the many small objects a render makes."""
    with paused_gc():
        return render(capture, name)


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


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    await error_response(404, "Not Found")(scope, receive, send)


async def _lifespan_only(scope: Scope, receive: Receive, send: Send) -> None:
    """Answer the lifespan protocol for a PprofApp served on its own."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def install(
    app: Any, settings: Settings | None = None, prefix: str | None = "/debug/pprof"
) -> Any:
    """Mount the endpoints at ``prefix`` and add the lifecycle middleware; returns the app to serve.

    A Starlette or FastAPI app is changed in place (and returned). Any other ASGI callable is
    wrapped: serve the returned app. ``prefix=None`` mounts nothing and only adds the middleware,
    for apps whose profiles are served on a side port by :func:`serve_in_background`.
    """
    if prefix is None:
        if hasattr(app, "add_middleware"):
            app.add_middleware(LifecycleMiddleware)
            return app
        return LifecycleMiddleware(app)
    prefix = "/" + prefix.strip("/")
    pprof = PprofApp(settings)
    if hasattr(app, "mount") and hasattr(app, "add_middleware") and hasattr(app, "router"):
        app.mount(prefix, pprof)
        # The bare prefix would otherwise get the host router's own slash redirect, which skips
        # our auth and headers: route it to the sub-app, which redirects like every response.
        app.router.routes.append(Route(prefix, _PrefixRouter(_not_found, prefix, pprof)))
        app.add_middleware(LifecycleMiddleware)
        return app
    return LifecycleMiddleware(_PrefixRouter(app, prefix, pprof))


class _PrefixRouter:
    """Send ``prefix`` and below to the pprof app, everything else to the wrapped app."""

    def __init__(self, app: ASGIApp, prefix: str, pprof: PprofApp) -> None:
        self.app, self.prefix, self.pprof = app, prefix, pprof

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = _route_path(scope)
            if path == self.prefix or path.startswith(self.prefix + "/"):
                root = scope.get("root_path", "")
                scope = {**scope, "root_path": root + self.prefix}
                await self.pprof(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BackgroundServer:
    """A pprof server running on its own thread and event loop; ``stop()`` ends both."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread, prefix: str) -> None:
        self._server, self.thread, self.prefix = server, thread, prefix

    @property
    def port(self) -> int:
        sockets = [s for srv in getattr(self._server, "servers", []) for s in srv.sockets]
        return int(sockets[0].getsockname()[1]) if sockets else 0

    @property
    def url(self) -> str:
        return f"http://{self._server.config.host}:{self.port}{self.prefix}/"

    def stop(self, timeout: float = 5.0) -> None:
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
    """
    prefix = "/" + prefix.strip("/")
    app = _PrefixRouter(_not_found, prefix, PprofApp(settings))
    config = uvicorn.Config(app, host=host, port=port, lifespan="off", access_log=False,
                            log_level="warning")
    server = uvicorn.Server(config)

    def run() -> None:
        with contextlib.suppress(SystemExit):  # uvicorn exits on a bind failure; we raise below
            server.run()

    thread = threading.Thread(target=run, name="pyprof_http-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    if not server.started:
        server.should_exit = True
        thread.join(startup_timeout)
        raise OSError(f"pyprof_http could not serve on {host}:{port} (see the log above)")
    return BackgroundServer(server, thread, prefix)
