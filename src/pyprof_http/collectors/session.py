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
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from .errors import Busy

_TURN_POLL_S = 0.02
"""How often a request waiting for the end of the previous window looks again."""
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

    def ending_within(self, kind: str, grace: float) -> float | None:
        """Seconds until the running ``kind`` session is due to end, if that is at most
        ``grace`` (or it is overdue: 0); None when none runs or it has longer to go."""
        with self._lock:
            running = self._active.get(kind)
            if running is None:
                return None
            left = running.seconds - (time.monotonic() - running.started)
        return max(0.0, left) if left <= grace else None

    async def await_turn(self, kind: str, grace: float,
                         sleep: Callable[[float], Awaitable[None]]) -> None:
        """Wait, at most ``grace`` seconds past its due end, for a ``kind`` session that is
        about to end, so that the next :meth:`claim` does not answer 409.

        Scrapers (Grafana Alloy, Parca) ask for back-to-back CPU windows: ``seconds=14`` every
        15 s, or ``seconds=10`` every 10 s (Parca's window is the whole interval). A window
        ends a little after its due time (the timer, a loaded loop), so the next scrape can
        arrive while it still holds the slot; it waits for it here instead of failing. A
        session with more than ``grace`` seconds to go is a real conflict: no wait.
        ``sleep`` ends early (raising) when the client disconnects.
        """
        left = self.ending_within(kind, grace)
        if left is None:
            return
        deadline = time.monotonic() + left + grace
        while self.ending_within(kind, grace) is not None and time.monotonic() < deadline:
            await sleep(_TURN_POLL_S)

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
