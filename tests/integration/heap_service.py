"""A FastAPI app with default heap sampling, for ``test_heap_sampler.py`` under real uvicorn.

Routes with names no other code has, so the tests can find them in every profile:
``/hoard`` keeps ~1 MB per call (``hoarding_route``), ``/release`` lets it go, ``/churn``
allocates and frees at once (``churning_route``), ``/tracemalloc/start|stop|sees`` are the
application's own tracemalloc, started and read behind the profiler's back.

``HEAP_SERVICE_HIDE_EXTENSION=1`` hides the C extension (its import fails, as where it could
not be built), to serve the fallback path with the real app.
"""

from __future__ import annotations

import os
import sys
import tracemalloc

if os.environ.get("HEAP_SERVICE_HIDE_EXTENSION") == "1":
    sys.modules["pyprof_http._heapsample"] = None  # type: ignore[assignment]  # import fails

from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse

import pyprof_http
from pyprof_http.collectors import heap_sampler

app = FastAPI()
pyprof_http.install(app)
HOARD: list[bytearray] = []


@app.get("/healthz")
async def healthz() -> PlainTextResponse:
    return PlainTextResponse("ok")


@app.get("/hoard")
async def hoarding_route(kib: int = 1024) -> PlainTextResponse:
    HOARD.extend(bytearray(1024) for _ in range(kib))
    return PlainTextResponse(str(len(HOARD)))


@app.get("/release")
async def release() -> PlainTextResponse:
    HOARD.clear()
    return PlainTextResponse("ok")


@app.get("/churn")
async def churning_route(kib: int = 1024) -> PlainTextResponse:
    for _ in range(kib):
        bytearray(1024)
    return PlainTextResponse("ok")


@app.get("/tracemalloc/start")
async def start_tracing() -> PlainTextResponse:
    tracemalloc.start(1)
    return PlainTextResponse("ok")


@app.get("/tracemalloc/stop")
async def stop_tracing() -> PlainTextResponse:
    tracemalloc.stop()
    return PlainTextResponse("ok")


@app.get("/tracemalloc/sees")
async def traced_hoard() -> JSONResponse:
    """Bytes tracemalloc traced at the hoarding line."""
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, __file__)])
    return JSONResponse(sum(s.size for s in snapshot.statistics("filename")))


@app.get("/sampler")
async def sampler() -> JSONResponse:
    return JSONResponse({"available": heap_sampler.available(), "running": heap_sampler.running()})
