"""One batch of pushed profiles (push/sources.py): mutex pushed as the change since the last
push, stalls since the last push, CPU from the push sampler with its labels."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Iterable
from typing import Any

import pprof_schema
from pyprof_http import request_labels
from pyprof_http.collectors import locks
from pyprof_http.collectors.recorder import (
    INTERVAL_NS,
    RECORDER,
    FlightRecorder,
    Interval,
    RingRecorder,
)
from pyprof_http.collectors.sampling_hub import Subscriber
from pyprof_http.config import Settings
from pyprof_http.model import Profile
from pyprof_http.push.labels import pushable, series, span_id
from pyprof_http.push.recorded import RecordedCpu
from pyprof_http.push.sources import Collector, SamplerThread, cpu_source
from pyprof_http.switches import Claims, set_lock_profile_fraction


def _by_name(collector: Collector) -> dict[str, object]:
    return {s.name: pprof_schema.decode(s.pprof) for s in collector.batch(final=True)}


def _contend(lock: threading.Lock) -> None:
    held = threading.Event()

    def holder() -> None:
        with lock:
            held.set()
            time.sleep(0.05)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(30)
    with lock:  # waits for the holder: one contention
        pass
    thread.join(30)


def _contentions(profile: Any) -> int:
    """Contentions on stacks through :func:`_contend` (other threads of the test process may
    contend on locks of their own while lock profiling is on for everyone)."""
    names = {f.id: profile.string_table[f.name] for f in profile.function}
    through = {loc.id for loc in profile.location
               if any(names[line.function_id] == "_contend" for line in loc.line)}
    return sum(sample.value[0] for sample in profile.sample
               if through.intersection(sample.location_id))


def test_mutex_is_pushed_as_the_change_since_the_last_push() -> None:
    previous = set_lock_profile_fraction(1)
    try:
        assert locks.is_enabled()
        lock = threading.Lock()
        collector = Collector(64, None, lambda: {"service_name": "t"})
        _contend(lock)
        first = _by_name(collector)
        assert _contentions(first["mutex"]) >= 1
        _contend(lock)
        _contend(lock)
        second = _by_name(collector)
        assert _contentions(second["mutex"]) == 2  # not the cumulative 3
        third = _by_name(collector)  # nothing new from us: no empty series, nothing of ours
        assert "mutex" not in third or (third["mutex"].sample  # type: ignore[attr-defined]
                                         and _contentions(third["mutex"]) == 0)
        collector.cpu.stop()
    finally:
        set_lock_profile_fraction(previous)


async def _on_loop(call: Any, *args: Any) -> None:
    call(*args)  # the watchdog learns its loop's thread from the thread that starts it


def _longest_stall_ns(pushed: dict[str, object]) -> int:
    """The longest stall in a pushed block profile (0 when none was pushed): a loaded machine
    may add short stalls of its own, so tests look for the one they caused, not for silence."""
    profile = pushed.get("block")
    if profile is None:
        return 0
    return max((sample.value[1] for sample in profile.sample), default=0)  # type: ignore[attr-defined]


def test_stalls_since_the_last_push_are_pushed_as_block() -> None:
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    claims = Claims()
    blocked_s = 0.6
    try:
        asyncio.run_coroutine_threadsafe(_on_loop(claims.watch, loop, 20, 64), loop).result(30)
        collector = Collector(64, loop, lambda: {"service_name": "t"})
        assert _longest_stall_ns(_by_name(collector)) < blocked_s * 1e9
        loop.call_soon_threadsafe(time.sleep, blocked_s)
        deadline = time.monotonic() + 20
        while True:
            pushed = _by_name(collector)
            if _longest_stall_ns(pushed) >= blocked_s * 0.9e9 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert _longest_stall_ns(pushed) >= blocked_s * 0.9e9
        assert _longest_stall_ns(_by_name(collector)) < blocked_s * 0.9e9  # pushed: not again
        collector.cpu.stop()
    finally:
        claims.release_all()
        loop.call_soon_threadsafe(loop.stop)
        runner.join(10)
        loop.close()


def test_each_series_is_labelled_with_its_profile_type() -> None:
    collector = Collector(64, None, lambda: {"service_name": "svc", "pid": "9"})
    collector.cpu.start()
    try:
        time.sleep(0.2)
        batch = collector.batch(final=True)
    finally:
        collector.cpu.stop()
    cpu = [s for s in batch if s.name == "process_cpu"]
    assert len(cpu) == 1
    assert cpu[0].labels == series("process_cpu", {"service_name": "svc", "pid": "9"})
    assert cpu[0].start_ns < cpu[0].end_ns and cpu[0].sample_rate == 19


def test_only_what_the_allowlist_serves_is_pushed() -> None:
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    try:
        everything = Collector(64, loop, lambda: {"service_name": "t"})
        only_cpu = Collector(64, loop, lambda: {"service_name": "t"},
                             Settings(profiles="profile").allows)
        assert {"process_cpu", "goroutines"} <= {s.name for s in everything.batch()}
        assert {s.name for s in only_cpu.batch()} == {"process_cpu"}
        everything.cpu.stop()
        only_cpu.cpu.stop()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(10)
        loop.close()


# --- CPU from the flight recorder (push/recorded.py) ------------------------------------------

PUSH_SAMPLER = "pyprof_http-push-sampler"
TICK_NS = INTERVAL_NS // 4
"""Synthetic time between the manual hub's ticks: four ticks to an interval."""


