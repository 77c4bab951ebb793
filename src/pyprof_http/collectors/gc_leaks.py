"""The ``goroutineleak`` recorder: every task the garbage collector destroys while pending.

An asyncio loop holds its tasks only weakly, so a pending task whose awaited future (an
``Event``'s waiter, a ``Queue``'s getter, a ``Future`` nobody else has) is reachable only
through the task itself is cyclic garbage: exactly Go's leaked goroutines. CPython destroys it
and says so through the loop's exception handler (``Task was destroyed but it is pending!``),
on whatever thread's allocation set the collection off. :meth:`GcLeaks.watch` chains a handler
in front of the loop's own, which records the task as strings and then hands the event on, so
the application's handler and logs see it as before.

What the finalizer can still see: the task, its name, what it waited on (``_fut_waiter``) and
its creation record (:meth:`~pyprof_http.loops.TaskOrigins.lookup_dying`). Usually not its
await chain: a collection runs the finalizers of its garbage in list order, the coroutine is
allocated before its task, and a coroutine's finalizer closes it, clearing its frames (seen on
3.10-3.13 in nearly every case; the order is CPython's, not guaranteed either way). So a leak
found by a collection the application's own allocations set off keeps its coroutine function,
what it awaited (by type), its creation site and age, but not the line it was parked on; the
``/goroutineleak`` request first describes every pending task (:meth:`GcLeaks.expect`) and then
collects, so the leaks it finds keep their full await chain.

Memory is bounded: counts per distinct (stack, creation stack, awaiting, name, created_by),
at most :data:`MAX_GROUPS` of them, and a ring of the :data:`RING_SIZE` most recent records.
The handler never raises into the collector and never blocks on a lock: it may run inside an
allocation made while this module's own lock is held (see :meth:`GcLeaks._drain`).
"""

from __future__ import annotations

import asyncio
import collections
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Final

from ..captures.leaks import GroupKey, LeakCapture, LeakRecord
from ..loops import ORIGINS, code_name_of
from ..model import Frame, frame
from .task_walk import describe_task

DESTROYED_PENDING: Final = "Task was destroyed but it is pending!"
MAX_GROUPS: Final = 10_000
"""Distinct leaks counted; more are counted together under :data:`OVERFLOW` (and in
:attr:`GcLeaks.overflow`), so a profile's total still counts every leak."""
RING_SIZE: Final = 1_000
"""Individual records kept for ``debug=2`` and :meth:`GcLeaks.records_since`."""
MAX_DEPTH: Final = 64
"""Frames kept per await chain (the innermost end)."""
MAX_NAME: Final = 256
"""Characters kept of a task's name (and of what it awaited, its parent's name): records are
kept for the process's life, and a name may be built from a client's input."""

OVERFLOW: Final[GroupKey] = (
    (frame(f"(leaks of other stacks, past the {MAX_GROUPS} distinct ones kept)", "", 0),),
    (), "unknown", "", "")
"""The one group the leaks that found no room of their own are counted in."""

Handler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]
Expected = Mapping[int, tuple[str, tuple[str | None, tuple[Frame, ...]]]]
"""task id -> (name, (what it waits on, await chain)), described just before a collection."""


