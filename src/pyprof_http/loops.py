"""Which event loops exist, on which thread, and where each of their tasks came from.

asyncio keeps no list of loops, so the profiler learns them: ``install()``'s middleware registers
the serving loop at startup, and every request to the sub-app registers the loop it runs on
(mount-only use). A task factory, chained in front of any factory already set, stamps each new
task with its creation time and creation site, which asyncio itself never records.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
import threading
import time
import weakref
from collections.abc import Coroutine, Generator
from dataclasses import dataclass
from types import FrameType
from typing import Any, Protocol

from .model import Frame, frame

_ASYNCIO_DIR = os.path.dirname(asyncio.__file__)
_OWN_DIR = os.path.dirname(__file__)


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
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopInfo] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def register_running(self) -> asyncio.AbstractEventLoop:
        """Register the loop running in the calling thread; cheap when already known."""
        loop = asyncio.get_running_loop()
        if loop not in self._loops:
            thread = threading.current_thread()
            with self._lock:
                self._loops[loop] = LoopInfo(loop, thread.ident or 0, thread.name)
        return loop

    def running(self) -> list[LoopInfo]:
        """Loops that are still running, in registration order."""
        with self._lock:
            infos = list(self._loops.values())
        return [info for info in infos if info.loop.is_running() and not info.loop.is_closed()]


class TaskOrigins:
    """Creation records and stable ids for tasks, kept only as long as each task lives."""

    def __init__(self) -> None:
        self._origins: weakref.WeakKeyDictionary[asyncio.Future[Any], TaskOrigin] = (
            weakref.WeakKeyDictionary()
        )
        self._ids: weakref.WeakKeyDictionary[asyncio.Future[Any], int] = (
            weakref.WeakKeyDictionary()
        )
        self._counter = itertools.count(1)

    def origin(self, task: asyncio.Future[Any]) -> TaskOrigin | None:
        return self._origins.get(task)

    def task_id(self, task: asyncio.Future[Any]) -> int:
        """A number that stays the same for the task's whole life (names can be changed)."""
        found = self._ids.get(task)
        if found is None:
            found = self._ids[task] = next(self._counter)
        return found

    def record(
        self, task: asyncio.Future[Any], loop: asyncio.AbstractEventLoop, caller: FrameType | None
    ) -> None:
        parent = asyncio.current_task(loop)
        self._origins[task] = TaskOrigin(
            created_at=time.monotonic(),
            site=_first_user_frame(caller),
            parent=parent.get_name() if parent is not None else None,
        )
        self.task_id(task)

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
        if not (filename.startswith(_ASYNCIO_DIR) or filename.startswith(_OWN_DIR)):
            return frame(code_name(current), filename, current.f_lineno or 0)
        current = current.f_back
    return None


def code_name(f: FrameType) -> str:
    """The qualified function name where Python has it (3.11+), else the plain name."""
    code = f.f_code
    return getattr(code, "co_qualname", code.co_name)


LOOPS = LoopRegistry()
ORIGINS = TaskOrigins()
