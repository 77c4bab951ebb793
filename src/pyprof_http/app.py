"""The ASGI sub-application and ``install()``.

``PprofApp`` dispatches ``/<name>`` to the registry row of that name, so every profile gets the
same allowlist, parameter and error handling by construction. Work that needs the app's
lifespan (registering the serving loop and the task factory at startup, putting things back at
shutdown) lives in :class:`~pyprof_http.lifecycle.LifecycleMiddleware`, which ``install()`` adds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote_from_bytes

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ._gc import paused_gc
from ._waiting import ClientDisconnected, render_in_thread, sleep_unless_disconnected
from .auth import AuthMiddleware
from .collectors.errors import CollectorError
from .collectors.session import CURRENT_OWNER
from .config import ConfigError, Settings
from .errors import (
    SECURITY_HEADERS,
    BadRequest,
    NotFound,
    PprofError,
    TooManyRequests,
    error_response,
    from_collector,
)
from .lifecycle import LifecycleMiddleware
from .loops import LOOPS
from .model import Granularity, Profile, subtract
from .params import parse_query
from .push.labels import pushable
from .push.pusher import status as push_status
from .registry import (
    BY_NAME,
    REQUEST_PROFILE,
    Capture,
    CollectContext,
    ProfileCapture,
    ProfileSpec,
    allowed,
)
from .render import Rendered
from .render.index import IndexRow, ProcessInfo, RecordForm, render_index
from .request_profiles import REQUESTS
from .sanitize import printable
from .switches import Claims
from .workers import routing, serving
from .workers.channel import INTERNAL_KEY
from .workers.membership import WORKERS
from .workers.target import Target, split

_LOG = logging.getLogger("pyprof_http")


class PprofApp:
    """The pprof endpoints as one ASGI app; mount it anywhere (``/debug/pprof`` by convention)."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings if settings is not None else Settings()
        self.settings.check_secure()
        self.claims = Claims()
        """This app's hold on process-wide switches (released at its lifespan shutdown)."""
        unknown = sorted((self.settings.profiles or frozenset()) - set(BY_NAME))
        if unknown:
            raise ConfigError(f"profiles lists unknown names: {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(BY_NAME))}")
        self.claims.sample_heap(self.settings)  # before tracemalloc, which chains onto it
        self.claims.trace_heap(self.settings)
        self.claims.profile_locks(self.settings)
        self.watch_serving_loop = self.settings.allows("block")
        """Start the stall watchdog on the loop of the first request (mount-only use has no
        lifespan to start it); off for a side server, whose loop is not the app's."""
        self.record_leaks = self.settings.allows("goroutineleak")
        """Chain the destroyed-pending-task recorder into the loop of the first request (as
        the watchdog: mount-only use has no lifespan), put back at shutdown."""
        self._guarded = AuthMiddleware(self._serve_http, self.settings)
        self._windows: Counter[str] = Counter()
        self.claims.serves_workers(self._serve_http, self.settings.workers_rendezvous)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # mounted apps do not get it; served directly, they do
            await LifecycleMiddleware(_lifespan_only, self.settings, self.claims)(
                scope, receive, send)
        elif scope["type"] == "http":
            await self._guarded(scope, receive, send)
        elif scope["type"] == "websocket":  # nothing here speaks WebSocket: refuse the handshake
            await send({"type": "websocket.close", "code": 1008})

    async def _serve_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = LOOPS.register_if_running()  # None under trio: nothing to register or watch
        internal = scope.get(INTERNAL_KEY, False)
        if not internal:  # mount-only use has no lifespan: the first request joins (a flag)
            self.claims.join_workers()
        if loop is not None and self.watch_serving_loop and not internal:
            self.claims.watch(loop, self.settings.loop_stall_ms, self.settings.max_stack_depth)
        if loop is not None and self.record_leaks and not internal:  # mount-only: 1st request
            self.claims.record_leaks(loop)
        request = Request(scope, receive)
        owner = CURRENT_OWNER.set(self.claims.id)  # profiles started here are this app's
        try:
            if loop is None:
                raise NeedsAsyncio()
            response = await self._dispatch(request)
        except ClientDisconnected:
            return
        except PprofError as exc:
            response = error_response(exc.status_code, exc.reason)
        except CollectorError as exc:
            mapped = from_collector(exc)
            response = error_response(mapped.status_code, mapped.reason)
        except Exception:  # a bug of ours must not become the host's bare 500 page
            _LOG.exception("pyprof_http failed to serve %s", printable(request.scope["path"]))
            response = error_response(500, "internal error in pyprof_http; see the server log")
        finally:
            CURRENT_OWNER.reset(owner)
        response.headers.update(SECURITY_HEADERS)
        response.headers["X-Pyprof-Worker"] = str(os.getpid())
        await response(scope, receive, send)

    async def _dispatch(self, request: Request) -> Response:
        path = _route_path(request.scope)
        if request.method not in ("GET", "HEAD"):
            response = error_response(405, "method not allowed; use GET")
            response.headers["Allow"] = "GET, HEAD"
            return response
        if path == "":
            return RedirectResponse(request.scope["path"] + "/" + _query(request), status_code=301)
        target = split(request.scope.get("query_string", b""))
        here = request.scope.get(INTERNAL_KEY, False) or target.pid in (None, os.getpid())
        if target.pid is not None or target.everyone:
            request = Request({**request.scope, "query_string": target.rest}, request.receive)
        if path == "/":
            if target.everyone:
                raise BadRequest('"workers=all" applies to profiles; the index lists every '
                                 "worker (worker=PID shows that worker's index)")
            if here:  # links keep worker= when it was asked for
                return await self._index(request, pinned=target.pid is not None)
            return await routing.forward(path, target.pid or 0, target.rest,
                                         self.settings.worker_timeout_seconds,
                                         request.scope.get("root_path", ""))
        if path.startswith("/requests/") and self.settings.allows("requests"):
            if target.everyone:
                raise BadRequest('"workers=all" applies to profiles; a request\'s profile is '
                                 "kept by the worker that served it (worker=PID)")
            if here:
                return await self._request_profile(request, path[len("/requests/"):])
            return await routing.forward(path, target.pid or 0, target.rest,
                                         self.settings.worker_timeout_seconds)
        spec = BY_NAME.get(path[1:])
        if spec is None or not self.settings.allows(spec.name):
            raise NotFound("Unknown profile")
        if target.everyone and not request.scope.get(INTERNAL_KEY, False):
            return await self._everyone(request, path, spec, target)
        if here:
            return await self._serve(request, spec)
        # validated here first: a 400 stays here
        timeout = serving.hop_timeout(request.query_params, spec, self.settings)
        return await routing.forward(path, target.pid or 0, target.rest, timeout)

    async def _request_profile(self, request: Request, request_id: str) -> Response:
        """``/requests/<request_id>``: one kept request's profile, in any profile format
        (behind the same auth as every route: this runs inside ``_guarded``)."""
        query = parse_query(request.query_params, REQUEST_PROFILE, self.settings)
        record = await REQUESTS.wait_for(request_id)  # its cut may still be running
        if record is None:
            raise NotFound(f"no profile kept for request id {printable(request_id[:128])!r}; "
                           "see /requests for those kept")
        rendered = await _render(REQUEST_PROFILE, query.resolved_format(REQUEST_PROFILE),
                                 ProfileCapture(record.profile), query.granularity)
        return to_response(rendered)

    async def _everyone(self, request: Request, path: str, spec: ProfileSpec,
                        target: Target) -> Response:
        """``workers=all``: every worker at once; one merged profile or one text per worker."""
        rendered, headers = await serving.everyone(self._serve_http, request, path, spec,
                                                   self.settings, target.rest)
        response = to_response(rendered)
        response.headers.update(headers)
        return response

    async def _index(self, request: Request, pinned: bool = False) -> Response:
        siblings = [m.pid for m in await WORKERS.live()] if WORKERS.joined else []
        rows = [
            IndexRow(
                name=spec.name,
                description=spec.description,
                count=spec.count() if spec.count is not None else None,
                formats=[f for f in ("text", "pprof", "flamegraph", "html") if f in spec.formats],
                link_query=spec.link_query() if spec.link_query is not None else "",
                record=self._record_form(spec),
            )
            for spec in allowed(self.settings)
        ]
        pinned = pinned or request.scope.get(INTERNAL_KEY, False)
        process = ProcessInfo(os.getpid(), WORKERS.describe(), siblings, WORKERS.refusal, pinned)
        pushing = push_status()
        notes = [pushing.describe()] if pushing is not None else []
        return to_response(render_index(request.scope.get("root_path", "") + "/", rows,
                                        process, notes))

    def _record_form(self, spec: ProfileSpec) -> RecordForm | None:
        if spec.duration is None:
            return None
        limit = self.settings.max_profile_seconds
        modes = ("cpu", "wall", "tracing")
        first = ("flamegraph", "pyinstrument", "text", "pprof")
        formats = [*first, *sorted(f for f in spec.formats if f not in first)]
        return RecordForm(min(10, limit), limit, modes, formats)

    async def _serve(self, request: Request, spec: ProfileSpec) -> Response:
        query = parse_query(request.query_params, spec, self.settings)
        if spec.raw is not None:
            return to_response(spec.raw())
        assert spec.collect is not None  # the registry checks every row at import
        fmt = query.resolved_format(spec)

        async def wait(seconds: float, stop: threading.Event | None = None) -> None:
            await sleep_unless_disconnected(request, seconds, stop)

        context = CollectContext(self.settings, query, wait)
        capture: Capture
        # a snapshot built and rendered at once may keep the collector quiet (ProfileSpec.quiet_gc)
        quiet = spec.quiet_gc and query.seconds is None
        with paused_gc() if quiet else contextlib.nullcontext():
            if query.seconds is not None and spec.delta:
                with self._window(spec.name):
                    before = await spec.collect(context)
                    await wait(query.seconds)
                    after = await spec.collect(context)
                # off the loop: building and subtracting profiles of 10,000 tasks is real work
                capture = ProfileCapture(await render_in_thread(_delta, before, after))
            elif query.seconds is not None and spec.window:
                with self._window(spec.name):
                    capture = await spec.collect(context)
            else:
                capture = await spec.collect(context)
            if fmt == "pprof" and self.settings.series_safe_labels:  # scraped by a backend
                capture = ProfileCapture(pushable(capture.profile))
            rendered = await _render(spec, fmt, capture, query.granularity)
            rendered = serving.name_process(rendered, fmt)
            describe = getattr(capture, "describe", None)
            sampler = describe() if callable(describe) else None
            del capture  # a snapshot's records are freed here, while the collector is paused
        response = to_response(rendered)
        if sampler is not None:
            response.headers["X-Pyprof-Sampler"] = sampler
        return response


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


