"""The app ``test_goroutineleak.py`` serves with a real uvicorn: tasks that leak, and tasks that
are merely parked.

- ``GET /leak``: four leaked tasks, one per kind: a local Future nobody sets
  (``leak_service_future``), an Event only the task holds (``leak_service_event``), a
  ``Queue.get`` on a queue its creator dropped (``leak_service_queue``), and a ``Queue.get`` on
  :data:`FORGOTTEN`, a module-level queue nobody feeds: reachable, so no collector can call it
  garbage (``leak_service_forgotten``).
- ``GET /healthy?n=1000``: n/2 tasks in ``asyncio.sleep`` and n/2 awaiting futures kept in
  :data:`HELD` (a live object): parked, not leaked.
- ``GET /leak_many?n=10000``: n tasks leaked at one site.
- ``GET /collect``: a collection run by the application itself, on the loop.
- ``GET /stats``: the recorder's sizes and how many events the app's own handler saw.

Automatic collections are off (``gc.disable()`` at import): a collection set off by the
service's own allocations between ``/leak`` and ``/goroutineleak`` would find the leaks first,
and CPython closes a garbage coroutine before its task's finalizer runs, so those records keep
the coroutine's function but not the line it was parked on (see ``collectors/gc_leaks.py``).
``/collect`` runs such a collection on purpose.

The app sets its own exception handler in its lifespan (after pyprof_http's startup, as apps
do) and counts every event; at shutdown (after pyprof_http's) it writes, to the file named
by ``LEAK_SERVICE_FILE``, that count and whether its handler is the loop's handler again.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse, PlainTextResponse

import pyprof_http
from pyprof_http.collectors.gc_leaks import GC_LEAKS

gc.disable()
FORGOTTEN: asyncio.Queue[int] = asyncio.Queue()
HELD: list[asyncio.Future[None]] = []
_parked: set[asyncio.Task[None]] = set()
EVENTS: list[str] = []


def app_exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    EVENTS.append(str(context.get("message")))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(app_exception_handler)
    yield
    target = os.environ.get("LEAK_SERVICE_FILE")
    if target:
        with open(target, "w") as out:
            json.dump({"events": len(EVENTS),
                       "restored": loop.get_exception_handler() is app_exception_handler}, out)


app = FastAPI(lifespan=lifespan)
pyprof_http.install(app)


@app.get("/healthz")
async def healthz() -> PlainTextResponse:
    return PlainTextResponse("ok")


async def leak_service_future(reply: asyncio.Future[int]) -> None:
    await reply  # leak-site future


async def leak_service_event() -> None:
    signal = asyncio.Event()
    await signal.wait()  # leak-site event


async def leak_service_queue(jobs: asyncio.Queue[int]) -> None:
    await jobs.get()  # leak-site queue


async def leak_service_forgotten() -> None:
    await FORGOTTEN.get()  # leak-site forgotten


@app.get("/leak")
async def leak() -> dict[str, int]:
    loop = asyncio.get_running_loop()
    asyncio.create_task(leak_service_future(loop.create_future()), name="leak-future")  # noqa: RUF006
    asyncio.create_task(leak_service_event(), name="leak-event")  # noqa: RUF006
    asyncio.create_task(leak_service_queue(asyncio.Queue()), name="leak-queue")  # noqa: RUF006
    asyncio.create_task(leak_service_forgotten(), name="leak-forgotten")  # noqa: RUF006
    return {"leaked": 4}


async def leak_service_sleeper() -> None:
    await asyncio.sleep(3600)


async def leak_service_held() -> None:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    HELD.append(future)
    await future


@app.get("/healthy")
async def healthy(n: int = Query(1000, ge=2, le=20_000)) -> dict[str, int]:
    for i in range(n):
        task = asyncio.create_task(leak_service_sleeper() if i % 2 else leak_service_held())
        _parked.add(task)
    await asyncio.sleep(0)
    return {"parked": len(_parked)}


async def leak_service_many() -> None:
    await asyncio.Event().wait()


@app.get("/leak_many")
async def leak_many(n: int = Query(10_000, ge=1, le=100_000)) -> dict[str, int]:
    for _ in range(n):
        asyncio.create_task(leak_service_many())  # noqa: RUF006
    await asyncio.sleep(0)
    return {"leaked": n}


@app.get("/collect")
async def collect() -> dict[str, int]:
    """The application's own collection (as its allocations would set one off)."""
    return {"unreachable": gc.collect()}


@app.get("/stats")
async def stats() -> JSONResponse:
    groups, ring, queued = GC_LEAKS.sizes()
    return JSONResponse({"groups": groups, "ring": ring, "queued": queued,
                         "total": GC_LEAKS.total, "events": len(EVENTS)})
