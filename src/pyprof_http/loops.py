"""Which event loops exist, on which thread, and where each of their tasks came from.

asyncio keeps no list of loops, so the profiler learns them: ``install()``'s middleware registers
the serving loop at startup, and every request to the sub-app registers the loop it runs on
(mount-only use). A task factory, chained in front of any factory already set, stamps each new
task with its creation time and creation site, which asyncio itself never records.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import itertools
import os
import re
import sys
import threading
import time
import weakref
from collections.abc import Coroutine, Generator
from dataclasses import dataclass
from types import CodeType, FrameType
from typing import Any, Final, Protocol

from .bounded import CodeTable
from .model import Frame, frame
from .request_labels import CURRENT_REQUEST, request_of

ASYNCIO_DIR = os.path.dirname(asyncio.__file__)
_OWN_DIR = os.path.dirname(__file__)
_CURRENT_TASKS: dict[Any, Any] = getattr(asyncio.tasks, "_current_tasks", {})
"""asyncio's running task per loop (3.10-3.13), readable from any thread."""
_AUTO_TASK_NAME = re.compile(r"Task-\d+")


def running_task(loop: asyncio.AbstractEventLoop) -> asyncio.Task[Any] | None:
    """The task running on ``loop`` right now, also when asked from another thread (where
    ``asyncio.current_task`` cannot be used)."""
    task = _CURRENT_TASKS.get(loop)
    return task if isinstance(task, asyncio.Task) else None


def is_auto_task_name(name: str) -> bool:
    """Whether ``name`` is asyncio's automatic ``Task-<n>``: no meaning, one per task, so
    profiles leave it out or fold it rather than grow a label value per task."""
    return _AUTO_TASK_NAME.fullmatch(name) is not None


@dataclass(frozen=True, slots=True)
class LoopInfo:
    """A registered loop and the thread that runs it."""

    loop: asyncio.AbstractEventLoop
    thread_ident: int
    thread_name: str


MAX_ORIGIN_FRAMES: Final = 5
"""Frames kept per task at creation (code and instruction offset only: no frame, no locals
kept alive), from the caller of ``create_task`` outwards; asyncio's own are dropped when read."""
MAX_ORIGIN_STACK: Final = 4
"""User frames shown per creation stack."""
MAX_ORIGIN_HOPS: Final = 8
"""Parent origins kept per task: a task that spawns its successor forever keeps a short chain."""

_Raw = tuple[float, tuple[Any, ...], Any, "str | None", Any, int]
"""What the factory keeps per task: (created_at, (code, lasti, code, lasti, ...), the parent's
record (a list, see :class:`TaskOrigins`) or None, the parent's name, the request being
served, hops from the first recorded task)."""


class TaskOrigin:
    """Where a task came from: when, the code that asked for it, the task that was running then
    (and that task's own origin), and the request being served.

    Built from what the task factory kept (see :data:`MAX_ORIGIN_FRAMES`); every derived field
    is worked out on first read, at dump time, not per task: creating a task pays for a few
    attribute reads and one tuple.
    """

    __slots__ = ("_frames", "_parent", "_request", "_stack", "created_at", "hops", "parent")

    def __init__(self, created_at: float, frames: tuple[Any, ...] = (), parent: Any = None,
                 parent_name: str | None = None, request: Any = None, hops: int = 0) -> None:
        self.created_at = created_at
        """``time.monotonic()`` at creation."""
        self.parent = parent_name
        """Name of the task that was running when this one was created (it may have ended)."""
        self.hops = hops
        self._frames, self._parent, self._request = frames, parent, request
        self._stack: tuple[Frame, ...] | None = None

    @property
    def stack(self) -> tuple[Frame, ...]:
        """The creation stack: up to :data:`MAX_ORIGIN_STACK` frames outside asyncio and this
        package, innermost (the code that asked for the task) first."""
        if self._stack is None:
            self._stack = _user_frames(self._frames)
        return self._stack

    @property
    def site(self) -> Frame | None:
        """The first frame outside asyncio that asked for the task."""
        stack = self.stack
        return stack[0] if stack else None

    @property
    def parent_origin(self) -> TaskOrigin | None:
        """The creating task's own origin, when the factory saw it being made."""
        record = self._parent
        if isinstance(record, list) and record[2] is not None:
            return _as_origin(record)
        return None

    @property
    def route(self) -> str:
        """The route of the request being served where this task (or its first creator) was
        made; "" when none."""
        request = self._root_request()
        return request.route if request is not None else ""

    @property
    def request_id(self) -> str:
        request = self._root_request()
        return request.request_id if request is not None else ""

    @property
    def created_by(self) -> str:
        """Where the chain of spawns began, for the ``created_by`` label: the request's route,
        else the outermost known creation site."""
        route = self.route
        if route:
            return f"route {route}"
        root: TaskOrigin = self
        for _ in range(MAX_ORIGIN_HOPS):
            up = root.parent_origin
            if up is None or up.site is None:
                break
            root = up
        site = root.site
        return f"{site.function} {site.filename}:{site.line}" if site is not None else ""

    def _root_request(self) -> Any:
        origin: TaskOrigin | None = self
        for _ in range(MAX_ORIGIN_HOPS + 1):
            if origin is None:
                return None
            if origin._request is not None:
                return origin._request
            origin = origin.parent_origin
        return None


