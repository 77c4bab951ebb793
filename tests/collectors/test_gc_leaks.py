"""The destroyed-pending-task recorder, with real loops, real leaks and real collections.

Each test builds leaks that are garbage only through themselves (a Future, an Event, a Queue
that nobody else holds) and healthy parked tasks that are not, runs ``gc.collect()`` and
reads what was recorded. Nothing here times anything.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from pyprof_http.collectors import gc_leaks, leak_runs, stacks
from pyprof_http.collectors.gc_leaks import DESTROYED_PENDING, GC_LEAKS
from pyprof_http.collectors.leak_runs import collect_now
from pyprof_http.collectors.task_walk import describe_task
from pyprof_http.loops import LOOPS, ORIGINS

HERE = __file__


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    gc.collect()  # garbage of earlier tests must not land in this one's records
    GC_LEAKS.clear()
    yield
    GC_LEAKS.clear()


def _line_of(function: Any, text: str) -> int:
    """The line of ``function``'s source that contains ``text`` (so tests name lines)."""
    import inspect

    lines, first = inspect.getsourcelines(function)
    return first + next(i for i, line in enumerate(lines) if text in line)


async def leak_future() -> None:
    await asyncio.get_running_loop().create_future()  # leak: nobody else has it


async def leak_event() -> None:
    event = asyncio.Event()
    await event.wait()  # leak: only this task holds the event


async def leak_queue(q: asyncio.Queue[int]) -> None:
    await q.get()  # leak: the creator dropped the queue


async def healthy_sleep() -> None:
    await asyncio.sleep(3600)


async def healthy_future(holder: dict[str, asyncio.Future[None]]) -> None:
    holder["f"] = asyncio.get_running_loop().create_future()
    await holder["f"]


def spawn_leaks() -> None:
    asyncio.create_task(leak_future(), name="leak-future")  # spawn: future  # noqa: RUF006 (a deliberate leak)
    asyncio.create_task(leak_event(), name="leak-event")  # spawn: event  # noqa: RUF006 (a deliberate leak)
    asyncio.create_task(leak_queue(asyncio.Queue()), name="leak-queue")  # spawn: queue  # noqa: RUF006 (a deliberate leak)


async def _watched(previous: Any = None) -> asyncio.AbstractEventLoop:
    loop = asyncio.get_running_loop()
    LOOPS.register_running()
    ORIGINS.install_factory(loop)
    if previous is not None:
        loop.set_exception_handler(previous)
    GC_LEAKS.watch(loop)
    return loop


async def _request_collection() -> leak_runs.GcRun:
    """What ``/goroutineleak`` does: describe pending tasks, then collect off the loop."""
    snapshot = await stacks.collect(64)
    described = leak_runs.expected_from(snapshot.tasks)
    del snapshot
    return await asyncio.to_thread(collect_now, described)


@pytest.fixture
def no_automatic_gc() -> Iterator[None]:
    """Only the collection the test runs: one the test's allocations set off meanwhile would
    find the leaks first (without the descriptions made for the request's collection), and
    one running on another thread makes ``gc.collect()`` there return 0 at once."""
    gc.disable()
    yield
    gc.enable()


def _by_name() -> dict[str, gc_leaks.LeakRecord]:
    return {r.name: r for r in GC_LEAKS.records_since(0)}


def test_each_leak_kind_recorded_with_chain_awaited_object_and_creation_site(
        no_automatic_gc: None) -> None:
    seen: list[str] = []
    holder: dict[str, asyncio.Future[None]] = {}

    async def main() -> leak_runs.GcRun:
        loop = await _watched(lambda _loop, context: seen.append(context["message"]))
        healthy = [asyncio.create_task(healthy_sleep()) for _ in range(500)]
        held = [asyncio.create_task(healthy_future(holder)) for _ in range(500)]
        spawn_leaks()
        await asyncio.sleep(0)
        run = await _request_collection()
        for task in healthy + held:
            task.cancel()
        await asyncio.gather(*healthy, *held, return_exceptions=True)
        GC_LEAKS.unwatch(loop)
        return run

    run = asyncio.run(main())
    records = _by_name()
    assert set(records) == {"leak-future", "leak-event", "leak-queue"}  # no healthy one
    assert seen == [DESTROYED_PENDING] * 3  # the app's handler saw every event
    assert run.leaks == 3 and run.examined > 0 and run.collected > 0
    assert records["leak-event"].awaiting == "Event.wait"
    assert records["leak-queue"].awaiting == "Queue.get"
    assert records["leak-future"].awaiting == "Future"
    for name, fn, text in (("leak-future", leak_future, "leak: nobody"),
                           ("leak-event", leak_event, "leak: only"),
                           ("leak-queue", leak_queue, "leak: the creator")):
        record = records[name]
        assert record.chain_complete
        ours = [f for f in record.stack if f.filename == HERE]
        assert ours[0].function.endswith(fn.__name__)
        assert ours[0].line == _line_of(fn, text)
        spawn_line = _line_of(spawn_leaks, f"spawn: {name.split('-')[1]}")
        assert record.creation[0].filename == HERE
        assert record.creation[0].line == spawn_line
        assert record.created_by == f"spawn_leaks {HERE}:{spawn_line}"
        assert record.age_s is not None and record.age_s >= 0
        assert record.task_id > 0


