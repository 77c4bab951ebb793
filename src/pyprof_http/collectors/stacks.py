"""Stacks of every thread and every asyncio task: the ``goroutine`` profile.

Threads come from ``sys._current_frames()``. A suspended task has no thread stack, so its stack
is rebuilt by walking the coroutine chain (``cr_await`` / ``gi_yieldfrom`` / ``ag_await``) down to
the innermost suspended coroutine, stepping through C wrappers (``async_generator_asend``,
``FutureIter``) with ``gc.get_referents``. ``task.get_stack()`` is no help: it gives only the
outermost frame. Each loop's tasks are read from that loop's own thread when it answers within a
short time, so the walk sees a consistent state; a loop that is blocked is read from here instead.
Everything is read-only: nothing is resumed, awaited or patched.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import sys
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from types import AsyncGeneratorType, CodeType, CoroutineType, FrameType, GeneratorType
from typing import Any, NamedTuple

from .._gc import paused_gc
from ..loops import (
    ASYNCIO_DIR,
    LOOPS,
    ORIGINS,
    LoopInfo,
    TaskOrigin,
    code_name,
    is_auto_task_name,
    running_task,
)
from ..model import Frame, Profile, Sample, ValueType
from .frames import frame_stack, to_frame
from .thread_state import thread_state

OTHER_LOOP_TIMEOUT_S = 0.25
"""How long another loop gets to walk its own tasks before we read them from this thread."""

COUNT = ValueType("goroutine", "count")
OWN_PREFIX = "pyprof_http-"
"""Every thread and task the library starts is named so (DESIGN §3)."""
_GatheringFuture: type = getattr(asyncio.tasks, "_GatheringFuture", asyncio.Future)
_TASKGROUP_EXIT: frozenset[int] = frozenset(
    id(getattr(getattr(asyncio, "TaskGroup", None), name).__code__)
    for name in ("__aexit__", "_aexit")
    if hasattr(getattr(asyncio, "TaskGroup", None), name)
)
"""ids of the code of the TaskGroup methods a parent task waits in (3.11+), to link it to its
children. Module-level stdlib code lives as long as the process, so its id is stable."""
_MAX_CHAIN = 100_000
"""Objects walked per task at most: a guard against a pathological (or cyclic) chain."""


class ThreadStack(NamedTuple):
    """One thread. Records are named tuples: 10,000 of them are built while the loop waits."""

    ident: int
    native_id: int | None
    name: str
    daemon: bool
    state: str
    stack: tuple[Frame, ...]
    """Innermost frame first."""


class TaskStack(NamedTuple):
    """One task, with what it waits on, who awaits it and where it came from."""

    id: int
    name: str
    state: str
    """``running``, ``runnable`` or ``awaiting``."""
    waiting_on: str | None
    """What the task waits for, named as a person would: ``Event.wait``, ``Task "x"``."""
    stack: tuple[Frame, ...]
    """The await chain, innermost suspended coroutine first."""
    thread: str
    """Name of the thread whose loop runs the task."""
    awaited_by: tuple[int, ...] = ()
    age_s: float | None = None
    created_by: Frame | None = None
    parent: str | None = None
    origin: TaskOrigin | None = None
    """Everything the task factory kept (creation stack, creating task's origin, request)."""


@dataclass(frozen=True)
class StackSnapshot:
    """Every thread and task at one moment; ``profile`` is the pprof view of it."""

    threads: tuple[ThreadStack, ...]
    tasks: tuple[TaskStack, ...]
    time_ns: int
    comments: tuple[str, ...] = field(default=())

    @cached_property
    def profile(self) -> Profile:
        """One sample per distinct (stack, labels), valued by how many threads/tasks share it.

        Labels are ``kind``, ``thread``, ``state``, ``task`` — the task's name when the
        application gave it one — and ``created_by``, where the task's chain of spawns began
        (a request's route, else the first creation site; see ``TaskOrigin.created_by``).
        asyncio's automatic ``Task-N`` names are left out: they carry
        no meaning, and without them 10,000 tasks parked at one place are one sample of 10,000,
        as in Go's goroutine profile (each task's identity is in the ``debug=2`` dump).
        """
        counts: dict[tuple[tuple[Frame, ...], str, str, str, str, str], int] = {}
        for t in self.threads:
            key = (t.stack, "thread", t.name, t.state, "", "")
            counts[key] = counts.get(key, 0) + 1
        for task in self.tasks:
            name = "" if is_auto_task_name(task.name) else task.name
            created = task.origin.created_by if task.origin is not None else ""
            key = (task.stack, "task", task.thread, task.state, name, created)
            counts[key] = counts.get(key, 0) + 1
        samples = tuple(
            Sample(stack, (count,), _labels(kind, thread, state, task, created))
            for (stack, kind, thread, state, task, created), count in counts.items()
        )
        return Profile(
            sample_types=(COUNT,),
            samples=samples,
            period_type=COUNT,
            period=1,
            time_ns=self.time_ns,
            comments=self.comments,
        )


def _labels(kind: str, thread: str, state: str, task: str, created: str) -> dict[str, str]:
    labels = {"kind": kind, "thread": thread, "state": state}
    if task:
        labels["task"] = task
    if created:  # where the chain of spawns began: go tool pprof -tagroot=created_by
        labels["created_by"] = created
    return labels


def count() -> int:
    """Threads plus tasks, cheaply, for the index page."""
    return threading.active_count() + sum(
        len(asyncio.all_tasks(info.loop)) for info in LOOPS.running()
    )


async def collect(max_depth: int = 128, skip_self: bool = False) -> StackSnapshot:
    """Snapshot all threads and all tasks of every registered loop.

    ``skip_self`` leaves out the calling task and thread: in a ``seconds=N`` delta their stacks
    differ between the two snapshots only because they are taking them.
    """
    here = LOOPS.register_running()
    time_ns = time.time_ns()
    comments: list[str] = []
    tasks: list[TaskStack] = []
    for info in LOOPS.running():
        if info.loop is here:
            tasks.extend(walk_loop_tasks(info, max_depth))
            continue
        found = await _walk_on_own_thread(info, max_depth)
        if found is None:
            comments.append(f"loop on thread {info.thread_name!r} did not answer within "
                            f"{OTHER_LOOP_TIMEOUT_S}s; its tasks were read from another thread")
            found = walk_loop_tasks(info, max_depth)
        tasks.extend(found)
    threads = walk_threads(max_depth)
    if skip_self:
        current = asyncio.current_task()
        own_id = ORIGINS.lookup(current)[0] if current is not None else None
        me = threading.get_ident()
        tasks = [t for t in tasks if t.id != own_id and not t.name.startswith(OWN_PREFIX)]
        threads = [t for t in threads if t.ident != me and not t.name.startswith(OWN_PREFIX)]
    return StackSnapshot(tuple(threads), tuple(tasks), time_ns, tuple(comments))


async def _walk_on_own_thread(info: LoopInfo, max_depth: int) -> list[TaskStack] | None:
    result: concurrent.futures.Future[list[TaskStack]] = concurrent.futures.Future()

    def walk() -> None:
        if result.set_running_or_notify_cancel():
            try:
                result.set_result(walk_loop_tasks(info, max_depth))
            except BaseException as exc:  # handed back to the waiting request
                result.set_exception(exc)

    try:
        info.loop.call_soon_threadsafe(walk)
        return await asyncio.wait_for(asyncio.wrap_future(result), OTHER_LOOP_TIMEOUT_S)
    except (asyncio.TimeoutError, RuntimeError):  # blocked, or closed meanwhile
        result.cancel()
        return None


def walk_threads(max_depth: int) -> list[ThreadStack]:
    """Every live thread, the calling one first (as Go puts the requesting goroutine first)."""
    current = threading.get_ident()
    by_ident = {t.ident: t for t in threading.enumerate()}
    out: list[ThreadStack] = []
    for ident, top in sys._current_frames().items():
        thread = by_ident.get(ident)
        frames = frame_stack(top, max_depth)
        out.append(ThreadStack(
            ident=ident,
            native_id=thread.native_id if thread is not None else None,
            name=thread.name if thread is not None else f"<unknown {ident}>",
            daemon=thread.daemon if thread is not None else False,
            state="running" if ident == current else thread_state(top),
            stack=frames,
        ))
    out.sort(key=lambda t: (t.ident != current, t.name, t.ident))
    return out


def walk_loop_tasks(info: LoopInfo, max_depth: int) -> list[TaskStack]:
    """All pending tasks of one loop; best called on that loop's own thread.

    This runs on the event loop and holds it, so it is written for speed (10,000 tasks in
    about 100 ms on a slow 2-core machine): one dict lookup per task for its id and origin,
    frames cached by code and instruction, records as named tuples, no intermediate records,
    and no garbage collection while thousands of small tuples are made.
    """
    with paused_gc():
        return _walk_loop_tasks(info, max_depth)


def _walk_loop_tasks(info: LoopInfo, max_depth: int) -> list[TaskStack]:
    loop = info.loop
    current = asyncio.current_task(loop) if _on_thread(info) else running_task(loop)
    now = time.monotonic()
    lookup = ORIGINS.lookup
    thread_name = info.thread_name
    awaited_by: dict[int, list[int]] = {}
    tasks = list(asyncio.all_tasks(loop))
    out: list[TaskStack] = []
    for task in tasks:
        task_id, origin = lookup(task)
        waiting_on: str | None = None
        if task is current:
            state, frames = "running", _running_chain(task, max_depth)
        else:
            fut_waiter = getattr(task, "_fut_waiter", None)
            frames, waited = _await_chain(task.get_coro(), fut_waiter)
            fut_waiter = fut_waiter or waited
            if fut_waiter is None:
                state = "runnable"
            else:
                state = "awaiting"
                waiting_on = _describe_wait(frames, fut_waiter, loop)
                for child in _children(fut_waiter, frames):
                    awaited_by.setdefault(id(child), []).append(task_id)
        stack = tuple([to_frame(f) for f in frames[:-max_depth - 1:-1]])
        if origin is None:
            out.append(TaskStack(task_id, task.get_name(), state, waiting_on, stack, thread_name))
        else:
            out.append(TaskStack(task_id, task.get_name(), state, waiting_on, stack, thread_name,
                                 (), now - origin.created_at, origin.site, origin.parent, origin))
    if awaited_by:
        for i, task in enumerate(tasks):
            waiters = awaited_by.get(id(task))
            if waiters:
                out[i] = out[i]._replace(awaited_by=tuple(waiters))
    out.sort(key=lambda t: (t.state != "running", t.id))
    return out


def _on_thread(info: LoopInfo) -> bool:
    return threading.get_ident() == info.thread_ident


def _await_chain(coro: Any, fut_waiter: Any = None) -> tuple[list[FrameType], Any]:
    """Frames outermost first down the whole await chain, and the future at its end (if any).

    The chain is walked to its end even when it is deeper than the frames kept: what the task
    waits on is at the innermost end, and that is the end worth keeping. Plain coroutines take
    a fast path; C wrappers (``async_generator_asend``, ``FutureIter``) are looked inside with
    ``gc.get_referents``, except a ``FutureIter`` when the task already says what it waits on.
    """
    frames: list[FrameType] = []
    obj = coro
    for _ in range(_MAX_CHAIN):
        kind = type(obj)
        if kind is CoroutineType:
            f = obj.cr_frame
            if f is not None:
                frames.append(f)
            obj = obj.cr_await
        elif kind is GeneratorType:
            if obj.gi_frame is not None:
                frames.append(obj.gi_frame)
            obj = obj.gi_yieldfrom
        elif kind is AsyncGeneratorType:
            if obj.ag_frame is not None:
                frames.append(obj.ag_frame)
            obj = obj.ag_await
        elif obj is None:
            return frames, None
        elif isinstance(obj, asyncio.Future):
            return frames, obj
        elif fut_waiter is not None and kind.__name__ == "FutureIter":
            return frames, fut_waiter
        elif hasattr(obj, "cr_frame") or hasattr(obj, "gi_frame"):  # foreign coroutine types
            f = getattr(obj, "cr_frame", None) or getattr(obj, "gi_frame", None)
            if f is not None:
                frames.append(f)
            obj = getattr(obj, "cr_await", None) or getattr(obj, "gi_yieldfrom", None)
        else:  # a C wrapper: the object it wraps is among its referents
            obj = next((r for r in gc.get_referents(obj) if _chain_link(r)), None)
    return frames, None


def _chain_link(obj: Any) -> bool:
    return isinstance(obj, (asyncio.Future, CoroutineType, GeneratorType, AsyncGeneratorType))


def _running_chain(task: asyncio.Task[Any], max_depth: int) -> list[FrameType]:
    """For the task running right now: the real thread stack from its coroutine up to here."""
    coro: Any = task.get_coro()
    outer = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
    frames: list[FrameType] = []
    f: FrameType | None = sys._getframe(1)
    while f is not None:
        frames.append(f)
        if f is outer:
            frames.reverse()
            return frames[-max_depth:]
        f = f.f_back
    return _await_chain(task.get_coro())[0][-max_depth:]


def _children(fut: Any, frames: list[FrameType]) -> list[Any]:
    """Tasks that ``fut`` stands for: a task itself, gather's children, a TaskGroup's tasks."""
    if isinstance(fut, asyncio.Task):
        return [fut]
    if isinstance(fut, _GatheringFuture):
        return list(fut._children)  # type: ignore[attr-defined]
    if frames and id(frames[-1].f_code) in _TASKGROUP_EXIT:
        return list(getattr(frames[-1].f_locals.get("self"), "_tasks", ()))
    return []


_ASYNCIO_NAMES: dict[int, tuple[CodeType, str | None]] = {}
"""id(code) -> (code, its name if it is asyncio's own code, else None). Keyed by id: hashing a
code object is slow (see frames.py); the entry keeps the code alive so the id stays its own."""


def _asyncio_name(f: FrameType) -> str | None:
    if len(_ASYNCIO_NAMES) > 10_000:
        _ASYNCIO_NAMES.clear()
    return code_name(f) if f.f_code.co_filename.startswith(ASYNCIO_DIR) else None


def _describe_wait(frames: list[FrameType], fut: Any, loop: asyncio.AbstractEventLoop) -> str:
    """Name what a suspended task waits on, from the asyncio frames at the end of its chain."""
    if isinstance(fut, asyncio.Task):
        return f'Task "{fut.get_name()}"'
    if isinstance(fut, _GatheringFuture):
        children = fut._children  # type: ignore[attr-defined]
        done = sum(1 for c in children if c.done())
        return f"gather ({done} of {len(children)} done)"
    outermost_asyncio: FrameType | None = None
    outer_name = ""
    for f in reversed(frames):  # innermost first; stop at the first frame that is not asyncio
        code = f.f_code
        entry = _ASYNCIO_NAMES.get(id(code))
        if entry is None or entry[0] is not code:
            entry = _ASYNCIO_NAMES[id(code)] = (code, _asyncio_name(f))
        name = entry[1]
        if name is None:
            break
        outermost_asyncio, outer_name = f, name
    if outermost_asyncio is None:
        return type(fut).__name__
    name = outer_name
    if name == "sleep":
        handle = outermost_asyncio.f_locals.get("h")
        if isinstance(handle, asyncio.TimerHandle):
            return f"sleep ({max(0.0, handle.when() - loop.time()):.1f} s left)"
    return name
