"""The hooks of a ``/trace`` window: what is wrapped while it records, and put back after.

Everything here is in place only during the window, applied through
:mod:`pyprof_http._patching` (so a reload never stacks a wrapper on itself) and removed in the
window's ``finally`` (also in a child forked meanwhile):

- ``asyncio.events.Handle._run``: the pure-Python loop calls it for every callback it runs
  (``BaseEventLoop._run_once``), and a task step is such a callback (the C task schedules a
  ``TaskStepMethWrapper``, its wake-up a bound builtin, both with the task as ``__self__``; the
  Python task its bound ``__step``). Timing it gives every step and callback with its duration,
  its task, and the request it serves (the handle's context carries the request variable).
- ``asyncio.base_events.BaseEventLoop._call_soon`` (what ``call_soon`` and
  ``call_soon_threadsafe`` call): when a callback was scheduled, i.e. became ready; a step's
  wait is from then (or a timer's due time) to its start: the time it waited for the loop.
- ``concurrent.futures.thread._WorkItem.run`` (``asyncio.to_thread``, ``run_in_executor``) and
  ``anyio.to_thread.run_sync`` (Starlette's sync endpoints): thread-pool work items.
- ``gc.callbacks``: garbage-collector pauses; :data:`pyprof_http.markers.ACTIVE`: the markers
  and the requests (the lifecycle middleware times each request while it is set).
- A sampler thread (``pyprof_http-trace``) takes the stack of a callback that has run longer
  than :data:`LONG_STEP_NS`, so the longest steps come with what they were doing.

While recording, each callback costs two clock reads, a few lookups and one tuple; names are
resolved after the window (:mod:`.trace_build`).
"""

from __future__ import annotations

import asyncio
import asyncio.base_events as base_events
import concurrent.futures.thread as cf_thread
import contextvars
import functools
import gc
import os
import sys
import threading
from asyncio import events
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from threading import get_ident
from time import monotonic_ns
from types import FrameType
from typing import Any, Final

from .. import _patching, markers
from ..model import Frame
from ..request_labels import CURRENT_REQUEST, InThread
from .frames import current_frames, frame_stack

THREAD_NAME: Final = "pyprof_http-trace"
LONG_STEP_NS: Final = 20_000_000
"""A callback running this long gets its stack sampled (once)."""
SAMPLE_PERIOD_S: Final = 0.005
MAX_SAMPLES: Final = 1_000
MAX_READY: Final = 100_000
"""Scheduled-but-not-run handles remembered at once (cancelled ones are never popped)."""

_RUNNING: list[Hooks] = globals().get("_RUNNING", [])
"""The window recording now (at most one: one trace at a time), kept across a reload."""


def _after_fork_in_child() -> None:
    """A child forked during a window (gunicorn, multiprocessing) has no one to read its trace
    and no sampler thread: put everything back there, or its buffer would fill for nothing."""
    for hooks in list(_RUNNING):
        hooks.remove()


if hasattr(os, "register_at_fork") and "_fork_hook_registered" not in globals():
    os.register_at_fork(after_in_child=lambda: _after_fork_in_child())  # late-bound: reloads
    _fork_hook_registered = True

_TASK_TYPES: tuple[type, ...] = tuple(
    {asyncio.Task, getattr(asyncio.tasks, "_PyTask", asyncio.Task)})


@dataclass
class Recording:
    """The raw result of a window: the buffer and what the hooks learnt beside it."""

    buffer: markers.TraceBuffer
    started_ns: int
    started_wall_ns: int
    ended_ns: int = 0
    samples: dict[tuple[int, int], tuple[Frame, ...]] = field(default_factory=dict)
    """(thread ident, callback start) -> the stack sampled while it ran."""
    thread_names: dict[int, str] = field(default_factory=dict)
    blind_loops: list[str] = field(default_factory=list)
    """Loops whose callbacks Python cannot see (uvloop), by type."""
    hooked: list[str] = field(default_factory=list)
    watchdog: bool = False
    """Whether the block watchdog watched a loop (the source of stalls)."""


def callable_name(fn: Any) -> Any:
    """What to keep of a callback or work item: its function (names are read after the
    window), looking through ``functools.partial``, ``Context.run`` and the wrapper that labels
    thread-pool work with its request (:class:`~pyprof_http.request_labels.InThread`)."""
    for _ in range(4):
        if isinstance(fn, InThread):
            fn = fn.fn
            continue
        if isinstance(fn, functools.partial):
            inner = fn.func
            owner = getattr(inner, "__self__", None)
            fn = fn.args[0] if isinstance(owner, contextvars.Context) and fn.args else inner
            continue
        break
    return getattr(fn, "__func__", fn)


