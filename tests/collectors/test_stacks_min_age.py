"""``goroutine?min_age``: only threads and tasks known to be at least that old."""

from __future__ import annotations

import asyncio
import threading

from pyprof_http.captures.stacks import StackSnapshot, TaskStack, ThreadStack, older_than
from pyprof_http.collectors import stacks
from pyprof_http.collectors.threads import THREAD_STARTS
from pyprof_http.loops import LOOPS, ORIGINS
from pyprof_http.model import frame

WAIT = frame("Event.wait", "/usr/lib/asyncio/locks.py", 213)


def _snapshot() -> StackSnapshot:
    threads = (ThreadStack(1, None, "old-thread", False, "running", (WAIT,), 50.0),
               ThreadStack(2, None, "young-thread", False, "running", (WAIT,), 1.0),
               ThreadStack(3, None, "MainThread", False, "running", (WAIT,), None))
    tasks = (TaskStack(1, "old-task", "awaiting", "Event.wait", (WAIT,), "MainThread", (), 60.0),
             TaskStack(2, "young-task", "awaiting", "Event.wait", (WAIT,), "MainThread", (), 2.0),
             TaskStack(3, "unknown-task", "awaiting", "Event.wait", (WAIT,), "MainThread"))
    return StackSnapshot(threads, tasks, 123, ("kept",))


def test_keeps_only_known_ages_at_least_min_age_and_says_what_it_left_out() -> None:
    filtered = older_than(_snapshot(), 10)
    assert [t.name for t in filtered.threads] == ["old-thread"]
    assert [t.name for t in filtered.tasks] == ["old-task"]
    assert filtered.time_ns == 123
    assert filtered.comments == ("kept", "min_age=10s: 1 threads and 1 tasks at least that "
                                 "old; left out as of unknown age (started before "
                                 "pyprof_http's hooks): 1 threads, 1 tasks")


def test_zero_keeps_everything_of_known_age() -> None:
    filtered = older_than(_snapshot(), 0)
    assert len(filtered.threads) == 2 and len(filtered.tasks) == 2


def test_real_thread_and_task_ages() -> None:
    """Ages come from the Thread.start hook and the task factory: a thread and a task made
    after them, then aged past the limit, are kept; ones made just before reading are not."""
    THREAD_STARTS.install(8)
    stop = threading.Event()
    try:
        old = threading.Thread(target=stop.wait, name="aged-thread")
        old.start()

        async def main() -> StackSnapshot:
            loop = asyncio.get_running_loop()
            LOOPS.register_running()
            ORIGINS.install_factory(loop)
            event = asyncio.Event()
            aged = asyncio.create_task(event.wait(), name="aged-task")
            await asyncio.sleep(0.5)  # the clock only needs to pass min_age; any delay is fine
            young = asyncio.create_task(event.wait(), name="young-task")
            await asyncio.sleep(0)
            snapshot = older_than(await stacks.collect(32), 0.5)
            event.set()
            await asyncio.gather(aged, young)
            ORIGINS.uninstall_factory(loop)
            return snapshot

        snapshot = asyncio.run(main())
    finally:
        stop.set()
        THREAD_STARTS.uninstall()
    assert "aged-thread" in [t.name for t in snapshot.threads]
    assert "MainThread" not in [t.name for t in snapshot.threads]  # age unknown: left out
    names = [t.name for t in snapshot.tasks]
    assert "aged-task" in names and "young-task" not in names
    assert all(t.age_s is not None and t.age_s >= 0.5 for t in snapshot.threads)
