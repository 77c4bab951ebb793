"""Stacks of every thread and every asyncio task: the ``goroutine`` profile.

A snapshot is taken in two steps so that it never holds an event loop for long, however many
tasks there are. First, what moves is read in one go on the requesting loop, so threads and
tasks are all seen at the same moment: the task list with each task's frames and instruction
offsets (:func:`.task_walk.capture_tasks`), and each thread's frames and offsets. Then, on a
worker thread, frames become names and lines, thread states are recognised (which may read
source files through ``linecache``) and records are built; the rendering that follows is off
the loop too. Another registered loop reads its own tasks on its own thread when it answers
within a short time, or is read from here when it is blocked (its running task then shows the
loop thread's real frames, down to the blocking call).

Requests that arrive while a snapshot is being taken share it instead of taking their own, so
a burst of concurrent dumps costs about one snapshot's loop time, not one per request.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from dataclasses import dataclass
from types import FrameType

from .._gc import paused_gc
from .._waiting import render_in_thread
from ..captures.stacks import COUNT, StackSnapshot, TaskStack, ThreadStack
from ..in_flight import InFlight
from ..loops import LOOPS, ORIGINS, LoopInfo
from .frames import frame_at, thread_frames
from .task_walk import LoopCapture, build_tasks, capture_tasks
from .thread_state import TOP_FRAMES_CHECKED, state_of
from .threads import THREAD_STARTS

__all__ = ["COUNT", "OWN_PREFIX", "StackSnapshot", "TaskStack", "ThreadStack", "collect",
           "count", "walk_loop_tasks", "walk_threads"]

OTHER_LOOP_TIMEOUT_S = 0.25
"""How long another loop gets to read its own tasks before we read them from this thread."""
OWN_PREFIX = "pyprof_http-"
"""Every thread and task the library starts is named so, to be recognisable in dumps."""


def count() -> int:
    """Threads plus tasks, cheaply, for the index page."""
    return threading.active_count() + sum(
        len(asyncio.all_tasks(info.loop)) for info in LOOPS.running()
    )


async def collect(max_depth: int = 128, skip_self: bool = False) -> StackSnapshot:
    """Snapshot all threads and all tasks of every registered loop.

    A request arriving while another's snapshot is being taken gets that same snapshot.
    ``skip_self`` leaves out the calling task and thread: in a ``seconds=N`` delta their stacks
    differ between the two snapshots only because they are taking them.
    """
    snapshot = await _shared(max_depth)
    if not skip_self:
        return snapshot
    current = asyncio.current_task()
    own_id = ORIGINS.lookup(current)[0] if current is not None else None
    me = threading.get_ident()
    return StackSnapshot(
        tuple(t for t in snapshot.threads if t.ident != me and not t.name.startswith(OWN_PREFIX)),
        tuple(t for t in snapshot.tasks if t.id != own_id and not t.name.startswith(OWN_PREFIX)),
        snapshot.time_ns, snapshot.comments, snapshot.loop_hold_ns)


_SNAPSHOTS: InFlight[StackSnapshot] = InFlight(other_loop_wait_s=2 * OTHER_LOOP_TIMEOUT_S)
"""max_depth -> the snapshot being taken now. Process-wide, so requests on different loops
(the app's and a side server's) share it too; one on another loop than the snapshot's taker
waits for it only briefly, since that loop may be blocked (the reason to ask a side server)."""


async def _shared(max_depth: int) -> StackSnapshot:
    return await _SNAPSHOTS.run(max_depth, lambda: _take(max_depth))


async def _take(max_depth: int) -> StackSnapshot:
    here = LOOPS.register_running()
    comments: list[str] = []
    loops = LOOPS.running()
    captures: list[LoopCapture | None] = []
    for info in loops:
        if info.loop is here:
            captures.append(None)  # read below, together with the threads
            continue
        found = await _capture_on_own_thread(info, max_depth)
        if found is None:
            comments.append(f"loop on thread {info.thread_name!r} did not answer within "
                            f"{OTHER_LOOP_TIMEOUT_S}s; its tasks were read from another thread")
            found = capture_tasks(info, max_depth)
        captures.append(found)
    started = time.perf_counter_ns()
    time_ns = time.time_ns()
    captures = [capture_tasks(info, max_depth) if found is None else found
                for info, found in zip(loops, captures, strict=True)]
    threads = _capture_threads(max_depth)
    held_ns = time.perf_counter_ns() - started
    return await render_in_thread(_build, captures, threads, time_ns, tuple(comments), held_ns)


def _build(captures: list[LoopCapture], threads: _ThreadsCapture, time_ns: int,
           comments: tuple[str, ...], held_ns: int) -> StackSnapshot:
    with paused_gc():
        tasks = [task for capture in captures for task in build_tasks(capture)]
        return StackSnapshot(tuple(_build_threads(threads)), tuple(tasks), time_ns, comments,
                             held_ns)


async def _capture_on_own_thread(info: LoopInfo, max_depth: int) -> LoopCapture | None:
    result: concurrent.futures.Future[LoopCapture] = concurrent.futures.Future()

    def capture() -> None:
        if result.set_running_or_notify_cancel():
            try:
                result.set_result(capture_tasks(info, max_depth))
            except BaseException as exc:  # handed back to the waiting request
                result.set_exception(exc)

    try:
        info.loop.call_soon_threadsafe(capture)
        return await asyncio.wait_for(asyncio.wrap_future(result), OTHER_LOOP_TIMEOUT_S)
    except (asyncio.TimeoutError, RuntimeError):  # blocked, or closed meanwhile
        result.cancel()
        return None


@dataclass(frozen=True, slots=True)
class _ThreadsCapture:
    current: int
    threads: list[tuple[int, tuple[str, bool, int | None] | None, list[FrameType], list[int]]]
    """(ident, (name, daemon, native id) if known, frames innermost first, their ``f_lasti``)."""
    max_depth: int
    started: dict[int, float] | None = None
    """ident -> ``time.monotonic()`` at its start, for threads the start hook saw."""
    monotonic: float = 0.0


def _capture_threads(max_depth: int) -> _ThreadsCapture:
    """Every thread's frames and offsets, read now; cheap (a few hundred frames)."""
    live = threading.enumerate()
    by_ident = {t.ident: (t.name, t.daemon, t.native_id) for t in live}
    started = {t.ident: at for t in live
               if t.ident is not None and (at := THREAD_STARTS.started_at(t)) is not None}
    depth = max(max_depth, TOP_FRAMES_CHECKED)  # states look at the top frames
    out = []
    for ident, chain in thread_frames(depth):  # one C call: see thread_frames
        frames = list(chain)
        out.append((ident, by_ident.get(ident), frames, [f.f_lasti for f in frames]))
    return _ThreadsCapture(threading.get_ident(), out, max_depth, started, time.monotonic())


