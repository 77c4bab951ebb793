"""The lifecycle middleware: task factory on the serving loop at startup, removed at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import warnings
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from lifespan import LifespanDriver, alone, plain_lifespan_app
from pyprof_http import PprofApp, Settings, install
from pyprof_http.collectors import locks, threads
from pyprof_http.collectors.loop import WATCHDOGS
from pyprof_http.lifecycle import LifecycleMiddleware
from pyprof_http.loops import LOOPS, ORIGINS

ORIGINAL_LOCK = threading.Lock


def _ours(loop: asyncio.AbstractEventLoop) -> bool:
    return bool(getattr(loop.get_task_factory(), "_pyprof_http", False))


def test_startup_installs_and_shutdown_removes_the_factory_by_hand() -> None:
    async def main():
        loop = asyncio.get_running_loop()
        driver = LifespanDriver(LifecycleMiddleware(plain_lifespan_app))
        assert not _ours(loop)
        await driver.startup()
        installed = _ours(loop)
        registered = any(info.loop is loop for info in LOOPS.running())
        await driver.shutdown()
        return installed, registered, loop.get_task_factory()

    installed, registered, after = asyncio.run(main())
    assert installed
    assert registered
    assert after is None


def test_shutdown_restores_a_previous_factory() -> None:
    made: list[str] = []

    def previous(loop, coro, **kwargs):
        made.append("previous")
        return asyncio.Task(coro, loop=loop, **kwargs)

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_task_factory(previous)
        driver = LifespanDriver(LifecycleMiddleware(plain_lifespan_app))
        await driver.startup()
        during = loop.get_task_factory()
        made.clear()
        probe = asyncio.create_task(asyncio.sleep(0))
        await probe
        chained = list(made)
        origin = ORIGINS.origin(probe)
        await driver.shutdown()
        return during, chained, origin, loop.get_task_factory()

    during, chained, origin, after = asyncio.run(main())
    assert during is not previous and getattr(during, "_pyprof_previous", None) is previous
    assert chained == ["previous"]  # the app's own factory still runs under ours
    assert origin is not None and origin.site is not None
    assert origin.site.filename == __file__
    assert after is previous


def test_pprof_app_served_alone_speaks_lifespan() -> None:
    async def main():
        loop = asyncio.get_running_loop()
        driver = LifespanDriver(PprofApp())
        await driver.startup()
        installed = _ours(loop)
        await driver.shutdown()
        return installed, [m["type"] for m in driver.sent], loop.get_task_factory()

    installed, sent, after = asyncio.run(main())
    assert installed
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert after is None


def test_starlette_lifespan_sees_the_factory_and_creation_sites() -> None:
    seen: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        loop = asyncio.get_running_loop()
        seen["loop"] = loop
        seen["at_startup"] = _ours(loop)
        seen["line"] = sys._getframe().f_lineno + 1
        background = asyncio.create_task(asyncio.sleep(0), name="startup-task")
        seen["origin"] = ORIGINS.origin(background)
        await background
        yield
        seen["at_shutdown_body"] = _ours(loop)

    async def home(request):
        return PlainTextResponse(str(_ours(asyncio.get_running_loop())))

    app = install(Starlette(routes=[Route("/", home)], lifespan=lifespan))

    async def main():
        loop = asyncio.get_running_loop()
        driver = LifespanDriver(app)
        await driver.startup()
        await driver.shutdown()
        return loop.get_task_factory()

    after = asyncio.run(main())
    assert seen["at_startup"] is True  # installed before the app's own startup code ran
    origin = seen["origin"]
    assert origin is not None
    assert (origin.site.filename, origin.site.line) == (__file__, seen["line"])
    assert seen["at_shutdown_body"] is False  # removed before the app's shutdown code
    assert after is None


def test_under_starlette_testclient() -> None:
    seen: dict[str, Any] = {}

    async def where(request):
        loop = asyncio.get_running_loop()
        seen["loop"] = loop
        return PlainTextResponse(str(_ours(loop)))

    app = install(Starlette(routes=[Route("/where", where)]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # starlette's notice about httpx in its TestClient
        from starlette.testclient import TestClient

        with TestClient(app) as client:
            assert client.get("/where").text == "True"
    loop = seen["loop"]
    assert loop.get_task_factory() is None


@pytest.mark.parametrize("kind", ["http", "websocket"])
def test_requests_register_the_loop_without_lifespan(kind: str) -> None:
    calls: list[str] = []

    async def inner(scope, receive, send) -> None:
        calls.append(scope["type"])

    async def main():
        loop = asyncio.get_running_loop()
        assert not _ours(loop)
        middleware = LifecycleMiddleware(inner)
        await middleware({"type": kind, "path": "/"}, None, None)
        registered = any(info.loop is loop for info in LOOPS.running())
        installed = _ours(loop)
        middleware.claims.release_all()
        return registered, installed, _ours(loop)

    assert asyncio.run(main()) == (True, True, False)
    assert calls == [kind]


def test_other_scopes_pass_through_untouched() -> None:
    calls: list[str] = []

    async def inner(scope, receive, send) -> None:
        calls.append(scope["type"])

    async def main():
        loop = asyncio.get_running_loop()
        await LifecycleMiddleware(inner)({"type": "custom"}, None, None)
        return _ours(loop)

    assert asyncio.run(main()) is False
    assert calls == ["custom"]


def test_lifespan_messages_reach_the_app_unchanged() -> None:
    received: list[dict] = []

    async def app(scope, receive, send) -> None:
        while True:
            message = await receive()
            received.append(message)
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def main():
        driver = LifespanDriver(LifecycleMiddleware(app))
        await driver.startup()
        await driver.shutdown()

    asyncio.run(main())
    assert received == [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]


def test_shutdown_signals_stop_profiles_then_call_the_servers_handler() -> None:
    import signal as signal_module

    from pyprof_http.collectors.session import SESSIONS
    from pyprof_http.switches import Claims

    calls: list[int] = []

    def server_handler(number: int, frame: object) -> None:
        calls.append(number)

    original = signal_module.signal(signal_module.SIGTERM, server_handler)
    try:
        claims = Claims()
        claims.chain_shutdown_signals()
        ours = signal_module.getsignal(signal_module.SIGTERM)
        assert ours is not server_handler
        assert not SESSIONS.shutting_down
        ours(signal_module.SIGTERM, None)  # as the interpreter would call it
        assert SESSIONS.shutting_down  # a plain flag: the handler takes no lock
        assert calls == [signal_module.SIGTERM]
        claims.release_all()
        assert signal_module.getsignal(signal_module.SIGTERM) is server_handler
    finally:
        SESSIONS.shutting_down = False
        signal_module.signal(signal_module.SIGTERM, original)


def _watchdog_threads(before: frozenset[threading.Thread] = frozenset()) -> int:
    """Watchdog threads alive now that were not in ``before``: the count is of this test's
    own, whatever an earlier test's watchdog, ending by itself with its loop, still does."""
    return sum(1 for t in threading.enumerate()
               if t.name == "pyprof_http-watchdog" and t not in before)


