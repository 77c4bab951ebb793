"""Where each live thread was started: the ``threadcreate`` profile.

Go's threadcreate profile answers "who keeps making OS threads?". Python threads are cheap to
forget (an executor per request, a client library's keep-alive thread), and the answer is the
call stack of ``Thread.start``, which Python does not keep. So ``install()`` wraps
``threading.Thread.start`` and remembers the starting stack of every thread started from then
on, in a weak dictionary (a thread that ends drops out with it). A thread started before that
shows where its code lives instead: the ``target`` function, or the ``run`` method of a
``Thread`` subclass, as a one-frame stack labelled ``origin=target``. Threads no Python code
started (the main thread, threads created in C) get one synthetic frame saying so
(``origin=unknown``): Go prints an empty stack there, but ``go tool pprof`` drops samples
without a location, and the main thread would vanish from its views.

The hook costs one stack walk per ``Thread.start`` (a few µs, against ~100 µs to start a thread)
and nothing else. It is put back at shutdown, and only if it is still ours. The hook is
reload-safe (:mod:`pyprof_http._patching`): it carries the original it wraps, a reloaded module
adopts it instead of wrapping it again, and removes it whichever generation put it there.
"""

from __future__ import annotations

import _thread
import sys
import threading
import time
import weakref
from collections.abc import Callable
from types import FunctionType, MethodType
from typing import Any, Final

from .. import _patching
from ..model import Frame, Profile, Sample, ValueType, frame
from .frames import frame_stack

_ORIGINS_ATTR: Final = "_pyprof_http_origins"
"""On our hook: the :class:`ThreadOrigins` it records into."""
COUNT: Final = ValueType("threadcreate", "count")
FILENAME: Final = "<threads>"
"""The file of the synthetic frames, for threads whose start nobody saw."""
MAIN_THREAD: Final = frame("<main thread>", FILENAME, 0)
FOREIGN_THREAD: Final = frame("<started outside the threading module>", FILENAME, 0)
UNKNOWN_START: Final = frame("<start not recorded>", FILENAME, 0)


