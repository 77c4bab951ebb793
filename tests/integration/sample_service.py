"""The app the integration tests serve with a real uvicorn (see ``conftest.py``).

A FastAPI app with ``pyprof_http.install`` at the prefix in ``PYPROF_IT_PREFIX`` (default
``/debug/pprof``). At startup it parks tasks and a thread in functions with names no other code
has, so the tests can find them in every format:

- task ``integration-waiter``: ``integration_waiter_coroutine`` -> ``integration_nested_helper``
  -> ``Event.wait``;
- task ``integration-parent`` awaits task ``integration-child`` (``awaited by`` in the dump);
- a task named :data:`HOSTILE_TASK_NAME` running a coroutine whose code is named
  :data:`HOSTILE_FUNCTION_NAME` (the browser test checks neither ever runs as markup);
- thread ``integration-worker`` running ``integration_worker_thread`` on a ``threading.Event``.

Importing this module has no side effect beyond building the app, so tests import the names.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse

import pyprof_http

PREFIX_ENV = "PYPROF_IT_PREFIX"
DEFAULT_PREFIX = "/debug/pprof"
HOSTILE_TASK_NAME = "<img src=x onerror=alert(1)>"
HOSTILE_FUNCTION_NAME = "</script><img src=x onerror=alert(2)>"
WORKER_THREAD_NAME = "integration-worker"


async def integration_nested_helper(event: asyncio.Event) -> None:
    await event.wait()


async def integration_waiter_coroutine(event: asyncio.Event) -> None:
    await integration_nested_helper(event)


async def integration_parent_coroutine(event: asyncio.Event) -> None:
    child = asyncio.create_task(integration_waiter_coroutine(event), name="integration-child")
    await child


async def _hostile(event: asyncio.Event) -> None:
    await event.wait()


# A function name is as attacker-controlled as a task name: give one frame a hostile name.
_hostile.__code__ = _hostile.__code__.replace(co_name=HOSTILE_FUNCTION_NAME)
if sys.version_info >= (3, 11):
    _hostile.__code__ = _hostile.__code__.replace(co_qualname=HOSTILE_FUNCTION_NAME)


def integration_worker_thread(stop: threading.Event) -> None:
    stop.wait()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    stop = asyncio.Event()
    stop_thread = threading.Event()
    tasks = [
        asyncio.create_task(integration_waiter_coroutine(stop), name="integration-waiter"),
        asyncio.create_task(integration_parent_coroutine(stop), name="integration-parent"),
        asyncio.create_task(_hostile(stop), name=HOSTILE_TASK_NAME),
    ]
    worker = threading.Thread(target=integration_worker_thread, args=(stop_thread,),
                              name=WORKER_THREAD_NAME, daemon=True)
    worker.start()
    await asyncio.sleep(0)  # let the tasks reach their awaits
    try:
        yield
    finally:
        stop.set()
        stop_thread.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        worker.join(timeout=2)


app = FastAPI(lifespan=lifespan)
pyprof_http.install(app, prefix=os.environ.get(PREFIX_ENV, DEFAULT_PREFIX))


@app.get("/healthz")
async def healthz() -> PlainTextResponse:
    return PlainTextResponse("ok")


@app.get("/argv")
async def argv() -> JSONResponse:
    """The server's own ``sys.argv``, to compare with ``/cmdline``."""
    return JSONResponse(sys.argv)
