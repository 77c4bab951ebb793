"""The flight recorder: the last minutes of CPU, always there when an incident is noticed.

A CPU sampler runs continuously at a low rate (``recorder_hz``, 19 Hz by default: see
benchmarks/recorder.py for what it costs) on the process's shared driver
(:mod:`~pyprof_http.collectors.sampling_hub`, so an on-demand ``/profile`` at 100 Hz and the
recorder run side by side and neither disturbs the other's weights). Its aggregate is handed
over every second into a ring of ``recorder_seconds`` intervals; ``/profile?last=N`` merges the
last N of them at once. Memory is bounded by the window and what one interval can hold (at most
``hz`` ticks x threads keys, fewer distinct stacks in practice), not by traffic: stacks are
interned across intervals, and past ``MAX_KEYS_PER_INTERVAL`` keys request ids are dropped from
new samples of that interval.

Only the tick writes (handing over an interval happens in the tick, before it samples); readers
copy what they read, each copy one C-level operation under the GIL.
"""

from __future__ import annotations

import collections
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from ..model import Profile
from .blocked import syscall_states
from .cpu import Aggregate, Sampler, aggregate_profile
from .errors import NeedsSwitch
from .sampling_hub import HUB, SamplingHub, Subscriber

INTERVAL_NS = 1_000_000_000
"""One ring entry per second of ticks."""
MAX_KEYS_PER_INTERVAL = 2_000
BYTES_PER_KEY = 360
"""What one (stack, labels) entry of an interval costs, measured (benchmarks/recorder.py:
7.9 MiB for 22,876 keys with a route and a request id each); stacks themselves are shared."""
NOT_RUNNING_REASON = ("the flight recorder is off in this process: it starts with the app "
                      "(install(), or a PprofApp's lifespan) when recorder_hz > 0 "
                      "(PYPROF_RECORDER_HZ, default 19); use seconds=N to record from now")


@dataclass(frozen=True, slots=True)
class Interval:
    """The samples of the ticks from ``first_ns`` to ``last_ns`` (monotonic)."""

    first_ns: int
    last_ns: int
    counts: Aggregate


class _Interner:
    """Shares equal stacks between intervals: two generations, swapped every window, so a
    stack unused for two windows is let go (memory follows the stacks of the window)."""

    def __init__(self, window: int) -> None:
        self._window = window
        self._current: dict[Any, Any] = {}
        self._previous: dict[Any, Any] = {}
        self._rotations = 0

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)

    def intern(self, counts: Aggregate) -> Aggregate:
        out: Aggregate = {}
        current, previous = self._current, self._previous
        for (stack, labels), values in counts.items():
            shared = current.get(stack)
            if shared is None:
                shared = previous.get(stack, stack)
                current[shared] = shared
            out[(shared, labels)] = values
        self._rotations += 1
        if self._rotations >= self._window:
            self._previous, self._current, self._rotations = self._current, {}, 0
        return out


