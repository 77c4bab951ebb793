"""The flight recorder: per-second intervals in a bounded ring, interned stacks, windows by
time and by request id, and one shared driver with an on-demand profile.

Live tests wait for a number of the recorder's own ticks (never for a time); interval and
memory tests drive the ring with synthetic times, so nothing depends on the scheduler.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from pyprof_http import request_labels
from pyprof_http.collectors import cpu
from pyprof_http.collectors.errors import NeedsSwitch
from pyprof_http.collectors.recorder import (
    INTERVAL_NS,
    MAX_KEYS_PER_INTERVAL,
    RECORDER,
    FlightRecorder,
    RingRecorder,
)
from pyprof_http.collectors.sampling_hub import HUB
from pyprof_http.model import Frame

WAIT_LIMIT_S = 60.0
"""Only a bound against hanging on a broken recorder: the loops below wait for ticks."""


def recorder_test_burn(until: threading.Event) -> None:
    while not until.is_set():
        sum(range(300))


def recorder_other_work(until: threading.Event) -> None:
    while not until.is_set():
        sum(range(300))


def burning_thread(request: request_labels.Request | None, work=recorder_test_burn  # type: ignore[no-untyped-def]
                   ) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    target = request_labels.InThread(work, request) if request is not None else work
    thread = threading.Thread(target=target, args=(stop,), name="recorder-burner")
    thread.start()
    return thread, stop


def wait_ticks(recorder: RingRecorder, ticks: int) -> None:
    until, deadline = recorder.ticks + ticks, time.monotonic() + WAIT_LIMIT_S
    while recorder.ticks < until and time.monotonic() < deadline:
        time.sleep(0.01)
    assert recorder.ticks >= until, "the recorder did not tick"


@pytest.fixture
def recorder() -> Iterator[RingRecorder]:
    ring = RingRecorder(50, 30, 64)
    ring.start()
    try:
        yield ring
    finally:
        ring.stop()
    assert not HUB.running()


def burner_samples(profile_samples: tuple[object, ...]) -> list[object]:
    return [s for s in profile_samples
            if any(f.function.endswith("recorder_test_burn") for f in s.stack)]  # type: ignore[attr-defined]


def test_the_last_seconds_hold_labelled_samples_of_load_that_ended(recorder: RingRecorder) -> None:
    scope = {"type": "http", "path": "/sync", "headers": [(b"x-request-id", b"rec-1")]}
    request = request_labels.Request(scope)
    thread, stop = burning_thread(request)
    try:
        wait_ticks(recorder, 20)
    finally:
        stop.set()
        thread.join()
    request.live = False  # the request ended: later samples would not carry it
    # other work goes on (ITIMER_PROF ticks only while the process uses CPU)
    thread, stop = burning_thread(None, recorder_other_work)
    try:
        wait_ticks(recorder, 3)  # the load is over before the window is asked for
    finally:
        stop.set()
        thread.join()
    profile = recorder.profile(30)
    burned = burner_samples(profile.samples)
    assert burned and all(s.labels.get("route") == "/sync"  # type: ignore[attr-defined]
                          and s.labels.get("request_id") == "rec-1" for s in burned)
    assert sum(s.values[1] for s in burned) > 0  # type: ignore[attr-defined]
    only = recorder.window(0, None, request_id="rec-1")
    assert only and all(labels[3] == "rec-1" for (_stack, labels), _ in only)
    assert recorder.window(0, None, request_id="someone-else") == []


def test_an_on_demand_profile_shares_the_driver_and_the_recorder_keeps_recording(
        recorder: RingRecorder) -> None:
    thread, stop = burning_thread(None)
    try:
        wait_ticks(recorder, 2)
        before = recorder.ticks

        async def profile() -> cpu.CpuCapture:
            async def wait(seconds: float) -> None:
                while on_demand_ticks() < 30:
                    await asyncio.sleep(0.01)

            return await cpu.record("cpu", 100, 60, 64, wait)

        def on_demand_ticks() -> int:
            return max((s.tick.__self__.ticks for s in HUB._subscribers  # type: ignore[attr-defined]
                        if s.hz == 100), default=0)

        driver = HUB.driver
        assert HUB.hz() == 50
        capture = asyncio.run(profile())
        assert HUB.driver is driver  # one driver all along
        assert HUB.hz() == 50  # back to the recorder's rate
        assert burner_samples(capture.profile.samples)
        assert recorder.ticks > before  # it kept recording meanwhile
        assert any("shared with the flight recorder" in c for c in capture.profile.comments)
    finally:
        stop.set()
        thread.join()


def fake_stack(i: int) -> tuple[Frame, ...]:
    return (Frame(f"f{i}", "/app/x.py", i), Frame("main", "/app/x.py", 1))


def test_intervals_rotate_each_second_and_the_ring_and_interned_stacks_stay_bounded() -> None:
    ring = RingRecorder(19, 10, 64)
    labels = ("MainThread", "", "/r", "")
    now = 0
    for second in range(50):  # 5 windows of 10 s, the same 1,000 stacks in every second
        for tick in range(4):
            now = second * INTERVAL_NS + tick * (INTERVAL_NS // 4)
            ring._before_tick(now)
            for i in range(250 * tick, 250 * (tick + 1)):
                # a fresh (equal, not identical) tuple each time, as the sampler makes them
                ring._sampler._counts[(fake_stack(i), labels)] = [1, 1000]
    assert len(ring._ring) == 10  # the window, not the 49 closed seconds
    intervals = ring.intervals()
    assert len(intervals) == 11 and all(len(i.counts) == 1000 for i in intervals)
    assert len(ring._interner) <= 2 * 1000
    first, second = intervals[0], intervals[1]
    shared = {id(stack) for stack, _ in first.counts}
    assert all(id(stack) in shared for stack, _ in second.counts)  # one tuple per stack
    count, size_keys, size = ring.memory()
    assert (count, size_keys) == (11, 11_000) and size > 0
    assert ring.closed_keys == 10_000  # kept as intervals rotate out
    window = dict(ring.window(now - 3 * INTERVAL_NS))
    assert {v[0] for v in window.values()} == {4}  # 4 intervals overlap the last 3 s


def test_request_ids_are_dropped_past_the_keys_an_interval_may_hold() -> None:
    ring = RingRecorder(19, 10, 64)
    assert ring._sampler.max_keys_with_request_id == MAX_KEYS_PER_INTERVAL


def test_off_it_says_how_to_switch_it_on() -> None:
    recorder = FlightRecorder()
    with pytest.raises(NeedsSwitch, match="recorder_hz"):
        recorder.running()
    assert recorder.describe() == "off"


def test_the_process_recorder_starts_once_and_stops() -> None:
    assert RECORDER.current is None
    RECORDER.start(19, 10, 64)
    try:
        first = RECORDER.current
        RECORDER.start(50, 20, 64)  # joined as is
        assert RECORDER.current is first and first is not None and first.hz == 19
        assert HUB.running() and "19 Hz" in RECORDER.describe()
    finally:
        RECORDER.stop()
    assert RECORDER.current is None and not HUB.running()


_EXIT_WITH_THE_RECORDER_RUNNING = """
import sys, time
from pyprof_http.collectors.recorder import RECORDER
RECORDER.start(100, 10, 32)
BIG = [[i] for i in range(2_000_000)]  # work for the interpreter's finalization
end = time.process_time() + 0.2
while time.process_time() < end:
    pass
