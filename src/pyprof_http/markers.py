"""``mark()`` and ``span()``: the application's own events on a ``/trace`` timeline.

A marker costs one module-global check while no trace records (``benchmarks/trace.py``
measures it against an empty call), so it can stay in hot paths and in ``main`` for good. While
``/trace?seconds=N`` records, :data:`ACTIVE` is that trace's :class:`TraceBuffer`, and each
marker appends one tuple to it: the time, the thread, the running task and the request the
code serves (from :mod:`pyprof_http.request_labels`), resolved to names only when the trace is
built, after the window. The buffer is bounded: past its capacity events are counted, not kept.

This module imports nothing that reads the process beyond the request label variable, so
``import pyprof_http`` stays cheap for code that only marks.
"""

from __future__ import annotations

import asyncio
from threading import get_ident
from time import monotonic_ns
from types import TracebackType
from typing import Any, Final

from .request_labels import CURRENT_REQUEST

__all__ = ["ACTIVE", "TraceBuffer", "mark", "span"]

MARK: Final = 0
SPAN: Final = 1
REQUEST: Final = 2
STEP: Final = 3
CALLBACK: Final = 4
WORK: Final = 5
GC: Final = 6
"""Event kinds: the first item of every event tuple."""

_get_running_loop = asyncio._get_running_loop
_CURRENT_TASKS: dict[Any, Any] = getattr(asyncio.tasks, "_current_tasks", {})

Event = tuple[int, int, int, int, Any, Any, Any, Any]
"""``(kind, start_ns, duration_ns, thread ident, task or None, request or None, name, extra)``:
a flat tuple (one allocation); ``start_ns`` is ``time.monotonic_ns()``."""


class TraceBuffer:
    """The events of one running trace: a list that stops growing at ``capacity``, counting
    what it could not keep (appends from several threads may pass the cap by a few: bounded
    all the same, and no lock on the hot path)."""

    __slots__ = ("capacity", "dropped", "events", "full_at_ns")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.events: list[Event] = []
        self.dropped = 0
        self.full_at_ns = 0
        """When the first event was dropped (0: none was)."""

    def add(self, event: Event) -> None:
        events = self.events
        if len(events) < self.capacity:
            events.append(event)
        else:
            if not self.dropped:
                self.full_at_ns = event[1]
            self.dropped += 1

    def request(self, entered: Any, scope: Any) -> RequestTrace:
        """Start timing one HTTP request (the lifecycle middleware calls this while a trace
        records); :meth:`RequestTrace.close` when it is done."""
        return RequestTrace(self, entered, scope)


class RequestTrace:
    """One request from its arrival at the middleware to the end of its response."""

    __slots__ = ("buffer", "request", "scope", "start", "status", "task", "thread")

    def __init__(self, buffer: TraceBuffer, request: Any, scope: Any) -> None:
        self.buffer, self.request, self.scope = buffer, request, scope
        self.start, self.thread, self.status = monotonic_ns(), get_ident(), 0
        self.task = _current_task()

    def wrap(self, send: Any) -> Any:
        """``send``, noting the response status on its way out."""

        async def traced_send(message: Any) -> None:
            if message.get("type") == "http.response.start":
                self.status = int(message.get("status", 0))
            await send(message)

        return traced_send

    def close(self) -> None:
        end = monotonic_ns()
        method = str(self.scope.get("method", ""))
        self.buffer.add((REQUEST, self.start, end - self.start, self.thread, self.task,
                         self.request, method, self.status))


ACTIVE: TraceBuffer | None = None
"""The buffer of the trace recording now, or None: the one flag every marker checks."""


def _current_task() -> Any:
    loop = _get_running_loop()
    return _CURRENT_TASKS.get(loop) if loop is not None else None


def mark(name: str, /, **attrs: Any) -> None:
    """Put an instant event on the running trace: ``mark("db.query.start", table="users")``.

    Nothing happens while no ``/trace`` window records (one global check). While one does, the
    event carries the time, this thread, the running asyncio task and the request it serves;
    ``attrs`` are shown with it (as text).
    """
    buffer = ACTIVE
    if buffer is None:
        return
    loop = _get_running_loop()
    buffer.add((MARK, monotonic_ns(), 0, get_ident(),
                _CURRENT_TASKS.get(loop) if loop is not None else None,
                CURRENT_REQUEST.get(), name, attrs))


class _Span:
    __slots__ = ("attrs", "buffer", "name", "request", "start", "task", "thread")

    def __init__(self, buffer: TraceBuffer, name: str, attrs: dict[str, Any]) -> None:
        self.buffer, self.name, self.attrs = buffer, name, attrs
        self.start = 0
        self.thread = 0
        self.task: Any = None
        self.request: Any = None

    def __enter__(self) -> _Span:
        self.start, self.thread = monotonic_ns(), get_ident()
        self.task, self.request = _current_task(), CURRENT_REQUEST.get()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        if ACTIVE is self.buffer:  # the window that saw it begin is still recording
            attrs = self.attrs if kind is None else {**self.attrs, "error": kind.__name__}
            self.buffer.add((SPAN, self.start, monotonic_ns() - self.start, self.thread,
                             self.task, self.request, self.name, attrs))

    async def __aenter__(self) -> _Span:
        return self.__enter__()

    async def __aexit__(self, kind: type[BaseException] | None, value: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.__exit__(kind, value, tb)


class _Off:
    """What :func:`span` returns while no trace records: one shared object, nothing kept."""

    __slots__ = ()

    def __enter__(self) -> _Off:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    async def __aenter__(self) -> _Off:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


_OFF: Final = _Off()


def span(name: str, /, **attrs: Any) -> _Span | _Off:
    """A timed region on the running trace, as ``with span("parse"):`` or
    ``async with span("db.query", table="users"):``.

    While no trace records this returns a shared do-nothing object. A span is recorded when
    it ends within the window that saw it begin (one that began before the window, or ends
    after it, is not shown); an exception leaving it is noted as ``error``.
    """
    buffer = ACTIVE
    if buffer is None:
        return _OFF
    return _Span(buffer, name, attrs)
