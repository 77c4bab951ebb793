"""The collection a ``/goroutineleak`` request runs, and what it says about it.

The recorder (:mod:`.gc_leaks`) sees a leaked task in its finalizer, when CPython has usually
closed its coroutine already; so before collecting, the request describes every pending task
(a ``goroutine`` snapshot: names and frames, no reference to any task) and hands the recorder
that table (:meth:`~.gc_leaks.GcLeaks.expect`): the leaks this collection finds keep their
full await chain. The collection runs on a worker thread: it holds the GIL like any CPython
collection, but the loop's callbacks are not queued behind it. One at a time, shared by the
requests that arrive while it runs.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from .._waiting import render_in_thread
from ..captures.stacks import TaskStack
from ..in_flight import InFlight
from ..loops import LoopInfo
from ..model import Frame
from . import stacks
from .gc_leaks import GC_LEAKS, MAX_DEPTH, Expected


@dataclass(frozen=True, slots=True)
class GcRun:
    """One collection run for a request: how long, how much it looked at, what it freed."""

    duration_ns: int
    examined: int
    """Objects the collector tracks (and so examined in a full collection)."""
    collected: int
    """Unreachable objects found (``gc.collect()``'s answer)."""
    leaks: int
    """Pending tasks it destroyed (recorded by the handler while it ran)."""
    thread: str

    def comment(self) -> str:
        return (f"gc.collect() on thread {self.thread}: {self.duration_ns / 1e6:.1f} ms, "
                f"{self.examined} objects examined, {self.collected} unreachable, "
                f"{self.leaks} leaked tasks destroyed")


_COLLECT_LOCK = threading.Lock()


def collect_now(described: Expected | None) -> GcRun:
    """A full collection with ``described`` pending tasks expected (call off the loop: it
    holds the GIL, so every thread waits for it, but the loop's callbacks are not queued
    behind it the way they would be behind a loop callback). One at a time."""
    with _COLLECT_LOCK:
        GC_LEAKS.expect(described)
        try:
            before = GC_LEAKS.total
            examined = len(gc.get_objects())
            started = time.perf_counter_ns()
            collected = gc.collect()
            duration = time.perf_counter_ns() - started
            leaks = GC_LEAKS.total - before
        finally:
            GC_LEAKS.expect(None)
    return GcRun(duration, examined, collected, leaks, threading.current_thread().name)


_RUNS: InFlight[GcRun] = InFlight()
"""One collection at a time, shared by the requests that arrive while it runs (200
concurrent /goroutineleak requests cost one collection, not 200 in a row)."""


async def collect_on_request(max_depth: int) -> GcRun:
    """Describe every pending task (a ``goroutine`` snapshot: names and frames, no task, so
    keeping it keeps no leak alive), then collect on a worker thread expecting them."""
    async def run() -> GcRun:
        snapshot = await stacks.collect(max_depth)
        return await render_in_thread(collect_described, snapshot.tasks)

    return await _RUNS.run(max_depth, run)


def expected_from(tasks: Iterable[TaskStack]) -> dict[int, tuple[str, tuple[str | None,
                                                                           tuple[Frame, ...]]]]:
    """:meth:`GcLeaks.expect`'s table from a ``goroutine`` snapshot's suspended tasks."""
    return {t.id: (t.name, (t.waiting_on, t.stack)) for t in tasks if t.state == "awaiting"}


def collect_described(tasks: Iterable[TaskStack]) -> GcRun:
    """:func:`collect_now` expecting the suspended ``tasks`` of a ``goroutine`` snapshot (its
    table is built here, off the loop)."""
    return collect_now(expected_from(tasks))


def describe_pending(loop: asyncio.AbstractEventLoop,
                     max_depth: int = MAX_DEPTH) -> dict[int, tuple[str, tuple[str | None,
                                                                           tuple[Frame, ...]]]]:
    """:meth:`GcLeaks.expect`'s table for ``loop``'s pending tasks, read on the calling thread:
    call it on the loop's own thread or while the loop is not running (a test's teardown,
    before ``collect_now(describe_pending(loop))``), never while it runs on another thread."""
    thread = threading.current_thread()
    info = LoopInfo(loop, thread.ident or 0, thread.name)
    return expected_from(stacks.walk_loop_tasks(info, max_depth))


def watched_comment() -> str:
    """Says whether destroyed tasks are being recorded at all, and on how many loops; puts
    the recorder back in front of a handler the application set after it."""
    loops = GC_LEAKS.watched_loops()
    if not loops:
        return ("no event loop is watched (install() chains the recorder at startup, a mounted "
                "app on its first request): nothing can be recorded")
    replaced = sum(GC_LEAKS.rechain(loop) for loop in loops)
    note = ("; the application had replaced the exception handler of "
            f"{replaced} of them since: chained in front again (leaks destroyed meanwhile "
            "were not recorded)") if replaced else ""
    return f"destroyed pending tasks recorded on {len(loops)} event loop(s){note}"


def _after_fork_in_child() -> None:
    """A parent's thread may have held the lock at the fork."""
    global _COLLECT_LOCK
    _COLLECT_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