class ThreadOrigins:
    """The start stacks of threads started while the hook is installed."""

    def __init__(self) -> None:
        self._stacks: weakref.WeakKeyDictionary[threading.Thread, tuple[Frame, ...]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = _thread.allocate_lock()
        self.max_depth = 64
        self._started: weakref.WeakKeyDictionary[threading.Thread, float] = (
            weakref.WeakKeyDictionary()
        )
        """``time.monotonic()`` when each thread was started (for ``goroutine?min_age``)."""

    def install(self, max_depth: int) -> None:
        """Wrap ``Thread.start`` once; later calls only update the depth. A hook of an earlier
        generation of this module (a reload) is replaced, not wrapped, and its stacks kept."""
        self.max_depth = max_depth
        with self._lock:
            current = _patching.own_attribute(threading.Thread, "start")
            if _patching.is_ours(current):
                previous: ThreadOrigins | None = getattr(current, _ORIGINS_ATTR, None)
                if previous is self:
                    return
                if previous is not None:
                    self._stacks.update(previous._stacks)
                    self._started.update(getattr(previous, "_started", {}))
            original = _patching.original_of(threading.Thread, "start")
            if not original:  # nothing to wrap (cannot happen with a real threading module)
                return
            start_thread: Callable[[threading.Thread], None] = original[0]
            origins = self

            def start(thread: threading.Thread) -> None:
                stack = origins.stack_below(thread, sys._getframe(1))
                start_thread(thread)  # a second start raises here: the first one's stack stays
                if stack is not None:
                    origins.remember(thread, stack)

            start.__wrapped__ = start_thread  # type: ignore[attr-defined]
            start.__doc__ = start_thread.__doc__
            setattr(start, _ORIGINS_ATTR, self)
            _patching.apply(threading.Thread, "start", start, original)

    def uninstall(self) -> None:
        """Put the original back, unless someone wrapped it after us (then leave theirs).

        Whichever generation of this module put the hook there: after a reload, the new
        module's ``THREAD_STARTS`` must still be able to remove the old one's hook."""
        with self._lock:
            _patching.restore(threading.Thread, "start")

    @property
    def installed(self) -> bool:
        return _patching.applied(threading.Thread, "start")

    def stack_below(self, thread: threading.Thread, caller: Any) -> tuple[Frame, ...] | None:
        """The stack below ``Thread.start`` (a subclass's own ``start`` frames skipped)."""
        try:
            while caller is not None and caller.f_code.co_name == "start" and (
                caller.f_locals.get("self") is thread
            ):
                caller = caller.f_back
            return frame_stack(caller, self.max_depth)
        except Exception:  # never let profiling stop a thread from starting
            return None

    def remember(self, thread: threading.Thread, stack: tuple[Frame, ...]) -> None:
        self._stacks[thread] = stack
        self._started[thread] = time.monotonic()

    def started_at(self, thread: threading.Thread) -> float | None:
        """``time.monotonic()`` when ``thread`` was started, if the hook saw it start."""
        return self._started.get(thread)

    def stack_of(self, thread: threading.Thread) -> tuple[Frame, ...] | None:
        return self._stacks.get(thread)


def _code_frame(target: object) -> Frame | None:
    """A frame for the first line of a Python function or method, if ``target`` is one."""
    function = target.__func__ if isinstance(target, MethodType) else target
    if isinstance(function, FunctionType):
        code = function.__code__
        return frame(function.__qualname__, code.co_filename, code.co_firstlineno)
    return None


def _where_it_runs(thread: threading.Thread) -> Frame | None:
    """For a thread started before the hook: its target, or its subclass's ``run``."""
    target = getattr(thread, "_target", None)
    if target is not None:
        found = _code_frame(target)
        if found is not None:
            return found
        name = getattr(target, "__qualname__", None) or type(target).__qualname__
        return frame(name, "<builtin>", 0)
    run = type(thread).run
    if run is not threading.Thread.run:
        return _code_frame(run)
    return None


def _started_by_python(thread: threading.Thread) -> bool:
    return thread is not threading.main_thread() and not isinstance(
        thread, threading._DummyThread)


def _unknown_frame(thread: threading.Thread) -> Frame:
    if thread is threading.main_thread():
        return MAIN_THREAD
    return UNKNOWN_START if _started_by_python(thread) else FOREIGN_THREAD


def collect(origins: ThreadOrigins) -> Profile:
    """One sample per live thread, labelled with its name and how its stack is known."""
    samples = []
    for thread in threading.enumerate():
        labels: dict[str, str] = {"thread": thread.name}
        stack = origins.stack_of(thread)
        if stack is not None:
            labels["origin"] = "start"
        else:
            found = _where_it_runs(thread) if _started_by_python(thread) else None
            stack = (found if found is not None else _unknown_frame(thread),)
            labels["origin"] = "target" if found is not None else "unknown"
        samples.append(Sample(stack, (1,), labels))
    return Profile(
        sample_types=(COUNT,),
        samples=tuple(samples),
        period_type=COUNT,
        period=1,
        time_ns=time.time_ns(),
        comments=_comments(origins),
    )


def _comments(origins: ThreadOrigins) -> tuple[str, ...]:
    if origins.installed:
        return ("origin=start: the stack that called Thread.start; origin=target: started "
                "before pyprof_http was installed, its target function is shown",)
    return ("Thread.start is not hooked (install() hooks it): each thread shows its target "
            "function, not where it was started",)


THREAD_STARTS: Final = ThreadOrigins()
if _patching.is_ours(_patching.own_attribute(threading.Thread, "start")):
    THREAD_STARTS.install(getattr(threading.Thread.start, _ORIGINS_ATTR, THREAD_STARTS).max_depth)
    # reloaded while hooked: adopt the hook (this generation's, keeping the stacks seen)