sys.exit(3)
"""


@pytest.mark.parametrize("reload", [False, True], ids=["as-is", "drivers-reloaded"])
def test_a_process_that_exits_with_the_recorder_running_exits_with_its_own_status(
        reload: bool) -> None:
    """The lifespan's shutdown, which stops the recorder, does not always come (uvicorn skips
    it on a forced quit). Finalization then put SIGPROF back to its default action while
    ITIMER_PROF still ran: the process died of "Profiling timer expired" (status -SIGPROF)
    every time, with this script, instead of exiting with its own status. The same after an
    ``importlib.reload`` of the drivers module (the exit hook reads the reloaded module's
    table of running drivers, which was a fresh, empty one)."""
    import signal
    import subprocess
    import sys

    script = _EXIT_WITH_THE_RECORDER_RUNNING.replace(
        "BIG =", "import importlib, pyprof_http.collectors.drivers as d; importlib.reload(d)\n"
        "BIG =") if reload else _EXIT_WITH_THE_RECORDER_RUNNING
    done = subprocess.run([sys.executable, "-c", script],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, (done.returncode, -signal.SIGPROF, done.stderr[-2000:])


def busy_ring(ring: RingRecorder, seconds_ago: float, ticks: int) -> RingRecorder:
    """``ring`` fed ``ticks`` 4 Hz ticks from ``seconds_ago`` on, each a quarter second of one
    thread's CPU (the recorder itself started long before)."""
    now = time.monotonic_ns()
    ring.started_ns = now - 100 * INTERVAL_NS
    labels = ("MainThread", "", "/r", "")
    start = now - int(seconds_ago * INTERVAL_NS)
    for tick in range(ticks):
        ring._before_tick(start + tick * INTERVAL_NS // 4)
        entry = ring._sampler._counts.setdefault((fake_stack(1), labels), [0, 0])
        entry[0] += 1
        entry[1] += INTERVAL_NS // 4
    return ring


def test_the_duration_of_last_n_covers_the_whole_intervals_it_adds_up() -> None:
    """Intervals are whole seconds: last=3 adds up the 4 that overlap the last 3 s. Said to
    last 3 s, one thread busy all along showed 4 s of CPU in 3 s (133 % of a thread; last=1
    up to 200 %): the duration must be the time those samples cover."""
    # 3 closed intervals of 4 ticks and the live one, each tick a quarter second of CPU:
    # 3.5 s of CPU, all of it in intervals overlapping the last 3 s
    profile = busy_ring(RingRecorder(4, 30, 64), 3.4, 14).profile(3)
    cpu_ns = sum(s.values[1] for s in profile.samples)
    assert cpu_ns == 14 * INTERVAL_NS // 4  # every sample of the overlapping intervals
    assert cpu_ns <= profile.duration_ns, (cpu_ns, profile.duration_ns)
    assert profile.duration_ns <= 5 * INTERVAL_NS  # no more than what the samples cover


@pytest.mark.parametrize("read", ["intervals", "snapshot"])
def test_an_interval_closed_while_the_ring_is_copied_is_read_once(read: str) -> None:
    """A tick may close the live interval between two reads of a reader on another thread
    (or in the signal handler between two bytecodes). Closed just after the ring was copied,
    that second of samples was in neither the copy nor the new live interval: lost to
    /profile?last=N, a request's cut and the pusher."""
    import collections

    ring = RingRecorder(4, 30, 64)
    labels = ("MainThread", "", "/r", "")
    for tick in range(10):  # 2 closed intervals, the live one holds ticks 8 and 9
        ring._before_tick(tick * INTERVAL_NS // 4)
        ring._sampler._counts.setdefault((fake_stack(tick), labels), [0, 0])[0] += 1

    class ClosesTheLiveOneOnce(collections.deque):  # type: ignore[type-arg]
        tripped = False

        def __iter__(self):  # type: ignore[no-untyped-def]
            items = list(super().__iter__())
            if not self.tripped:
                self.tripped = True
                ring._before_tick(10 * INTERVAL_NS // 4 + INTERVAL_NS)  # the tick's rotation
            return iter(items)

    ring._ring = ClosesTheLiveOneOnce(ring._ring, maxlen=ring._ring.maxlen)
    if read == "intervals":
        intervals = ring.intervals()
    else:
        closed, live = ring.snapshot()
        intervals = closed if live is None else [*closed, live]
    samples = sum(count for i in intervals for count, _weight in i.counts.values())
    assert samples == 10, [len(i.counts) for i in intervals]


_RELOAD_WHILE_RECORDING = """
import importlib
import pyprof_http.collectors.recorder as recorder
import pyprof_http.collectors.sampling_hub as hub
recorder.RECORDER.start(19, 10, 32)
running, shared = recorder.RECORDER.current, hub.HUB
importlib.reload(hub)
importlib.reload(recorder)
assert recorder.RECORDER.current is running, "the reloaded module lost the running recorder"
assert hub.HUB is shared and hub.HUB.driver is not None, "a second hub beside the running one"
ring = recorder.RingRecorder(100, 10, 32)  # a /profile-like second subscriber
ring.start()
assert ring.driver == "signal", ring.driver  # shares the driver, no fallback
ring.stop()
recorder.RECORDER.stop()
assert not hub.HUB.running()
print("ok")
"""


def test_a_reload_keeps_the_running_recorder_and_its_shared_driver() -> None:
    """``importlib.reload`` of the recorder or hub module made a new, empty one beside the
    running recorder and driver: the switches could no longer stop it, and the next profile
    found SIGPROF taken and fell back to a weaker driver."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _RELOAD_WHILE_RECORDING],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_a_window_longer_than_the_ring_says_how_long_the_ring_covers() -> None:
    """Two apps in one process share the first one's recorder: the second's recorder_seconds
    may let last=N ask for more than the ring holds. Said to last N s, a busy thread showed
    a fraction of its real CPU share."""
    # 30 s of a thread busy all along, in a ring of 10
    profile = busy_ring(RingRecorder(4, 10, 64), 30, 119).profile(25)
    cpu_ns = sum(s.values[1] for s in profile.samples)
    assert cpu_ns <= profile.duration_ns <= cpu_ns + 2 * INTERVAL_NS, (
        cpu_ns, profile.duration_ns)
