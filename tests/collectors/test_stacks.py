"""The stacks collector with real asyncio code and real threads."""

from __future__ import annotations

import asyncio
import queue
import re
import sys
import threading
import time

import pytest

from pyprof_http.captures.stacks import StackSnapshot, TaskStack, ThreadStack
from pyprof_http.collectors import stacks
from pyprof_http.loops import LOOPS, ORIGINS
from pyprof_http.model import ValueType

PY311 = sys.version_info >= (3, 11)


def _fn(name: str) -> str:
    """The last part of a (qualified) function name."""
    return name.rsplit(".", 1)[-1]


def _task(snap: StackSnapshot, name: str) -> TaskStack:
    found = [t for t in snap.tasks if t.name == name]
    assert len(found) == 1, f"task {name!r} not found once in {[t.name for t in snap.tasks]}"
    return found[0]


def _thread(snap: StackSnapshot, name: str) -> ThreadStack:
    found = [t for t in snap.threads if t.name == name]
    assert len(found) == 1, f"thread {name!r} not found once in {[t.name for t in snap.threads]}"
    return found[0]


def _here(t: TaskStack | ThreadStack) -> list[str]:
    """Function names of the frames in this test file, innermost first."""
    return [_fn(f.function) for f in t.stack if f.filename == __file__]


async def _finish(*tasks: asyncio.Future) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _wait_until(predicate, timeout: float = 30.0) -> None:
    # a bound against hanging, not a timing: it returns as soon as the condition holds
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.002)


def _workers_gone() -> None:
    """The snapshot is built on a ``pyprof_http-render`` thread that ends right after handing
    it back: wait for it, so thread counts compare what the test itself started."""
    _wait_until(lambda: not any(t.name.startswith("pyprof_http-render")
                                for t in threading.enumerate()))


def _blocked_in(thread: threading.Thread, function: str) -> bool:
    """Whether ``thread``'s innermost Python frames include ``function`` (it is blocked there)."""
    frame = sys._current_frames().get(thread.ident)
    for _ in range(3):
        if frame is None:
            return False
        if frame.f_code.co_name == function:
            return True
        frame = frame.f_back
    return False


# --- coroutines used as subjects ------------------------------------------------------------


async def leaf_wait(event: asyncio.Event) -> None:
    await event.wait()


async def middle(event: asyncio.Event) -> None:
    await leaf_wait(event)


async def outer(event: asyncio.Event) -> None:
    await middle(event)


async def ticker(event: asyncio.Event):
    while True:
        await event.wait()
        yield 1


async def consumer(event: asyncio.Event) -> None:
    async for _ in ticker(event):
        pass


async def recurse(n: int, event: asyncio.Event) -> None:
    if n == 0:
        await event.wait()
    else:
        await recurse(n - 1, event)


# --- tasks ----------------------------------------------------------------------------------


def test_event_wait_through_nested_coroutines_innermost_first() -> None:
    async def main():
        event = asyncio.Event()
        task = asyncio.create_task(outer(event), name="nested")
        await asyncio.sleep(0)
        snap = await stacks.collect()
        await _finish(task)
        return snap

    t = _task(asyncio.run(main()), "nested")
    assert t.state == "awaiting"
    functions = [_fn(f.function) for f in t.stack]
    assert functions == ["wait", "leaf_wait", "middle", "outer"]
    assert t.stack[0].filename.endswith("locks.py")
    assert [f.filename for f in t.stack[1:]] == [__file__] * 3
    assert t.waiting_on is not None


def test_nested_chain_line_numbers_point_at_the_awaits() -> None:
    async def main():
        event = asyncio.Event()
        task = asyncio.create_task(outer(event), name="nested")
        await asyncio.sleep(0)
        snap = await stacks.collect()
        await _finish(task)
        return snap

    t = _task(asyncio.run(main()), "nested")
    lines = {_fn(f.function): f.line for f in t.stack if f.filename == __file__}
    for fn in (leaf_wait, middle, outer):
        assert lines[fn.__name__] == fn.__code__.co_firstlineno + 1  # the await line


