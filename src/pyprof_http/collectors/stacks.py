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
import os
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from types import FrameType
from typing import Any

from ..loops import LOOPS, ORIGINS, LoopInfo, code_name
from ..model import Frame, Profile, Sample, ValueType, frame
from .thread_state import thread_state

_ASYNCIO_DIR = os.path.dirname(asyncio.__file__)
OTHER_LOOP_TIMEOUT_S = 0.25
"""How long another loop gets to walk its own tasks before we read them from this thread."""

COUNT = ValueType("goroutine", "count")
_AWAITS = {"cr": "cr_await", "gi": "gi_yieldfrom", "ag": "ag_await"}


@dataclass(frozen=True, slots=True)
class ThreadStack:
    ident: int
    native_id: int | None
    name: str
    daemon: bool
    state: str
    stack: tuple[Frame, ...]
    """Innermost frame first."""


@dataclass(frozen=True, slots=True)
class TaskStack:
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


@dataclass(frozen=True)
class StackSnapshot:
    """Every thread and task at one moment; ``profile`` is the pprof view of it."""

    threads: tuple[ThreadStack, ...]
    tasks: tuple[TaskStack, ...]
    time_ns: int
    comments: tuple[str, ...] = field(default=())

    @cached_property
    def profile(self) -> Profile:
        samples = [
            Sample(t.stack, (1,), {"kind": "thread", "thread": t.name, "state": t.state})
            for t in self.threads
        ]
        samples.extend(
            Sample(t.stack, (1,), {"kind": "task", "task": t.name, "thread": t.thread,
                                   "state": t.state})
            for t in self.tasks
        )
        return Profile(
            sample_types=(COUNT,),
            samples=tuple(samples),
            period_type=COUNT,
            period=1,
            time_ns=self.time_ns,
            comments=self.comments,
        )


def count() -> int:
    """Threads plus tasks, cheaply, for the index page."""
    return threading.active_count() + sum(
        len(asyncio.all_tasks(info.loop)) for info in LOOPS.running()
    )


async def collect(max_depth: int = 128) -> StackSnapshot:
    """Snapshot all threads and all tasks of every registered loop."""
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
        frames = _frame_stack(top, max_depth)
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


def _frame_stack(top: FrameType | None, max_depth: int) -> tuple[Frame, ...]:
    frames: list[Frame] = []
    f = top
    while f is not None and len(frames) < max_depth:
        frames.append(frame(code_name(f), f.f_code.co_filename, f.f_lineno or 0))
        f = f.f_back
    return tuple(frames)


def walk_loop_tasks(info: LoopInfo, max_depth: int) -> list[TaskStack]:
    """All pending tasks of one loop; best called on that loop's own thread."""
    loop = info.loop
    all_tasks = list(asyncio.all_tasks(loop))
    current = asyncio.current_task(loop) if _on_thread(info) else _running_task(loop)
    now = time.monotonic()
    awaited_by: dict[int, list[int]] = {}
    walked: list[tuple[asyncio.Task[Any], int, list[FrameType], str, str | None]] = []
    for task in all_tasks:
        task_id = ORIGINS.task_id(task)
        if task is current:
            frames = _running_chain(task, max_depth)
            walked.append((task, task_id, frames, "running", None))
            continue
        frames, waited = _await_chain(task.get_coro(), max_depth)
        fut_waiter = getattr(task, "_fut_waiter", None) or waited
        for child in _children(fut_waiter, frames):
            awaited_by.setdefault(id(child), []).append(task_id)
        if fut_waiter is None:
            walked.append((task, task_id, frames, "runnable", None))
        else:
            walked.append(
                (task, task_id, frames, "awaiting", _describe_wait(frames, fut_waiter, loop))
            )
    out: list[TaskStack] = []
    for task, task_id, frames, state, waiting_on in walked:
        origin = ORIGINS.origin(task)
        out.append(TaskStack(
            id=task_id,
            name=task.get_name(),
            state=state,
            waiting_on=waiting_on,
            stack=tuple(frame(code_name(f), f.f_code.co_filename, f.f_lineno or 0)
                        for f in reversed(frames)),
            thread=info.thread_name,
            awaited_by=tuple(awaited_by.get(id(task), ())),
            age_s=(now - origin.created_at) if origin else None,
            created_by=origin.site if origin else None,
            parent=origin.parent if origin else None,
        ))
    out.sort(key=lambda t: (t.state != "running", t.id))
    return out