def _as_origin(record: Any) -> TaskOrigin:
    """The record's origin, built from its raw tuple on first use (and kept)."""
    origin = record[2]
    if isinstance(origin, TaskOrigin):
        return origin
    built = TaskOrigin(*origin)
    record[2] = built
    return built


class _TaskFactory(Protocol):
    def __call__(
        self,
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any],
        /,
        **kwargs: Any,
    ) -> asyncio.Future[Any]: ...


class LoopRegistry:
    """Loops seen so far (weakly held: a closed, collected loop drops out by itself)."""

    def __init__(self) -> None:
        # values must not reference the loop, or the weak key would never die
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[int, str]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def register_running(self) -> asyncio.AbstractEventLoop:
        """Register the loop running in the calling thread; cheap when already known."""
        loop = asyncio.get_running_loop()
        if loop not in self._loops:
            thread = threading.current_thread()
            with self._lock:
                self._loops[loop] = (thread.ident or 0, thread.name)
        return loop

    def register_if_running(self) -> asyncio.AbstractEventLoop | None:
        """:meth:`register_running`, or None when no asyncio loop runs here (e.g. under trio,
        where the caller must say what it cannot see instead of failing)."""
        if asyncio._get_running_loop() is None:
            return None
        return self.register_running()

    def running(self) -> list[LoopInfo]:
        """Loops that are still running, in registration order."""
        with self._lock:
            infos = [LoopInfo(loop, ident, name) for loop, (ident, name) in self._loops.items()]
        return [info for info in infos if info.loop.is_running() and not info.loop.is_closed()]