class GcLeaks:
    """Records of tasks destroyed while pending, process-wide (one per process: ``GC_LEAKS``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: collections.deque[LeakRecord] = collections.deque()
        """Records not yet counted: the handler only appends here (atomic, no lock)."""
        self._groups: dict[GroupKey, int] = {}
        self._ring: collections.deque[LeakRecord] = collections.deque(maxlen=RING_SIZE)
        self._total = 0
        self.overflow = 0
        """Leaks whose distinct (stack, creation, ...) came after :data:`MAX_GROUPS`."""
        self._watches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, int] = (
            weakref.WeakKeyDictionary())
        self._handlers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _ChainedHandler] = (
            weakref.WeakKeyDictionary())
        self._watch_lock = threading.Lock()
        self._expected: Expected = {}
        self.max_depth = MAX_DEPTH

    # --- the handler chain -------------------------------------------------------------------

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Chain the recorder in front of ``loop``'s exception handler; counted, so that each
        ``watch`` needs its own :meth:`unwatch` (``switches.Claims`` calls it once per app)."""
        with self._watch_lock:
            held = self._watches.get(loop, 0)
            self._watches[loop] = held + 1
            if held == 0:
                self._chain(loop)

    def unwatch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Drop one :meth:`watch`; the last puts the previous handler back, if ours is still
        the installed one (a handler the application set since is left in place; ours, if it
        calls it, then only hands events on)."""
        with self._watch_lock:
            held = self._watches.get(loop, 0) - 1
            if held > 0:
                self._watches[loop] = held
                return
            self._watches.pop(loop, None)
            handler = self._handlers.pop(loop, None)
            if handler is None:
                return
            handler.active = False
            if loop.get_exception_handler() is handler:
                loop.set_exception_handler(handler.previous)

    def rechain(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Put the recorder back in front when the application replaced the loop's handler
        since :meth:`watch` (an app that sets its handler in its own lifespan runs after
        ours); True if it had to. Unwatched loops are left alone."""
        with self._watch_lock:
            handler = self._handlers.get(loop)
            if handler is None or loop.get_exception_handler() is handler:
                return False
            handler.active = False  # if the app's handler still calls it: hand on only
            self._handlers.pop(loop, None)
            self._chain(loop)
            return True

    def watching(self, loop: asyncio.AbstractEventLoop) -> bool:
        return self._watches.get(loop, 0) > 0

    def watched_loops(self) -> list[asyncio.AbstractEventLoop]:
        with self._watch_lock:
            return [loop for loop in self._watches if not loop.is_closed()]

    def _chain(self, loop: asyncio.AbstractEventLoop) -> None:
        previous = loop.get_exception_handler()
        if isinstance(previous, _ChainedHandler) and previous.recorder is self:
            previous.active = True  # ours from an earlier watch, left under the app's
            self._handlers[loop] = previous
            return
        handler = _ChainedHandler(self, previous)
        loop.set_exception_handler(handler)
        self._handlers[loop] = handler

    # --- recording (any thread, inside the collector) ----------------------------------------

    def expect(self, described: Expected | None) -> None:
        """Descriptions of the pending tasks made just before a collection (None: forget)."""
        self._expected = described if described is not None else {}

    def record(self, task: asyncio.Future[Any], thread: str, loop_id: int = 0) -> None:
        """Describe ``task`` (in its finalizer) and queue the record; never raises."""
        try:
            self._pending.append(self._describe(task, thread, loop_id))
        except Exception:  # a profiler must not break the collector; the event still goes on
            return
        self._drain(blocking=False)

    def _describe(self, task: asyncio.Future[Any], thread: str, loop_id: int) -> LeakRecord:
        now = time.monotonic()
        found = ORIGINS.lookup_dying(task)
        task_id, origin = found if found is not None else (0, None)
        name = task.get_name() if isinstance(task, asyncio.Task) else type(task).__name__
        expected = self._expected.get(task_id) if task_id else None
        if expected is not None and expected[0] == name:
            (waiting, stack), complete = expected[1], True
        else:
            waiting, stack = describe_task(task, self.max_depth)
            complete = bool(stack)
            if not stack:
                stack = _coroutine_frame(task)
        if waiting is None:
            waiting = _waiter_name(task)
        if origin is None:
            creation: tuple[Frame, ...] = ()
            created_by = parent = route = request_id = ""
            age = None
        else:
            creation, created_by = origin.stack, origin.created_by
            parent, route, request_id = origin.parent or "", origin.route, origin.request_id
            age = now - origin.created_at
        return LeakRecord(task_id, name[:MAX_NAME], waiting[:MAX_NAME], stack, complete,
                          creation, created_by, parent[:MAX_NAME], route, request_id, age,
                          thread, time.monotonic_ns(), time.time_ns(), loop_id)

    def _drain(self, blocking: bool) -> None:
        """Count queued records. Never waits inside the handler: a collection set off by an
        allocation made while the lock is held (on this thread) would wait for itself; the
        holder's loop picks up what the handler queued."""
        if not self._lock.acquire(blocking):
            return
        try:
            pending, groups, ring = self._pending, self._groups, self._ring
            while pending:
                try:
                    record = pending.popleft()
                except IndexError:
                    break
                key = (record.stack, record.creation, record.awaiting, record.task_label,
                       record.created_by)
                count = groups.get(key)
                if count is not None:
                    groups[key] = count + 1
                elif len(groups) < MAX_GROUPS:
                    groups[key] = 1
                else:  # counted, so that no profile's total silently drops them
                    self.overflow += 1
                    groups[OVERFLOW] = groups.get(OVERFLOW, 0) + 1
                ring.append(record)
                self._total += 1
        finally:
            self._lock.release()

    # --- reading -----------------------------------------------------------------------------

    @property
    def total(self) -> int:
        """Leaks recorded since the process started (cheap: for the index)."""
        return self._total + len(self._pending)

    def records_since(self, monotonic_ns: int) -> list[LeakRecord]:
        """The individual records made at or after ``monotonic_ns`` (``time.monotonic_ns()``),
        oldest first; only the :data:`RING_SIZE` most recent are kept."""
        self._drain(blocking=True)
        return [r for r in list(self._ring) if r.recorded_ns >= monotonic_ns]

    def sizes(self) -> tuple[int, int, int]:
        """(distinct groups, ring length, queued records): what memory is bounded by."""
        return len(self._groups), len(self._ring), len(self._pending)

    def counts(self) -> dict[GroupKey, int]:
        """A copy of the counts per distinct leak (for a window's start)."""
        self._drain(blocking=True)
        with self._lock:
            return dict(self._groups)

    def capture(self, since: tuple[int, dict[GroupKey, int]] | None = None,
                comments: tuple[str, ...] = ()) -> LeakCapture:
        """Everything recorded (``since``: a window's start time and :meth:`counts` then)."""
        self._drain(blocking=True)
        with self._lock:
            groups = dict(self._groups)
            records = tuple(self._ring)
        start_ns, duration_ns = 0, 0
        if since is not None:
            start_ns, before = since
            groups = {k: n - before.get(k, 0) for k, n in groups.items()
                      if n - before.get(k, 0) > 0}
            records = tuple(r for r in records if r.recorded_ns >= start_ns)
            duration_ns = time.monotonic_ns() - start_ns
        ordered = tuple(sorted(groups.items(), key=lambda item: -item[1]))
        return LeakCapture(ordered, records, sum(groups.values()), time.time_ns(), comments,
                           duration_ns)

    def clear(self) -> None:
        """Forget every record (tests)."""
        self._drain(blocking=True)
        with self._lock:
            self._groups.clear()
            self._ring.clear()
            self._total = self.overflow = 0


