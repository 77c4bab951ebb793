"""One profiler of a kind at a time, and every one of them stoppable at shutdown.

Two CPU profiles cannot share the interval timer or yappi's global state, so a second request
gets a 409 at once (Go answers 500) saying what runs and for how long. The app's shutdown sets
every running session's stop event, so a 60-second profile does not hold the process open.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..errors import Conflict


@dataclass(frozen=True)
class ActiveSession:
    what: str
    started: float
    seconds: float
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
                raise Conflict(
                    f"a {running.what} profile is already running (started {elapsed:.0f} s ago, "
                    f"{max(0.0, running.seconds - elapsed):.0f} s left); one at a time"
                )
            session = self._active[kind] = ActiveSession(what, time.monotonic(), seconds)
        try:
            yield session.stop
        finally:
            with self._lock:
                self._active.pop(kind, None)

    def running(self) -> list[str]:
        with self._lock:
            return sorted(self._active)

    def stop_all(self) -> None:
        """Ask every running profiler to finish now (app shutdown)."""
        with self._lock:
            sessions = list(self._active.values())
        for session in sessions:
            session.stop.set()


SESSIONS = ProfilerSessions()
