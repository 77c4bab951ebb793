"""The app the ``/trace`` integration tests serve with a real uvicorn.

- ``/hogged``: a request made slow by its neighbour. It starts a task named :data:`HOG_TASK`
  whose one step blocks the loop for :data:`HOG_MS` ms, then yields once: its continuation is
  ready at once, but the loop runs the hog's step first (the ready queue is first in, first
  out), so the request waits ~80 ms for the loop while running almost nothing. It marks and
  spans with labels on the way.
- ``/sync``: a sync endpoint (Starlette's thread pool) that marks from its worker thread.
- ``/to-thread``: ``asyncio.to_thread`` work.
- ``/hostile``: a task with a hostile name runs one step.
- ``/slow-stream``: a response that takes 5 s (the disconnect test hangs up on a trace).
"""

from __future__ import annotations

import asyncio
import time

from fastapi import FastAPI

import pyprof_http

HOG_TASK = "report-builder"
HOG_MS = 80
HOSTILE_TASK_NAME = "<img src=x onerror=alert(1)>\u2028\x1b[31m</script>"
MARK_NAME = "db.query.start"
SPAN_NAME = "render.page"

app = FastAPI()
pyprof_http.install(app)
_tasks: set[asyncio.Task[None]] = set()


def _keep(task: asyncio.Task[None]) -> None:
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


@app.get("/healthz")
async def healthz() -> dict[str, bool]:
    return {"ok": True}


async def hog(ms: int) -> None:
    time.sleep(ms / 1000)  # a blocking call in async code: holds the loop for the whole step


@app.get("/hogged")
async def hogged() -> dict[str, int]:
    _keep(asyncio.create_task(hog(HOG_MS), name=HOG_TASK))
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
