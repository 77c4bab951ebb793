"""Where request work enters a worker thread: wrapped so that samples there carry its labels.

FastAPI/Starlette sync endpoints and dependencies (``run_in_threadpool``), ``asyncio.to_thread``
and ``loop.run_in_executor`` run in worker threads with a copy of the request's context: code
there can read the request (lock waits, log records do), but a sampler on another thread cannot
(context variables are per thread), so a sync route burning 70 % of the CPU showed under
``route: (none)``. Two entry points cover them all, both looked up at call time by their
callers:

- ``anyio.to_thread.run_sync`` (Starlette's ``run_in_threadpool`` and ``iterate_in_threadpool``,
  FastAPI's sync dependencies and context managers);
- ``concurrent.futures.ThreadPoolExecutor.submit`` (``asyncio.to_thread``, and
  ``run_in_executor`` of asyncio's and uvloop's loops, which submit to an executor).

Each wraps the function in :class:`~pyprof_http.request_labels.InThread` when called from a
request (one context-variable read otherwise). Process-wide: switched by
:mod:`~pyprof_http.switches` only (ref-counted, put back when the last app lets go).
"""

from __future__ import annotations

import concurrent.futures
import functools
import importlib
from typing import Any

from . import _patching
from .request_labels import CURRENT_REQUEST, InThread

_EXECUTOR = concurrent.futures.ThreadPoolExecutor


def _anyio_to_thread() -> Any:
    """anyio's ``to_thread`` module if importable (Starlette depends on it; tolerate none)."""
    try:
        return importlib.import_module("anyio.to_thread")
    except ImportError:  # pragma: no cover - starlette requires anyio
        return None


def install() -> None:
    """Wrap both entry points (idempotent)."""
    if not _patching.applied(_EXECUTOR, "submit"):
        original_submit = _patching.original_of(_EXECUTOR, "submit")[0]

        @functools.wraps(original_submit)
        def submit(self: Any, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            request = CURRENT_REQUEST.get()
            if request is not None:
                fn = InThread(fn, request)
            return original_submit(self, fn, *args, **kwargs)

        _patching.apply(_EXECUTOR, "submit", submit, (original_submit,))
    module = _anyio_to_thread()
    if module is not None and not _patching.applied(module, "run_sync"):
        original_run_sync = _patching.original_of(module, "run_sync")[0]

        @functools.wraps(original_run_sync)
        async def run_sync(func: Any, *args: Any, **kwargs: Any) -> Any:
            request = CURRENT_REQUEST.get()
            if request is not None:
                func = InThread(func, request)
            return await original_run_sync(func, *args, **kwargs)

        _patching.apply(module, "run_sync", run_sync, (original_run_sync,))


def uninstall() -> None:
    _patching.restore(_EXECUTOR, "submit")
    module = _anyio_to_thread()
    if module is not None:
        _patching.restore(module, "run_sync")


def installed() -> bool:
    return _patching.applied(_EXECUTOR, "submit")
