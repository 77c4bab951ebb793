"""A small app for the CPU profile integration tests (``test_profile.py``), served by uvicorn.

``GET /burn?ms=N`` does N ms of CPU work inside an ``async def`` route (it holds the event
loop, as CPU-heavy handlers do; ``/burn-sync`` does it in the thread pool), in functions with
names no other code has, so every profile format can be searched for them. ``GET /healthz``
answers ``ok``.
"""

from __future__ import annotations

import time

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

import pyprof_http

MAX_BURN_MS = 1000


def cpu_service_hot_loop(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i
    return total


def cpu_service_burn(ms: float) -> int:
    end = time.perf_counter() + ms / 1000
    total = 0
    while time.perf_counter() < end:
        total += cpu_service_hot_loop(500)
    return total


app = FastAPI()


@app.get("/healthz")
async def healthz() -> PlainTextResponse:
    return PlainTextResponse("ok")


@app.get("/burn")
async def burn(ms: int = 5) -> PlainTextResponse:
    return PlainTextResponse(str(cpu_service_burn(min(max(ms, 0), MAX_BURN_MS))))


@app.get("/burn-sync")
def burn_sync(ms: int = 5) -> PlainTextResponse:
    """The same work in a ``def`` route: FastAPI runs it in its thread pool, the loop waits."""
    return PlainTextResponse(str(cpu_service_burn(min(max(ms, 0), MAX_BURN_MS))))


pyprof_http.install(app)
