"""The app ``test_contention.py`` serves with a real uvicorn: contended locks and a blocked loop.

pyprof_http is installed at ``/debug/pprof`` with the process's ``PYPROF_*`` settings (the tests
start it with and without ``PYPROF_LOCK_PROFILE_FRACTION``). Functions have names no other code
has, so the tests can find them in the profiles:

- ``GET /contend/threading?threads=4&hold_ms=40``: threads fight over a ``threading.Lock``
  created by the request (so after lock profiling was switched on) in
  ``contention_service_thread_waiter``;
- ``GET /contend/asyncio?tasks=4&hold_ms=40``: tasks fight over :data:`SHARED_ASYNC_LOCK`, an
  ``asyncio.Lock`` created at import, *before* the app switched lock profiling on, in
  ``contention_service_task_waiter``;
- ``GET /block?ms=300``: an ``async def`` handler that blocks the loop in
  ``contention_service_blocking_call`` (``time.sleep``);
- ``GET /patched``: whether ``threading.Lock`` and ``asyncio.Lock.acquire`` are the originals.

At shutdown (after pyprof_http's own shutdown ran) the names of the live threads are written to
the file named by ``CONTENTION_THREADS_FILE``, so a test can check that nothing was left running.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse

import pyprof_http

SHARED_ASYNC_LOCK = asyncio.Lock()
_ORIGINAL_ASYNC_ACQUIRE = asyncio.Lock.acquire
_ORIGINAL_THREADING_LOCK = threading.Lock
THREADS_FILE_ENV = "CONTENTION_THREADS_FILE"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    target = os.environ.get(THREADS_FILE_ENV)
    if target:
        with open(target, "w") as out:
            json.dump([t.name for t in threading.enumerate()], out)


app = FastAPI(lifespan=lifespan)
pyprof_http.install(app)


@app.get("/healthz")
async def healthz() -> PlainTextResponse:
    return PlainTextResponse("ok")


def contention_service_thread_waiter(lock: threading.Lock, hold_s: float, rounds: int) -> None:
    for _ in range(rounds):
        with lock:
            time.sleep(hold_s)


@app.get("/contend/threading")
async def contend_threading(threads: int = 4, hold_ms: int = 40, rounds: int = 3) -> JSONResponse:
    lock = threading.Lock()
    workers = [
        threading.Thread(target=contention_service_thread_waiter,
                         args=(lock, hold_ms / 1000, rounds), name=f"contender-{i}")
        for i in range(threads)
    ]
    for worker in workers:
        worker.start()
    await asyncio.to_thread(lambda: [worker.join() for worker in workers])
    return JSONResponse({"threads": threads})


async def contention_service_task_waiter(hold_s: float, rounds: int) -> None:
    for _ in range(rounds):
        async with SHARED_ASYNC_LOCK:
            await asyncio.sleep(hold_s)


@app.get("/contend/asyncio")
async def contend_asyncio(tasks: int = 4, hold_ms: int = 40, rounds: int = 3) -> JSONResponse:
    await asyncio.gather(*(
        asyncio.create_task(contention_service_task_waiter(hold_ms / 1000, rounds),
                            name=f"async-contender-{i}")
        for i in range(tasks)
    ))
    return JSONResponse({"tasks": tasks})


def contention_service_blocking_call(seconds: float) -> None:
    time.sleep(seconds)  # the classic mistake: a blocking call inside async def


@app.get("/block")
async def block(ms: int = 300) -> JSONResponse:
    contention_service_blocking_call(ms / 1000)
    return JSONResponse({"blocked_ms": ms})


@app.get("/patched")
async def patched() -> JSONResponse:
    return JSONResponse({
        "threading_lock": threading.Lock is not _ORIGINAL_THREADING_LOCK,
        "asyncio_lock": asyncio.Lock.acquire is not _ORIGINAL_ASYNC_ACQUIRE,
    })