def _on_thread(info: LoopInfo) -> bool:
    return threading.get_ident() == info.thread_ident


def _running_task(loop: asyncio.AbstractEventLoop) -> asyncio.Task[Any] | None:
    """The task running on a loop in another thread (asyncio keeps this per loop)."""
    running = getattr(asyncio.tasks, "_current_tasks", {})
    task = running.get(loop)
    return task if isinstance(task, asyncio.Task) else None


def _coro_parts(obj: Any) -> tuple[bool, FrameType | None, Any]:
    """(is a coroutine-like object, its frame, what it awaits) for coroutines and generators."""
    for prefix in ("cr", "gi", "ag"):
        if hasattr(obj, f"{prefix}_frame"):
            awaits = getattr(obj, _AWAITS[prefix], None)
            return True, getattr(obj, f"{prefix}_frame"), awaits
    return False, None, None


def _await_chain(coro: Any, max_depth: int) -> tuple[list[FrameType], Any]:
    """Frames outermost first down the await chain, and the future at its end (if any)."""
    frames: list[FrameType] = []
    seen: set[int] = set()
    obj = coro
    while obj is not None and id(obj) not in seen and len(frames) < max_depth:
        seen.add(id(obj))
        if isinstance(obj, asyncio.Future):
            return frames, obj
        is_coro, f, awaits = _coro_parts(obj)
        if is_coro:
            if f is not None:
                frames.append(f)
            obj = awaits
        else:  # a C wrapper such as async_generator_asend or FutureIter: look inside
            obj = next((r for r in gc.get_referents(obj)
                        if isinstance(r, asyncio.Future) or _coro_parts(r)[0]), None)
    return frames, None


def _running_chain(task: asyncio.Task[Any], max_depth: int) -> list[FrameType]:
    """For the task running right now: the real thread stack from its coroutine up to here."""
    outer = _coro_parts(task.get_coro())[1]
    frames: list[FrameType] = []
    f: FrameType | None = sys._getframe(1)
    while f is not None:
        frames.append(f)
        if f is outer:
            frames.reverse()
            return frames[-max_depth:]
        f = f.f_back
    return _await_chain(task.get_coro(), max_depth)[0]


def _children(fut: Any, frames: list[FrameType]) -> Iterable[Any]:
    """Tasks that ``fut`` stands for: a task itself, gather's children, a TaskGroup's tasks."""
    if isinstance(fut, asyncio.Task):
        yield fut
    yield from getattr(fut, "_children", ())
    for f in frames[-3:]:
        if code_name(f) == "TaskGroup.__aexit__":
            group = f.f_locals.get("self")
            yield from getattr(group, "_tasks", ())


def _describe_wait(frames: list[FrameType], fut: Any, loop: asyncio.AbstractEventLoop) -> str:
    """Name what a suspended task waits on, from the asyncio frames at the end of its chain."""
    if isinstance(fut, asyncio.Task):
        return f'Task "{fut.get_name()}"'
    if hasattr(fut, "_children"):
        children = fut._children
        done = sum(1 for c in children if c.done())
        return f"gather ({done} of {len(children)} done)"
    outermost_asyncio: FrameType | None = None
    for f in reversed(frames):  # innermost first; stop at the first frame that is not asyncio
        if not f.f_code.co_filename.startswith(_ASYNCIO_DIR):
            break
        outermost_asyncio = f
    if outermost_asyncio is None:
        return type(fut).__name__
    name = code_name(outermost_asyncio)
    if name == "sleep":
        handle = outermost_asyncio.f_locals.get("h")
        if isinstance(handle, asyncio.TimerHandle):
            return f"sleep ({max(0.0, handle.when() - loop.time()):.1f} s left)"
    return name