def test_chain_continues_through_async_generator() -> None:
    async def main():
        event = asyncio.Event()
        task = asyncio.create_task(consumer(event), name="agen")
        await asyncio.sleep(0)
        snap = await stacks.collect()
        await _finish(task)
        return snap

    t = _task(asyncio.run(main()), "agen")
    assert [_fn(f.function) for f in t.stack] == ["wait", "ticker", "consumer"]
    assert t.stack[0].filename.endswith("locks.py")
    assert t.state == "awaiting"


class _HostileAwaitable:
    """An awaitable whose attribute lookups raise (as some proxies' ``__getattr__`` does):
    the walk's ``hasattr(obj, "cr_frame")`` on it raised, and the whole snapshot with it."""

    def __init__(self, fut: asyncio.Future) -> None:
        self._fut = fut

    def __await__(self):
        return self

    def __iter__(self):
        return self

    def __next__(self):
        if self._fut.done():
            raise StopIteration(self._fut.result())
        self._fut._asyncio_future_blocking = True
        return self._fut

    def send(self, value):
        return self.__next__()

    def throw(self, typ, value=None, tb=None):
        raise value if value is not None else typ

    def close(self) -> None:
        pass

    def __getattr__(self, name: str):
        raise RuntimeError(f"proxy has no target for {name}")


async def awaits_hostile(fut: asyncio.Future) -> None:
    await _HostileAwaitable(fut)


def test_an_awaitable_whose_attributes_raise_ends_its_chain_not_the_snapshot() -> None:
    async def main():
        event = asyncio.Event()
        fut = asyncio.get_running_loop().create_future()
        hostile = asyncio.create_task(awaits_hostile(fut), name="hostile")
        nested = asyncio.create_task(outer(event), name="nested")
        await asyncio.sleep(0)
        snap = await stacks.collect()
        fut.set_result(None)
        await hostile
        await _finish(nested)
        return snap

    snap = asyncio.run(main())
    t = _task(snap, "hostile")
    assert t.state == "awaiting"
    assert _here(t) == ["awaits_hostile"]
    assert _here(_task(snap, "nested")) == ["leaf_wait", "middle", "outer"]


def test_sleep_says_time_left() -> None:
    async def main():
        task = asyncio.create_task(asyncio.sleep(30), name="sleeper")
        await asyncio.sleep(0.05)
        snap = await stacks.collect()
        await _finish(task)
        return snap

    t = _task(asyncio.run(main()), "sleeper")
    assert t.state == "awaiting"
    match = re.fullmatch(r"sleep \((\d+\.\d) s left\)", t.waiting_on or "")
    assert match, t.waiting_on
    assert 25.0 <= float(match.group(1)) <= 30.0  # 30 s less what a loaded machine took
    assert _fn(t.stack[0].function) == "sleep"


async def _queue_getter() -> None:
    q: asyncio.Queue[int] = asyncio.Queue()
    await q.get()


async def _lock_waiter() -> None:
    lock = asyncio.Lock()
    await lock.acquire()
    await lock.acquire()


def test_queue_get_and_lock_acquire_chains() -> None:
    async def main():
        getter = asyncio.create_task(_queue_getter(), name="getter")
        locker = asyncio.create_task(_lock_waiter(), name="locker")
        await asyncio.sleep(0)
        snap = await stacks.collect()
        await _finish(getter, locker)
        return snap

    snap = asyncio.run(main())
    getter, locker = _task(snap, "getter"), _task(snap, "locker")
    assert [_fn(f.function) for f in getter.stack] == ["get", "_queue_getter"]
    assert getter.stack[0].filename.endswith("queues.py")
    assert [_fn(f.function) for f in locker.stack] == ["acquire", "_lock_waiter"]
    assert locker.stack[0].filename.endswith("locks.py")
    assert getter.state == locker.state == "awaiting"


def test_waiting_on_names_the_asyncio_primitive() -> None:
    async def main():
        event = asyncio.Event()
        tasks = [
            asyncio.create_task(outer(event), name="event"),
            asyncio.create_task(consumer(event), name="agen"),
            asyncio.create_task(_queue_getter(), name="getter"),
            asyncio.create_task(_lock_waiter(), name="locker"),
        ]
        await asyncio.sleep(0)
        snap = await stacks.collect()
        await _finish(*tasks)
        return snap

    snap = asyncio.run(main())
    names = ("event", "agen", "getter", "locker")
    assert {name: _task(snap, name).waiting_on for name in names} == {
        "event": "Event.wait",
        "agen": "Event.wait",
        "getter": "Queue.get",
        "locker": "Lock.acquire",
    }


