"""tracemalloc heap profiles: the right site, innermost first, and tracing left as it was found.

tracemalloc is process-global, so every test runs under a fixture that records whether it was
tracing (and with how many frames) and puts it back, failing the test if the code under test
did not.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

import pprof_schema
from asgi_client import FakeClient
from pyprof_http._waiting import ClientDisconnected
from pyprof_http.captures.heap import HeapCapture
from pyprof_http.collectors import heap
from pyprof_http.collectors.errors import NeedsSwitch
from pyprof_http.errors import from_collector
from pyprof_http.model import Frame, Profile
from pyprof_http.pprof.encode import render_pprof

WINDOW = 0.2
HOT_BYTES = 5_000_000
kept: list[bytearray] = []


def heap_hot_allocator() -> None:
    """Keep ~5 MB of bytearrays alive (a plain loop: 3.11 gives comprehensions a frame)."""
    for _ in range(50):
        kept.append(bytearray(HOT_BYTES // 50))


def heap_hot_caller() -> None:
    heap_hot_allocator()


class Holder:
    def method(self) -> list[bytes]:
        def inner() -> list[bytes]:
            return [b""]

        return inner()


@pytest.fixture(autouse=True)
def tracemalloc_restored() -> Iterator[None]:
    """Each test leaves tracemalloc as it found it: the code under test must, and this checks."""
    was_tracing = tracemalloc.is_tracing()
    limit = tracemalloc.get_traceback_limit()
    yield
    kept.clear()
    now_tracing = tracemalloc.is_tracing()
    if now_tracing and not was_tracing:
        tracemalloc.stop()
    assert now_tracing == was_tracing, "tracemalloc left in another state"
    if was_tracing:  # when off, the limit is unused: start() takes its own (default 1)
        assert tracemalloc.get_traceback_limit() == limit


@pytest.fixture
def app_tracing() -> Iterator[int]:
    """tracemalloc started by "the app", with a frame limit the library must keep."""
    assert not tracemalloc.is_tracing()
    tracemalloc.start(7)
    yield 7
    tracemalloc.stop()


def allocating_wait(seconds: float) -> Callable[[float], Awaitable[None]]:
    async def wait(s: float) -> None:
        assert s == seconds
        await asyncio.sleep(0.01)  # tracing starts once the request is parked (two loop turns)
        heap_hot_caller()
        await asyncio.sleep(s)

    return wait


def hot_share(profile: Profile) -> tuple[float, list[Frame]]:
    """Share of inuse_space whose innermost frame is the allocator, and that sample's stack."""
    index = profile.value_index()
    total = sum(s.values[index] for s in profile.samples)
    hot = [s for s in profile.samples if s.stack and s.stack[0].function == "heap_hot_allocator"]
    assert hot, "the allocator's site is missing"
    biggest = max(hot, key=lambda s: s.values[index])
    return sum(s.values[index] for s in hot) / total, list(biggest.stack)


def test_window_catches_the_allocation_site_innermost_first() -> None:
    capture = asyncio.run(heap.trace_window(WINDOW, 32, allocating_wait(WINDOW)))
    assert not tracemalloc.is_tracing()
    assert isinstance(capture, HeapCapture)
    assert capture.mode == "window"
    share, stack = hot_share(capture.profile)
    assert share >= 0.5
    here = os.path.abspath(__file__)
    assert stack[0][:2] == ("heap_hot_allocator", here)
    assert stack[1][:2] == ("heap_hot_caller", here)
    assert stack[2][0] == "allocating_wait.<locals>.wait"
    assert capture.state.frames_limit == 32
    assert capture.state.traced_peak >= HOT_BYTES
    assert capture.profile.duration_ns >= WINDOW * 1e9 * 0.9
    assert capture.profile.time_ns > 0
    assert any("32 frames deep" in c for c in capture.profile.comments)
    assert any("x3-x7" in c and "x18-x33" in c for c in capture.profile.comments)
    assert any("tracemalloc's own memory" in c for c in capture.profile.comments)


def test_pprof_decodes_with_heap_sample_types_and_innermost_first() -> None:
    capture = asyncio.run(heap.trace_window(WINDOW, 16, allocating_wait(WINDOW)))
    message = pprof_schema.decode(render_pprof(capture.profile, "heap").body)
    strings = list(message.string_table)
    types = [(strings[t.type], strings[t.unit]) for t in message.sample_type]
    assert types == [("inuse_objects", "count"), ("inuse_space", "bytes")]
    assert strings[message.default_sample_type] == "inuse_space"
    assert (strings[message.period_type.type], strings[message.period_type.unit]) == (
        "space", "bytes")
    assert message.period == 1
    samples = pprof_schema.resolved_samples(message)
    stack, values, _ = max(samples, key=lambda s: s[1][1])
    assert [f[0] for f in stack[:2]] == ["heap_hot_allocator", "heap_hot_caller"]
    assert values[1] >= HOT_BYTES


