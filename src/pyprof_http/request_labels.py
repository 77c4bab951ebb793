"""Which request a task is serving, so samples taken on an event loop can say ``route=...``.

The lifecycle middleware sets a context variable for each HTTP request. Tasks copy the context
they are created in, so every task a request spawns (gather, TaskGroup, BaseHTTPMiddleware's
call_next) carries the request too, and a sampler on another thread can read it from the task's
context without touching the task. The route is read lazily from the ASGI scope, because the
router fills ``scope["route"]`` (the path template, low-cardinality) only after the middleware.
"""

from __future__ import annotations

import _thread
import asyncio
import contextvars
import importlib
import itertools
import os
import sys
from collections import Counter
from collections.abc import Mapping
from typing import Any, Final

_MAX_REQUEST_ID = 128
_MAX_RAW_PATH = 256


class Request:
    """The ASGI scope of one request, and whether it is still being served: tasks it spawned
    keep the context after it ends (pools, fire-and-forget), and must not keep its labels.

    Nothing is worked out per request: the X-Request-ID and the route are read from the scope
    the first time a profile asks (:data:`RESOLVED` counts how often, for tests).
    """

    __slots__ = ("_key", "_request_id", "_route", "_token", "live", "scope")

    def __init__(self, scope: Mapping[str, Any]) -> None:
        self.scope, self.live = scope, True
        self._request_id: str | None = None
        self._route: str | None = None
        self._token: contextvars.Token[Request | None] | None = None
        self._key: int | None = None

    @property
    def request_id(self) -> str:
        if self._request_id is None:
            RESOLVED["request_id"] += 1
            self._request_id = _request_id(self.scope)
        return self._request_id

    @property
    def route(self) -> str:
        """Read afresh while the request is served (the router sets it after us), then kept:
        a dump of 10,000 tasks spawned by one request reads it once."""
        if self._route is not None:
            return self._route
        RESOLVED["route"] += 1
        route = route_of(self.scope)
        if not self.live:
            self._route = route
        return route


RESOLVED: Counter[str] = Counter()
"""How many request ids and routes were read: a request no profile looks at reads none."""

CURRENT_REQUEST: contextvars.ContextVar[Request | None] = contextvars.ContextVar(
    "pyprof_http_request", default=None
)
_BY_TASK: dict[int, Request] = {}
"""Before 3.12 a task's context cannot be read from outside: key the request by task instead
(only the task the middleware runs in is labelled there, not the tasks it spawns)."""
_CONTEXT_READABLE = sys.version_info >= (3, 12)
_CURRENT_TASKS: dict[Any, Any] = getattr(asyncio.tasks, "_current_tasks", {})
"""asyncio's running task per loop: what ``current_task()`` reads, without its call and lookup
of the running loop (the middleware has the loop already)."""


Entered = Request
"""What :func:`enter` returns and :func:`leave` takes: the request, which carries its own
undo (one object per request, no tuple)."""


def enter(scope: Mapping[str, Any], loop: asyncio.AbstractEventLoop | None = None) -> Entered:
    """Mark the current context (and task) as serving ``scope``; undo with :func:`leave`.

    ``loop``: the running loop when the caller has it (saves looking it up again). This runs
    for every request, so it only stores: one object, one context variable, and before 3.12
    one dict entry.
    """
    request = Request(scope)
    if not _CONTEXT_READABLE:
        task = (_CURRENT_TASKS.get(loop) if loop is not None and _CURRENT_TASKS
                else asyncio.current_task())
        if task is not None:
            request._key = key = id(task)
            _BY_TASK[key] = request
    request._token = CURRENT_REQUEST.set(request)
    return request


def leave(entered: Entered) -> None:
    entered.live = False
    token, key = entered._token, entered._key
    if token is not None:
        CURRENT_REQUEST.reset(token)
    if key is not None:
        _BY_TASK.pop(key, None)
    if sys.getrefcount(entered) > _UNSHARED_REFS:
        _shrink(entered)


_UNSHARED_REFS: Final = 3
"""References to an ended Request that nothing else holds, in :func:`leave`: the caller's
name for it, the parameter ``entered``, and getrefcount's argument."""


def _shrink(request: Request) -> None:
    """Let go of an ended request's scope, keeping what it can still be asked (route, request
    id). Something kept it (a task it spawned copied its context, a task origin): a long-lived
    task would otherwise keep the whole scope (per-request state, path params, every header)
    for its life: ~4.8 KB a task with 4 KB of headers, 10,000 tasks ~48 MB. Only then: most
    requests hold nothing at the end, and this costs ~1 us. (On a keep-alive connection the
    server's idle timer, set while the response is sent, copies the context: there it runs for
    every request, hence the short form when the id is known.)"""
    scope = request.scope
    if request._request_id is not None:  # the request cycle named it: no header is read again
        request.scope = {"route": scope.get("route"), "path": scope.get("path", "")}
        return
    request.scope = {"route": scope.get("route"), "path": scope.get("path", ""),
                     "headers": [h for h in scope.get("headers", ()) if h[0] == b"x-request-id"]}