def test_task_awaiting_a_task() -> None:
    async def main():
        event = asyncio.Event()
        target = asyncio.create_task(leaf_wait(event), name="target")

        async def waiter() -> None:
            await target

        outer_task = asyncio.create_task(waiter(), name="waiter")
        await asyncio.sleep(0)
        snap = await stacks.collect()
        await _finish(outer_task, target)
        return snap

    snap = asyncio.run(main())
    waiter, target = _task(snap, "waiter"), _task(snap, "target")
    assert waiter.state == "awaiting"
    assert waiter.waiting_on == 'Task "target"'
    assert target.awaited_by == (waiter.id,)
    assert waiter.awaited_by == ()
    assert _here(waiter) == ["waiter"]


def test_gather_children_are_awaited_by_the_gathering_task() -> None:
    async def main():
        event = asyncio.Event()

        async def quick() -> None:
            return None

        async def gathering() -> None:
            await asyncio.gather(leaf_wait(event), outer(event), quick())

        ORIGINS.install_factory(asyncio.get_running_loop())  # to know each child's parent

        task = asyncio.create_task(gathering(), name="gatherer")
        await asyncio.sleep(0.01)
        snap = await stacks.collect()
        await _finish(task)
        return snap

    snap = asyncio.run(main())
    gatherer = _task(snap, "gatherer")
    assert gatherer.state == "awaiting"
    assert gatherer.waiting_on == "gather (1 of 3 done)"
    children = [t for t in snap.tasks if gatherer.id in t.awaited_by]
    assert len(children) == 2  # the finished one is no longer a task
    assert sorted(_here(c)[-1] for c in children) == ["leaf_wait", "outer"]
    assert all(c.parent == "gatherer" for c in children)


@pytest.mark.skipif(not PY311, reason="asyncio.TaskGroup is new in Python 3.11")
def test_taskgroup_children_are_awaited_by_the_parent() -> None:
    async def main():
        event = asyncio.Event()

        async def parent() -> None:
            async with asyncio.TaskGroup() as group:  # type: ignore[attr-defined]
                group.create_task(leaf_wait(event), name="child-1")
                group.create_task(middle(event), name="child-2")

        task = asyncio.create_task(parent(), name="tg-parent")
        await asyncio.sleep(0.01)
        snap = await stacks.collect()
        event.set()
        await task
        return snap

    snap = asyncio.run(main())
    parent = _task(snap, "tg-parent")
    assert parent.state == "awaiting"
    assert "TaskGroup" in (parent.waiting_on or "")
    for name in ("child-1", "child-2"):
        assert _task(snap, name).awaited_by == (parent.id,)


def test_running_task_is_running_and_shows_the_caller() -> None:
    async def the_caller() -> StackSnapshot:
        asyncio.current_task().set_name("me")
        return await stacks.collect()

    snap = asyncio.run(the_caller())
    me = _task(snap, "me")
    assert me.state == "running"
    assert me.waiting_on is None
    assert "the_caller" in _here(me)
    assert snap.tasks[0] is me  # the running task comes first
    assert me.thread == threading.current_thread().name


def test_scheduled_but_not_started_task_is_runnable() -> None:
    async def main():
        event = asyncio.Event()
        fresh = asyncio.create_task(leaf_wait(event), name="fresh")  # not started yet
        snap = await stacks.collect()
        await _finish(fresh)
        return snap

    t = _task(asyncio.run(main()), "fresh")
    assert t.state == "runnable"
    assert t.waiting_on is None
    assert [_fn(f.function) for f in t.stack] == ["leaf_wait"]


def test_task_yielding_with_sleep_zero_is_runnable() -> None:
    async def spinner() -> None:
        while True:
            await asyncio.sleep(0)

    async def main():
        task = asyncio.create_task(spinner(), name="spinner")
        await asyncio.sleep(0)
        snap = await stacks.collect()
        await _finish(task)
        return snap

    t = _task(asyncio.run(main()), "spinner")
    assert t.state == "runnable"
    assert t.waiting_on is None
    assert "spinner" in _here(t)


