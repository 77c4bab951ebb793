"""The lifecycle middleware's per-request path: what an ordinary request pays, and trio.

An installed but idle profiler must cost a request as little as possible: the loop is
registered once (by the lifespan, or the first request on it), and nothing a profile might
later read (the X-Request-ID header, the route) is worked out per request. Under trio there is
no asyncio loop at all: requests and the lifespan must pass through untouched, and the
endpoints must say what they cannot see instead of failing.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import httpx
import pytest
import trio
from fastapi import FastAPI
from starlette.testclient import TestClient

import pyprof_http
from pyprof_http import request_labels
from pyprof_http.collectors.loop import WATCHDOGS
from pyprof_http.lifecycle import LifecycleMiddleware
from pyprof_http.loops import LOOPS

pytestmark = pytest.mark.usefixtures("request_path")  # both request paths


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


def _raw_app(seen: list[Any], response_headers: Any = ((b"content-type", b"text/plain"),),
             fail: bool = False) -> Any:
    """A bare ASGI app: notes the request it runs in, answers with ``response_headers``."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(request_labels.current_request())
        if fail:
            raise RuntimeError("the app failed")
        await send({"type": "http.response.start", "status": 201, "headers": response_headers})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def _serve(app: Any, headers: Any) -> list[dict[str, Any]]:
    """One request through the middleware, on a loop's task; the messages the server was
    sent. Checks that the request's context variable is undone after it."""
    middleware = LifecycleMiddleware(app, pyprof_http.Settings(), prefix="/debug/pprof")
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/p", "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 5000), "query_string": b""}

    async def main() -> None:
        try:
            await middleware(scope, receive, send)
        finally:
            asyncio.get_running_loop().set_task_factory(None)
            after.append(request_labels.CURRENT_REQUEST.get())  # the label was undone

    after: list[Any] = []
    try:
        asyncio.run(main())
    finally:
        assert after == [None]
    return sent


def _echoed(sent: list[dict[str, Any]]) -> list[bytes]:
    return [value for name, value in sent[0]["headers"] if name == b"x-request-id"]


@pytest.mark.parametrize("given", [b"abc-1", b"A" * 128, b"uuid:0f/x+y=@z_.1"])
def test_a_sane_client_id_is_echoed_and_labels_the_request(given: bytes) -> None:
    seen: list[Any] = []
    sent = _serve(_raw_app(seen), [(b"host", b"t"), (b"x-request-id", given)])
    assert _echoed(sent) == [given] and sent[0]["status"] == 201
    assert seen[0].request_id == given.decode() and seen[0].route == "/p"
    assert not seen[0].live and request_labels.current_request() is None


@pytest.mark.parametrize("given", [b"", b"A" * 129, b"has space", b"<b>", b"caf\xc3\xa9",
                                   b"\x1b[31m", b"a\nb"])
def test_any_other_client_id_is_replaced_by_a_new_one(given: bytes) -> None:
    seen: list[Any] = []
    sent = _serve(_raw_app(seen), [(b"x-request-id", given)])
    (echoed,) = _echoed(sent)
    assert echoed != given and request_labels.valid_id(echoed.decode())
    assert seen[0].request_id == echoed.decode()


def test_new_ids_are_unique_and_the_apps_own_id_header_is_left_alone() -> None:
    seen: list[Any] = []
    ids = {_echoed(_serve(_raw_app(seen), []))[0] for _ in range(3)}
    assert len(ids) == 3
    own = ((b"x-request-id", b"the-apps"), (b"content-type", b"text/plain"))
    sent = _serve(_raw_app(seen, own), [(b"x-request-id", b"clients")])
    assert _echoed(sent) == [b"the-apps"]
    assert list(own) == [(b"x-request-id", b"the-apps"), (b"content-type", b"text/plain")]


def test_headers_in_every_shape_asgi_allows() -> None:
    """Request headers as a tuple of lists, response headers as a list of lists, or none."""
    seen: list[Any] = []
    sent = _serve(_raw_app(seen, [[b"content-type", b"text/plain"]]),
                  ([b"x-request-id", b"listed"], [b"accept", b"*/*"]))
    assert _echoed(sent) == [b"listed"] and [b"content-type", b"text/plain"] in sent[0]["headers"]
    sent = _serve(_raw_app(seen, []), [])
    assert len(_echoed(sent)) == 1 and sent[1] == {"type": "http.response.body", "body": b"ok"}


def test_a_failing_app_leaves_no_label_behind() -> None:
    seen: list[Any] = []
    with pytest.raises(RuntimeError, match="the app failed"):
        _serve(_raw_app(seen, fail=True), [(b"x-request-id", b"doomed")])
    assert seen[0].request_id == "doomed" and not seen[0].live
    assert request_labels.current_request() is None and not request_labels._BY_TASK


def test_a_request_held_after_it_ended_keeps_its_id_and_route_not_its_headers() -> None:
    """A task it spawned outlives it: the Request is shrunk to what it can still be asked."""
    seen: list[Any] = []
    held: list[Any] = []
    inner = _raw_app(seen)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        held.append(contextvars.copy_context())  # as a spawned task or a timer would
        await inner(scope, receive, send)

    _serve(app, [(b"cookie", b"c" * 4000), (b"x-request-id", b"kept-1")])
    request = seen[0]
    assert (request.request_id, request.route) == ("kept-1", "/p")
    assert "headers" not in request.scope and held
