"""One profiler of a kind at a time, and every one of them stoppable at shutdown.

Two CPU profiles cannot share the interval timer or yappi's global state, so a second request
gets a 409 at once (Go answers 500) saying what runs and for how long. The app's shutdown sets
stop event of every session that app started (each session remembers the app serving the
request that claimed it), so a 60-second profile does not hold the process open and another
app in the same process keeps its own.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from .errors import Busy

CURRENT_OWNER: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "pyprof_http_owner", default=None)
"""The id of the app serving the current request (``switches.Claims.id``): a profile it starts
is stopped by that app's shutdown, not by another app's in the same process."""


@dataclass(frozen=True)
class ActiveSession:
    what: str
    started: float
    seconds: float
    owner: int | None = None
    stop: threading.Event = field(default_factory=threading.Event)


class ProfilerSessions:
    """The running profilers by kind (``cpu`` covers cpu, wall and tracing)."""

    def __init__(self) -> None:
        self._active: dict[str, ActiveSession] = {}
        self._lock = threading.Lock()
        self.shutting_down = False
        """Set by a signal handler, which must take no lock: every wait polls it."""

    @contextlib.contextmanager
    def claim(self, kind: str, what: str, seconds: float) -> Iterator[threading.Event]:
        """Hold the ``kind`` slot for the block; yields the event that asks it to stop early."""
        with self._lock:
            running = self._active.get(kind)
            if running is not None:
                elapsed = time.monotonic() - running.started
                raise Busy(
                    f"a {running.what} profile is already running (started {elapsed:.0f} s ago, "
                    f"{max(0.0, running.seconds - elapsed):.0f} s left); one at a time"
                )
            session = self._active[kind] = ActiveSession(
                what, time.monotonic(), seconds, CURRENT_OWNER.get())
        try:
            yield session.stop
        finally:
            with self._lock:
                self._active.pop(kind, None)

    def running(self) -> list[str]:
        with self._lock:
            return sorted(self._active)

    def stop_all(self, owner: int | None = None) -> None:
        """Ask the running profilers ``owner`` started (all of them if None) to finish now:
        an app's shutdown stops its own profiles, not those another app in the process runs."""
        with self._lock:
            sessions = [s for s in self._active.values() if owner is None or s.owner == owner]
        for session in sessions:
            session.stop.set()


SESSIONS = ProfilerSessions()