def test_task_records_origin() -> None:
    async def main():
        ORIGINS.install_factory(asyncio.get_running_loop())
        asyncio.current_task().set_name("creator")
        event = asyncio.Event()
        line = sys._getframe().f_lineno + 1
        task = asyncio.create_task(leaf_wait(event), name="child")
        await asyncio.sleep(0.02)
        snap = await stacks.collect()
        await _finish(task)
        return snap, line

    snap, line = asyncio.run(main())
    child = _task(snap, "child")
    assert child.created_by is not None
    assert (child.created_by.filename, child.created_by.line) == (__file__, line)
    assert child.parent == "creator"
    assert child.age_s is not None and 0.015 <= child.age_s < 5


def test_task_without_origin_has_none() -> None:
    async def main():
        event = asyncio.Event()
        task = asyncio.create_task(leaf_wait(event), name="plain")
        await asyncio.sleep(0)
        snap = await stacks.collect()
        await _finish(task)
        return snap

    t = _task(asyncio.run(main()), "plain")
    assert (t.created_by, t.age_s, t.parent) == (None, None, None)


def test_task_ids_are_stable_across_snapshots() -> None:
    async def main():
        event = asyncio.Event()
        tasks = [asyncio.create_task(leaf_wait(event), name=f"t{i}") for i in range(5)]
        await asyncio.sleep(0)
        first = await stacks.collect()
        second = await stacks.collect()
        await _finish(*tasks)
        return first, second

    first, second = asyncio.run(main())
    ids1 = {t.name: t.id for t in first.tasks}
    ids2 = {t.name: t.id for t in second.tasks}
    assert ids1 == ids2
    assert len(set(ids1.values())) == len(ids1)


def test_max_depth_keeps_innermost_frames_of_a_suspended_task() -> None:
    async def main():
        event = asyncio.Event()
        task = asyncio.create_task(recurse(10, event), name="deep")
        await asyncio.sleep(0)
        snap = await stacks.collect(max_depth=3)
        await _finish(task)
        return snap

    t = _task(asyncio.run(main()), "deep")
    assert len(t.stack) == 3
    assert [_fn(f.function) for f in t.stack] == ["wait", "recurse", "recurse"]
    assert t.waiting_on == "Event.wait"


def test_max_depth_truncates_every_stack() -> None:
    async def main():
        event = asyncio.Event()
        task = asyncio.create_task(recurse(10, event), name="deep")
        await asyncio.sleep(0)
        snap = await stacks.collect(max_depth=3)
        full = await stacks.collect()
        await _finish(task)
        return snap, full

    snap, full = asyncio.run(main())
    assert len(_task(full, "deep").stack) == 12  # Event.wait + 11 recurse
    assert all(len(t.stack) <= 3 for t in snap.tasks)
    assert all(len(t.stack) <= 3 for t in snap.threads)


def test_max_depth_keeps_innermost_frames_of_threads_and_running_task() -> None:
    async def main():
        asyncio.current_task().set_name("me")
        snaps = []
        for depth in (2, 4096):  # the same call site, so the same frames and lines
            snaps.append(await stacks.collect(max_depth=depth))
        return snaps

    cut, full = asyncio.run(main())
    me_cut, me_full = _task(cut, "me"), _task(full, "me")
    assert len(me_full.stack) > 2
    assert me_cut.stack == me_full.stack[:2]
    assert "main" in _here(me_full)
    assert len(full.threads[0].stack) > 2
    assert cut.threads[0].stack == full.threads[0].stack[:2]


# --- threads --------------------------------------------------------------------------------


