"""The app the ``/trace`` integration tests serve with a real uvicorn.

- ``/hogged``: a request made slow by its neighbour. A task named :data:`HOG_TASK`, started
  at startup (so it serves no request), takes jobs from a queue; each job is one step that
  blocks the loop for :data:`HOG_MS` ms. The request queues a job, then yields once: its
  continuation is ready at once, but the loop runs the hog's step first (the ready queue is
  first in, first out), so the request waits ~80 ms for the loop while running almost nothing.
  It marks and spans with labels on the way.
- ``/sync``: a sync endpoint (Starlette's thread pool) that marks from its worker thread.
- ``/to-thread``: ``asyncio.to_thread`` work.
- ``/hostile``: a task with a hostile name runs one step.
- ``/hooked``: whether anything of a trace is in place (tests wait for a window to start and
  check that nothing stays patched after one).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import pyprof_http
from pyprof_http.collectors import trace

HOG_TASK = "report-builder"
HOG_MS = 80
HOSTILE_TASK_NAME = "<img src=x onerror=alert(1)>\u2028\x1b[31m</script>"
MARK_NAME = "db.query.start"
SPAN_NAME = "render.page"

_jobs: asyncio.Queue[int] = asyncio.Queue()


async def report_builder() -> None:
    while True:
        ms = await _jobs.get()
        time.sleep(ms / 1000)  # a blocking call in async code: holds the loop for the step


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    builder = asyncio.create_task(report_builder(), name=HOG_TASK)
    yield
    builder.cancel()


app = FastAPI(lifespan=lifespan)
pyprof_http.install(app)


@app.get("/healthz")
async def healthz() -> dict[str, bool]:
    return {"ok": True}


@app.get("/hogged")
async def hogged() -> dict[str, int]:
    _jobs.put_nowait(HOG_MS)  # wakes the builder: its step is queued before ours
    pyprof_http.mark(MARK_NAME, table="users")
    await asyncio.sleep(0)  # ready again at once; the hog's step runs first
    async with pyprof_http.span(SPAN_NAME, template="home"):
        await asyncio.sleep(0.001)
    return {"ok": 1}


@app.get("/sync")
def sync_route() -> dict[str, int]:
    with pyprof_http.span("sync.work", kind="threadpool"):
        time.sleep(0.005)
    return {"ok": 1}


def _blocking() -> int:
    time.sleep(0.005)
    return 1


@app.get("/to-thread")
async def to_thread() -> dict[str, int]:
    return {"ok": await asyncio.to_thread(_blocking)}


async def _named_step() -> None:
    await asyncio.sleep(0)


@app.get("/hostile")
async def hostile() -> dict[str, int]:
    task = asyncio.create_task(_named_step(), name=HOSTILE_TASK_NAME)
    await task
    return {"ok": 1}


@app.get("/hooked")
async def hooked() -> dict[str, bool]:
    return {"hooked": trace.is_hooked()}
