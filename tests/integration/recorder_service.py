"""The app for ``test_recorder.py``: sync and async routes that burn CPU in functions with
names no other code has, a slow route, and routes that log through ``RequestContextFilter``.

Served by uvicorn with a token (so ``X-Pprof-Profile: 1`` has credentials to check) and
``slow_request_ms=300``. ``GET /logs`` returns the records the logging routes made.
"""

from __future__ import annotations

import asyncio
import logging
import time

from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse

import pyprof_http

TOKEN = "recorder-test-token-0123456789"
RECORDS: list[dict[str, str]] = []


class Keep(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        RECORDS.append({"message": record.getMessage(), "request_id": record.request_id,  # type: ignore[attr-defined]
                        "route": record.route})  # type: ignore[attr-defined]


LOG = logging.getLogger("recorder_service")
LOG.setLevel(logging.INFO)
_handler = Keep()
_handler.addFilter(pyprof_http.RequestContextFilter())
LOG.addHandler(_handler)


def recorder_service_spin(ms: float) -> int:
    end, total = time.perf_counter() + ms / 1000, 0
    while time.perf_counter() < end:
        total += sum(range(300))
    return total


def recorder_sync_route_burn(ms: float) -> int:
    return recorder_service_spin(ms)


def recorder_slow_handler_burn(ms: float) -> int:
    return recorder_service_spin(ms)


def recorder_fast_handler_burn(ms: float) -> int:
    return recorder_service_spin(ms)


app = FastAPI()


@app.get("/healthz")
async def healthz() -> PlainTextResponse:
    return PlainTextResponse("ok")


@app.get("/sync-burn")
def sync_burn(ms: int = 20) -> PlainTextResponse:
    return PlainTextResponse(str(recorder_sync_route_burn(min(ms, 2000))))


@app.get("/slow")
def slow(ms: int = 1500) -> PlainTextResponse:
    return PlainTextResponse(str(recorder_slow_handler_burn(min(ms, 5000))))


@app.get("/fast")
async def fast() -> PlainTextResponse:
    return PlainTextResponse(str(recorder_fast_handler_burn(5)))


@app.get("/log-async")
async def log_async() -> PlainTextResponse:
    await asyncio.sleep(0)
    LOG.info("from async")
    return PlainTextResponse("ok")


@app.get("/log-sync")
def log_sync() -> PlainTextResponse:
    LOG.info("from sync")
    return PlainTextResponse("ok")


@app.get("/logs")
async def logs() -> JSONResponse:
    return JSONResponse(RECORDS)


pyprof_http.install(app, pyprof_http.Settings(token=TOKEN, slow_request_ms=300))