def test_window_leaves_the_apps_tracing_on_and_uncleared(app_tracing: int) -> None:
    before = bytearray(3_000_000)  # traced before the window: not "allocated in the window"
    capture = asyncio.run(heap.trace_window(WINDOW, 32, allocating_wait(WINDOW)))
    assert tracemalloc.is_tracing()
    assert tracemalloc.get_traceback_limit() == app_tracing
    assert capture.state.frames_limit == app_tracing
    share, stack = hot_share(capture.profile)
    assert share >= 0.5
    assert stack[0][0] == "heap_hot_allocator"
    line = test_window_leaves_the_apps_tracing_on_and_uncleared.__code__.co_firstlineno + 1
    assert all(s.values[1] > 0 and s.values[0] >= 0 for s in capture.profile.samples)
    assert not [s for s in capture.profile.samples  # `before` was live already: not in it
                if s.stack[0].line == line and s.stack[0].filename == os.path.abspath(__file__)]
    snapshot = heap.snapshot_profile("", gc_first=False)  # but it is live, and traced
    assert [s for s in snapshot.profile.samples if s.stack[0].line == line
            and s.stack[0].filename == os.path.abspath(__file__) and s.values[1] >= 3_000_000]
    traced = tracemalloc.get_object_traceback(before)  # nothing was cleared
    assert traced is not None and traced[-1].lineno == line
    del before


@pytest.mark.parametrize("failure", [ClientDisconnected, asyncio.CancelledError])
def test_window_stops_tracing_when_the_wait_fails(failure: type[BaseException]) -> None:
    async def wait(seconds: float) -> None:
        await asyncio.sleep(0.05)
        raise failure

    with pytest.raises(failure):
        asyncio.run(heap.trace_window(WINDOW, 32, wait))
    assert not tracemalloc.is_tracing()


def test_window_stops_tracing_when_its_task_is_cancelled() -> None:
    async def main() -> None:
        task = asyncio.create_task(heap.trace_window(5.0, 32, asyncio.sleep))
        await asyncio.sleep(0.1)
        assert tracemalloc.is_tracing()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert not tracemalloc.is_tracing()


def test_snapshot_needs_tracing() -> None:
    assert not heap.is_tracing()
    with pytest.raises(NeedsSwitch) as raised:
        heap.snapshot_profile("", gc_first=False)
    assert from_collector(raised.value).status_code == 412  # what the app answers with
    assert str(raised.value) == heap.NOT_TRACING_REASON
    assert "?seconds=N" in heap.NOT_TRACING_REASON
    assert "PYPROF_HEAP_TRACE_AT_START=1" in heap.NOT_TRACING_REASON


def cyclic_garbage() -> None:
    """An unreachable cycle holding 4 MB: only a collection frees it."""
    cycle: list[object] = [bytearray(4_000_000)]
    cycle.append(cycle)


def test_gc_first_collects_unreachable_cycles(app_tracing: int) -> None:
    enabled = gc.isenabled()
    gc.disable()
    try:
        cyclic_garbage()

        def garbage_bytes(capture: HeapCapture) -> int:
            return sum(s.values[1] for s in capture.profile.samples
                       if s.stack and s.stack[0].function == "cyclic_garbage")

        without = heap.snapshot_profile("started by the app", gc_first=False)
        assert garbage_bytes(without) >= 4_000_000
        assert without.mode == "snapshot"
        assert any("started by the app" in c for c in without.profile.comments)
        collected = heap.snapshot_profile("started by the app", gc_first=True)
        assert garbage_bytes(collected) == 0
    finally:
        if enabled:
            gc.enable()
    assert tracemalloc.is_tracing()


def test_snapshot_leaves_out_tracemallocs_and_our_own_blocks(app_tracing: int) -> None:
    heap_hot_caller()
    capture = heap.snapshot_profile("", gc_first=False)
    package = os.path.dirname(os.path.dirname(heap.__file__))
    for sample in capture.profile.samples:
        assert sample.stack[0].filename != tracemalloc.__file__
        assert not sample.stack[0].filename.startswith(package + os.sep)
    assert hot_share(capture.profile)[0] > 0