class ManualHub:
    """Ticks a real RingRecorder when the test says, at the (synthetic) monotonic time it says:
    which intervals exist, and when they close, is then the test's, never the scheduler's."""

    driver = None

    def __init__(self) -> None:
        self.subscribers: list[Subscriber] = []

    def skipped_threads(self) -> set[int]:
        return set()

    def subscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.append(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.remove(subscriber)

    def tick(self, now_ns: int) -> None:
        for subscriber in list(self.subscribers):
            assert subscriber.before is not None
            subscriber.before(now_ns)
            subscriber.tick(None)  # samples every thread, this one too (it used CPU)


def _manual_recorder(flight: FlightRecorder) -> tuple[RingRecorder, ManualHub]:
    hub = ManualHub()
    ring = RingRecorder(19, 300, 64, hub=hub)  # type: ignore[arg-type]
    ring.start()
    flight.current = ring
    return ring, hub


def _sampler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == PUSH_SAMPLER]


class _Fallbacks:
    """The fallback factory, counting the push samplers it made."""

    def __init__(self) -> None:
        self.made: list[SamplerThread] = []

    def __call__(self) -> SamplerThread:
        self.made.append(SamplerThread(64))
        return self.made[-1]


def _drive(hub: ManualHub, t0: int, ticks: range) -> None:
    for k in ticks:
        sum(i * i for i in range(5000))  # CPU on this thread between ticks
        hub.tick(t0 + k * TICK_NS)


def _recorded(ring: RingRecorder) -> list[Interval]:
    closed, live = ring.snapshot()
    return [*closed, *([live] if live is not None else [])]


def _samples(intervals: list[Interval]) -> tuple[int, int]:
    return (sum(count for i in intervals for count, _ in i.counts.values()),
            sum(weight for i in intervals for _, weight in i.counts.values()))


def _totals(profile: Profile | None) -> tuple[int, int]:
    assert profile is not None
    return (sum(s.values[0] for s in profile.samples), sum(s.values[1] for s in profile.samples))


def _added(totals: Iterable[tuple[int, int]]) -> tuple[int, int]:
    listed = list(totals)
    return sum(t[0] for t in listed), sum(t[1] for t in listed)