def test_profile_has_leak_sample_type_creation_outermost_and_labels(
        no_automatic_gc: None) -> None:
    async def main() -> None:
        loop = await _watched()
        spawn_leaks()
        await asyncio.sleep(0)
        await _request_collection()
        GC_LEAKS.unwatch(loop)

    asyncio.run(main())
    profile = GC_LEAKS.capture().profile
    assert [(t.type, t.unit) for t in profile.sample_types] == [("goroutineleak", "count")]
    by_task = {s.labels["task"]: s for s in profile.samples}
    assert set(by_task) == {"leak-future", "leak-event", "leak-queue"}
    sample = by_task["leak-event"]
    assert sample.labels["awaiting"] == "Event.wait"
    record = _by_name()["leak-event"]
    assert sample.stack == record.stack + record.creation  # creation site outermost
    assert record.creation[0].line == _line_of(spawn_leaks, "spawn: event")
    assert sample.labels["created_by"].startswith("spawn_leaks ")


def test_automatic_collection_keeps_creation_site_but_loses_the_chain() -> None:
    """A collection the app's own allocations set off: CPython has closed the coroutine
    before the task's finalizer runs (3.10-3.13), so only its function is left."""
    async def main() -> None:
        loop = await _watched()
        spawn_leaks()
        await asyncio.sleep(0)
        gc.collect()
        GC_LEAKS.unwatch(loop)

    asyncio.run(main())
    record = _by_name()["leak-event"]
    assert record.creation[0].line == _line_of(spawn_leaks, "spawn: event")
    assert record.stack[0].function.endswith("leak_event")
    if not record.chain_complete:  # the documented loss; the function's first line instead
        assert record.stack[0].line == leak_event.__code__.co_firstlineno
        assert record.awaiting == "Future"


