"""The /trace collector and builder in-process: what a window records, in which order, with
which attribution, and that everything hooked is put back (after the window, an error, a
reload), on the asyncio loop and on uvloop."""

from __future__ import annotations

import asyncio
import asyncio.base_events as base_events
import concurrent.futures.thread as cf_thread
import gc
import importlib
import os
import time
import warnings
from asyncio import events
from collections.abc import Awaitable, Callable
from typing import Any

import anyio.to_thread
import pytest
import uvloop

from pyprof_http import mark, markers, request_labels, span
from pyprof_http.captures.trace import TraceCapture, TraceEvent
from pyprof_http.collectors import trace, trace_hooks
from pyprof_http.collectors.trace_build import build
from pyprof_http.loops import LOOPS

ORIGINAL_RUN = events.Handle._run
ORIGINAL_CALL_SOON = base_events.BaseEventLoop._call_soon
ORIGINAL_WORK = cf_thread._WorkItem.run
ORIGINAL_RUN_SYNC = anyio.to_thread.run_sync


def assert_nothing_hooked() -> None:
    assert not trace.is_hooked()
    assert events.Handle._run is ORIGINAL_RUN
    assert base_events.BaseEventLoop._call_soon is ORIGINAL_CALL_SOON
    assert cf_thread._WorkItem.run is ORIGINAL_WORK
    assert anyio.to_thread.run_sync is ORIGINAL_RUN_SYNC
    assert markers.ACTIVE is None
    assert not any(type(getattr(cb, "__self__", None)).__name__ == "Hooks"
                   for cb in gc.callbacks)


def recorded(scenario: Callable[[], Awaitable[Any]], **kwargs: Any) -> TraceCapture:
    """Record a window that lasts as long as ``scenario`` runs; build it."""

    async def main() -> trace.Recording:
        async def window(_: float) -> None:
            await scenario()

        return await trace.record(1, window, **kwargs)

    recording = asyncio.run(main())
    assert_nothing_hooked()
    return build(recording)


def steps_of(capture: TraceCapture, task_name: str) -> list[TraceEvent]:
    return [e for e in capture.events if e.kind == "step" and e.name == task_name]


async def hog() -> None:
    time.sleep(0.08)  # one step that holds the loop


def test_a_step_waiting_behind_another_tasks_step_is_attributed_to_it() -> None:
    async def victim() -> None:
        keep = asyncio.create_task(hog(), name="hog")
        await asyncio.sleep(0)  # ready again at once: the hog's step runs first (FIFO)
        mark("resumed")
        await keep

    async def scenario() -> None:
        entered = request_labels.enter({"type": "http", "path": "/slow"})
        try:
            await asyncio.create_task(victim(), name="victim")
        finally:
            request_labels.leave(entered)

    capture = recorded(scenario)
    (hogged,) = steps_of(capture, "hog")
    victim_steps = steps_of(capture, "victim")
    resumed = next(s for s in victim_steps if s.start_ns > hogged.start_ns)
    # in order: the hog ran, then the victim; the victim was ready before the hog started
    assert resumed.start_ns >= hogged.end_ns
    assert resumed.start_ns - resumed.wait_ns <= hogged.start_ns
    assert resumed.wait_ns >= hogged.duration_ns
    assert resumed.behind[0][0].startswith("task ") and "hog (step)" in resumed.behind[0][0]
    assert resumed.behind[0][1] >= hogged.duration_ns * 0.99
    # the marker is on the victim's lane, labelled with its request
    (marker,) = [e for e in capture.events if e.kind == "mark"]
    assert marker.lane == resumed.lane and ("route", "/slow") in marker.args
    assert resumed.request and resumed.request == hogged.request  # the hog copied its context
    lanes = {lane.id: lane for lane in capture.lanes}
    assert lanes[resumed.lane].kind == "task" and lanes[resumed.lane].name.endswith(" victim")
    assert lanes[resumed.thread_lane].kind == "thread"


def test_a_long_step_gets_a_sampled_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace_hooks, "LONG_STEP_NS", 1_000_000)

    async def long_hog() -> None:
        time.sleep(0.3)  # the sampler looks every 5 ms: 300 ms leaves it plenty of turns

    async def scenario() -> None:
        await asyncio.create_task(long_hog(), name="long")

    capture = recorded(scenario)
    (step,) = [s for s in steps_of(capture, "long") if s.duration_ns > 100_000_000]
    assert step.stack and step.stack[0].function.endswith("long_hog")
    assert not any("_run" in f.function for f in step.stack)  # cut below the callback
    assert capture.profile.samples  # loop time by task/callback


def test_gc_thread_pool_and_spans_are_recorded() -> None:
    def blocking() -> int:
        time.sleep(0.001)
        return 1

    async def scenario() -> None:
        entered = request_labels.enter({"type": "http", "path": "/pool"})
        try:
            async with span("both", n=2):
                await asyncio.to_thread(blocking)
                await anyio.to_thread.run_sync(blocking)
            gc.collect()
        finally:
            request_labels.leave(entered)

    capture = recorded(scenario)
    work = [e for e in capture.events if e.kind == "work" and e.name.endswith("blocking")]
    assert len(work) == 2 and all(("route", "/pool") in e.args for e in work)
    lanes = {lane.id: lane for lane in capture.lanes}
    assert all(lanes[e.lane].kind == "thread" for e in work)
    assert any(e.kind == "gc" and ("generation", "2") in e.args for e in capture.events)
    (both,) = [e for e in capture.events if e.kind == "span"]
    assert both.name == "both" and ("n", "2") in both.args
    assert both.duration_ns >= sum(e.duration_ns for e in work)


