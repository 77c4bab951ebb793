"""``RequestContextFilter``: log records carry the request they were made for.

Add it to a handler (or logger) and every record gets ``request_id``, ``route`` and ``task``
attributes — the same ``request_id`` the profiles are labelled with, echoed in the response's
``X-Request-ID`` — so a log line leads to ``/debug/pprof/requests/<request_id>`` and a slow
request's profile to its log lines. It works in ``async def`` code (the request's context) and
in thread-pool code (sync routes, ``asyncio.to_thread``, ``run_in_executor``: the context copy,
or the thread's current work as :mod:`~pyprof_http.thread_labels` registers it). Outside a
request the attributes are ``"-"``, so a format string using them never fails.

    LOGGING = {
        "version": 1,
        "filters": {"request": {"()": "pyprof_http.RequestContextFilter"}},
        "formatters": {"plain": {"format":
            "%(asctime)s %(levelname)s [%(request_id)s %(route)s] %(name)s: %(message)s"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "filters": ["request"],
                                 "formatter": "plain"}},
        "root": {"handlers": ["console"], "level": "INFO"},
    }

Values are the ids the middleware validated (letters, digits, ``-_.:+=/@``) and route
templates (or raw paths cut at 256 characters, escaped by :func:`~pyprof_http.sanitize.printable`
here, since a path is the client's text and a log line must stay one line).
"""

from __future__ import annotations

import asyncio
import logging

from .loops import is_auto_task_name, running_task
from .request_labels import current_request
from .sanitize import printable

NONE = "-"


class RequestContextFilter(logging.Filter):
    """Adds ``request_id``, ``route`` and ``task`` to each record; never drops one. Attributes a
    record already has (set by ``extra=`` or an earlier filter) are left alone."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = record.__dict__
        if "request_id" in fields and "route" in fields and "task" in fields:
            return True
        request = current_request()
        if request is None:
            request_id = route = NONE
        else:
            request_id, route = request.request_id, printable(request.route)
        fields.setdefault("request_id", request_id)
        fields.setdefault("route", route)
        fields.setdefault("task", _task_name())
        return True


def _task_name() -> str:
    loop = asyncio._get_running_loop()
    task = running_task(loop) if loop is not None else None
    if task is None:
        return NONE
    name = task.get_name()
    return "Task-N" if is_auto_task_name(name) else printable(name)