class RingRecorder:
    """A sampler at ``hz`` whose samples are kept per interval for the last ``seconds``."""

    def __init__(self, hz: int, seconds: int, max_depth: int,
                 hub: SamplingHub = HUB) -> None:
        self.hz, self.seconds, self.max_depth = hz, seconds, max_depth
        self._hub = hub
        self._sampler = Sampler("cpu", max_depth, hub.skipped_threads, syscall_states())
        self._sampler.max_keys_with_request_id = MAX_KEYS_PER_INTERVAL
        self._ring: collections.deque[Interval] = collections.deque(maxlen=seconds)
        self._interner = _Interner(seconds)
        self._first_ns: int | None = None
        self._last_ns = 0
        self.started_ns = time.monotonic_ns()
        self._subscriber = Subscriber(self._sampler.tick, hz, before=self._before_tick)
        self.driver = ""
        self.closed_keys = 0
        """Keys held by the closed intervals (kept as they rotate: the index reads it)."""

    def start(self) -> None:
        self._sampler.baseline()
        self.started_ns = time.monotonic_ns()
        self._hub.subscribe(self._subscriber)
        driver = self._hub.driver
        self.driver = f"{driver.name}{driver.note}" if driver is not None else "none"

    def stop(self) -> None:
        self._hub.unsubscribe(self._subscriber)

    @property
    def ticks(self) -> int:
        return self._sampler.ticks

    def _before_tick(self, now_ns: int) -> None:
        """In the tick: close the current interval once it is a second old."""
        first = self._first_ns
        if first is None:
            self._first_ns = now_ns
        elif now_ns - first >= INTERVAL_NS:
            counts = self._sampler.take()
            if counts:
                if len(self._ring) == self._ring.maxlen:
                    self.closed_keys -= len(self._ring[0].counts)
                self._ring.append(Interval(first, self._last_ns,
                                           self._interner.intern(counts)))
                self.closed_keys += len(counts)
            self._first_ns = now_ns
        self._last_ns = now_ns

    def intervals(self) -> list[Interval]:
        """The closed intervals and the current one (copied: ticks go on meanwhile)."""
        closed, live = self.snapshot()
        return closed if live is None else [*closed, live]

    def snapshot(self) -> tuple[list[Interval], Interval | None]:
        """The closed intervals (oldest first) and the live one, copied for a reader that must
        see each interval exactly once (the pusher takes the closed ones after the last it
        took). The live one is None before the first tick, or when a tick closed it while it
        was being read: then it is among the closed ones (or was empty), never half in both.
        The ring is read again in that case: a tick (on the helper thread, or in the signal
        handler between two bytecodes) that closed the interval just after the ring was
        copied left its second of samples in neither, and /profile?last=N or a request's cut
        missed it."""
        first = self._first_ns
        items = list(self._sampler._counts.items())  # one C call: no tick interleaves with it
        last = self._last_ns
        closed = list(self._ring)
        if first is None:
            return closed, None
        if self._first_ns != first:  # closed meanwhile: in the ring now (unless it was empty)
            return list(self._ring), None
        return closed, Interval(first, last, dict(items))

    def window(self, since_ns: int, until_ns: int | None = None,
               request_id: str | None = None) -> list[tuple[Any, list[int]]]:
        """Merged samples of the intervals that overlap [since, until] (only ``request_id``'s
        when given)."""
        return merged([i for i in self.intervals()
                       if i.last_ns >= since_ns and (until_ns is None or i.first_ns <= until_ns)],
                      request_id)

    def profile(self, seconds: int, comments: tuple[str, ...] = ()) -> Profile:
        """The last ``seconds`` as a CPU profile."""
        now, wall = time.monotonic_ns(), time.time_ns()
        since = now - seconds * INTERVAL_NS
        closed, live = self.snapshot()
        chosen = [i for i in (closed if live is None else [*closed, live]) if i.last_ns >= since]
        # intervals are taken whole, so the oldest may begin up to a second before `since`
        # (and its first tick weighs the CPU since the tick before): the profile's duration
        # is the time its samples cover, or last=1 showed up to twice the real CPU share
        first = min((i.first_ns for i in chosen), default=since) - INTERVAL_NS // self.hz
        floor = self.started_ns
        if closed and len(closed) == self._ring.maxlen:  # what came before the ring is gone:
            # a window longer than the ring (another app's recorder_seconds) covers less
            floor = max(floor, closed[0].first_ns - INTERVAL_NS // self.hz)
        covered = max(0, now - max(min(since, first), floor))
        items = merged(chosen)
        return aggregate_profile("cpu", items, self.hz, wall - covered, covered, (
            f"pyprof_http flight recorder: the last {seconds} s at {self.hz} Hz "
            f"(driver={self.driver}); cpu/nanoseconds is each thread's CPU between the "
            "recorder's ticks, samples/count its ticks",
            *comments))

    def memory(self) -> tuple[int, int, int]:
        """(intervals, keys, approximate bytes) held: the index shows it."""
        intervals = self.intervals()
        keys = sum(len(i.counts) for i in intervals)
        size = sys.getsizeof(self._ring)
        stacks: dict[int, Any] = {}
        for interval in intervals:
            size += sys.getsizeof(interval.counts)
            for (stack, _labels), values in list(interval.counts.items()):
                size += 56 + 72 + sys.getsizeof(values)  # key tuple, labels tuple, the list
                stacks[id(stack)] = stack
        size += sum(sys.getsizeof(stack) for stack in stacks.values())
        return len(intervals), keys, size


def merged(intervals: list[Interval],
           request_id: str | None = None) -> list[tuple[Any, list[int]]]:
    """The samples of ``intervals`` added up per (stack, labels) (only ``request_id``'s when
    given); the intervals are left as they are."""
    out: dict[Any, list[int]] = {}
    for interval in intervals:
        for key, (count, weight) in list(interval.counts.items()):
            if request_id is not None and key[1][3] != request_id:
                continue
            entry = out.get(key)
            if entry is None:
                out[key] = [count, weight]
            else:
                entry[0] += count
                entry[1] += weight
    return list(out.items())


class FlightRecorder:
    """The process's recorder: one, started by the first app that asks, stopped by the last
    (:mod:`~pyprof_http.switches` holds the claims)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.current: RingRecorder | None = None

    def start(self, hz: int, seconds: int, max_depth: int) -> None:
        with self._lock:
            if self.current is not None:
                return
            recorder = RingRecorder(hz, seconds, max_depth)
            recorder.start()
            self.current = recorder

    def stop(self) -> None:
        with self._lock:
            recorder, self.current = self.current, None
        if recorder is not None:
            recorder.stop()

    def running(self) -> RingRecorder:
        """The running recorder, else :class:`NeedsSwitch` (412) saying how to start it."""
        recorder = self.current
        if recorder is None:
            raise NeedsSwitch(NOT_RUNNING_REASON)
        return recorder

    def describe(self) -> str:
        recorder = self.current
        if recorder is None:
            return "off"
        # O(1) (the index is rendered on the loop): keys x what one costs, measured by
        # benchmarks/recorder.py (~360 bytes with a route and a request id of its own)
        keys = recorder.closed_keys + len(recorder._sampler._counts)
        held = len(recorder._ring)
        return (f"{recorder.hz} Hz, last {held}/{recorder.seconds} s, {keys} stacks held, "
                f"~{keys * BYTES_PER_KEY / 2**20:.1f} MiB")

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self.current = None  # the child's app starts its own at its startup


RECORDER: FlightRecorder = globals().get("RECORDER") or FlightRecorder()
"""Kept across a reload of this module (the running recorder, which the switches stop)."""

if hasattr(os, "register_at_fork") and "_fork_hook_registered" not in globals():
    os.register_at_fork(after_in_child=lambda: RECORDER._after_fork_in_child())
    _fork_hook_registered = True
