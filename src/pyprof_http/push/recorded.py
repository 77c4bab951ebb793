"""Pushed CPU from the flight recorder while it runs, else from the push sampler.

The flight recorder (``recorder_hz`` > 0, on by default) already samples every thread and
closes an interval every second; a second sampler for the pusher would only double the ticks.
So while a recorder runs, each push takes the intervals it closed since the previous push:
those whose ``first_ns`` is after the last one pushed, so a second is pushed exactly once and a
half-filled interval never (it is taken once closed). A push covers ``[from, until)`` on the
monotonic clock, ``until`` being the start of the interval still open, so pushes are back to
back and every interval they hold starts inside their span.

The recorder is process-wide and comes and goes with the apps that hold it; the choice is made
again at every take. A recorder that stopped (app shutdown stops it before the pusher's last
flush) holds its last intervals still: they are taken with its open one, then the pusher
falls back to a sampler of its own (``fallback``, started only then). A recorder that starts
later takes over from the pusher's sampler at the next take, with the intervals starting after
that take (the one in progress overlaps the sampler's last profile: it is left out, a gap of
under a second, never a double count). The final flush takes the open interval as well and
remembers it, so it would not be taken again once closed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal, Protocol

from ..collectors.cpu import aggregate_profile
from ..collectors.recorder import FlightRecorder, RingRecorder, merged
from ..model import Profile


class CpuSource(Protocol):
    def start(self) -> None: ...
    def take(self, final: bool = False) -> Profile | None:
        """The CPU profile since the previous take; ``final``: the last one (at shutdown)."""
    def stop(self) -> None: ...


class RecordedCpu:
    """Pushed CPU profiles from ``flight``'s recorder when one runs, else from ``fallback()``
    (created at the first take that needs it, its thread started once :meth:`start` ran)."""

    def __init__(self, flight: FlightRecorder, fallback: Callable[[], CpuSource]) -> None:
        self._flight = flight
        self._fallback = fallback
        self._recorder: RingRecorder | None = None
        self._own: CpuSource | None = None
        self._started = False
        self._after_ns = -1
        """Intervals starting after this (monotonic) are not pushed yet."""
        self._from_ns = 0
        self.span_ns: tuple[int, int] | None = None
        """The monotonic ``[from, until)`` of the last profile taken from a recorder: it holds
        every interval of that recorder that starts inside it, and no other."""

    @property
    def using(self) -> Literal["recorder", "sampler", "none"]:
        """Where the next take reads from (as decided by the last one)."""
        if self._recorder is not None:
            return "recorder"
        return "sampler" if self._own is not None else "none"

    def start(self) -> None:
        self._started = True
        if self._recorder is None and self._own is None:
            self._choose()
        elif self._own is not None:
            self._own.start()

    def stop(self) -> None:
        self._stop_own()
        self._recorder = None  # the recorder is the app's: it goes on

    def take(self, final: bool = False) -> Profile | None:
        current = self._flight.current
        recorder = self._recorder
        if recorder is None and self._own is None:
            self._choose()
            recorder = self._recorder
        if recorder is not None:
            if recorder is current:
                return self._read(recorder, final)
            # stopped (or replaced): no tick comes any more, its open interval is complete
            drained = self._read(recorder, final=True)
            self._recorder = None
            if current is not None:
                self._attach(current, -1, min(self._from_ns, current.started_ns))
            elif not final:
                self._fall_back()
            return drained
        own = self._own
        profile = own.take(final) if own is not None else None
        if current is not None and not final:
            # a recorder started meanwhile: from now on, without the interval in progress
            # (its ticks before now are in the sampler's profile just taken)
            self._stop_own()
            now = time.monotonic_ns()
            self._attach(current, now, now)
        return profile

    # --- choosing ---------------------------------------------------------------------------

    def _choose(self) -> None:
        recorder = self._flight.current
        if recorder is None:
            self._fall_back()
            return
        # from the interval in progress on: what the recorder held before is not this
        # pusher's to send (it may be minutes of it)
        closed, live = recorder.snapshot()
        self._attach(recorder, closed[-1].first_ns if closed else -1,
                     live.first_ns if live is not None else time.monotonic_ns())

    def _attach(self, recorder: RingRecorder, after_ns: int, from_ns: int) -> None:
        self._recorder, self._after_ns, self._from_ns = recorder, after_ns, from_ns

    def _fall_back(self) -> None:
        own = self._own = self._fallback()
        if self._started:
            own.start()

    def _stop_own(self) -> None:
        own, self._own = self._own, None
        if own is not None:
            own.stop()

    # --- reading ----------------------------------------------------------------------------

    def _read(self, recorder: RingRecorder, final: bool) -> Profile:
        closed, live = recorder.snapshot()
        now = time.monotonic_ns()
        fresh = [i for i in closed if i.first_ns > self._after_ns]
        if final:
            if live is not None and live.first_ns > self._after_ns:
                fresh.append(live)  # remembered below: not taken again once closed
            until = now
        elif live is not None:
            until = live.first_ns
        else:  # a tick closed the open interval while it was read: the next take has it
            until = closed[-1].last_ns + 1 if closed else self._from_ns
        if fresh:
            until = max(until, fresh[-1].last_ns + 1)
        start = min(self._from_ns, fresh[0].first_ns) if fresh else self._from_ns
        until = max(until, start)  # empty when no interval closed since (still back to back)
        if fresh:
            self._after_ns = fresh[-1].first_ns
        self._from_ns = until
        self.span_ns = (start, until)
        wall = time.time_ns() - (time.monotonic_ns() - start)
        return aggregate_profile("cpu", merged(fresh), recorder.hz, wall, until - start, (
            f"pyprof_http push: {len(fresh)} intervals of the flight recorder "
            f"({recorder.hz} Hz, driver={recorder.driver}), each pushed once; cpu/nanoseconds "
            "is each thread's CPU between the recorder's ticks, samples/count its ticks",))

