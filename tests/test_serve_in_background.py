"""serve_in_background: a side server on its own thread that answers while the app loop is stuck."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import urllib.request

import pytest

import pyprof_http
from pyprof_http.loops import LOOPS


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode()


def test_side_server_reads_a_blocked_loop():
    server = pyprof_http.serve_in_background(port=0)
    try:
        assert server.thread.name == "pyprof_http-server"
        assert server.url == f"http://127.0.0.1:{server.port}/debug/pprof/"
        seen: dict[str, str] = {}

        async def side_parked_coroutine(event: asyncio.Event) -> None:
            await event.wait()

        def blocking_call_in_the_loop() -> None:
            seen["dump"] = _get(server.url + "goroutine?debug=2")[1]

        async def main():
            LOOPS.register_running()
            event = asyncio.Event()
            task = asyncio.create_task(side_parked_coroutine(event), name="side-parked")
            await asyncio.sleep(0)
            blocking_call_in_the_loop()  # the loop is stuck here while the side server answers
            event.set()
            await task

        asyncio.run(main())
        dump = seen["dump"]
        assert "blocking_call_in_the_loop" in dump  # the main thread's stack, caught mid-block
        assert 'task ' in dump and '"side-parked" [awaiting Event.wait]' in dump
        assert "side_parked_coroutine" in dump
        assert "did not answer within" in dump  # the blocked loop was read from another thread
    finally:
        server.stop()
    assert not server.thread.is_alive()
    assert not any(t.name == "pyprof_http-server" for t in threading.enumerate())


def test_port_in_use_raises_oserror():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(OSError, match=f"127.0.0.1:{port}"):
            pyprof_http.serve_in_background(port=port)
        assert time.monotonic() - started < 10
    assert not any(t.name == "pyprof_http-server" for t in threading.enumerate())


def test_install_without_prefix_only_adds_the_middleware():
    from starlette.applications import Starlette

    app = Starlette()
    assert pyprof_http.install(app, prefix=None) is app
    assert [m.cls for m in app.user_middleware] == [pyprof_http.LifecycleMiddleware]
    assert app.routes == []


def test_side_server_reports_stalls_of_the_app_loop_and_watches_not_its_own():
    from pyprof_http.collectors.loop import WATCHDOGS

    server = pyprof_http.serve_in_background(port=0)
    try:
        def side_blocking_call() -> None:
            time.sleep(0.3)

        async def main() -> None:  # what install()'s lifespan does on the app's loop
            loop = asyncio.get_running_loop()
            WATCHDOGS.start(loop, 100)
            await asyncio.sleep(0.05)
            side_blocking_call()
            await asyncio.sleep(0.05)
            WATCHDOGS.stop(loop)

        asyncio.run(main())
        status, text = _get(server.url + "block?debug=1")
        assert status == 200
        assert "side_blocking_call" in text
        # the side server's own loop is not watched (only its thread's watches are looked at:
        # an earlier test's watch, ending by itself with its loop, may not be gone yet)
        assert not [w for w in WATCHDOGS.watching() if w.thread_name == server.thread.name]
    finally:
        server.stop()
        WATCHDOGS.stop_all()


def test_an_asked_for_request_links_to_its_profile_on_the_side_port():
    """install(prefix=None) mounts nothing: the link of an X-Pprof-Profile request was
    ``/requests/<id>`` on the app's own port (a 404 there); it points to the side server, and
    no link is given while no side server is known."""
    import warnings

    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    app = Starlette(routes=[Route("/hi", lambda request: PlainTextResponse("hi"))])
    pyprof_http.install(app, prefix=None)
    asked = {"X-Pprof-Profile": "1", "X-Request-ID": "side-1"}
    local = {"base_url": "http://127.0.0.1", "client": ("127.0.0.1", 5000)}
    with TestClient(app, **local) as client:
        response = client.get("/hi", headers=asked)
        assert response.status_code == 200
        assert "x-pprof-request-profile" not in response.headers
        server = pyprof_http.serve_in_background(port=0)
        try:
            link = client.get("/hi", headers=asked).headers["x-pprof-request-profile"]
            assert link == f"{server.url}requests/side-1"
            assert _get(link + "?debug=1")[0] == 200
        finally:
            server.stop()
        assert "x-pprof-request-profile" not in client.get("/hi", headers=asked).headers