def test_a_running_recorder_is_read_each_interval_once_without_a_sampler_of_its_own() -> None:
    flight, fallbacks = FlightRecorder(), _Fallbacks()
    ring, hub = _manual_recorder(flight)
    source = RecordedCpu(flight, fallbacks)
    source.start()
    request = request_labels.Request(
        {"type": "http", "path": "/pay", "headers": [(b"x-request-id", b"req-77")]})
    taken: list[tuple[Profile | None, tuple[int, int] | None]] = []

    def serve() -> None:  # the ticking thread serves a request: its samples carry its labels
        t0 = time.monotonic_ns()
        # takes at the first tick, twice in one interval, mid-interval, right at a close
        for ticks in (range(0, 1), range(1, 3), range(3, 3), range(3, 9), range(9, 10),
                      range(10, 17)):
            _drive(hub, t0, ticks)
            taken.append((source.take(), source.span_ns))
        taken.append((source.take(final=True), source.span_ns))  # the open interval too

    request_labels.InThread(serve, request)()
    try:
        assert source.using == "recorder"
        assert fallbacks.made == [] and _sampler_threads() == []
        recorded = _recorded(ring)
        assert len(recorded) >= 4  # 17 ticks, 4 an interval: the takes saw several close
        # together the takes hold everything recorded, nothing twice
        assert _added(_totals(p) for p, _ in taken) == _samples(recorded)
        assert _samples(recorded)[0] >= 1
        spans = [span for _, span in taken]
        assert all(span is not None for span in spans)
        for (_, until), (start, _) in itertools.pairwise(spans):  # type: ignore[misc]
            assert until == start, spans  # back to back
        for profile, span in taken:
            assert profile is not None and span is not None
            inside = [i for i in recorded if span[0] <= i.first_ns < span[1]]
            assert _totals(profile) == _samples(inside)  # each take: exactly its intervals
            assert profile.duration_ns == span[1] - span[0] >= 0
            assert profile.period == 1_000_000_000 // 19
        labelled = [s for p, _ in taken if p for s in pushable(p).samples
                    if s.labels.get("span_id") == span_id("req-77")]
        assert labelled and all("request_id" not in s.labels for s in labelled)
        assert all(s.labels.get("route") for s in labelled)
        assert any(f.function.endswith("_drive") for s in labelled for f in s.stack)
        # the final take remembered the open interval: once closed, it is not taken again
        _drive(hub, time.monotonic_ns() + 100 * INTERVAL_NS, range(0, 1))
        assert _totals(source.take()) == (0, 0)
    finally:
        source.stop()
        flight.stop()


def test_with_the_recorder_off_the_push_sampler_is_used() -> None:
    flight, fallbacks = FlightRecorder(), _Fallbacks()
    source = RecordedCpu(flight, fallbacks)
    source.start()
    try:
        assert source.using == "sampler" and len(fallbacks.made) == 1
        assert len(_sampler_threads()) == 1
        profile = source.take()
        assert profile is not None and "push sampler" in profile.comments[0]
    finally:
        source.stop()
    assert _sampler_threads() == []
    assert RECORDER.current is None  # the process's recorder is off here: so is cpu_source's
    default = cpu_source(64)
    try:
        default.start()
        assert isinstance(default, RecordedCpu) and default.using == "sampler"
    finally:
        default.stop()
    assert _sampler_threads() == []


def test_a_recorder_that_stops_is_drained_then_the_push_sampler_takes_over_and_back() -> None:
    flight, fallbacks = FlightRecorder(), _Fallbacks()
    ring, hub = _manual_recorder(flight)
    source = RecordedCpu(flight, fallbacks)
    source.start()
    try:
        t0 = time.monotonic_ns()
        _drive(hub, t0, range(0, 6))
        first = source.take()
        _drive(hub, t0, range(6, 10))  # mid-interval when it stops
        flight.stop()
        assert flight.current is None and hub.subscribers == []
        drained = source.take()  # the stopped recorder's rest, its open interval included
        assert _added([_totals(first), _totals(drained)]) == _samples(_recorded(ring))
        assert source.using == "sampler" and len(fallbacks.made) == 1
        assert len(_sampler_threads()) == 1
        assert source.take() is not None  # from the push sampler, without error
        # a recorder starting later takes over at the next take; the push sampler stops
        later, later_hub = _manual_recorder(flight)
        assert source.take() is not None  # the push sampler's last profile
        assert source.using == "recorder" and _sampler_threads() == []
        t1 = time.monotonic_ns()
        _drive(later_hub, t1, range(0, 9))
        from_later = source.take(final=True)
        # the interval in progress at the switch is left out (its start was before it)
        taken = [i for i in _recorded(later) if i.first_ns > t1 - 1]
        assert _totals(from_later) == _samples(taken) and _samples(taken)[0] >= 1
        assert len(fallbacks.made) == 1
    finally:
        source.stop()
        flight.stop()
    assert _sampler_threads() == []


def test_the_last_flush_after_the_recorder_stopped_drains_it_without_a_sampler() -> None:
    flight, fallbacks = FlightRecorder(), _Fallbacks()
    ring, hub = _manual_recorder(flight)
    source = RecordedCpu(flight, fallbacks)
    source.start()
    try:
        _drive(hub, time.monotonic_ns(), range(0, 7))
        flight.stop()  # app shutdown: the recorder's claim goes before the pusher's
        last = source.take(final=True)
        assert _totals(last) == _samples(_recorded(ring)) and _totals(last)[0] >= 1
        assert fallbacks.made == [] and _sampler_threads() == []
    finally:
        source.stop()
