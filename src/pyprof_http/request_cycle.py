"""One HTTP request through the lifecycle middleware: its id, its labels, its profile.

Per request this reads the headers once (``X-Request-ID``, ``X-Pprof-Profile``), echoes the
request id in the response (the client's when it is a sane id, else a new one), and, when the
request ends, decides whether to keep its profile (:mod:`~pyprof_http.request_profiles`). The
decision is two comparisons and, with ``request_sample_rate`` set, one hash; the cut runs off
the loop. ``X-Pprof-Profile: 1`` counts only from a client the endpoints would let in (same
address, token and authorizer checks); from anyone else it is ignored.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import request_labels, request_profiles
from .auth import admitted
from .collectors.recorder import RECORDER
from .config import Settings

PROFILE_HEADER = b"x-pprof-profile"
LINK_HEADER = b"x-pprof-request-profile"
"""Response header of an asked-for request: where its profile will be (path below the host)."""


_ELSEWHERE: list[str] = []
"""URLs of the endpoints served on a side port (``serve_in_background``), newest last: where an
asked-for request's profile is when the middleware mounted nothing (``install(prefix=None)``)."""


def served_elsewhere(url: str) -> None:
    """The endpoints are (also) served at ``url`` (ending with the prefix and a slash)."""
    _ELSEWHERE.append(url)


def no_longer_served(url: str) -> None:
    if url in _ELSEWHERE:
        _ELSEWHERE.remove(url)


class RequestCycle:
    """What the middleware does around each HTTP request (settings read once)."""

    def __init__(self, settings: Settings, prefix: str | None) -> None:
        self.settings = settings
        self.prefix = prefix if prefix is not None else ""
        self.mounted = prefix is not None
        """False: ``install(prefix=None)``, the endpoints are on a side port if anywhere."""
        self.profiles = settings.allows("requests")
        self.slow_ms, self.rate = settings.slow_request_ms, settings.request_sample_rate
        self.kept, self.max_depth = settings.request_profiles_kept, settings.max_stack_depth

    async def __call__(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send,
                       entered: request_labels.Request) -> None:
        raw_id = asked_for = None
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                raw_id = value
            elif name == PROFILE_HEADER:
                asked_for = value
        text = raw_id.decode("latin-1") if raw_id is not None else ""
        request_id = text if raw_id is not None and request_labels.valid_id(text) else \
            request_labels.new_request_id()
        entered._request_id = request_id
        asked = (asked_for == b"1" and self.profiles
                 and await admitted(self.settings, scope) is not None)
        link = b""
        if asked:
            request_profiles.FULL_RATE.begin(self.max_depth)
            link = self._link(scope, quote(request_id, ""))
        id_header = request_id.encode("ascii")
        status: list[int] = []
        start = time.monotonic_ns()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
                headers = [*message.get("headers", ())]  # a copy: the list is the app's
                for name, _value in headers:  # ASGI header names are lower-case
                    if name == b"x-request-id":  # the app's own: left as it is
                        break
                else:
                    headers.append((b"x-request-id", id_header))
                if link:
                    headers.append((LINK_HEADER, link))
                message = {**message, "headers": headers}
            await send(message)

        own = self._own_endpoint(scope)  # before the app: routing changes the scope in place
        try:
            await app(scope, receive, send_with_id)
        finally:
            request_labels.leave(entered)
            if self.profiles and (asked or (RECORDER.current is not None and not own)):
                self._finish(scope, entered, request_id, start, asked,
                             status[0] if status else None)

    def _link(self, scope: Scope, quoted_id: str) -> bytes:
        """Where the request's profile will be: below the mount, or (nothing mounted) on the
        side port's server. With nothing mounted the link was ``/requests/<id>`` on the app's
        own port, a 404; with no side port known either, no link is better than a wrong one."""
        if self.mounted:
            return f"{scope.get('root_path', '')}{self.prefix}/requests/{quoted_id}".encode()
        if not _ELSEWHERE:
            return b""
        return f"{_ELSEWHERE[-1]}requests/{quoted_id}".encode()

    def _own_endpoint(self, scope: Scope) -> bool:
        """Whether the request is for the profiler's own endpoints (below the prefix): a
        ``/profile?seconds=30`` or ``/trace`` waits by design, and kept as "slow" every such
        scrape pushed a real slow request out of the ring (a scraper every minute filled it
        with nothing but its own requests). Asked for with the header, it is still kept."""
        prefix = self.prefix
        if not prefix:
            return False
        path: str = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root + "/"):
            path = path[len(root):]  # servers that put root_path in path (uvicorn >= 0.26)
        return path == prefix or path.startswith(prefix + "/")

    def _finish(self, scope: Scope, entered: request_labels.Request, request_id: str,
                start: int, asked: bool, status: int | None) -> None:
        try:
            duration = time.monotonic_ns() - start
            reason = request_profiles.reason_for(request_id, duration, asked, self.slow_ms,
                                                 self.rate)
            if reason is None:
                return
            meta: dict[str, Any] = {
                "route": entered.route, "method": str(scope.get("method", "")),
                "status": status, "started_ns": time.time_ns() - duration}
            request_profiles.keep(request_id, start, meta, reason,
                                  request_profiles.recorder_for(asked), self.kept)
        finally:
            if asked:
                request_profiles.FULL_RATE.end()