def test_start_at_startup_is_idempotent() -> None:
    heap.start_at_startup(3)
    try:
        assert heap.is_tracing() and tracemalloc.get_traceback_limit() == 3
        heap.start_at_startup(9)  # already on: left alone
        assert tracemalloc.get_traceback_limit() == 3
    finally:
        tracemalloc.stop()


def test_growth_keeps_only_what_grew() -> None:
    a, b, c = (("a.py", 1),), (("b.py", 2),), (("c.py", 3),)
    before: heap.Sites = {a: (100, 2), b: (500, 5)}
    after: heap.Sites = {a: (300, 1), b: (400, 9), c: (50, 1)}
    assert heap.growth(after, before) == {a: (200, 0), c: (50, 1)}


def test_function_names_follow_co_qualname() -> None:
    code = Holder.method.__code__
    inner_line = code.co_firstlineno + 2
    assert heap.function_at(__file__, code.co_firstlineno + 1) == "Holder.method"
    assert heap.function_at(__file__, inner_line) == "Holder.method.<locals>.inner"
    assert heap.function_at(__file__, 1) == "<module>"
    assert heap.function_at(__file__, 10**6) == "<module>"
    assert heap.function_at("<frozen importlib._bootstrap>", 5) == "<frozen importlib._bootstrap>"


def test_build_profile_drops_the_repeated_comprehension_frame() -> None:
    here = os.path.abspath(__file__)
    line = heap_hot_allocator.__code__.co_firstlineno + 3
    caller = heap_hot_caller.__code__.co_firstlineno + 1
    sites: heap.Sites = {((here, line), (here, line), (here, caller)): (10, 1)}
    state = heap.TraceState(1, 0, 0, 0)
    profile = heap.build_profile(sites, state, mode="snapshot", note="", time_ns=1)
    (sample,) = profile.samples
    assert [f.function for f in sample.stack] == ["heap_hot_allocator", "heap_hot_caller"]
    assert sample.values == (1, 10)


def test_a_window_starts_no_thread_and_sets_nothing_up_while_tracing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Before CPython 3.12.5 every traceback tracemalloc records stays allocated after stop
    (gh-121390): a window must not record its own machinery. The snapshot thread is started
    before tracing, and the wait (future, watcher task, timer) is set up before it starts."""
    tracing_at_start: list[bool] = []
    real_start = threading.Thread.start

    def recording_start(self: threading.Thread) -> None:
        tracing_at_start.append(tracemalloc.is_tracing())
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", recording_start)
    created_while_tracing: list[str] = []
    real_create_task = asyncio.BaseEventLoop.create_task

    def recording_create_task(self: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
        if tracemalloc.is_tracing():
            created_while_tracing.append(getattr(coro, "__qualname__", "?"))
        return real_create_task(self, coro, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(asyncio.BaseEventLoop, "create_task", recording_create_task)
    capture = asyncio.run(heap.trace_window(0.3, 8, FakeClient().wait()))
    assert capture.mode == "window"
    assert tracing_at_start and not any(tracing_at_start), tracing_at_start
    assert created_while_tracing == []
    assert not tracemalloc.is_tracing()


def test_a_cut_off_window_stops_tracing_before_the_request_runs_again() -> None:
    """The client went away: tracing stops in the callback that wakes the request, so the
    error raised through its coroutines is not recorded (nor anything after)."""
    tracing_when_told: list[bool] = []

    async def main() -> None:
        client = FakeClient()
        inner = client.wait()

        async def wait(seconds: float) -> None:
            try:
                await inner(seconds)
            except ClientDisconnected:
                tracing_when_told.append(tracemalloc.is_tracing())
                raise

        loop = asyncio.get_running_loop()

        def leave_once_tracing() -> None:
            if tracemalloc.is_tracing():
                client.gone.set()
            else:
                loop.call_later(0.001, leave_once_tracing)

        loop.call_soon(leave_once_tracing)
        with pytest.raises(ClientDisconnected):
            await heap.trace_window(30, 8, wait)

    asyncio.run(main())
    assert tracing_when_told == [False]
    assert not tracemalloc.is_tracing()


def test_a_window_that_ends_before_tracing_began_is_empty_not_an_error() -> None:
    """Shutdown can end a wait within its first loop turns, before tracing starts."""

    async def wait(seconds: float) -> None:
        return None

    capture = asyncio.run(heap.trace_window(5, 8, wait))
    assert capture.profile.samples == ()
    assert not tracemalloc.is_tracing()
