"""The lifecycle middleware's per-request path: what an ordinary request pays, and trio.

An installed but idle profiler must cost a request as little as possible: the loop is
registered once (by the lifespan, or the first request on it), and nothing a profile might
later read (the X-Request-ID header, the route) is worked out per request. Under trio there is
no asyncio loop at all: requests and the lifespan must pass through untouched, and the
endpoints must say what they cannot see instead of failing.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import trio
from fastapi import FastAPI
from starlette.testclient import TestClient

import pyprof_http
from pyprof_http import request_labels
from pyprof_http.collectors.loop import WATCHDOGS
from pyprof_http.loops import LOOPS


def make_app() -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def read_item(item_id: int) -> dict[str, int]:
        await asyncio.sleep(0) if _asyncio_running() else None
        return {"item_id": item_id}

    pyprof_http.install(app)
    return app


def _asyncio_running() -> bool:
    return asyncio._get_running_loop() is not None


def test_an_idle_profiler_reads_nothing_per_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """After the lifespan registered the loop: no registration, no header scan, no route."""
    calls: dict[str, int] = {"register": 0, "request_id": 0, "route": 0}
    register, request_id, route_of = (LOOPS.register_running, request_labels._request_id,
                                      request_labels.route_of)

    def counting(name: str, real: Any) -> Any:
        def wrapper(*args: Any) -> Any:
            calls[name] += 1
            return real(*args)
        return wrapper

    app = make_app()
    with TestClient(app, client=("127.0.0.1", 5000)) as client:
        assert client.get("/items/0").status_code == 200  # warm: the loop is known
        monkeypatch.setattr(LOOPS, "register_running", counting("register", register))
        monkeypatch.setattr(request_labels, "_request_id", counting("request_id", request_id))
        monkeypatch.setattr(request_labels, "route_of", counting("route", route_of))
        for i in range(20):
            response = client.get(f"/items/{i}", headers={"X-Request-ID": f"r-{i}"})
            assert response.status_code == 200
    assert calls == {"register": 0, "request_id": 0, "route": 0}


def test_a_loop_without_lifespan_is_registered_by_its_first_request() -> None:
    """Servers without lifespan support: the first request registers the loop once."""
    app = make_app()

    async def main() -> tuple[bool, bool]:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            assert (await c.get("/items/1")).status_code == 200
            loop = asyncio.get_running_loop()
            registered = any(info.loop is loop for info in LOOPS.running())
            factory = getattr(loop.get_task_factory(), "_pyprof_http", False)
            loop.set_task_factory(None)
            return registered, bool(factory)

    assert asyncio.run(main()) == (True, True)


async def _lifespan(app: Any) -> list[str]:
    """Drive the ASGI lifespan (startup, shutdown) under trio; the messages sent back."""
    to_app_send, to_app = trio.open_memory_channel[dict[str, Any]](2)
    sent: list[str] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])

    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
    await to_app_send.send({"type": "lifespan.startup"})
    await to_app_send.send({"type": "lifespan.shutdown"})
    await app(scope, to_app.receive, send)
    return sent


def test_under_trio_requests_and_the_lifespan_pass_through_and_endpoints_say_why() -> None:
    """Before the fix every request of the host was a 500 (asyncio.get_running_loop())."""
    app = make_app()

    async def main() -> tuple[list[str], list[httpx.Response]]:
        lifespan = await _lifespan(app)
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
            responses = [await c.get(path) for path in (
                "/items/3", "/debug/pprof/goroutine?debug=1", "/debug/pprof/block?debug=1",
                "/debug/pprof/")]
        return lifespan, responses

    lifespan, (item, goroutine, block, index) = trio.run(main)
    assert lifespan == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert item.status_code == 200 and item.json() == {"item_id": 3}
    for response in (goroutine, block, index):
        assert response.status_code == 412, response.text
        assert "asyncio event loop" in response.text and "serve_in_background" in response.text
        assert response.headers["X-Go-Pprof"] == "1"
    assert WATCHDOGS.watching() == []
