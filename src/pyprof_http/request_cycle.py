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

from starlette.types import Scope

from . import request_labels, request_profiles
from .auth import admitted
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
        self.slow_ns = self.slow_ms * 1_000_000 if self.slow_ms else 2**63
        """A request at least this long may be kept for being slow (none when 0)."""
        self.kept, self.max_depth = settings.request_profiles_kept, settings.max_stack_depth

    def identify(self, scope: Scope) -> tuple[str, bytes | None]:
        """The request's id (the client's when sane, else a new one) and the value of its
        ``X-Pprof-Profile`` header, if any: one pass over the headers."""
        raw_id = asked_for = None
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                raw_id = value
            elif name == PROFILE_HEADER:
                asked_for = value
        if raw_id is not None:
            text = raw_id.decode("latin-1")
            if request_labels.valid_id(text):
                return text, asked_for
        return request_labels.new_request_id(), asked_for

    async def admits(self, asked_for: bytes, scope: Scope) -> bool:
        """Whether ``X-Pprof-Profile: <asked_for>`` asks for this request's profile, from a
        client the endpoints would let in."""
        return (asked_for == b"1" and self.profiles
                and await admitted(self.settings, scope) is not None)

    def begin_asked(self, root_path: str, request_id: str) -> bytes:
        """Sample at the full rate while the asked-for request runs; where its profile will be
        (the header that says so), or ``b""`` when nothing serves it."""
        request_profiles.FULL_RATE.begin(self.max_depth)
        return self._link(root_path, quote(request_id, ""))

    def finish(self, scope: Scope, path: str, root_path: str, entered: request_labels.Request,
               request_id: str, start: int, asked: bool, status: int | None) -> None:
        """The request has ended: keep its profile if it was slow, sampled or asked for.
        ``path`` and ``root_path`` as the request arrived (routing changes the scope)."""
        try:
            duration = time.monotonic_ns() - start
            if not asked and self._own_endpoint(path, root_path):
                return
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

    def _link(self, root_path: str, quoted_id: str) -> bytes:
        """Where the request's profile will be: below the mount, or (nothing mounted) on the
        side port's server. With nothing mounted the link was ``/requests/<id>`` on the app's
        own port, a 404; with no side port known either, no link is better than a wrong one."""
        if self.mounted:
            return f"{root_path}{self.prefix}/requests/{quoted_id}".encode()
        if not _ELSEWHERE:
            return b""
        return f"{_ELSEWHERE[-1]}requests/{quoted_id}".encode()

    def _own_endpoint(self, path: str, root_path: str) -> bool:
        """Whether the request is for the profiler's own endpoints (below the prefix): a
        ``/profile?seconds=30`` or ``/trace`` waits by design, and kept as "slow" every such
        scrape pushed a real slow request out of the ring (a scraper every minute filled it
        with nothing but its own requests). Asked for with the header, it is still kept."""
        prefix = self.prefix
        if not prefix:
            return False
        if root_path and path.startswith(root_path + "/"):
            path = path[len(root_path):]  # servers that put root_path in path (uvicorn >= 0.26)
        return path == prefix or path.startswith(prefix + "/")
