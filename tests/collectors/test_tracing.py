import asyncio
import gc
import os
import sys
import threading
import types
from collections.abc import Iterator
from typing import Any

import pytest
import yappi

import pyprof_http
from asgi_client import FakeClient
from pyprof_http._waiting import ClientDisconnected
from pyprof_http.captures.tracing import FunctionStats, TracingCapture
from pyprof_http.collectors import tracing
from pyprof_http.collectors.errors import Busy
from pyprof_http.collectors.tracing import Tracer
from pyprof_http.model import ValueType

N = 7


def tracing_hot_function(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i
    return total


def tracing_caller() -> None:
    for _ in range(N):
        tracing_hot_function(30_000)


async def tracing_sleeper() -> None:
    await asyncio.sleep(0.2)


@pytest.fixture(autouse=True)
def clean_yappi() -> Iterator[None]:
    """Every test starts and ends with yappi idle, empty and on its default clock."""
    assert not yappi.is_running()
    clock = yappi.get_clock_type()
    yield
    if yappi.is_running():
        yappi.stop()
    yappi.clear_stats()
    yappi.set_clock_type(clock)
    tracing._active = None


def _find(capture: TracingCapture, function: str) -> FunctionStats:
    found = [f for f in capture.functions
             if f.frame.function == function and f.frame.filename == __file__]
    assert len(found) == 1, [f.frame for f in capture.functions]
    return found[0]


def _assert_yappi_clean(clock: str) -> None:
    assert not yappi.is_running()
    assert yappi.get_func_stats().empty()
    assert len(yappi.get_thread_stats()) == 0
    assert yappi.get_clock_type() == clock
    assert sys.getprofile() is None
    assert threading.getprofile() is None


def _trace(clock: tracing.Clock) -> TracingCapture:
    tracer = Tracer(clock)
    tracer.start()
    tracing_caller()
    asyncio.run(tracing_sleeper())
    return tracer.stop()


def test_counts_self_time_and_caller_edge() -> None:
    capture = _trace("cpu")
    hot, caller = _find(capture, "tracing_hot_function"), _find(capture, "tracing_caller")
    assert hot.ncall == hot.nactualcall == N
    assert caller.ncall == 1
    assert hot.tsub_ns >= 0.9 * hot.ttot_ns > 0  # a leaf: its time is its own
    assert hot.tsub_ns > 20 * caller.tsub_ns  # self time lands in the hot function
    assert caller.ttot_ns >= hot.ttot_ns
    assert dict(hot.callers)[caller.frame].ncall == N
    assert capture.duration_ns >= hot.ttot_ns
    assert capture.time_ns > 0


def test_profile_is_edges_with_exact_flat_self_time() -> None:
    capture = _trace("cpu")
    profile = capture.profile
    assert profile.sample_types == (ValueType("calls", "count"), ValueType("cpu", "nanoseconds"))
    assert profile.default_sample_type == "cpu"
    assert profile.period_type == ValueType("cpu", "nanoseconds")
    assert profile.period == 1
    assert profile.duration_ns == capture.duration_ns
    assert profile.comments == (
        "tracing with yappi, cpu clock; values are self time per caller→callee edge",)
    hot, caller = _find(capture, "tracing_hot_function"), _find(capture, "tracing_caller")
    edge = [s for s in profile.samples if s.stack == (hot.frame, caller.frame)]
    assert len(edge) == 1
    assert edge[0].values == (N, dict(hot.callers)[caller.frame].tsub_ns)
    for fn in capture.functions:  # flat (leaf) totals are each function's calls and self time
        leaf = [s.values for s in profile.samples if s.stack[0] == fn.frame]
        assert sum(v[0] for v in leaf) == fn.ncall
        assert abs(sum(v[1] for v in leaf) - fn.tsub_ns) <= len(leaf)
    assert all(1 <= len(s.stack) <= 2 for s in profile.samples)


def test_wall_clock_sees_coroutine_suspension_and_cpu_clock_does_not() -> None:
    wall = _find(_trace("wall"), "tracing_sleeper")
    assert wall.ncall == 1  # one call per coroutine, not one per resume
    assert 0.18e9 <= wall.ttot_ns < 1e9
    cpu = _find(_trace("cpu"), "tracing_sleeper")
    assert cpu.ttot_ns < 0.05e9


def test_wall_profile_uses_wall_type() -> None:
    profile = _trace("wall").profile
    assert profile.sample_types[1] == ValueType("wall", "nanoseconds")
    assert profile.default_sample_type == "wall"


def test_other_threads_are_traced() -> None:
    tracer = Tracer("cpu")
    tracer.start()
    worker = threading.Thread(target=tracing_caller, name="worker")
    worker.start()
    worker.join()
    hot = _find(tracer.stop(), "tracing_hot_function")
    assert hot.ncall == N


def test_own_frames_are_left_out() -> None:
    own = os.path.dirname(pyprof_http.__file__) + os.sep
    capture = _trace("wall")
    assert not [f.frame for f in capture.functions if f.frame.filename.startswith(own)]
    assert not [c for f in capture.functions for c, _ in f.callers if c.filename.startswith(own)]


def test_yappi_started_by_the_app_is_a_conflict_and_left_alone() -> None:
    yappi.set_clock_type("wall")
    yappi.start(builtins=True, profile_threads=False)
    try:
        with pytest.raises(Busy, match=r"yappi is already running \(started outside"):
            Tracer("cpu").start()
        assert yappi.is_running()
        assert yappi.get_clock_type() == "wall"
        tracing_hot_function(10)
        yappi.stop()
        assert not yappi.get_func_stats().empty()  # the app's stats are still there
    finally:
        yappi.stop()
        yappi.clear_stats()
    assert tracing._active is None


def test_stats_left_by_the_app_are_a_conflict_and_kept() -> None:
    yappi.start()
    tracing_hot_function(10)
    yappi.stop()
    with pytest.raises(Busy, match="clear_stats"):
        Tracer("wall").start()
    assert not yappi.is_running()
    assert not yappi.get_func_stats().empty()


def test_another_setprofile_profiler_is_a_conflict() -> None:
    def hook(*_: object) -> None:
        return None

    sys.setprofile(hook)
    try:
        with pytest.raises(Busy, match="another profiler"):
            Tracer("cpu").start()
        assert sys.getprofile() is hook
    finally:
        sys.setprofile(None)
    assert not yappi.is_running()


def test_one_tracer_at_a_time() -> None:
    first = Tracer("cpu")
    first.start()
    with pytest.raises(Busy, match="a tracing profile is already running"):
        Tracer("wall").start()
    assert yappi.is_running()
    first.stop()
    _assert_yappi_clean("cpu")


def test_stop_restores_clock_and_clears_stats() -> None:
    yappi.set_clock_type("wall")
    _trace("cpu")
    _assert_yappi_clean("wall")
    yappi.set_clock_type("cpu")
    _trace("wall")
    _assert_yappi_clean("cpu")


def test_failed_conversion_still_leaves_yappi_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object) -> tuple[FunctionStats, ...]:
        raise RuntimeError("conversion failed")

    monkeypatch.setattr(tracing, "_convert", broken)
    yappi.set_clock_type("wall")
    tracer = Tracer("cpu")
    tracer.start()
    tracing_caller()
    with pytest.raises(RuntimeError, match="conversion failed"):
        tracer.stop()
    _assert_yappi_clean("wall")
    assert tracing._active is None
    monkeypatch.undo()
    assert _find(_trace("cpu"), "tracing_hot_function").ncall == N  # usable again