def test_requests_are_summed_from_their_steps() -> None:
    buffer_holder: list[markers.TraceBuffer] = []

    async def app() -> None:
        await asyncio.sleep(0)
        await asyncio.create_task(hog(), name="neighbour")

    async def scenario() -> None:
        assert markers.ACTIVE is not None
        buffer_holder.append(markers.ACTIVE)
        entered = request_labels.enter({"type": "http", "path": "/r", "method": "GET"})
        traced = markers.ACTIVE.request(entered, {"method": "GET"})
        try:
            await app()
        finally:
            request_labels.leave(entered)
            traced.close()

    capture = recorded(scenario)
    (summary,) = capture.requests
    assert (summary.method, summary.route) == ("GET", "/r")
    assert summary.running_ns >= steps_of(capture, "neighbour")[0].duration_ns
    assert summary.steps >= 1 and summary.duration_ns >= summary.running_ns * 0.5
    (request,) = [e for e in capture.events if e.kind == "request"]
    assert request.name == "GET /r" and request.request == summary.number


def test_a_requests_sleep_that_comes_due_behind_a_hog_counts_as_waiting() -> None:
    """The demo's shape: the request sleeps 1 ms; a task serving no request hogs the loop for
    80 ms meanwhile; the sleep's timer runs late, and that lateness is the request's wait."""
    jobs: asyncio.Queue[int] = asyncio.Queue()

    async def neighbour() -> None:
        await jobs.get()
        time.sleep(0.08)

    async def scenario() -> None:
        builder = asyncio.create_task(neighbour(), name="builder")  # before the request
        await asyncio.sleep(0)
        entered = request_labels.enter({"type": "http", "path": "/q"})
        traced = markers.ACTIVE.request(entered, {"method": "GET"})  # type: ignore[union-attr]
        try:
            jobs.put_nowait(80)
            await asyncio.sleep(0.001)
        finally:
            request_labels.leave(entered)
            traced.close()
        await builder

    capture = recorded(scenario)
    hogged = max(steps_of(capture, "builder"), key=lambda e: e.duration_ns)
    assert not hogged.request  # the builder serves no request
    (summary,) = capture.requests
    assert summary.waiting_ns >= hogged.duration_ns - 1_000_000  # due at most 1 ms into it
    assert summary.running_ns < summary.waiting_ns
    assert "builder (step)" in summary.behind[0][0]
    late = [e for e in capture.events if e.kind == "callback" and e.request == summary.number
            and e.start_ns >= hogged.end_ns and e.wait_ns]
    assert late and late[0].behind[0][0].endswith("builder (step)")


def test_an_error_in_the_window_puts_everything_back() -> None:
    async def main() -> None:
        async def window(_: float) -> None:
            assert trace.is_hooked()
            raise ConnectionResetError("the client went away")

        await trace.record(1, window)

    with pytest.raises(ConnectionResetError):
        asyncio.run(main())
    assert_nothing_hooked()


def test_a_reloaded_module_restores_the_true_originals() -> None:
    importlib.reload(trace_hooks)  # the wrappers a reloaded module makes find the originals
    reloaded = importlib.reload(trace)
    try:
        async def main() -> None:
            async def window(_: float) -> None:
                assert events.Handle._run is not ORIGINAL_RUN
                await asyncio.sleep(0)

            await reloaded.record(1, window)

        asyncio.run(main())
        assert_nothing_hooked()
    finally:
        importlib.reload(trace_hooks)
        importlib.reload(trace)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX-only")
def test_a_child_forked_during_a_window_has_nothing_hooked() -> None:
    statuses: list[int] = []

    async def scenario() -> None:
        assert trace.is_hooked()
        with warnings.catch_warnings():  # 3.12+: forking while the sampler thread runs
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child: report by exit status only
            os._exit(0 if not trace.is_hooked() and markers.ACTIVE is None else 1)
        statuses.append(os.waitpid(pid, 0)[1])
        assert trace.is_hooked()  # the parent's window goes on

    recorded(scenario)
    assert statuses == [0]


def test_the_cap_drops_and_says_so() -> None:
    async def scenario() -> None:
        for i in range(50):
            mark(f"m{i}")
            await asyncio.sleep(0)

    capture = recorded(scenario, max_events=10)
    assert capture.dropped > 0
    assert any("dropped" in note for note in capture.notes)
    assert len(capture.events) <= 10 + 1  # the requests lane adds none; a stall or two at most


def test_uvloop_callbacks_are_missing_and_the_trace_says_so() -> None:
    async def main() -> trace.Recording:
        LOOPS.register_running()

        async def window(_: float) -> None:
            mark("on uvloop")
            await asyncio.sleep(0.01)

        return await trace.record(1, window)

    recording = uvloop.run(main())
    capture = build(recording)
    assert_nothing_hooked()
    assert any("uvloop" in note and "cannot be seen" in note for note in capture.notes)
    assert not [e for e in capture.events if e.kind in ("step", "callback")]
    assert [e.name for e in capture.events if e.kind == "mark"] == ["on uvloop"]
