"""CPU and wall-clock sampling of every thread: the ``profile`` endpoint.

Each tick reads ``sys._current_frames()`` and, in CPU mode, every thread's own CPU clock, so a
sample is weighted by the CPU that thread really used since the previous tick: idle threads
drop out and busy ones get their true share, whatever the tick rate achieved. Wall mode weights
every thread by the time between ticks. Stacks are aggregated as they come, so memory grows
with the number of distinct stacks, not with the duration.

Where that CPU is charged: a thread found blocked in a system call at the tick (a sleep, I/O,
a poll; ``blocked.py``) spent the CPU since the previous tick *before* it blocked, so it is
charged to the stack the thread was last seen running at, not to the blocking line (its
``samples`` count is not raised: no tick saw it running there). The tick is not independent of
such moments: it needs the GIL, and gets it soonest when a thread gives it up to block, so
charging the blocking stack sent 30-80 % of a burst-and-sleep loop's CPU to its
``time.sleep`` line (measured). A thread never seen running in this profile keeps its CPU where
it is seen. For the same reason the GIL switch interval is shortened while sampling
(``_short_gil_switches``), so that a waiting tick takes the GIL from a running thread within
0.5 ms rather than waiting up to 5 ms for it to block.

What drives the ticks matters more than anything else (measured with benchmarks/cpu.py): a
Python thread sleeping between ticks is starved by a busy event loop (0.5-3.5 ticks/s instead
of 100), while a ``setitimer`` signal handler on the main thread keeps ~100/s. So: a signal
driver when this runs on the main thread and the signal is free (with a helper thread for when
the main thread cannot run the handler); else a callback on the running loop (which sees other
threads well but not its own); else a sampler thread. Whatever the driver, ticks never nest and
their cost is bounded (``drivers.TickGate``). Which driver ran, the rate it achieved and how
many ticks were dropped or held back are reported with the profile.

The tick may run inside a signal handler, between two bytecodes of whatever the main thread
was doing, so it waits for no lock (``threading.enumerate`` takes one; ``threading._active`` is
read as is), makes no call that releases the GIL, and never raises.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any, Literal

from ..loops import LOOPS, is_auto_task_name, running_task
from ..model import Profile, Sample, ValueType
from ..request_labels import Request, task_request, thread_request, threads_snapshot
from .blocked import IsBlocked, syscall_states
from .drivers import Driver, TickGate, TickStats, choose_driver, outside_the_handler
from .frames import frame_stack, thread_frames, to_frame
from .sampling_hub import HUB, Subscriber

Mode = Literal["cpu", "wall"]
SAMPLES = ValueType("samples", "count")
TIME_TYPES: dict[str, ValueType] = {
    "cpu": ValueType("cpu", "nanoseconds"),
    "wall": ValueType("wall", "nanoseconds"),
}
_MAX_KEYS_WITH_REQUEST_ID = 5_000
_MAX_STATE_READS = 64
"""Busy threads whose kernel state one tick reads (~10-30 µs each); the rest count as running."""
SWITCH_INTERVAL_S = 0.0005
"""The GIL switch interval while sampling (CPython's default is 5 ms); see ``record``."""
_LabelKey = tuple[str, str, str, str]
"""thread, task, route, request_id ("" when absent)."""


def thread_cpu_ns(native_id: int) -> int | None:
    """A thread's CPU time, or None once it has exited.

    ``time.pthread_getcpuclockid(ident)`` segfaults for a thread that has exited (and with a
    native id); on Linux this clock id names the same clock and fails cleanly with OSError.
    """
    try:
        return time.clock_gettime_ns(((~native_id) << 3) | 6)
    except OSError:
        return None


class Sampler:
    """Aggregates ticks into ``{(stack, labels): [samples, nanoseconds]}``."""

    def __init__(self, mode: Mode, max_depth: int, skip: Callable[[], set[int]],
                 blocked: IsBlocked | None = None) -> None:
        self.mode = mode
        self._blocked = blocked if mode == "cpu" else None
        self._last_running: dict[int, tuple[Any, _LabelKey]] = {}
        self.carried = 0
        """CPU (ns) moved from a blocking stack to where its thread last ran."""
        self.max_depth = max_depth
        self.max_keys_with_request_id = _MAX_KEYS_WITH_REQUEST_ID
        self.ticks = 0
        self.errors = 0
        self._skip = skip
        self._counts: dict[tuple[Any, _LabelKey], list[int]] = {}
        self._last_cpu: dict[int, int] = {}
        self._last_tick = time.monotonic_ns()
        self._main = threading.main_thread().ident
        self._loops = {info.thread_ident: info.loop for info in LOOPS.running()}
        self._in_work: tuple[dict[int, Request], dict[int, Request]] = ({}, {})

    def baseline(self) -> None:
        """Read every thread's CPU clock so the first tick has something to subtract (CPU mode:
        wall mode reads no CPU clock, and works where there is none to read, e.g. Windows)."""
        self._last_tick = time.monotonic_ns()
        if self.mode != "cpu":
            return
        for thread in list(threading._active.values()):  # type: ignore[attr-defined]
            native: int | None = getattr(thread, "native_id", None)
            cpu = thread_cpu_ns(native) if native is not None else None
            if native is not None and cpu is not None:
                self._last_cpu[native] = cpu

    def tick(self, interrupted: FrameType | None = None) -> None:
        """Sample every thread once. Never raises: it may run inside a signal handler."""
        try:
            self._tick(interrupted)
        except Exception:  # a failed tick is counted and reported, never propagated
            self.errors += 1

    def _tick(self, interrupted: FrameType | None) -> None:
        now = time.monotonic_ns()
        wall = now - self._last_tick
        self._last_tick = now
        self.ticks += 1
        in_work_before = threads_snapshot()  # which request each worker thread serves
        chains = dict(thread_frames(self.max_depth))  # one C call: see thread_frames
        self._in_work = (in_work_before, threads_snapshot())
        frames: dict[int, FrameType] = {ident: c[0] for ident, c in chains.items() if c}
        if self._main is not None:
            if interrupted is not None:
                frames[self._main] = interrupted  # not the handler's own frame
            elif self._main in frames:  # ticking on another thread: the main thread may be
                outer = outside_the_handler(frames[self._main])  # in the handler
                if outer is not None:
                    frames[self._main] = outer
        threads: dict[int, threading.Thread] = dict(threading._active)  # type: ignore[attr-defined]
        skip = self._skip()
        cpu_mode = self.mode == "cpu"
        blocked = self._blocked
        reads = _MAX_STATE_READS
        running = True
        native: int | None = None
        # past this many distinct (stack, labels), request ids are dropped from new samples:
        # memory must follow distinct stacks, not the number of requests served
        keep_request_id = len(self._counts) < self.max_keys_with_request_id
        for ident, top in frames.items():
            if ident in skip:
                continue
            thread = threads.get(ident)
            if cpu_mode:  # keyed by native id: pthread idents are reused as soon as one exits
                native = getattr(thread, "native_id", None)
                if native is None:
                    continue
                cpu = thread_cpu_ns(native)
                if cpu is None:
                    continue
                previous = self._last_cpu.get(native)
                self._last_cpu[native] = cpu
                weight = 0 if previous is None else cpu - previous
                if weight <= 0:
                    continue  # idle since the last tick: not in a CPU profile
                running = True
                if (blocked is not None and reads > 0
                        and not (ident == self._main and interrupted is not None)):
                    reads -= 1
                    running = not blocked(native)
                if not running and native in self._last_running:
                    # spent before it blocked: where it was last seen running (module docstring)
                    # (setdefault: the recorder may have taken the aggregate since)
                    self._counts.setdefault(self._last_running[native], [0, 0])[1] += weight
                    self.carried += weight
                    continue
            else:
                weight = wall
            labels = self._labels(ident, thread)
            if not keep_request_id and labels[3]:
                labels = (labels[0], labels[1], labels[2], "")
            chain = chains.get(ident)
            stack = (tuple(map(to_frame, chain)) if chain and chain[0] is top
                     else frame_stack(top, self.max_depth))  # the main thread's, replaced above
            key = (stack, labels)
            entry = self._counts.get(key)
            if entry is None:
                self._counts[key] = [1, weight]
            else:
                entry[0] += 1
                entry[1] += weight
            if cpu_mode and running and native is not None:
                self._last_running[native] = key
        if cpu_mode and interrupted is not None:
            # the tick ran on the main thread: charge its cost to no one (re-read the clock)
            main = threads.get(self._main) if self._main is not None else None
            native = getattr(main, "native_id", None)
            if native is not None and native in self._last_cpu:
                cpu = thread_cpu_ns(native)
                if cpu is not None:
                    self._last_cpu[native] = cpu

    def _labels(self, ident: int, thread: threading.Thread | None) -> _LabelKey:
        name = thread.name if thread is not None else f"thread-{ident}"
        loop = self._loops.get(ident)
        task = running_task(loop) if loop is not None else None
        if task is None:  # thread-pool work a request submitted (thread_labels), or nothing
            request = thread_request(ident, *self._in_work)
            return (name, "", *request) if request is not None else (name, "", "", "")
        request = task_request(task)
        route, request_id = request if request is not None else ("", "")
        task_name = task.get_name()
        # asyncio's Task-N names are one label value per request: left out (loops' policy)
        return name, "" if is_auto_task_name(task_name) else task_name, route, request_id

    def take(self) -> dict[tuple[Any, _LabelKey], list[int]]:
        """Hand over the aggregate so far and start a new one (the recorder's intervals); only
        from a tick, or while no tick runs."""
        counts, self._counts = self._counts, {}
        return counts

    def profile(
        self, hz: int, time_ns: int, duration_ns: int, comments: tuple[str, ...]
    ) -> Profile:
        return aggregate_profile(self.mode, list(self._counts.items()), hz, time_ns,
                                 duration_ns, comments)


Aggregate = dict[tuple[Any, _LabelKey], list[int]]
"""(stack, labels) -> [samples, nanoseconds]: what a sampler (or a recorder interval) holds."""


def aggregate_profile(mode: Mode, items: list[tuple[tuple[Any, _LabelKey], list[int]]], hz: int,
                      time_ns: int, duration_ns: int, comments: tuple[str, ...]) -> Profile:
    """The profile of aggregated samples (``Sampler.profile``, the recorder's windows)."""
    samples = []
    for (stack, (thread, task, route, request_id)), (count, weight) in items:
        labels = {"thread": thread}
        for key, value in (("task", task), ("route", route), ("request_id", request_id)):
            if value:
                labels[key] = value
        samples.append(Sample(stack, (count, weight), labels))
    time_type = TIME_TYPES[mode]
    return Profile(
        sample_types=(SAMPLES, time_type),
        samples=tuple(samples),
        period_type=time_type,
        period=1_000_000_000 // hz,
        time_ns=time_ns,
        duration_ns=duration_ns,
        comments=comments,
        default_sample_type=time_type.type,
    )


@dataclass(frozen=True)
class CpuCapture:
    """A CPU or wall profile and how it was taken."""

    profile: Profile
    driver: str
    requested_hz: int
    achieved_hz: float
    ticks: TickStats | None = None

    def describe(self) -> str:
        return (f"driver={self.driver}; requested_hz={self.requested_hz}; "
                f"achieved_hz={self.achieved_hz:.1f}")


@contextlib.contextmanager
def _short_gil_switches() -> Iterator[None]:
    """Lower the GIL switch interval while sampling, and put it back.

    A tick needs the GIL. A thread running Python keeps it until it blocks or until the tick
    has waited a switch interval (5 ms by default); most bursts end within 5 ms, so ticks took
    the GIL from threads just entering ``time.sleep`` or a read, and found them there (0.45-1.0
    of a burst-and-sleep thread's CPU sampled on its ``time.sleep`` line, measured; 0.00 with
    0.5 ms). The cost is more GIL hand-offs between the application's own threads while a
    profile runs, only when they contend. Left alone if someone changed it meanwhile.
    """
    previous = sys.getswitchinterval()
    if previous <= SWITCH_INTERVAL_S:  # already short: nothing to change, nothing to put back
        yield
        return
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    ours = sys.getswitchinterval()
    try:
        yield
    finally:
        if sys.getswitchinterval() == ours:
            # the setter truncates to whole µs and the getter multiplies by 1e-6: without the
            # half µs, a quarter of the values came back a µs shorter
            sys.setswitchinterval(previous + 0.5e-6)


async def record(
    mode: Mode, hz: int, seconds: float, max_depth: int,
    wait: Callable[[float], Awaitable[None]],
) -> CpuCapture:
    """Sample for ``seconds`` (``wait`` may end early: disconnect, shutdown); always stops.

    CPU mode ticks from the process's shared driver (``sampling_hub``: the flight recorder may
    be sampling already); wall mode has its own (its ticks must come while the process idles).
    """
    if mode == "cpu":
        return await _record_shared(hz, seconds, max_depth, wait)
    driver: Driver = choose_driver(mode)
    sampler = Sampler(mode, max_depth, driver.skipped_threads, syscall_states())
    gate = TickGate(sampler.tick, 1.0 / hz)
    sampler.baseline()
    started, wall_started = time.monotonic_ns(), time.time_ns()
    with _short_gil_switches():
        driver.start(gate)
        try:
            await wait(seconds)
        finally:
            driver.stop()
    duration = time.monotonic_ns() - started
    achieved = sampler.ticks / (duration / 1e9) if duration else 0.0
    stats = gate.stats()
    comments = (
        f"pyprof_http {mode} profile: driver={driver.name}, requested {hz} Hz, "
        f"achieved {achieved:.1f} Hz{driver.note}",
        f"ticks: {stats.describe()}",
        *((f"{sampler.errors} ticks failed",) if sampler.errors else ()),
    )
    profile = sampler.profile(hz, wall_started, duration, comments)
    return CpuCapture(profile, driver.name, hz, achieved, stats)


async def _record_shared(hz: int, seconds: float, max_depth: int,
                         wait: Callable[[float], Awaitable[None]]) -> CpuCapture:
    sampler = Sampler("cpu", max_depth, HUB.skipped_threads, syscall_states())
    subscriber = Subscriber(sampler.tick, hz)
    before = HUB.stats()
    sampler.baseline()
    started, wall_started = time.monotonic_ns(), time.time_ns()
    with _short_gil_switches():
        HUB.subscribe(subscriber)
        try:
            driver = HUB.driver
            name = driver.name if driver is not None else "none"
            note = driver.note if driver is not None else ""
            shared = HUB.hz() != hz or before is not None
            await wait(seconds)
            after = HUB.stats()
        finally:
            HUB.unsubscribe(subscriber)
    duration = time.monotonic_ns() - started
    achieved = sampler.ticks / (duration / 1e9) if duration else 0.0
    stats = _difference(after, before)
    comments = (
        f"pyprof_http cpu profile: driver={name}, requested {hz} Hz, "
        f"achieved {achieved:.1f} Hz{note}",
        f"ticks: {stats.describe()}"
        + (" (of the driver shared with the flight recorder)" if shared else ""),
        *((f"{sampler.errors} ticks failed",) if sampler.errors else ()),
    )
    profile = sampler.profile(hz, wall_started, duration, comments)
    return CpuCapture(profile, name, hz, achieved, stats)


def _difference(after: TickStats | None, before: TickStats | None) -> TickStats:
    """The driver's tick counts over one profile (the driver may have run before it)."""
    if after is None:
        return TickStats(0, 0, 0, 0.0, 0)
    if before is None:
        return after
    return TickStats(after.ran - before.ran, after.dropped - before.dropped,
                     after.throttled - before.throttled,
                     after.cost_seconds - before.cost_seconds, after.max_running)