def test_startup_starts_the_watchdog_and_shutdown_joins_it() -> None:
    before = frozenset(threading.enumerate())

    async def main():
        loop = asyncio.get_running_loop()
        driver = LifespanDriver(LifecycleMiddleware(plain_lifespan_app))
        await driver.startup()
        during = WATCHDOGS.is_watching(loop), _watchdog_threads(before)
        await driver.shutdown()
        return during, WATCHDOGS.is_watching(loop), _watchdog_threads(before)

    during, watching_after, threads_after = asyncio.run(main())
    assert during == (True, 1)
    assert (watching_after, threads_after) == (False, 0)


def test_block_off_the_allowlist_starts_no_watchdog() -> None:
    before = frozenset(threading.enumerate())

    async def main():
        settings = Settings(profiles=frozenset({"goroutine"}))
        driver = LifespanDriver(LifecycleMiddleware(plain_lifespan_app, settings))
        await driver.startup()
        during = _watchdog_threads(before)
        await driver.shutdown()
        return during

    assert asyncio.run(main()) == 0


def test_lock_profiling_from_the_settings_is_switched_on_and_off_again() -> None:
    assert locks.fraction() == 0

    async def main():
        driver = LifespanDriver(LifecycleMiddleware(plain_lifespan_app,
                                                     Settings(lock_profile_fraction=3)))
        await driver.startup()
        during = locks.fraction(), threading.Lock is not ORIGINAL_LOCK
        await driver.shutdown()
        return during

    try:
        during = asyncio.run(main())
    finally:
        locks.set_fraction(0)
    assert during == (3, True)
    assert locks.fraction() == 0 and threading.Lock is ORIGINAL_LOCK


def test_lock_profiling_the_app_set_itself_is_left_alone_at_shutdown() -> None:
    async def main():
        driver = LifespanDriver(LifecycleMiddleware(plain_lifespan_app,
                                                     Settings(lock_profile_fraction=3)))
        await driver.startup()
        locks.set_fraction(7)  # the app changed it since: its decision, not ours to undo
        await driver.shutdown()
        return locks.fraction()

    try:
        assert asyncio.run(main()) == 7
    finally:
        locks.set_fraction(0)


def test_thread_start_is_hooked_at_startup_and_put_back_at_shutdown() -> None:
    with alone():
        _hook_installed_and_put_back()


def _hook_installed_and_put_back() -> None:
    original = threading.Thread.start
    assert not threads.THREAD_STARTS.installed

    async def main():
        driver = LifespanDriver(LifecycleMiddleware(plain_lifespan_app))
        await driver.startup()
        during = threading.Thread.start is not original
        await driver.shutdown()
        return during

    assert asyncio.run(main())
    assert threading.Thread.start is original