class _ChainedHandler:
    """The loop's exception handler while watched: record a destroyed pending task, then call
    the previous handler (or the loop's default) with the same event, always."""

    __slots__ = ("__weakref__", "active", "previous", "recorder")

    def __init__(self, recorder: GcLeaks, previous: Handler | None) -> None:
        self.recorder, self.previous, self.active = recorder, previous, True

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if self.active and context.get("message") == DESTROYED_PENDING:
            task = context.get("task")
            if isinstance(task, asyncio.Future):
                self.recorder.record(task, threading.current_thread().name, id(loop))
        if self.previous is None:
            loop.default_exception_handler(context)
        else:
            self.previous(loop, context)


def _coroutine_frame(task: asyncio.Future[Any]) -> tuple[Frame, ...]:
    """The task's coroutine function (its first line), when its frames are gone."""
    get_coro = getattr(task, "get_coro", None)
    coro = get_coro() if get_coro is not None else None
    code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
    if code is None:
        return ()
    return (frame(code_name_of(code), code.co_filename, code.co_firstlineno),)


def _waiter_name(task: asyncio.Future[Any]) -> str:
    waiter = getattr(task, "_fut_waiter", None)
    if isinstance(waiter, asyncio.Task):
        return f'Task "{waiter.get_name()}"'
    return type(waiter).__name__ if waiter is not None else "unknown"


GC_LEAKS: Final = GcLeaks()


def _after_fork_in_child() -> None:
    """A parent's thread may have held a lock at the fork: the child starts with fresh ones."""
    GC_LEAKS._lock = threading.Lock()
    GC_LEAKS._watch_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
