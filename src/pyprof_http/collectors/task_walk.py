"""Asyncio tasks' stacks in two steps: read on the loop, understand off it.

A suspended task has no thread stack, so its stack is rebuilt by walking the coroutine chain
(``cr_await`` / ``gi_yieldfrom`` / ``ag_await``) down to the innermost suspended coroutine,
stepping through C wrappers (``async_generator_asend``, ``FutureIter``) with
``gc.get_referents``. ``task.get_stack()`` is no help: it gives only the outermost frame.

:func:`capture_tasks` runs while the loop's tasks stand still (on the loop's own thread, or
from another thread when that loop is blocked) and reads only what a task's next step would
change: the task list, each task's name, what it waits on, its chain of frames and each frame's
instruction offset, and for a few waits a value that moves (a sleep's deadline, how many of a
gather's children are done, a TaskGroup's live children). That is a few attribute reads per
frame, so the loop is held briefly and every task is seen at the same moment.
:func:`build_tasks` turns that into records on any thread: frame names and lines (from code
and offset, which do not change), ids and origins, what each task waits on in words, and who
awaits whom. Everything is read-only: nothing is resumed, awaited or patched.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import time
from dataclasses import dataclass
from types import AsyncGeneratorType, CodeType, CoroutineType, FrameType, GeneratorType
from typing import Any

from ..bounded import CodeTable
from ..captures.stacks import TaskStack
from ..loops import ASYNCIO_DIR, ORIGINS, LoopInfo, code_name_of, running_task
from ..model import Frame
from .frames import back_chain, current_frames, frame_at

_GatheringFuture: type = getattr(asyncio.tasks, "_GatheringFuture", asyncio.Future)
_TASKGROUP_EXIT: tuple[CodeType, ...] = tuple(
    getattr(asyncio.TaskGroup, name).__code__
    for name in ("__aexit__", "_aexit")
    if hasattr(asyncio, "TaskGroup") and hasattr(asyncio.TaskGroup, name)
)
"""Code of the TaskGroup methods a parent task waits in (3.11+), to link it to its children.
Held as code objects (so their ids stay theirs) and compared by identity: a reloaded asyncio
cannot confuse them, and ``==`` on code objects compares their contents, which is slow."""
_TASKGROUP_EXIT_IDS = frozenset(map(id, _TASKGROUP_EXIT))
_SLEEP: CodeType = asyncio.sleep.__code__
_MAX_CHAIN = 100_000
"""Objects walked per task at most: a guard against a pathological (or cyclic) chain."""

_HEADER = 5
"""A task's record in a capture: task, name, what it waits on, extra, frame count N, then N
pairs of frame and its ``f_lasti``, outermost first. ``extra`` is a sleep's deadline (loop
time), a gather's count of done children, or a TaskGroup's children."""


@dataclass(frozen=True, slots=True)
class LoopCapture:
    """One loop's tasks as read at one moment; no names or lines worked out yet.

    ``flat`` holds every task's record back to back in one list: the loop is held while it is
    filled, and one list is cheaper to fill than a list per task; it is also one object for
    the garbage collector instead of 30,000 (which, kept alive until the records are built,
    would be promoted and bring on full collections of the application's heap).
    """

    info: LoopInfo
    running: asyncio.Task[Any] | None
    flat: list[Any]
    monotonic: float
    """``time.monotonic()`` when read (for task ages)."""
    loop_time: float
    """The loop's clock when read (for sleep deadlines)."""


def capture_tasks(info: LoopInfo, max_depth: int) -> LoopCapture:
    """Read every pending task of one loop; best called on that loop's own thread.

    From another thread (the loop is blocked), the running task's frames are the loop thread's
    real frames, so the dump shows where it blocks.
    """
    loop = info.loop
    on_thread = threading.get_ident() == info.thread_ident
    current = asyncio.current_task(loop) if on_thread else running_task(loop)
    out: list[Any] = []
    append = out.append
    extend = out.extend
    coroutine = CoroutineType
    for task in list(asyncio.all_tasks(loop)):  # a list walks faster than the set
        start = len(out)
        extend((task, task.get_name(), None, None, 0))
        if task is current:
            for real in _running_frames(task, info, on_thread, max_depth):
                append(real)
                append(real.f_lasti)
            out[start + 4] = (len(out) - start - _HEADER) // 2
            continue
        fut = getattr(task, "_fut_waiter", None)
        last: FrameType | None = None
        obj: Any = task.get_coro()
        while type(obj) is coroutine:  # the common case, inlined: this loop is the loop's cost
            f = obj.cr_frame
            if f is not None:
                append(f)
                append(f.f_lasti)
                last = f
            obj = obj.cr_await
        if obj is not None:
            if isinstance(obj, asyncio.Future):
                fut = fut or obj
            else:  # generators, async generators, C wrappers: the general walk
                more, waited = _await_chain(obj, fut)
                for inner in more:
                    append(inner)
                    append(inner.f_lasti)
                    last = inner
                fut = fut or waited
        n = (len(out) - start - _HEADER) // 2
        if fut is not None:
            out[start + 2] = fut
            if last is not None:
                code = last.f_code
                if code is _SLEEP:
                    handle = last.f_locals.get("h")
                    if isinstance(handle, asyncio.TimerHandle):
                        out[start + 3] = handle.when()
                elif id(code) in _TASKGROUP_EXIT_IDS:
                    out[start + 3] = tuple(getattr(last.f_locals.get("self"), "_tasks", ()))
            if isinstance(fut, _GatheringFuture):
                children = fut._children  # type: ignore[attr-defined]
                out[start + 3] = sum([1 for c in children if c.done()])
        if n > max_depth:  # the innermost end is the one worth keeping
            del out[start + _HEADER:start + _HEADER + 2 * (n - max_depth)]
            n = max_depth
        out[start + 4] = n
    return LoopCapture(info, current, out, time.monotonic(), loop.time())


def build_tasks(capture: LoopCapture) -> list[TaskStack]:
    """Records of a captured loop's tasks, the running one first, then by id. Any thread."""
    lookup = ORIGINS.lookup
    thread_name = capture.info.thread_name
    now = capture.monotonic
    flat = capture.flat
    awaited_by: dict[int, list[int]] = {}
    stacks: dict[tuple[Frame, ...], tuple[Frame, ...]] = {}
    """One tuple per distinct stack: 10,000 tasks parked in one place share it."""
    names: dict[int, str] = {}
    """id(code) -> its asyncio name or "", for this build only (as ``found``)."""
    found: dict[tuple[int, int], Frame] = {}
    """(id(code), f_lasti) -> frame, for this build only: the capture keeps every code alive
    meanwhile, so an id cannot be reused, and a plain dict is faster than the shared table."""
    tasks: list[asyncio.Task[Any]] = []
    out: list[TaskStack] = []
    append = out.append
    new = tuple.__new__
    i = 0
    while i < len(flat):
        task, name, fut, extra, n = flat[i:i + _HEADER]
        end = i + _HEADER + 2 * n
        frames: list[FrameType] = flat[i + _HEADER:end:2]
        lastis: list[int] = flat[i + _HEADER + 1:end:2]
        i = end
        tasks.append(task)
        task_id, origin = lookup(task)
        waiting_on: str | None = None
        if task is capture.running:
            state = "running"
        elif fut is None:
            state = "runnable"
        else:
            state = "awaiting"
            waiting_on = _describe_wait(frames, fut, extra, capture.loop_time, names)
            for child in _children(fut, extra):
                awaited_by.setdefault(id(child), []).append(task_id)
        stack = tuple([found.get((id(f.f_code), lasti)) or _frame(found, f.f_code, lasti)
                       for f, lasti in zip(reversed(frames), reversed(lastis), strict=True)])
        stack = stacks.setdefault(stack, stack)
        if origin is None:  # tuple.__new__: a named tuple's own __new__ is Python code
            append(new(TaskStack, (task_id, name, state, waiting_on, stack, thread_name, (),
                                   None, None, None, None)))
        else:
            append(new(TaskStack, (task_id, name, state, waiting_on, stack, thread_name, (),
                                   now - origin.created_at, origin.site, origin.parent,
                                   origin)))
    if awaited_by:
        for k, task in enumerate(tasks):
            waiters = awaited_by.get(id(task))
            if waiters:
                out[k] = out[k]._replace(awaited_by=tuple(waiters))
    out.sort(key=lambda t: (t.state != "running", t.id))
    return out


def describe_task(task: asyncio.Future[Any], max_depth: int,
                  loop_time: float = 0.0) -> tuple[str | None, tuple[Frame, ...]]:
    """What one suspended task waits on, in words, and its await chain as frames (innermost
    first, at most ``max_depth``): the ``goroutine`` dump's view of a single task, as strings.

    For callers that hold one task and no loop capture (the garbage-collected task recorder,
    from a finalizer on any thread): nothing is kept, nothing is resumed. A task whose
    coroutine has already been closed has no frames left; the stack is then empty.
    """
    fut = getattr(task, "_fut_waiter", None)
    get_coro = getattr(task, "get_coro", None)
    frames, waited = _await_chain(get_coro() if get_coro is not None else None, fut)
    fut = fut or waited
    waiting = _describe_wait(frames, fut, None, loop_time, {}) if fut is not None else None
    kept = frames[-max_depth:] if max_depth > 0 else []
    return waiting, tuple([frame_at(f.f_code, f.f_lasti) for f in reversed(kept)])


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
        else:
            step = _foreign_step(obj)
            if step is None:  # a C wrapper: the object it wraps is among its referents
                obj = next((r for r in gc.get_referents(obj) if _chain_link(r)), None)
                continue
            f, obj = step
            if f is not None:
                frames.append(f)
    return frames, None


def _foreign_step(obj: Any) -> tuple[FrameType | None, Any] | None:
    """A foreign coroutine's (Cython's, a proxy's) frame and what it awaits; None when ``obj``
    is no coroutine. Its attributes are its own code: one that raises anything (a proxy's
    ``__getattr__``) or hands back something other than a frame ends the chain here, instead
    of failing the whole snapshot, every other task's stack with it."""
    try:
        if not (hasattr(obj, "cr_frame") or hasattr(obj, "gi_frame")):
            return None
        f = getattr(obj, "cr_frame", None) or getattr(obj, "gi_frame", None)
        awaited = getattr(obj, "cr_await", None) or getattr(obj, "gi_yieldfrom", None)
    except Exception:
        return None, None
    return (f if isinstance(f, FrameType) else None), awaited


def _chain_link(obj: Any) -> bool:
    return isinstance(obj, (asyncio.Future, CoroutineType, GeneratorType, AsyncGeneratorType))


def _running_frames(task: asyncio.Task[Any], info: LoopInfo, on_thread: bool,
                    max_depth: int) -> list[FrameType]:
    """The running task's real frames, outermost (its coroutine) first: the loop thread's
    stack from the task's coroutine to wherever it is now (here, or blocked in a call)."""
    coro: Any = task.get_coro()
    step = _foreign_step(coro)
    outer = step[0] if step is not None else None
    top: FrameType | None = (sys._getframe(2) if on_thread
                             else current_frames().get(info.thread_ident))
    frames = list(back_chain(top, _MAX_CHAIN))  # one C call: the loop thread may be running
    for i, f in enumerate(frames):
        if f is outer:
            del frames[i + 1:]
            frames.reverse()
            return frames[-max_depth:] if max_depth > 0 else []
    frames = _await_chain(coro)[0]
    return frames[-max_depth:] if max_depth > 0 else []


def _children(fut: Any, extra: Any) -> list[Any] | tuple[Any, ...]:
    """Tasks that ``fut`` stands for: a task itself, gather's children, a TaskGroup's tasks
    (read with the loop held, in ``extra``)."""
    if isinstance(fut, asyncio.Task):
        return [fut]
    if isinstance(fut, _GatheringFuture):
        return list(fut._children)  # type: ignore[attr-defined]
    if isinstance(extra, tuple):
        return extra
    return []


_ASYNCIO_NAMES: CodeTable[str] = CodeTable(max_entries=10_000)
"""code -> its name if it is asyncio's own code, else ""."""


def _asyncio_name(code: CodeType) -> str:
    """asyncio's name for ``code``'s function, or "" outside asyncio. ``async with``'s
    ``_ContextManagerMixin.__aenter__`` counts as outside: the wait is ``Lock.acquire``, as for
    ``await lock.acquire()``, not the mixin that called it."""
    name = _ASYNCIO_NAMES.get(code)
    if name is None:
        own = code.co_filename.startswith(ASYNCIO_DIR) and code.co_name != "__aenter__"
        name = _ASYNCIO_NAMES.put(code, code_name_of(code) if own else "")
    return name


def _describe_wait(frames: list[FrameType], fut: Any, extra: Any, loop_time: float,
                   names: dict[int, str]) -> str:
    """Name what a suspended task waits on, from the asyncio frames at the end of its chain."""
    if isinstance(fut, asyncio.Task):
        return f'Task "{fut.get_name()}"'
    if isinstance(fut, _GatheringFuture):
        children = fut._children  # type: ignore[attr-defined]
        return f"gather ({extra} of {len(children)} done)"
    outer_name = ""
    for f in reversed(frames):  # innermost first; stop at the first frame that is not asyncio
        code = f.f_code
        name = names.get(id(code))
        if name is None:
            name = names[id(code)] = _asyncio_name(code)
        if not name:
            break
        outer_name = name
    if not outer_name:
        return type(fut).__name__
    if outer_name == "sleep" and isinstance(extra, float):
        return f"sleep ({max(0.0, extra - loop_time):.1f} s left)"
    return outer_name


def _frame(found: dict[tuple[int, int], Frame], code: CodeType, lasti: int) -> Frame:
    result = found[(id(code), lasti)] = frame_at(code, lasti)
    return result
