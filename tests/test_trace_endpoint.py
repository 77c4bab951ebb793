"""``/trace`` in-process: the app's shutdown ends a running window early and leaves nothing
patched; the window answers what it recorded until then."""

from __future__ import annotations

import asyncio

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from lifespan import LifespanDriver
from pyprof_http import install, markers
from pyprof_http.collectors import trace
from pyprof_http.collectors.session import SESSIONS


def test_shutdown_mid_trace_ends_it_and_puts_everything_back() -> None:
    async def main() -> tuple[bool, float, int, str, bool]:
        app = install(Starlette())
        driver = LifespanDriver(app)
        await driver.startup()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            request = asyncio.create_task(
                client.get("/debug/pprof/trace", params={"seconds": 30, "debug": 1}))
            for _ in range(1000):
                if SESSIONS.running() == ["trace"]:
                    break
                await asyncio.sleep(0.01)
            during = trace.is_hooked()
            started = asyncio.get_running_loop().time()
            await driver.shutdown()
            response = await asyncio.wait_for(request, 30)
            took = asyncio.get_running_loop().time() - started
        return during, took, response.status_code, response.text, trace.is_hooked()

    during, took, status, text, after = asyncio.run(main())
    assert during, "the window had hooks in place"
    assert status == 200 and text.startswith("trace: ")
    assert took < 25, "the 30 s window ended at shutdown, not by itself"
    assert not after and SESSIONS.running() == []


def test_the_lifecycle_middleware_times_requests_only_during_a_window() -> None:
    async def made(request: Request) -> PlainTextResponse:
        return PlainTextResponse("made", status_code=201)

    async def main() -> tuple[str, bool]:
        app = install(Starlette(routes=[Route("/made", made)]))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            assert (await client.get("/made")).status_code == 201  # before: nothing records
            request = asyncio.create_task(
                client.get("/debug/pprof/trace", params={"seconds": 1, "debug": 1}))
            while markers.ACTIVE is None:
                await asyncio.sleep(0.01)
            assert (await client.get("/made", headers={"X-Request-ID": "r-42"})
                    ).status_code == 201
            text = (await asyncio.wait_for(request, 30)).text
        return text, markers.ACTIVE is None

    text, off_after = asyncio.run(main())
    made_lines = [line for line in text.splitlines() if line.startswith("  GET /made")]
    assert len(made_lines) == 1 and "-> 201" in made_lines[0], text
    assert "request_id=r-42" in made_lines[0]
    assert off_after