def fast_cycles() -> Any:
    """The C request cycle (``_requestcycle``) bound to this module's state, or None where it
    could not be built: it does what :func:`enter`, :func:`leave` and the request cycle's id
    and echo do, for the common request (see lifecycle.py)."""
    try:
        module = importlib.import_module("pyprof_http._requestcycle")
    except ImportError:
        return None
    return module.Cycles(Request, CURRENT_REQUEST, None if _CONTEXT_READABLE else _BY_TASK,
                         _CURRENT_TASKS if isinstance(_CURRENT_TASKS, dict) else {},
                         _ID_PREFIX, _ID_COUNTER)


_BY_THREAD: dict[int, Request] = {}
"""Thread ident -> the request whose code that thread runs now (thread-pool work a request
submitted): a sampler on another thread cannot read a worker thread's context variables, so
the wrapper that runs the work (:class:`InThread`) says it here for the duration of the call."""


class InThread:
    """Runs ``fn`` in a worker thread as work of ``request``: registered in ``_BY_THREAD`` for
    the call (nested calls put the outer request back), so CPU and wall samples of that thread
    carry the request's labels, and log records made there too (:mod:`~pyprof_http.log_context`,
    for work submitted without a copy of the context). Wrapped by :mod:`~pyprof_http.
    thread_labels` where work enters a thread: ~0.3 µs a call."""

    __slots__ = ("fn", "request")

    def __init__(self, fn: Any, request: Request) -> None:
        self.fn, self.request = fn, request

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        ident = _thread.get_ident()
        previous = _BY_THREAD.get(ident)
        _BY_THREAD[ident] = self.request
        try:
            return self.fn(*args, **kwargs)
        finally:
            if previous is None:
                _BY_THREAD.pop(ident, None)
            else:
                _BY_THREAD[ident] = previous


def for_thread(fn: Any) -> Any:
    """``fn`` wrapped to run as work of the current request, or ``fn`` itself outside one."""
    request = CURRENT_REQUEST.get()
    return fn if request is None else InThread(fn, request)


def threads_snapshot() -> dict[int, Request]:
    """A copy of thread -> request (one C-level copy: no other thread changes it meanwhile)."""
    return _BY_THREAD.copy()


def thread_request(ident: int, before: Mapping[int, Request] | None = None,
                   after: Mapping[int, Request] | None = None) -> tuple[str, str] | None:
    """``(route, request_id)`` of the live request whose work thread ``ident`` runs, or None
    (readable from any thread).

    A sampler passes the snapshots it read just ``before`` and ``after`` it read the stacks:
    a thread seen inside a request's work was registered at one of the two moments unless
    the whole piece of work began and ended between them (within one C call), so a sample
    at the very start or end of the work is not left without its request.
    """
    if before is None or after is None:
        found = _BY_THREAD.get(ident)
    else:
        found = before.get(ident)
        if found is None:
            found = after.get(ident)
    if found is None or not found.live:
        return None
    return found.route, found.request_id


def current_request() -> Request | None:
    """The live request the calling code serves: its context, else its thread's work."""
    found = CURRENT_REQUEST.get()
    if found is None:
        found = _BY_THREAD.get(_thread.get_ident())
    return found if found is not None and found.live else None


def request_of(task: asyncio.Task[Any]) -> Request | None:
    """The request ``task`` serves or served (ended or not), read from outside the task."""
    if _CONTEXT_READABLE:
        found: Request | None = task.get_context().get(CURRENT_REQUEST)  # type: ignore[attr-defined]
        return found
    return _BY_TASK.get(id(task))


def task_request(task: asyncio.Task[Any]) -> tuple[str, str] | None:
    """``(route, request_id)`` of the request ``task`` serves, or None."""
    found = request_of(task)
    if found is None or not found.live:
        return None
    return found.route, found.request_id


def route_of(scope: Mapping[str, Any]) -> str:
    """The matched route's path template when the router has set it, else the raw path, cut
    at ``_MAX_RAW_PATH``: the client chooses it, and every kept stall, lock wait and sample
    label would hold it whole."""
    route = scope.get("route")
    template = getattr(route, "path", None)
    if isinstance(template, str) and template:
        return template
    return str(scope.get("path", ""))[:_MAX_RAW_PATH]


def _request_id(scope: Mapping[str, Any]) -> str:
    """The client's X-Request-ID if it is a sane id, else a new one (see :func:`valid_id`)."""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text: str = value.decode("latin-1")
            if valid_id(text):
                return text
            break
    return new_request_id()


_ID_CHARACTERS: Final = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.:+=/@")


def valid_id(text: str) -> bool:
    """Whether ``text`` can be a request id as it is: 1-128 characters of letters, digits and
    ``-_.:+=/@`` (UUIDs, trace ids, base64). Anything else (spaces, quotes, markup, control
    characters, non-ASCII) is replaced by a new id rather than cleaned up: an id travels into
    labels, logs, URLs and HTML, and a cleaned id would no longer match the caller's."""
    return 0 < len(text) <= _MAX_REQUEST_ID and _ID_CHARACTERS.issuperset(text)


_ID_PREFIX: list[str] = [os.urandom(6).hex()]
_ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    """A new id, unique in the process and (a random 48-bit prefix, renewed in a forked child)
    across processes; cheap: no system call per request."""
    return f"{_ID_PREFIX[0]}-{next(_ID_COUNTER):x}"


def _after_fork_in_child() -> None:
    _ID_PREFIX[0] = os.urandom(6).hex()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
