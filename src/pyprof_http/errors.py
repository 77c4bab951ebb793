"""The error hierarchy and the one error response every failure goes through.

Like Go's ``serveError``: ``text/plain``, one line saying what was wrong and what is allowed, and
``X-Go-Pprof: 1`` so that ``go tool pprof`` prints our reason instead of just the status line.
"""

from __future__ import annotations

import os

from starlette.responses import PlainTextResponse

from .collectors.errors import Busy, CollectorError, NeedsSwitch
from .sanitize import printable

SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


class PprofError(Exception):
    """A request that cannot be served; ``str(error)`` is the one-line reason the client sees."""

    status_code = 500

    def __init__(self, reason: str) -> None:
        # one line, whatever the caller passed; a reason that echoes a parameter must not carry
        # a terminal escape back to whoever reads it
        super().__init__(printable(" ".join(reason.split()), backslash=False))

    @property
    def reason(self) -> str:
        return str(self)


class BadRequest(PprofError):
    """An invalid, conflicting or unsupported parameter."""

    status_code = 400


class Unauthorized(PprofError):
    """Credentials are required or wrong (401, with a challenge)."""

    status_code = 401


class Forbidden(PprofError):
    """The client may not have profiles whatever it sends (403)."""

    status_code = 403


class NotFound(PprofError):
    """An unknown profile, or one not on the allowlist (the two must look the same)."""

    status_code = 404


class Conflict(PprofError):
    """A profiler of that kind is already running."""

    status_code = 409


class TooManyRequests(PprofError):
    """A cap on concurrent long-running requests is reached."""

    status_code = 429


class PreconditionFailed(PprofError):
    """The profile needs something switched on first; the reason says how."""

    status_code = 412


_COLLECTOR_ERRORS: dict[type[CollectorError], type[PprofError]] = {
    Busy: Conflict,
    NeedsSwitch: PreconditionFailed,
}
"""The status of each collector error: the only place where collectors meet HTTP."""


def from_collector(error: CollectorError) -> PprofError:
    """The HTTP error a collector's error answers with (its reason unchanged); one the table
    does not know is a 500 with its reason, not a traceback."""
    for kind in type(error).__mro__:
        status = _COLLECTOR_ERRORS.get(kind)
        if status is not None:
            return status(str(error))
    return PprofError(str(error))


def error_response(status_code: int, reason: str) -> PlainTextResponse:
    """The single way an error leaves the library."""
    headers = {**SECURITY_HEADERS, "X-Go-Pprof": "1", "X-Pyprof-Worker": str(os.getpid())}
    return PlainTextResponse(reason + "\n", status_code=status_code, headers=headers)