class TaskOrigins:
    """Stable ids and creation records for tasks, kept only as long as each task lives.

    One dictionary holds both, so the stacks collector pays one lookup per task.
    """

    def __init__(self) -> None:
        # Keyed by id(task) with a weak reference to check identity: a WeakKeyDictionary would
        # build a weakref on every lookup, and the collector looks up 10,000 tasks at a time.
        # Each record is a list [weakref, id, raw origin tuple | TaskOrigin | None]. Records of
        # dead tasks are swept when the table has doubled since the last sweep (amortised O(1)
        # per task, and cheaper than a weakref callback per task).
        self._records: dict[int, list[Any]] = {}
        self._counter = itertools.count(1)
        self._sweep_at = _MIN_SWEEP

    def __len__(self) -> int:
        self._sweep()
        return len(self._records)

    def lookup(self, task: asyncio.Future[Any]) -> tuple[int, TaskOrigin | None]:
        """The task's id (assigned on first sight if the factory never saw it) and origin."""
        found = self._records.get(id(task))
        if found is None or found[0]() is not task:
            found = self._store(task, None)
        return found[1], (_as_origin(found) if found[2] is not None else None)

    def lookup_dying(self, task: asyncio.Future[Any]) -> tuple[int, TaskOrigin | None] | None:
        """:meth:`lookup` for a task in its finalizer, or None when it was never recorded.

        The collector clears weak references to garbage before it runs finalizers, so the
        record's weakref may be dead here, and :meth:`lookup` would take the task for a new
        one. While the task is in its finalizer no other object can have its address, and the
        factory (or a first lookup) overwrites the record of a task created at a reused
        address, so the record found by id is this task's unless its weakref points to another
        live object. Stores nothing (a finalizer must not grow the table).
        """
        found = self._records.get(id(task))
        if found is None:
            return None
        alive = found[0]()
        if alive is not None and alive is not task:
            return None
        return found[1], (_as_origin(found) if found[2] is not None else None)

    def _store(self, task: asyncio.Future[Any], raw: _Raw | None) -> list[Any]:
        record = [weakref.ref(task), next(self._counter), raw]
        records = self._records
        records[id(task)] = record
        if len(records) >= self._sweep_at:
            self._sweep()
        return record

    def _sweep(self) -> None:
        records = self._records
        for key in [key for key, record in records.items() if record[0]() is None]:
            del records[key]
        self._sweep_at = max(_MIN_SWEEP, 2 * len(records))

    def origin(self, task: asyncio.Future[Any]) -> TaskOrigin | None:
        return self.lookup(task)[1]

    def task_id(self, task: asyncio.Future[Any]) -> int:
        """A number that stays the same for the task's whole life (names can be changed)."""
        return self.lookup(task)[0]

    def record(
        self, task: asyncio.Future[Any], loop: asyncio.AbstractEventLoop, caller: FrameType | None
    ) -> None:
        """Keep what a later dump needs to say where ``task`` came from, and nothing more:
        code objects and offsets of a few frames, the creating task's record, the request."""
        frames = _raw_frames(caller) if caller is not None else ()
        parent_task = _CURRENT_TASKS.get(loop)  # current_task(loop), one call less
        if parent_task is None:  # made from a callback (a server's task per request): the
            # short path, nothing to chain
            self._store(task, (time.monotonic(), frames, None, None, CURRENT_REQUEST.get(), 0))
            return
        parent: Any = None
        name = None
        hops = 0
        if parent_task is not None:
            name = parent_task.get_name()
            parent = self._records.get(id(parent_task))
            if parent is None or parent[0]() is not parent_task or parent[2] is None:
                parent = None  # made before the factory: its name only
            else:
                origin = parent[2]
                hops = (origin[5] if isinstance(origin, tuple) else origin.hops) + 1
                if hops > MAX_ORIGIN_HOPS:  # keep the chain short: drop the oldest hops
                    parent, hops = None, 0
        request = CURRENT_REQUEST.get()
        if request is None and parent_task is not None:  # made in a context of its own
            request = request_of(parent_task)
        raw = (time.monotonic(), frames, parent, name, request, hops)
        self._store(task, raw)

    def install_factory(self, loop: asyncio.AbstractEventLoop) -> None:
        """Chain our factory in front of the loop's current one, once."""
        previous: _TaskFactory | None = loop.get_task_factory()  # type: ignore[assignment]
        if getattr(previous, "_pyprof_http", False):
            return
        if _FAST is not None:  # the same records, a fraction of the cost per task
            loop.set_task_factory(_FAST.TaskFactory(
                previous, self, self._records, self._counter, _CURRENT_TASKS, CURRENT_REQUEST,
                request_of, asyncio.Task, MAX_ORIGIN_HOPS))
            return
        record = self.record

        def factory(
            loop: asyncio.AbstractEventLoop,
            coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any],
            /,
            **kwargs: Any,
        ) -> asyncio.Future[Any]:
            if previous is not None:
                task = previous(loop, coro, **kwargs)
            elif kwargs:
                task = asyncio.Task(coro, loop=loop, **kwargs)
            else:
                task = asyncio.Task(coro, loop=loop)
            record(task, loop, sys._getframe(1))
            return task

        factory._pyprof_http = True  # type: ignore[attr-defined]
        factory._pyprof_previous = previous  # type: ignore[attr-defined]
        loop.set_task_factory(factory)

    @staticmethod
    def uninstall_factory(loop: asyncio.AbstractEventLoop) -> None:
        """Put back the factory that was there before ours (shutdown leaves no trace)."""
        current = loop.get_task_factory()
        if getattr(current, "_pyprof_http", False):
            loop.set_task_factory(current._pyprof_previous)  # type: ignore[union-attr]