def _build_threads(capture: _ThreadsCapture) -> list[ThreadStack]:
    """Every captured thread, the capturing one first (as Go puts the requesting goroutine
    first). Off the loop: a state may be recognised by reading its source line."""
    current = capture.current
    out: list[ThreadStack] = []
    for ident, known, frames, lastis in capture.threads:
        stack = tuple([frame_at(f.f_code, lasti) for f, lasti in zip(frames, lastis, strict=True)])
        if ident == current:
            state = "running"
        elif frames:
            state = state_of([f.f_code for f in frames], stack[0].filename, stack[0].line)
        else:
            state = "runnable"
        name, daemon, native_id = known if known is not None else (f"<unknown {ident}>",
                                                                      False, None)
        at = capture.started.get(ident) if capture.started else None
        out.append(ThreadStack(ident, native_id, name, daemon, state, stack[:capture.max_depth],
                               None if at is None else capture.monotonic - at))
    out.sort(key=lambda t: (t.ident != current, t.name, t.ident))
    return out


def walk_threads(max_depth: int) -> list[ThreadStack]:
    """Every live thread now, the calling one first, read and built on the calling thread."""
    return _build_threads(_capture_threads(max_depth))


def walk_loop_tasks(info: LoopInfo, max_depth: int) -> list[TaskStack]:
    """All pending tasks of one loop, read and built on the calling thread (best: the loop's)."""
    return build_tasks(capture_tasks(info, max_depth))