def test_threads_states_names_and_order() -> None:
    event = threading.Event()
    jobs: queue.Queue[int] = queue.Queue()
    waiter = threading.Thread(target=event.wait, name="ev-waiter", daemon=True)
    getter = threading.Thread(target=jobs.get, name="q-getter", daemon=False)
    waiter.start()
    getter.start()
    try:
        _wait_until(lambda: _blocked_in(waiter, "wait") and _blocked_in(getter, "get"))

        async def main():
            return await stacks.collect()

        snap = asyncio.run(main())
    finally:
        event.set()
        jobs.put(1)
        waiter.join(5)
        getter.join(5)

    first = snap.threads[0]
    assert first.ident == threading.get_ident()
    assert first.state == "running"
    assert first.name == threading.current_thread().name
    assert first.native_id == threading.get_native_id()
    assert "main" in _here(first)

    ev = _thread(snap, "ev-waiter")
    assert ev.state == "waiting on event"
    assert ev.daemon is True
    assert ev.native_id == waiter.native_id
    assert ev.ident == waiter.ident
    assert _fn(ev.stack[0].function) == "wait"

    q = _thread(snap, "q-getter")
    assert q.state == "waiting on queue"
    assert q.daemon is False
    assert q.native_id == getter.native_id
    assert [_fn(f.function) for f in q.stack[:2]] == ["wait", "get"]

    assert len({t.ident for t in snap.threads}) == len(snap.threads)
    rest = snap.threads[1:]
    assert [(t.name, t.ident) for t in rest] == sorted((t.name, t.ident) for t in rest)


def test_walk_threads_directly_puts_the_caller_first() -> None:
    threads = stacks.walk_threads(16)
    assert threads[0].ident == threading.get_ident()
    assert threads[0].state == "running"
    assert "test_walk_threads_directly_puts_the_caller_first" in _here(threads[0])


# --- other loops ----------------------------------------------------------------------------