def test_cancel_is_clean_and_idempotent() -> None:
    tracer = Tracer("wall")
    tracer.start()
    tracing_caller()
    tracer.cancel()
    tracer.cancel()
    _assert_yappi_clean("cpu")
    with pytest.raises(RuntimeError, match="not running"):
        tracer.stop()


def test_many_cycles_leave_nothing_behind() -> None:
    threads_before = set(threading.enumerate())
    descriptors_before = len(yappi._fn_descriptor_dict)
    for i in range(50):
        tracer = Tracer("wall" if i % 2 else "cpu")
        tracer.start()
        tracing_hot_function(100)
        if i % 3:
            tracer.stop()
        else:
            tracer.cancel()
    _assert_yappi_clean("cpu")
    assert set(threading.enumerate()) == threads_before
    assert len(yappi._fn_descriptor_dict) == descriptors_before
    assert tracing._active is None


def _generated_functions(n: int) -> list[Any]:
    """``n`` distinct functions, so that yappi has a large table to convert."""
    source = "\n".join(f"def generated_{i}(x):\n    return x + {i}\n" for i in range(n))
    namespace: dict[str, Any] = {}
    exec(compile(source, "<generated for test_tracing>", "exec"), namespace)
    return [namespace[f"generated_{i}"] for i in range(n)]


