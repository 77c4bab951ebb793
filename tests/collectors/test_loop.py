"""The event-loop stall watchdog with real loops, real blocking calls and real threads.

Each test runs its own loop (``asyncio.run``), blocks it with ``time.sleep`` (the GIL is
released: the watchdog samples freely) or a pure-Python spin (the GIL is held: the watchdog
gets it by the interpreter's forced switch), and checks what was recorded. After every test no
``pyprof_http-watchdog`` thread may remain.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

from pyprof_http import request_labels
from pyprof_http.collectors import loop as loop_mod
from pyprof_http.collectors.loop import (
    CONTENTIONS,
    DELAY,
    NOT_SAMPLED,
    THREAD_NAME,
    WATCHDOGS,
    Stall,
)
from pyprof_http.model import frame

STALL_MS = 100


def watchdog_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    WATCHDOGS.stop_all()
    WATCHDOGS.clear()
    yield
    WATCHDOGS.stop_all()
    WATCHDOGS.clear()
    assert watchdog_threads() == []


def wait_until(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def stall_sleep(seconds: float) -> None:
    """Blocks the loop with the GIL released."""
    time.sleep(seconds)


def stall_spin(seconds: float) -> int:
    """Blocks the loop with the GIL held (pure Python)."""
    end = time.perf_counter() + seconds
    spins = 0
    while time.perf_counter() < end:
        spins += 1
    return spins


def run_watched(body: Callable[[], Coroutine[Any, Any, Any]], task_name: str = "worker") -> Any:
    """Run ``body`` in a task named ``task_name`` on a fresh, watched loop; stop on the loop."""

    async def main() -> Any:
        loop = asyncio.get_running_loop()
        WATCHDOGS.start(loop, STALL_MS)
        await asyncio.sleep(0.03)  # a few heartbeats
        try:
            return await asyncio.create_task(body(), name=task_name)
        finally:
            WATCHDOGS.stop(loop)  # on the loop's own thread: must not deadlock

    return asyncio.run(main())


def functions(stall: Stall) -> list[str]:
    return [f.function.rsplit(".", 1)[-1] for f in stall.stack]


def test_two_sleeps_are_two_stalls_with_stack_and_task() -> None:
    async def body() -> None:
        for _ in range(2):
            stall_sleep(0.3)
            await asyncio.sleep(0.03)

    run_watched(body)
    capture = WATCHDOGS.capture()
    assert len(capture.stalls) == 2
    for stall in capture.stalls:
        assert functions(stall)[0] == "stall_sleep"
        assert stall.task == "worker"
        assert stall.thread == threading.current_thread().name
        # a lower bound, short by < 1 period; a starved CI machine may oversleep, hence the top
        assert 0.28e9 <= stall.duration_ns <= 0.5e9
        assert sum(count for _, count in stall.stacks) >= 5
    # the same stack twice: one sample, two contentions
    profile = capture.profile
    assert profile.sample_types == (CONTENTIONS, DELAY)
    assert (profile.period_type, profile.period, profile.default_sample_type) == (
        CONTENTIONS, 1, "delay")
    assert len(profile.samples) == 1
    sample = profile.samples[0]
    assert sample.values[0] == 2 and sample.values[1] >= 0.5e9
    assert sample.values[1] == sum(s.duration_ns for s in capture.stalls)
    assert sample.labels == {"thread": threading.current_thread().name, "task": "worker"}
    assert capture.seen == 2 and capture.dropped == 0 and capture.threshold_ms == STALL_MS
    assert any("threshold 100 ms" in c for c in profile.comments)


def test_short_block_is_no_stall() -> None:
    async def body() -> None:
        stall_sleep(0.05)
        await asyncio.sleep(0.2)  # idle: the heartbeat runs, nothing is recorded
        stall_sleep(0.05)

    run_watched(body)
    capture = WATCHDOGS.capture()
    assert capture.stalls == () and capture.profile.samples == ()


def test_blocks_of_exactly_the_threshold_are_all_caught() -> None:
    """The lateness is a lower bound (short by up to a period), so the threshold is compared
    with what the stall may have lasted: a block of exactly ``stall_ms`` is never missed."""

    async def body() -> None:
        for _ in range(6):
            stall_sleep(STALL_MS / 1000)
            await asyncio.sleep(0.037)  # different phases against the heartbeat

    run_watched(body)
    stalls = WATCHDOGS.capture().stalls
    assert len(stalls) == 6, [s.duration_ns for s in stalls]
    assert all(functions(s)[0] == "stall_sleep" for s in stalls)


def test_cpu_bound_stall_is_caught() -> None:
    async def body() -> None:
        stall_spin(0.25)

    run_watched(body)
    (stall,) = WATCHDOGS.capture().stalls
    assert functions(stall)[0] == "stall_spin"
    assert stall.stack != (NOT_SAMPLED,)
    assert stall.duration_ns >= 0.2e9


def test_route_and_request_id_of_the_request_holding_the_loop() -> None:
    scope = {"type": "http", "path": "/orders/7", "headers": [(b"x-request-id", b"rid-42")]}

    async def body() -> None:
        entered = request_labels.enter(scope)
        try:
            stall_sleep(0.25)
        finally:
            request_labels.leave(entered)

    run_watched(body, task_name="request")
    capture = WATCHDOGS.capture()
    (stall,) = capture.stalls
    assert (stall.route, stall.request_id, stall.task) == ("/orders/7", "rid-42", "request")
    (sample,) = capture.profile.samples
    assert sample.labels["route"] == "/orders/7"
    assert "request_id" not in sample.labels  # unbounded cardinality stays out of the profile


def test_capture_since_filters_to_the_window() -> None:
    marks: list[int] = []

    async def body() -> None:
        stall_sleep(0.15)
        await asyncio.sleep(0.03)
        marks.append(time.monotonic_ns())
        stall_sleep(0.25)

    run_watched(body)
    everything, window = WATCHDOGS.capture(None), WATCHDOGS.capture(marks[0])
    assert len(everything.stalls) == 2 and everything.profile.totals()[0] == 2
    (stall,) = window.stalls
    assert stall.duration_ns >= 0.2e9 and window.seen == 1
    assert window.profile.totals() == (1, stall.duration_ns)
    assert window.profile.duration_ns < everything.profile.duration_ns
    assert WATCHDOGS.capture(time.monotonic_ns()).stalls == ()


def test_start_is_idempotent_and_stop_joins() -> None:
    async def main() -> tuple[int, int, bool]:
        loop = asyncio.get_running_loop()
        for _ in range(3):
            WATCHDOGS.start(loop, STALL_MS)
        threads, watched = len(watchdog_threads()), len(WATCHDOGS.watching())
        WATCHDOGS.stop(loop)
        return threads, watched, WATCHDOGS.is_watching(loop)

    assert asyncio.run(main()) == (1, 1, False)
    assert watchdog_threads() == []  # joined, not merely told to stop


def test_watchdog_ends_by_itself_when_the_loop_ends() -> None:
    async def main() -> None:
        WATCHDOGS.start(asyncio.get_running_loop(), STALL_MS)  # never stopped

    asyncio.run(main())
    wait_until(lambda: not watchdog_threads(), timeout=2.0)
    assert WATCHDOGS.watching() == []


def test_a_stopped_loop_is_not_a_stall() -> None:
    """Between two run_until_complete calls the loop is not running: that is no stall."""
    loop = asyncio.new_event_loop()
    try:
        async def start() -> None:
            WATCHDOGS.start(loop, STALL_MS)
            await asyncio.sleep(0.03)

        loop.run_until_complete(start())
        time.sleep(0.3)  # the loop is stopped, not stalled
        loop.run_until_complete(asyncio.sleep(0.05))
    finally:
        loop.close()
    wait_until(lambda: not watchdog_threads(), timeout=2.0)
    assert WATCHDOGS.capture().stalls == ()


def test_start_stop_start() -> None:
    async def main() -> bool:
        loop = asyncio.get_running_loop()
        WATCHDOGS.start(loop, STALL_MS)
        WATCHDOGS.stop(loop)
        stopped = WATCHDOGS.is_watching(loop)
        WATCHDOGS.start(loop, STALL_MS)
        await asyncio.sleep(0.03)
        stall_sleep(0.2)
        await asyncio.sleep(0.01)
        WATCHDOGS.stop(loop)
        return stopped

    assert asyncio.run(main()) is False
    (stall,) = WATCHDOGS.capture().stalls
    assert functions(stall)[0] == "stall_sleep"


def test_two_loops_on_two_threads() -> None:
    def serve(name: str) -> None:
        async def main() -> None:
            loop = asyncio.get_running_loop()
            WATCHDOGS.start(loop, STALL_MS)
            await asyncio.sleep(0.03)
            stall_sleep(0.2)
            await asyncio.sleep(0.02)
            WATCHDOGS.stop(loop)

        asyncio.run(main())

    threads = [threading.Thread(target=serve, args=(f"serve-{i}",), name=f"serve-{i}")
               for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stalls = WATCHDOGS.capture().stalls
    assert sorted(s.thread for s in stalls) == ["serve-0", "serve-1"]
    assert all(functions(s)[0] == "stall_sleep" for s in stalls)


def hand_stall(duration_ms: int, end_ns: int, stack_fn: str = "held", task: str = "t") -> Stall:
    stack = (frame(stack_fn, "/app/x.py", 1),)
    return Stall(start_ns=end_ns - duration_ms * 1_000_000, start_wall_ns=0,
                 duration_ns=duration_ms * 1_000_000, stack=stack, stacks=((stack, 3),),
                 task=task, route="/r", request_id="", thread="MainThread")


def test_history_is_bounded_and_the_aggregate_covers_what_fell_out(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop_mod, "MAX_STALLS", 5)
    WATCHDOGS.clear()  # a history with the small bound
    for i in range(8):
        WATCHDOGS._record(hand_stall(100 + i, end_ns=1_000 + i))
    everything = WATCHDOGS.capture()
    assert len(everything.stalls) == 5 and everything.seen == 8 and everything.dropped == 3
    assert everything.profile.totals() == (8, sum(100 + i for i in range(8)) * 1_000_000)
    assert any("3 older stalls" in c for c in everything.profile.comments)
    window = WATCHDOGS.capture(since_ns=1_001)  # stalls ending at 1002.. : two of them dropped
    assert len(window.stalls) == 5 and window.dropped == 1 and window.seen == 6
    assert window.profile.totals()[0] == 5  # what fell out is missing from a window's profile
    assert any("1 stalls of this window are missing" in c for c in window.profile.comments)


def test_aggregate_keys_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop_mod, "MAX_KEYS", 2)
    for i in range(6):  # unique task names, then unique stacks
        WATCHDOGS._record(hand_stall(100, end_ns=i + 1, stack_fn=f"f{i % 5}", task=f"Task-{i}"))
    samples = WATCHDOGS.capture().profile.samples
    assert len(samples) == 2 * 2 + 1  # 2 full keys, 2 without the task, 1 for the rest
    assert sum(s.values[0] for s in samples) == 6
    assert any(s.stack[0].function == "<other stacks>" for s in samples)


def test_capture_truncates_stacks_to_max_depth() -> None:
    deep = tuple(frame(f"f{i}", "/app/x.py", i) for i in range(10))
    WATCHDOGS._record(Stall(1, 0, 200_000_000, deep, ((deep, 1),), "t", "", "", "MainThread"))
    (sample,) = WATCHDOGS.capture(max_depth=4).profile.samples
    assert sample.stack == deep[:4]


def stall_in_c(n: int) -> int:
    """Blocks the loop inside one C call that never lets the GIL go."""
    return sum(range(n))


def test_gil_holding_c_call_is_attributed_to_its_caller() -> None:
    """The watchdog cannot run during the C call, but gets the GIL the moment it returns,
    before the loop reaches the heartbeat: the sample shows the calling line."""
    n = 1_000_000
    started = time.perf_counter()
    stall_in_c(n)
    n = int(n * 0.3 / max(time.perf_counter() - started, 1e-3))  # ~0.3 s here

    async def body() -> None:
        stall_in_c(n)

    run_watched(body)
    (stall,) = WATCHDOGS.capture().stalls
    assert functions(stall)[0] == "stall_in_c"
    assert stall.duration_ns >= 0.15e9


def test_start_and_stop_from_another_thread() -> None:
    """start() off the loop's thread finds the loop's thread; the heartbeat is armed through
    call_soon_threadsafe; stop() from there joins too."""
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, name="loop-runner")
    runner.start()
    try:
        wait_until(loop.is_running)
        WATCHDOGS.start(loop, STALL_MS)
        assert WATCHDOGS.is_watching(loop)
        time.sleep(0.05)
        loop.call_soon_threadsafe(stall_sleep, 0.2)
        wait_until(lambda: bool(WATCHDOGS.capture().stalls))
        WATCHDOGS.stop(loop)
        assert watchdog_threads() == []
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join()
        loop.close()
    (stall,) = WATCHDOGS.capture().stalls
    assert stall.thread == "loop-runner" and stall.task == ""  # a plain callback, no task
    assert functions(stall)[0] == "stall_sleep"


def test_stale_samples_are_discarded_and_ties_go_to_the_first_stack() -> None:
    first, second = (frame("first", "/app/a.py", 1),), (frame("second", "/app/a.py", 2),)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        WATCHDOGS.start(loop, STALL_MS)
        await asyncio.sleep(0.03)
        watch = WATCHDOGS._watches[loop]
        seq = watch._pending[0]
        assert seq > 0
        assert watch._sample(seq - 1) == 0  # that beat has run: the loop was back
        assert not watch._samples
        watch._samples_seq = seq  # as if the watchdog had sampled beat `seq` twice
        watch._samples.update({(first, "t", "", ""): 2, (second, "t", "", ""): 2})
        watch._complete(seq, 150_000_000, time.monotonic_ns())
        WATCHDOGS.stop(loop)

    asyncio.run(main())
    (stall,) = WATCHDOGS.capture().stalls
    assert stall.stack == first and stall.stacks == ((first, 2), (second, 2))