class _OtherLoop:
    """An event loop in its own thread with one task waiting on an Event."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), name=name,
                                       daemon=True)

    async def _main(self) -> None:
        LOOPS.register_running()
        self.loop = asyncio.get_running_loop()
        event = asyncio.Event()
        task = asyncio.create_task(outer(event), name=f"{self.name}-task")
        await asyncio.sleep(0)
        self.ready.set()
        while not self.stop.is_set():
            await asyncio.sleep(0.005)
        await _finish(task)

    def __enter__(self) -> _OtherLoop:
        self.thread.start()
        assert self.ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        assert not self.thread.is_alive()


def test_a_second_loop_in_another_thread_is_walked() -> None:
    with _OtherLoop("second-loop"):
        before = {t.ident for t in threading.enumerate()}

        async def main():
            asyncio.current_task().set_name("local")
            return await stacks.collect()

        snap = asyncio.run(main())
        _workers_gone()
        after = {t.ident for t in threading.enumerate()}

    assert after == before  # collecting left no thread behind
    remote = _task(snap, "second-loop-task")
    assert remote.thread == "second-loop"
    assert remote.state == "awaiting"
    assert _here(remote) == ["leaf_wait", "middle", "outer"]
    local = _task(snap, "local")
    assert local.thread == threading.current_thread().name
    assert snap.comments == ()
    # the remote loop's main task is there too, sleeping in its poll loop
    assert any(t.thread == "second-loop" and "_main" in _here(t) for t in snap.tasks)


def test_a_blocked_loop_is_read_from_here_without_waiting_for_it() -> None:
    with _OtherLoop("blocked-loop") as other:
        blocked = threading.Event()
        release = threading.Event()

        def block() -> None:
            blocked.set()
            release.wait(5)

        assert other.loop is not None
        other.loop.call_soon_threadsafe(block)
        assert blocked.wait(5)
        before = {t.ident for t in threading.enumerate()}
        try:
            async def main():
                start = time.monotonic()
                snap = await stacks.collect()
                return snap, time.monotonic() - start

            snap, elapsed = asyncio.run(main())
            _workers_gone()
            after = {t.ident for t in threading.enumerate()}
        finally:
            release.set()

    assert after == before
    # not waiting for the blocked loop (held 5 s); one collect on a loaded machine can take a
    # good part of a second, so the bound is half the block, not 0.5 s
    assert elapsed < 2.5, elapsed
    remote = _task(snap, "blocked-loop-task")
    assert remote.thread == "blocked-loop"
    assert remote.state == "awaiting"
    assert _here(remote) == ["leaf_wait", "middle", "outer"]
    assert len(snap.comments) == 1
    assert "'blocked-loop' did not answer" in snap.comments[0]
    assert "read from another thread" in snap.comments[0]
    # the blocked thread itself is shown where it blocks
    blocked_thread = _thread(snap, "blocked-loop")
    assert "block" in _here(blocked_thread)


def blocking_call(blocked: threading.Event, release: threading.Event) -> None:
    blocked.set()
    release.wait(5)


async def stuck_handler(blocked: threading.Event, release: threading.Event) -> None:
    blocking_call(blocked, release)  # a sync call inside a task: the loop is blocked here


def test_a_blocked_loops_running_task_shows_the_blocking_call() -> None:
    """Read from another thread (a side server reading the app's loop), the running task's
    stack is the loop thread's real one, down to the call that blocks it."""
    with _OtherLoop("stuck-loop") as other:
        blocked = threading.Event()
        release = threading.Event()
        assert other.loop is not None
        other.loop.call_soon_threadsafe(
            lambda: other.loop.create_task(stuck_handler(blocked, release), name="stuck"))
        assert blocked.wait(5)
        try:
            snap = asyncio.run(stacks.collect())
            _workers_gone()
        finally:
            release.set()

    stuck = _task(snap, "stuck")
    assert stuck.state == "running"
    assert _here(stuck) == ["blocking_call", "stuck_handler"]
    assert _fn(stuck.stack[0].function) == "wait"  # threading.Event.wait, innermost
    assert stuck.thread == "stuck-loop"


def test_stopped_loops_are_not_walked() -> None:
    async def first():
        asyncio.current_task().set_name("gone")
        LOOPS.register_running()

    asyncio.run(first())

    async def second():
        return await stacks.collect()

    snap = asyncio.run(second())
    assert all(t.name != "gone" for t in snap.tasks)
    assert {t.thread for t in snap.tasks} == {threading.current_thread().name}


# --- the snapshot as a profile, and count() -------------------------------------------------


def test_snapshot_profile_counts_every_thread_and_task() -> None:
    async def main():
        event = asyncio.Event()
        named = asyncio.create_task(outer(event), name="p-task")
        unnamed = [asyncio.create_task(leaf_wait(event)) for _ in range(10)]  # Task-N names
        await asyncio.sleep(0)
        snap = await stacks.collect()
        _workers_gone()
        counted = stacks.count()
        await _finish(named, *unnamed)
        return snap, counted

    snap, counted = asyncio.run(main())
    profile = snap.profile
    assert profile.sample_types == (ValueType("goroutine", "count"),)
    assert profile.period_type == ValueType("goroutine", "count")
    assert profile.period == 1
    assert profile.time_ns == snap.time_ns
    assert abs(snap.time_ns - time.time_ns()) < 10 * 10**9
    assert profile.totals() == (len(snap.threads) + len(snap.tasks),)
    assert counted == len(snap.threads) + len(snap.tasks)
    keys = [s.key() for s in profile.samples]
    assert len(keys) == len(set(keys))  # one sample per distinct stack and labels

    def labels_of(kind: str) -> list[dict]:
        return [dict(s.labels) for s in profile.samples if s.labels["kind"] == kind]

    # threads: one sample each (their names differ), labelled kind/thread/state
    assert sorted(map(str, labels_of("thread"))) == sorted(
        str({"kind": "thread", "thread": t.name, "state": t.state}) for t in snap.threads)
    # a named task keeps its name as a label, with its stack
    named = [s for s in profile.samples if s.labels.get("task") == "p-task"]
    assert len(named) == 1 and named[0].values == (1,)
    assert dict(named[0].labels) == {"kind": "task", "task": "p-task",
                                     "thread": threading.current_thread().name,
                                     "state": "awaiting"}
    assert named[0].stack == _task(snap, "p-task").stack
    # asyncio's automatic Task-N names are left out, so identical tasks add up to one sample
    parked = [s for s in profile.samples
              if s.labels["kind"] == "task" and "task" not in s.labels
              and s.stack and _fn(s.stack[0].function) == "wait"
              and _fn(s.stack[1].function) == "leaf_wait"]
    assert len(parked) == 1
    assert parked[0].values == (10,)
    assert dict(parked[0].labels) == {"kind": "task", "state": "awaiting",
                                      "thread": threading.current_thread().name}


def test_count_counts_threads_and_tasks() -> None:
    async def main():
        LOOPS.register_running()  # count() sees registered loops only
        base = stacks.count()
        event = asyncio.Event()
        tasks = [asyncio.create_task(leaf_wait(event)) for _ in range(7)]
        more = stacks.count()
        await _finish(*tasks)
        return base, more

    base, more = asyncio.run(main())
    assert more - base == 7
    assert base >= threading.active_count() + 1  # at least this thread and the main task