async def _render(spec: ProfileSpec, fmt: str, capture: Capture,
                  granularity: Granularity | None) -> Rendered:
    """Off the loop; once per capture, format and granularity when the capture is shared (a
    goroutine snapshot handed to every request that arrived while it was taken)."""
    render_at = serving.naming_process(spec.formats[fmt].render_at, fmt)

    async def rendered() -> Rendered:
        return await render_in_thread(render_at, capture, spec.name, granularity)

    once = getattr(capture, "render_once", None)
    if callable(once):
        shared: Rendered = await once((fmt, spec.name, granularity), rendered)
        return shared
    return await rendered()


def _delta(before: Capture, after: Capture) -> Profile:
    return subtract(after.profile, before.profile)


def to_response(rendered: Rendered) -> Response:
    """Headers follow from the rendered body: downloads get a file name, HTML gets its CSP."""
    response = Response(rendered.body, media_type=rendered.media_type)
    if rendered.filename is not None:
        response.headers["Content-Disposition"] = f'attachment; filename="{rendered.filename}"'
    if rendered.content_security_policy is not None:
        response.headers["Content-Security-Policy"] = rendered.content_security_policy
        response.headers["X-Frame-Options"] = "DENY"
    return response


def _route_path(scope: Scope) -> str:
    """The path below the mount point (Starlette keeps the full path and sets root_path)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


def _query(request: Request) -> str:
    """``?`` and the query as sent, bytes outside ASCII percent-encoded. Not request.url: it
    decodes the query as strict UTF-8, and ASGI allows any bytes (hypercorn passes them)."""
    raw: bytes = request.scope.get("query_string", b"")
    return "?" + quote_from_bytes(raw, safe="/?:@!$&'()*+,;=%") if raw else ""


async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
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
            app.add_middleware(LifecycleMiddleware, settings=settings)
            return app
        return LifecycleMiddleware(app, settings)
    prefix = "/" + prefix.strip("/")
    pprof = PprofApp(settings)
    if hasattr(app, "mount") and hasattr(app, "add_middleware") and hasattr(app, "router"):
        app.mount(prefix, pprof)
        # The bare prefix would otherwise get the host router's own slash redirect, which skips
        # our auth and headers: route it to the sub-app, which redirects like every response.
        app.router.routes.append(Route(prefix, PrefixRouter(not_found, prefix, pprof)))
        app.add_middleware(LifecycleMiddleware, settings=pprof.settings, claims=pprof.claims,
                           prefix=prefix)
        return app
    return LifecycleMiddleware(PrefixRouter(app, prefix, pprof), pprof.settings, pprof.claims,
                               prefix)


class NeedsAsyncio(PprofError):
    """Served without an asyncio event loop (trio): say so, and what works instead."""

    status_code = 412

    def __init__(self) -> None:
        super().__init__("pyprof_http's endpoints run on an asyncio event loop and this server "
                         "runs another (trio?): asyncio tasks, stalls and profiles cannot be "
                         "read from here; call pyprof_http.serve_in_background(port=6060) at "
                         "startup and read threads and profiles from that side port")


class PrefixRouter:
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
