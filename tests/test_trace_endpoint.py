"""``/trace`` in-process: the app's shutdown ends a running window early and leaves nothing
patched; the window answers what it recorded until then."""

from __future__ import annotations

import asyncio

import httpx
from starlette.applications import Starlette

from lifespan import LifespanDriver
from pyprof_http import install
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
