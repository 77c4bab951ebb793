"""Which event loops exist, on which thread, and where each of their tasks came from.

asyncio keeps no list of loops, so the profiler learns them: ``install()``'s middleware registers
the serving loop at startup, and every request to the sub-app registers the loop it runs on
(mount-only use). A task factory, chained in front of any factory already set, stamps each new
task with its creation time and creation site, which asyncio itself never records.
"""

from __future__ import annotations

import asyncio
import functools
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
from typing import Any, Protocol

from .model import Frame, frame

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


@dataclass(frozen=True, slots=True)
class TaskOrigin:
    """What the task factory saw when a task was created."""

    created_at: float
    """``time.monotonic()`` at creation."""
    site: Frame | None
    """The first frame outside asyncio that asked for the task."""
    parent: str | None
    """Name of the task that was running when this one was created."""


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

    def running(self) -> list[LoopInfo]:
        """Loops that are still running, in registration order."""
        with self._lock:
            infos = [LoopInfo(loop, ident, name) for loop, (ident, name) in self._loops.items()]
        return [info for info in infos if info.loop.is_running() and not info.loop.is_closed()]


class TaskOrigins:
    """Stable ids and creation records for tasks, kept only as long as each task lives.

    One weak dictionary holds both, so the stacks collector pays one lookup per task.
    """

    def __init__(self) -> None:
        # Keyed by id(task) with a weak reference to check identity: a WeakKeyDictionary would
        # build a weakref on every lookup, and the collector looks up 10,000 tasks at a time.
        self._records: dict[int, tuple[weakref.ref[asyncio.Future[Any]], int,
                                       TaskOrigin | None]] = {}
        self._counter = itertools.count(1)

    def __len__(self) -> int:
        return len(self._records)

    def lookup(self, task: asyncio.Future[Any]) -> tuple[int, TaskOrigin | None]:
        """The task's id (assigned on first sight if the factory never saw it) and origin."""
        found = self._records.get(id(task))
        if found is not None and found[0]() is task:
            return found[1], found[2]
        return self._store(task, None)

    def _store(
        self, task: asyncio.Future[Any], origin: TaskOrigin | None
    ) -> tuple[int, TaskOrigin | None]:
        key = id(task)
        records = self._records

        def forget(ref: weakref.ref[asyncio.Future[Any]]) -> None:
            if records.get(key, (None,))[0] is ref:
                del records[key]

        task_id = next(self._counter)
        records[key] = (weakref.ref(task, forget), task_id, origin)
        return task_id, origin

    def origin(self, task: asyncio.Future[Any]) -> TaskOrigin | None:
        return self.lookup(task)[1]

    def task_id(self, task: asyncio.Future[Any]) -> int:
        """A number that stays the same for the task's whole life (names can be changed)."""
        return self.lookup(task)[0]

    def record(
        self, task: asyncio.Future[Any], loop: asyncio.AbstractEventLoop, caller: FrameType | None
    ) -> None:
        parent = asyncio.current_task(loop)
        origin = TaskOrigin(
            created_at=time.monotonic(),
            site=_first_user_frame(caller),
            parent=parent.get_name() if parent is not None else None,
        )
        self._store(task, origin)

    def install_factory(self, loop: asyncio.AbstractEventLoop) -> None:
        """Chain our factory in front of the loop's current one, once."""
        previous: _TaskFactory | None = loop.get_task_factory()  # type: ignore[assignment]
        if getattr(previous, "_pyprof_http", False):
            return
        origins = self

        def factory(
            loop: asyncio.AbstractEventLoop,
            coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any],
            /,
            **kwargs: Any,
        ) -> asyncio.Future[Any]:
            if previous is not None:
                task = previous(loop, coro, **kwargs)
            else:
                task = asyncio.Task(coro, loop=loop, **kwargs)
            origins.record(task, loop, sys._getframe(1))
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


def _first_user_frame(caller: FrameType | None) -> Frame | None:
    """Skip asyncio's and our own frames: the creation site is the code that asked."""
    current = caller
    while current is not None:
        filename = current.f_code.co_filename
        if not (filename.startswith(ASYNCIO_DIR) or filename.startswith(_OWN_DIR)):
            return frame(code_name(current), filename, current.f_lineno or 0)
        current = current.f_back
    return None


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