def test_loop_keeps_running_while_a_large_trace_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Converting yappi's stats (1.3 s for 20,000 functions) must not hold the event loop: the
    conversion here waits until it has seen the loop run five callbacks, which it can only if
    it runs elsewhere (on the loop it would wait out its timeout and record that it did)."""
    functions = _generated_functions(3_000)
    events: list[str] = []
    loop_ran = threading.Event()
    real_convert = tracing._convert

    def gated_convert(*args: Any) -> Any:
        events.append("convert start")
        if not loop_ran.wait(30):
            events.append("the loop did not run during the conversion")
        converted = real_convert(*args)
        events.append("convert end")
        return converted

    monkeypatch.setattr(tracing, "_convert", gated_convert)

    async def wait(seconds: float) -> None:
        await asyncio.sleep(0.05)  # yappi starts two loop turns after the wait begins
        for function in functions:
            function(1)

    async def main() -> TracingCapture:
        loop = asyncio.get_running_loop()
        ticks = 0

        def tick() -> None:
            nonlocal ticks
            if "convert start" in events:
                ticks += 1
                events.append("loop callback")
                if ticks == 5:
                    loop_ran.set()
                    return
            loop.call_later(0.001, tick)

        loop.call_soon(tick)
        return await tracing.trace("cpu", 1, wait)

    capture = asyncio.run(main())
    assert events[0] == "convert start" and events[-1] == "convert end", events
    assert events.count("loop callback") == 5, events
    names = {f.frame.function for f in capture.functions}
    assert {f"generated_{i}" for i in range(3_000)} <= names
    _assert_yappi_clean("cpu")


def _coroutines() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, types.CoroutineType))


def test_a_trace_keeps_none_of_its_requests_coroutines() -> None:
    """yappi 1.7.6 keeps every coroutine it sees suspend or return after it saw it resume
    (upstream #217). The request that waits for the trace must not be one of them: its
    coroutines are parked before yappi starts and yappi halts before they run again."""
    request_chain_depth = 4

    async def one_trace() -> TracingCapture:
        stays = FakeClient().wait()

        async def wait(seconds: float) -> None:
            await stays(0.05)

        async def nested(depth: int) -> TracingCapture:
            if depth:
                return await nested(depth - 1)
            return await tracing.trace("wall", 1, wait)

        return await nested(request_chain_depth)

    async def main() -> int:
        for _ in range(3):  # warm-up
            await one_trace()
        before = _coroutines()
        for _ in range(20):
            await one_trace()
        return _coroutines() - before

    assert asyncio.run(main()) == 0
    _assert_yappi_clean("cpu")


def test_a_request_cancelled_before_yappi_starts_never_starts_it() -> None:
    async def main() -> None:
        async def wait(seconds: float) -> None:
            raise ClientDisconnected

        with pytest.raises(ClientDisconnected):
            await tracing.trace("wall", 1, wait)
        for _ in range(3):  # the delayed start's two loop turns, and one more
            await asyncio.sleep(0)

    asyncio.run(main())
    _assert_yappi_clean("cpu")
    assert tracing._active is None


def test_a_start_during_a_read_is_refused_at_once() -> None:
    """The loop never waits for the module lock, which a large read holds for seconds."""
    tracer = Tracer("cpu")
    tracer.start()
    tracer.halt()
    with tracing._LOCK, pytest.raises(Busy, match="running or being read"):  # as read()
        Tracer("wall").start()
    tracer.read()
    _assert_yappi_clean("cpu")