def test_default_handler_still_logs_when_none_was_set(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        loop = await _watched()
        spawn_leaks()
        await asyncio.sleep(0)
        await _request_collection()
        GC_LEAKS.unwatch(loop)

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        asyncio.run(main())
    assert sum(DESTROYED_PENDING in r.getMessage() for r in caplog.records) == 3


def test_other_events_pass_through_unrecorded() -> None:
    seen: list[dict[str, Any]] = []

    async def main() -> None:
        loop = await _watched(lambda _loop, context: seen.append(context))
        loop.call_exception_handler({"message": "something else"})
        GC_LEAKS.unwatch(loop)

    asyncio.run(main())
    assert [c["message"] for c in seen] == ["something else"]
    assert GC_LEAKS.total == 0


def test_unwatch_restores_previous_and_counts_watches() -> None:
    def previous(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        pass

    async def main() -> list[Any]:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(previous)
        GC_LEAKS.watch(loop)
        GC_LEAKS.watch(loop)  # a second holder: one chain
        ours = loop.get_exception_handler()
        assert ours is not previous and ours.previous is previous  # type: ignore[union-attr]
        GC_LEAKS.unwatch(loop)
        still = loop.get_exception_handler()
        GC_LEAKS.unwatch(loop)
        return [ours, still, loop.get_exception_handler()]

    ours, still, after = asyncio.run(main())
    assert still is ours
    assert after is previous


def test_unwatch_leaves_a_newer_app_handler_alone_and_ours_only_forwards() -> None:
    forwarded: list[str] = []

    async def main() -> Any:
        loop = await _watched()
        ours = loop.get_exception_handler()

        def newer(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            forwarded.append(context["message"])
            ours(loop, context)  # type: ignore[misc]

        loop.set_exception_handler(newer)
        GC_LEAKS.unwatch(loop)
        assert loop.get_exception_handler() is newer
        spawn_leaks()
        await asyncio.sleep(0)
        gc.collect()
        return loop.get_exception_handler()

    assert asyncio.run(main()).__name__ == "newer"
    assert forwarded == [DESTROYED_PENDING] * 3
    assert GC_LEAKS.total == 0  # unwatched: handed on, not recorded


def test_a_failing_description_never_reaches_the_collector(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def broken(*args: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(GC_LEAKS, "_describe", broken)

    async def main() -> None:
        loop = await _watched(lambda _loop, context: seen.append(context["message"]))
        spawn_leaks()
        await asyncio.sleep(0)
        gc.collect()
        GC_LEAKS.unwatch(loop)

    asyncio.run(main())
    assert seen == [DESTROYED_PENDING] * 3
    assert GC_LEAKS.total == 0


def test_ten_thousand_leaks_keep_memory_bounded(monkeypatch: pytest.MonkeyPatch,
                                               no_automatic_gc: None) -> None:
    monkeypatch.setattr(gc_leaks, "MAX_GROUPS", 3)

    async def distinct() -> None:
        await asyncio.Event().wait()

    async def main() -> None:
        loop = await _watched(lambda _loop, _context: None)
        for _ in range(10_000):
            asyncio.create_task(leak_event())  # noqa: RUF006 (a deliberate leak)
        for i in range(5):  # five more distinct leaks (by name) than groups may hold
            asyncio.create_task(distinct(), name=f"distinct-{i}")  # noqa: RUF006 (a deliberate leak)
        await asyncio.sleep(0)
        await _request_collection()
        GC_LEAKS.unwatch(loop)

    asyncio.run(main())
    groups, ring, queued = GC_LEAKS.sizes()
    assert GC_LEAKS.total == 10_005
    assert groups == 3 + 1 and ring == gc_leaks.RING_SIZE and queued == 0  # + OVERFLOW's
    assert GC_LEAKS.overflow == 10_005 - 10_000 - 2 == GC_LEAKS.counts()[gc_leaks.OVERFLOW]
    assert max(GC_LEAKS.counts().values()) == 10_000  # the 10,000 alike share one group
    # the profile still counts every leak: the ones past the kept groups share one sample
    capture = GC_LEAKS.capture()
    assert capture.total == 10_005 == sum(s.values[0] for s in capture.profile.samples)
    assert any(s.stack[0].function.startswith("(leaks of other stacks")
               and s.values == (GC_LEAKS.overflow,) for s in capture.profile.samples)


def test_records_on_the_thread_that_collects_and_records_since() -> None:
    async def main() -> int:
        loop = await _watched(lambda _loop, _context: None)
        spawn_leaks()
        await asyncio.sleep(0)
        gc.collect()
        mark = __import__("time").monotonic_ns()
        asyncio.create_task(leak_event(), name="later")  # noqa: RUF006 (a deliberate leak)
        await asyncio.sleep(0)
        thread = threading.Thread(target=gc.collect, name="app-thread")
        thread.start()
        thread.join()
        GC_LEAKS.unwatch(loop)
        return mark

    mark = asyncio.run(main())
    later = GC_LEAKS.records_since(mark)
    assert [r.name for r in later] == ["later"]
    assert later[0].thread == "app-thread"
    assert len(GC_LEAKS.records_since(0)) == 4


def test_handler_never_waits_for_the_recorder_lock() -> None:
    """A collection set off while the recorder's lock is held (by an allocation of its own
    drain, on the same thread) queues the record instead of waiting for itself."""
    async def main() -> None:
        loop = await _watched(lambda _loop, _context: None)
        asyncio.create_task(leak_event(), name="queued")  # noqa: RUF006 (a deliberate leak)
        await asyncio.sleep(0)
        with GC_LEAKS._lock:
            gc.collect()
            assert GC_LEAKS.sizes()[2] == 1  # queued, not counted yet
        GC_LEAKS.unwatch(loop)

    asyncio.run(main())
    assert [r.name for r in GC_LEAKS.records_since(0)] == ["queued"]


def test_window_capture_counts_only_new_leaks() -> None:
    async def main() -> Any:
        loop = await _watched(lambda _loop, _context: None)
        spawn_leaks()
        await asyncio.sleep(0)
        gc.collect()
        since = (__import__("time").monotonic_ns(), GC_LEAKS.counts())
        asyncio.create_task(leak_event(), name="leak-event")  # noqa: RUF006 (a deliberate leak)
        await asyncio.sleep(0)
        gc.collect()
        GC_LEAKS.unwatch(loop)
        return since

    capture = GC_LEAKS.capture(asyncio.run(main()))
    assert capture.total == 1
    assert [r.name for r in capture.records] == ["leak-event"]
    assert capture.duration_ns > 0


def test_lookup_dying_accepts_a_cleared_weakref() -> None:
    found: list[Any] = []

    async def main() -> None:
        loop = await _watched()
        task = asyncio.create_task(leak_event())
        expected = ORIGINS.lookup(task)[0]

        def handler(_loop: Any, context: dict[str, Any]) -> None:
            found.append((expected, ORIGINS.lookup_dying(context["task"])))

        loop.set_exception_handler(handler)
        GC_LEAKS.unwatch(loop)
        del task
        await asyncio.sleep(0)
        gc.collect()

    asyncio.run(main())
    (expected, dying), = found
    assert dying is not None and dying[0] == expected
    assert dying[1] is not None and dying[1].site is not None


def test_describe_task_names_the_wait_and_chain() -> None:
    async def main() -> tuple[str | None, Any]:
        task = asyncio.create_task(leak_event())
        await asyncio.sleep(0)
        described = describe_task(task, 64)
        task.cancel()
        return described

    waiting, stack = asyncio.run(main())
    assert waiting == "Event.wait"
    assert [f.line for f in stack if f.filename == HERE] == [_line_of(leak_event, "leak: only")]


def test_rechain_goes_back_in_front_of_a_handler_set_later() -> None:
    seen: list[str] = []

    def later(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        seen.append(context["message"])

    async def main() -> list[Any]:
        loop = await _watched()
        loop.set_exception_handler(later)  # the app replaces ours
        first = GC_LEAKS.rechain(loop)
        again = GC_LEAKS.rechain(loop)  # already in front: nothing to do
        spawn_leaks()
        await asyncio.sleep(0)
        gc.collect()
        GC_LEAKS.unwatch(loop)
        return [first, again, loop.get_exception_handler()]

    first, again, after = asyncio.run(main())
    assert (first, again, after) == (True, False, later)
    assert seen == [DESTROYED_PENDING] * 3
    assert GC_LEAKS.total == 3


def test_concurrent_requests_share_one_collection(no_automatic_gc: None) -> None:
    async def main() -> list[leak_runs.GcRun]:
        loop = await _watched(lambda _loop, _context: None)
        spawn_leaks()
        await asyncio.sleep(0)
        runs = await asyncio.gather(*[leak_runs.collect_on_request(64) for _ in range(20)])
        GC_LEAKS.unwatch(loop)
        return list(runs)

    runs = asyncio.run(main())
    assert len({id(run) for run in runs}) == 1  # one collection, its result shared
    assert {r.name for r in GC_LEAKS.records_since(0)} == {"leak-future", "leak-event",
                                                          "leak-queue"}
    assert all(r.chain_complete for r in GC_LEAKS.records_since(0))


def test_uvloop(no_automatic_gc: None) -> None:
    import uvloop  # a dev dependency
    seen: list[str] = []

    async def main() -> None:
        loop = await _watched(lambda _loop, context: seen.append(context["message"]))
        spawn_leaks()
        await asyncio.sleep(0)
        await leak_runs.collect_on_request(64)
        GC_LEAKS.unwatch(loop)

    uvloop.run(main())
    assert {r.name: r.awaiting for r in GC_LEAKS.records_since(0)} == {
        "leak-future": "Future", "leak-event": "Event.wait", "leak-queue": "Queue.get"}
    assert seen == [DESTROYED_PENDING] * 3


def test_describe_pending_of_a_loop_that_is_not_running(no_automatic_gc: None) -> None:
    """What a test suite's leak check does at teardown: the loop is idle, the leak is there."""
    loop = asyncio.new_event_loop()
    try:
        ORIGINS.install_factory(loop)
        loop.set_exception_handler(lambda _loop, _context: None)
        GC_LEAKS.watch(loop)

        async def step() -> None:
            spawn_leaks()
            await asyncio.sleep(0)

        loop.run_until_complete(step())
        run = collect_now(leak_runs.describe_pending(loop))
        GC_LEAKS.unwatch(loop)
    finally:
        loop.close()
    assert run.leaks == 3
    records = _by_name()
    assert records["leak-queue"].awaiting == "Queue.get" and records["leak-queue"].chain_complete
    assert records["leak-event"].stack[1].line == _line_of(leak_event, "leak: only")


def test_kept_names_are_cut_so_records_stay_small(no_automatic_gc: None) -> None:
    """A task's name may come from a client: what is kept for the process's life holds at
    most MAX_NAME characters of it."""
    huge = "n" * 100_000

    async def parent() -> None:
        await asyncio.get_running_loop().create_future()  # only this task refers to it

    async def main() -> None:
        loop = await _watched(lambda _loop, _context: None)
        asyncio.create_task(parent(), name=huge)  # noqa: RUF006 (a deliberate leak)
        await asyncio.sleep(0)
        await _request_collection()
        GC_LEAKS.unwatch(loop)

    asyncio.run(main())
    [record] = [r for r in GC_LEAKS.capture().records if r.name.startswith("nnn")]
    assert record.name == huge[:256]  # gc_leaks.MAX_NAME
    assert all(len(key[3]) <= 256 for key in GC_LEAKS.counts())