class Hooks:
    """The patches and the sampler of one window."""

    def __init__(self, recording: Recording, max_depth: int) -> None:
        self.recording = recording
        self.max_depth = max_depth
        self.running: dict[int, int] = {}
        """thread ident -> start of the callback it runs now (sampler's view)."""
        self.ready: dict[int, int] = {}
        self.gc_started: dict[int, int] = {}
        self.stop = threading.Event()
        self.sampler = threading.Thread(target=self._sample, name=THREAD_NAME, daemon=True)
        self._patched: list[tuple[object, str]] = []
        self._gc_callback = self._on_gc

    # -- install / remove --------------------------------------------------------------------

    def install(self) -> None:
        _RUNNING.append(self)
        self._patch(events.Handle, "_run", self._make_run)
        self._patch(base_events.BaseEventLoop, "_call_soon", self._make_call_soon)
        self._patch(cf_thread._WorkItem, "run", self._make_work_item)
        anyio_to_thread = sys.modules.get("anyio.to_thread")
        if anyio_to_thread is not None and hasattr(anyio_to_thread, "run_sync"):
            self._patch(anyio_to_thread, "run_sync", self._make_anyio_run_sync)
        gc.callbacks.append(self._gc_callback)
        markers.ACTIVE = self.recording.buffer
        self.sampler.start()

    def remove(self) -> None:
        """Put everything back (idempotent; the window's ``finally``, and a forked child's)."""
        if self in _RUNNING:
            _RUNNING.remove(self)
        if markers.ACTIVE is self.recording.buffer:
            markers.ACTIVE = None
        while self._patched:
            owner, name = self._patched.pop()
            _patching.restore(owner, name)
        while self._gc_callback in gc.callbacks:
            gc.callbacks.remove(self._gc_callback)
        self.stop.set()
        if self.sampler.ident is not None and self.sampler is not threading.current_thread():
            self.sampler.join(2.0)

    def _patch(self, owner: object, name: str, make: Callable[[Any], Any]) -> None:
        original = _patching.original_of(owner, name)
        if not original:
            return
        _patching.apply(owner, name, make(original[0]), original)
        self._patched.append((owner, name))
        where = getattr(owner, "__qualname__", None) or getattr(owner, "__name__", "?")
        self.recording.hooked.append(f"{where}.{name}")

    # -- the hooks ---------------------------------------------------------------------------

    def _make_run(self, original: Callable[[Any], None]) -> Callable[[Any], None]:
        buffer, running, ready = self.recording.buffer, self.running, self.ready
        events_list, capacity = buffer.events, buffer.capacity
        timer_type, tasks, var = events.TimerHandle, _TASK_TYPES, CURRENT_REQUEST
        step, callback_kind = markers.STEP, markers.CALLBACK

        def _run(handle: Any) -> None:
            callback = handle._callback
            context = handle._context
            request = context.get(var) if context is not None else None
            thread = get_ident()
            start = monotonic_ns()
            running[thread] = start
            try:
                original(handle)
            finally:
                end = monotonic_ns()
                running[thread] = 0
                if request is None and context is not None:
                    request = context.get(var)
                if type(handle) is timer_type:
                    when = int(handle.when() * 1e9)
                else:
                    when = ready.pop(id(handle), 0)
                owner = getattr(callback, "__self__", None)
                if isinstance(owner, tasks):
                    event = (step, start, end - start, thread, owner, request, None, when)
                else:  # named after the window (holding it until then: bounded by the cap)
                    event = (callback_kind, start, end - start, thread, None, request,
                             callback, when)
                if len(events_list) < capacity:
                    events_list.append(event)
                else:
                    buffer.add(event)  # counts the drop

        return _run

    def _make_call_soon(self, original: Callable[..., Any]) -> Callable[..., Any]:
        ready = self.ready

        def _call_soon(loop: Any, callback: Any, args: Any, context: Any) -> Any:
            handle = original(loop, callback, args, context)
            if len(ready) < MAX_READY:
                ready[id(handle)] = monotonic_ns()
            return handle

        return _call_soon

    def _make_work_item(self, original: Callable[[Any], None]) -> Callable[[Any], None]:
        add = self.recording.buffer.add

        def run(item: Any) -> None:
            fn = item.fn
            request = None
            if isinstance(fn, InThread):  # submitted while request work is labelled
                request, fn = fn.request, fn.fn
            if isinstance(fn, functools.partial):
                owner = getattr(fn.func, "__self__", None)
                if isinstance(owner, contextvars.Context):
                    request = owner.get(CURRENT_REQUEST) or request
            start = monotonic_ns()
            try:
                original(item)
            finally:
                add((markers.WORK, start, monotonic_ns() - start, get_ident(), None, request,
                     callable_name(fn), None))

        return run

    def _make_anyio_run_sync(self, original: Callable[..., Awaitable[Any]]
                             ) -> Callable[..., Awaitable[Any]]:
        add = self.recording.buffer.add

        async def run_sync(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            def timed(*inner: Any) -> Any:
                start = monotonic_ns()
                try:
                    return func(*inner)
                finally:  # anyio runs it in a copy of the caller's context
                    add((markers.WORK, start, monotonic_ns() - start, get_ident(), None,
                         CURRENT_REQUEST.get(), callable_name(func), None))

            return await original(timed, *args, **kwargs)

        return run_sync

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        thread = get_ident()
        if phase == "start":
            self.gc_started[thread] = monotonic_ns()
            return
        start = self.gc_started.pop(thread, None)
        if start is not None:
            self.recording.buffer.add((markers.GC, start, monotonic_ns() - start, thread, None,
                                       None, info.get("generation", -1),
                                       info.get("collected", 0)))

    # -- the sampler -------------------------------------------------------------------------

    def _sample(self) -> None:
        samples = self.recording.samples
        while not self.stop.wait(SAMPLE_PERIOD_S):
            now = monotonic_ns()
            frames: dict[int, FrameType] | None = None
            for thread, start in list(self.running.items()):
                if not start or now - start < LONG_STEP_NS or (thread, start) in samples:
                    continue
                if len(samples) >= MAX_SAMPLES:
                    return
                if frames is None:
                    frames = current_frames()
                top = frames.get(thread)
                if top is not None and self.running.get(thread) == start:
                    samples[thread, start] = _below_run(frame_stack(top, self.max_depth))


def _below_run(stack: tuple[Frame, ...]) -> tuple[Frame, ...]:
    """The stack down to the callback (the loop's own frames outside it dropped)."""
    for i, f in enumerate(stack):
        if f.function.endswith("_run") and f.filename in _RUN_FILES:
            return stack[:i]
    return stack


_RUN_FILES: Final = frozenset({__file__, events.__file__})
