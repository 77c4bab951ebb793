"""Which request a task is serving, so samples taken on an event loop can say ``route=...``.

The lifecycle middleware sets a context variable for each HTTP request. Tasks copy the context
they are created in, so every task a request spawns (gather, TaskGroup, BaseHTTPMiddleware's
call_next) carries the request too, and a sampler on another thread can read it from the task's
context without touching the task. The route is read lazily from the ASGI scope, because the
router fills ``scope["route"]`` (the path template, low-cardinality) only after the middleware.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import Mapping
from typing import Any

_MAX_REQUEST_ID = 128

class Request:
    """The ASGI scope and X-Request-ID of one request, and whether it is still being served:
    tasks it spawned keep the context after it ends (pools, fire-and-forget), and must not
    keep its labels."""

    __slots__ = ("live", "request_id", "scope")

    def __init__(self, scope: Mapping[str, Any], request_id: str) -> None:
        self.scope, self.request_id, self.live = scope, request_id, True

CURRENT_REQUEST: contextvars.ContextVar[Request | None] = contextvars.ContextVar(
    "pyprof_http_request", default=None
)
_BY_TASK: dict[int, Request] = {}
"""Before 3.12 a task's context cannot be read from outside: key the request by task instead
(only the task the middleware runs in is labelled there, not the tasks it spawns)."""
_CONTEXT_READABLE = sys.version_info >= (3, 12)


def enter(scope: Mapping[str, Any]) -> tuple[contextvars.Token[Request | None], int | None]:
    """Mark the current context (and task) as serving ``scope``; undo with :func:`leave`."""
    request = Request(scope, _request_id(scope))
    task = asyncio.current_task()
    key = None
    if not _CONTEXT_READABLE and task is not None:
        key = id(task)
        _BY_TASK[key] = request
    return CURRENT_REQUEST.set(request), key


def leave(entered: tuple[contextvars.Token[Request | None], int | None]) -> None:
    token, key = entered
    request = CURRENT_REQUEST.get()
    if request is not None:
        request.live = False
    CURRENT_REQUEST.reset(token)
    if key is not None:
        _BY_TASK.pop(key, None)


def task_request(task: asyncio.Task[Any]) -> tuple[str, str] | None:
    """``(route, request_id)`` of the request ``task`` serves, or None."""
    found = (
        task.get_context().get(CURRENT_REQUEST)  # type: ignore[attr-defined]
        if _CONTEXT_READABLE
        else _BY_TASK.get(id(task))
    )
    if found is None or not found.live:
        return None
    return route_of(found.scope), found.request_id


def route_of(scope: Mapping[str, Any]) -> str:
    """The matched route's path template when the router has set it, else the raw path."""
    route = scope.get("route")
    template = getattr(route, "path", None)
    if isinstance(template, str) and template:
        return template
    return str(scope.get("path", ""))


def _request_id(scope: Mapping[str, Any]) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")[:_MAX_REQUEST_ID]
            return "".join(ch for ch in text if ch.isprintable())
    return ""
