"""The app the multi-worker integration tests serve (``uvicorn --workers 3`` and gunicorn).

Each worker parks one task in ``workers_parked_coroutine`` and runs a thread that spins in
``workers_spin`` about a fifth of the time, so a goroutine dump and a CPU profile of every
worker have something of that worker's own to show.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import pyprof_http


async def workers_parked_coroutine(event: asyncio.Event) -> None:
    await event.wait()


def workers_spin(stop: threading.Event) -> None:
    while not stop.is_set():
        end = time.perf_counter() + 0.01
        while time.perf_counter() < end:
            pass
        stop.wait(0.04)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    event, stop = asyncio.Event(), threading.Event()
    task = asyncio.create_task(workers_parked_coroutine(event), name="workers-parked")
    thread = threading.Thread(target=workers_spin, args=(stop,), name="workers-spin", daemon=True)
    thread.start()
    yield
    event.set()
    stop.set()
    await task
    thread.join(2)


async def pid(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(os.getpid()))


app = Starlette(routes=[Route("/pid", pid)], lifespan=lifespan)
pyprof_http.install(app)