def _raw_frames(f: FrameType) -> tuple[Any, ...]:
    """Code and offset of ``f`` and the :data:`MAX_ORIGIN_FRAMES` - 1 frames outside it,
    unrolled: a loop costs twice as much, and this runs for every task."""
    a = f.f_back
    if a is None:
        return (f.f_code, f.f_lasti)
    b = a.f_back
    if b is None:
        return (f.f_code, f.f_lasti, a.f_code, a.f_lasti)
    c = b.f_back
    if c is None:
        return (f.f_code, f.f_lasti, a.f_code, a.f_lasti, b.f_code, b.f_lasti)
    d = c.f_back
    if d is None:
        return (f.f_code, f.f_lasti, a.f_code, a.f_lasti, b.f_code, b.f_lasti, c.f_code,
                c.f_lasti)
    return (f.f_code, f.f_lasti, a.f_code, a.f_lasti, b.f_code, b.f_lasti, c.f_code, c.f_lasti,
            d.f_code, d.f_lasti)


def _fast_factory() -> Any:
    """The C factory (``_taskfactory``, built where a compiler was found), or None: then the
    Python one below, which keeps the same records (the tests run both)."""
    try:
        return importlib.import_module("pyprof_http._taskfactory")
    except ImportError:
        return None


_FAST: Any = _fast_factory()
_MIN_SWEEP: Final = 1024
_FRAME_CACHE_MAX: Final = 4096
_NOT_SHOWN: Final = Frame("", "", 0)
"""What the table keeps for a frame of asyncio's or this package's own code."""
_FRAME_TABLE: CodeTable[Frame] = CodeTable(max_entries=_FRAME_CACHE_MAX)
"""(code, offset) -> the creation frame shown, or :data:`_NOT_SHOWN`."""


def _user_frames(raw: tuple[Any, ...]) -> tuple[Frame, ...]:
    """Frames from the factory's raw pairs, skipping asyncio's and this package's own."""
    out: list[Frame] = []
    for i in range(0, len(raw), 2):
        code, lasti = raw[i], raw[i + 1]
        shown = _FRAME_TABLE.get(code, lasti)
        if shown is None:
            shown = _FRAME_TABLE.put(code, _frame_of(code, lasti) or _NOT_SHOWN, lasti)
        if shown is not _NOT_SHOWN:
            out.append(shown)
            if len(out) >= MAX_ORIGIN_STACK:
                break
    return tuple(out)


def _frame_of(code: CodeType, lasti: int) -> Frame | None:
    filename = code.co_filename
    if filename.startswith(ASYNCIO_DIR) or filename.startswith(_OWN_DIR):
        return None
    line = 0
    for start, end, number in code.co_lines():
        if start <= lasti < end:
            line = number or 0
            break
    return frame(code_name_of(code), filename, line)


def code_name(f: FrameType) -> str:
    """The qualified function name of a frame's code; see :func:`code_name_of`."""
    return code_name_of(f.f_code)


def code_name_of(code: CodeType) -> str:
    """The qualified function name where Python has it (3.11+), else the plain name.

    Python 3.10 code objects carry no qualified name; for the stdlib modules whose names the
    collectors interpret (``Event.wait``, ``Queue.get``) a table recovers it.
    """
    qualname: str | None = getattr(code, "co_qualname", None)
    if qualname:
        return qualname
    found = _qualnames().get(id(code))
    return found[1] if found is not None and found[0] is code else code.co_name


@functools.cache
def _qualnames() -> dict[int, tuple[CodeType, str]]:
    """id(code) -> (code, qualified name) for stdlib code, built once (so bounded).

    The value keeps each code object alive: after a reload replaced a module's functions, the
    old code cannot be freed and its id handed to a new code object that would then borrow
    its name; a hit is also confirmed by identity.
    """
    import asyncio.base_events
    import asyncio.locks
    import asyncio.queues
    import asyncio.streams
    import asyncio.tasks
    import concurrent.futures.thread
    import queue
    import selectors
    import socket

    table: dict[int, tuple[CodeType, str]] = {}
    modules = (asyncio.base_events, asyncio.locks, asyncio.queues, asyncio.streams, asyncio.tasks,
               concurrent.futures.thread, queue, selectors, socket, threading)
    for module in modules:
        for value in vars(module).values():
            members = vars(value).values() if isinstance(value, type) else (value,)
            for member in members:
                function = getattr(member, "__func__", member)
                code = getattr(function, "__code__", None)
                if isinstance(code, CodeType):
                    table.setdefault(id(code), (code, function.__qualname__))
    return table


LOOPS = LoopRegistry()
ORIGINS = TaskOrigins()
