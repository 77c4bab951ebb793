"""switches: every process-wide switch stays on while any app holds it, and only what the
allowlist lets in is installed.

Two apps in one process (hypercorn dispatching lifespan to several apps, a TestClient beside a
live app) used to share module singletons: the first to shut down switched off the other's task
factory, watchdog, Thread.start hook, lock profiling and running profiles.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import subprocess
import sys
import textwrap
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from lifespan import LifespanDriver, alone, collect_dropped_apps, plain_lifespan_app
from pyprof_http import (
    ConfigError,
    PprofApp,
    Settings,
    install,
    set_lock_profile_fraction,
    switches,
)
from pyprof_http.collectors import locks, threads
from pyprof_http.collectors.loop import WATCHDOGS
from pyprof_http.collectors.session import CURRENT_OWNER, SESSIONS
from pyprof_http.lifecycle import LifecycleMiddleware

ORIGINAL_START = threading.Thread.start
ORIGINAL_LOCK = threading.Lock


def _factory_is_ours(loop: asyncio.AbstractEventLoop) -> bool:
    return bool(getattr(loop.get_task_factory(), "_pyprof_http", False))


def _everything_off() -> bool:
    return (threading.Thread.start is ORIGINAL_START and threading.Lock is ORIGINAL_LOCK
            and locks.fraction() == 0 and not WATCHDOGS.watching())


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    with alone():
        assert _everything_off()
        yield
        collect_dropped_apps()
        assert _everything_off()


@pytest.fixture
def server_sigterm() -> Iterator[Any]:
    """A Python SIGTERM handler, as a server installs (the chain is put only in front of one)."""
    def server_handler(number: int, frame: object) -> None: ...

    previous = signal.signal(signal.SIGTERM, server_handler)
    yield server_handler
    signal.signal(signal.SIGTERM, previous)


def _state(loop: asyncio.AbstractEventLoop) -> dict[str, object]:
    return {
        "factory": _factory_is_ours(loop),
        "watchdog": WATCHDOGS.is_watching(loop),
        "thread hook": threads.THREAD_STARTS.installed,
        "lock fraction": locks.fraction(),
    }


ALL_ON = {"factory": True, "watchdog": True, "thread hook": True, "lock fraction": 3}
ALL_OFF = {"factory": False, "watchdog": False, "thread hook": False, "lock fraction": 0}


def test_two_lifespans_on_one_loop_first_shutdown_leaves_the_others_switches_on(
    server_sigterm: Any,
) -> None:
    settings = Settings(lock_profile_fraction=3)

    async def main() -> list[tuple[dict[str, object], bool]]:
        loop = asyncio.get_running_loop()
        first = LifespanDriver(LifecycleMiddleware(plain_lifespan_app, settings))
        second = LifespanDriver(LifecycleMiddleware(plain_lifespan_app, settings))
        seen = []
        await first.startup()
        await second.startup()
        seen.append((_state(loop), signal.getsignal(signal.SIGTERM) is not server_sigterm))
        await first.shutdown()
        seen.append((_state(loop), signal.getsignal(signal.SIGTERM) is not server_sigterm))
        await second.shutdown()
        seen.append((_state(loop), signal.getsignal(signal.SIGTERM) is not server_sigterm))
        return seen

    both, after_first, after_second = asyncio.run(main())
    assert both == (ALL_ON, True)
    assert after_first == (ALL_ON, True), "the second app still needs every switch"
    assert after_second == (ALL_OFF, False)


def test_a_testclient_beside_a_live_app_leaves_the_live_apps_switches_on() -> None:
    live_settings = Settings(lock_profile_fraction=3)
    live = LifespanDriver(LifecycleMiddleware(plain_lifespan_app, live_settings))
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, name="live-app-loop")
    runner.start()
    try:
        asyncio.run_coroutine_threadsafe(live.startup(), loop).result(10)

        async def home(request: Any) -> PlainTextResponse:
            return PlainTextResponse("ok")

        beside = install(Starlette(routes=[Route("/", home)]),
                         Settings(lock_profile_fraction=3))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # starlette's notice about httpx in its TestClient
            from starlette.testclient import TestClient

            with TestClient(beside) as client:
                assert client.get("/").text == "ok"
        during = _state(loop)
        asyncio.run_coroutine_threadsafe(live.shutdown(), loop).result(10)
        after = _state(loop)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(10)
        loop.close()
    assert during == ALL_ON, "the TestClient's shutdown must not stop the live app's switches"
    assert after == ALL_OFF


def test_an_apps_shutdown_stops_only_the_profiles_it_started() -> None:
    async def main() -> tuple[bool, bool, int, list[str]]:
        first_app, second_app = install(Starlette()), install(Starlette())
        first, second = LifespanDriver(first_app), LifespanDriver(second_app)
        await first.startup()
        await second.startup()
        transport = httpx.ASGITransport(app=first_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            request = asyncio.create_task(
                client.get("/debug/pprof/profile", params={"seconds": 30, "mode": "wall",
                                                           "debug": 1}))
            for _ in range(1000):
                if SESSIONS.running() == ["cpu"]:
                    break
                await asyncio.sleep(0.01)
            session = SESSIONS._active["cpu"]
            await second.shutdown()
            stopped_by_the_other = session.stop.is_set()
            await first.shutdown()
            stopped_by_its_own = session.stop.is_set()
            response = await asyncio.wait_for(request, 30)
        return stopped_by_the_other, stopped_by_its_own, response.status_code, SESSIONS.running()

    by_other, by_own, status, running = asyncio.run(main())
    assert not by_other, "another app's shutdown stopped this app's profile"
    assert by_own
    assert status == 200
    assert running == []


def test_sessions_remember_the_app_that_claimed_them() -> None:
    first, second = switches.Claims(), switches.Claims()
    token = CURRENT_OWNER.set(first.id)
    try:
        with SESSIONS.claim("heap", "heap window", 5) as stop:
            second.release_all()
            assert not stop.is_set()
            first.release_all()
            assert stop.is_set()
    finally:
        CURRENT_OWNER.reset(token)


def test_a_dropped_app_lets_go_of_its_switches() -> None:
    app = LifecycleMiddleware(plain_lifespan_app, Settings(lock_profile_fraction=2))
    assert threads.THREAD_STARTS.installed and locks.fraction() == 2
    del app
    gc.collect()
    assert threads.THREAD_STARTS.installed, "a finalizer only queues (it may run inside our locks)"
    switches.release_orphans()  # what the next switch operation does
    assert not threads.THREAD_STARTS.installed and locks.fraction() == 0


def test_the_deepest_stack_depth_asked_is_used_until_its_app_goes() -> None:
    shallow, deep = switches.Claims(), switches.Claims()
    shallow.hook_thread_start(8)
    deep.hook_thread_start(90)
    assert threads.THREAD_STARTS.max_depth == 90
    deep.release_all()
    assert threads.THREAD_STARTS.installed and threads.THREAD_STARTS.max_depth == 8
    shallow.release_all()
    assert not threads.THREAD_STARTS.installed


def test_lock_fractions_of_several_apps_and_of_the_application() -> None:
    coarse, fine = switches.Claims(), switches.Claims()
    coarse.profile_locks(Settings(lock_profile_fraction=10))
    assert locks.fraction() == 10
    fine.profile_locks(Settings(lock_profile_fraction=3))
    assert locks.fraction() == 3  # each app gets at least the detail it asked for
    assert set_lock_profile_fraction(7) == 3
    assert locks.fraction() == 7  # the application's own call wins
    fine.release_all()
    assert locks.fraction() == 7
    assert set_lock_profile_fraction(0) == 7
    assert locks.fraction() == 10  # back to what the remaining app asks for
    coarse.release_all()
    assert locks.fraction() == 0
    assert threading.Lock is ORIGINAL_LOCK


def test_a_fraction_set_behind_our_back_is_left_alone_at_release() -> None:
    claims = switches.Claims()
    claims.profile_locks(Settings(lock_profile_fraction=3))
    locks.set_fraction(5)  # the low-level switch, not through switches
    try:
        claims.release_all()
        assert locks.fraction() == 5
    finally:
        locks.set_fraction(0)


def test_set_lock_profile_fraction_refuses_bad_values() -> None:
    with pytest.raises(ValueError):
        set_lock_profile_fraction(-1)
    with pytest.raises(TypeError):
        set_lock_profile_fraction(True)
    assert locks.fraction() == 0


# --- the allowlist (issue 10 item 19) ---------------------------------------------------------


def _startup_state(settings: Settings) -> tuple[dict[str, object], dict[str, object]]:
    """The switches after startup, and after one request, of an app with ``settings``."""
    async def inner(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await plain_lifespan_app(scope, receive, send)

    async def main() -> tuple[dict[str, object], dict[str, object]]:
        loop = asyncio.get_running_loop()
        middleware = LifecycleMiddleware(inner, settings)
        driver = LifespanDriver(middleware)
        await driver.startup()
        at_startup = _state(loop)
        await middleware({"type": "http", "path": "/"}, None, None)
        after_request = _state(loop)
        await driver.shutdown()
        return at_startup, after_request

    return asyncio.run(main())


def test_nothing_the_allowlist_excludes_is_installed() -> None:
    settings = Settings(profiles=frozenset({"heap", "profile"}), lock_profile_fraction=3)
    at_startup, after_request = _startup_state(settings)
    assert at_startup == ALL_OFF
    assert after_request == ALL_OFF


@pytest.mark.parametrize(("profiles", "expected"), [
    ({"threadcreate"}, {"thread hook": True}),
    ({"mutex"}, {"lock fraction": 3}),
    ({"block"}, {"watchdog": True}),
    ({"goroutine"}, {"factory": True}),
    ({"goroutineleak"}, {"factory": True}),
])
def test_each_switch_is_installed_when_its_profile_is_allowed(
    profiles: set[str], expected: dict[str, object],
) -> None:
    settings = Settings(profiles=frozenset(profiles), lock_profile_fraction=3)
    at_startup, after_request = _startup_state(settings)
    assert at_startup == {**ALL_OFF, **expected}
    assert after_request == {**ALL_OFF, **expected}


def test_a_mounted_app_without_mutex_does_not_patch_locks() -> None:
    app = PprofApp(Settings(profiles=frozenset({"goroutine"}), lock_profile_fraction=3))
    assert locks.fraction() == 0
    allowed = PprofApp(Settings(lock_profile_fraction=3))
    assert locks.fraction() == 3
    allowed.claims.release_all()
    del app


# --- free-threaded Python (issue 10 item 20) --------------------------------------------------


def test_free_threaded_without_the_gil_is_refused_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: False, raising=False)
    for build in (PprofApp, lambda: LifecycleMiddleware(plain_lifespan_app),
                  lambda: install(Starlette()), lambda: set_lock_profile_fraction(1)):
        with pytest.raises(ConfigError) as caught:
            build()
        reason = str(caught.value)
        assert "free-threaded" in reason and "PYTHON_GIL=1" in reason and "\n" not in reason
    assert set_lock_profile_fraction(0) == 0  # switching off is always allowed
    assert locks.fraction() == 0 and threading.Thread.start is ORIGINAL_START


def test_free_threaded_with_the_gil_enabled_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: True, raising=False)
    assert not switches.gil_disabled()
    PprofApp().claims.release_all()


# --- importlib.reload (issue 10 item 7) -------------------------------------------------------


def _run(script: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_reloading_switches_keeps_every_claim_and_releases_it() -> None:
    out = _run("""
        import asyncio, importlib, threading, _thread
        from pyprof_http import Settings, switches
        from pyprof_http.collectors import locks, threads
        from pyprof_http.collectors.loop import WATCHDOGS
        start, original_lock = threading.Thread.start, threading.Lock

        async def main():
            loop = asyncio.get_running_loop()
            old = switches.Claims()
            old.follow(Settings(lock_profile_fraction=4))
            old.start_on(loop, Settings())
            importlib.reload(switches)
            new = switches.Claims()
            new.hook_thread_start(16)
            old.release_all()  # the old claims, the reloaded module: the hook is still needed
            print("after old", threads.THREAD_STARTS.installed, locks.fraction(),
                  WATCHDOGS.is_watching(loop), loop.get_task_factory() is None)
            new.release_all()
            print("after new", threading.Thread.start is start, threading.Lock is original_lock)

        asyncio.run(main())
    """)
    assert out.splitlines() == ["after old True 0 False True", "after new True True"]


def test_reloading_the_lock_modules_while_on_adopts_the_patches() -> None:
    out = _run("""
        import asyncio, importlib, threading, _thread, sys
        import pyprof_http.collectors.locks as locks
        from pyprof_http import _patching
        from pyprof_http.collectors.locks import async_locks, recording, thread_locks
        original_acquire, original_rlock = asyncio.Lock.acquire, threading.RLock
        original_lock = threading.Lock  # _thread.allocate_lock up to 3.12, _thread.lock on 3.13
        locks.set_fraction(1)
        for module in (_patching, recording, thread_locks, async_locks, locks):
            importlib.reload(module)
        lock = threading.Lock()  # RecursionError before
        with lock:
            pass
        assert type(lock) is thread_locks.ProfiledLock, type(lock)
        assert threading.Lock.__pyprof_http_original__ == (original_lock,)
        assert threading.RLock.__pyprof_http_original__ == (original_rlock,)

        async def main():
            alock = asyncio.Lock()
            await alock.acquire()
            waiter = asyncio.create_task(alock.acquire())
            await asyncio.sleep(0)
            alock.release()
            await waiter
            alock.release()

        asyncio.run(main())
        print("on", locks.fraction(), "contentions", locks.contentions())
        locks.set_fraction(0)
        print("off", threading.Lock is original_lock,
              threading.RLock is original_rlock, asyncio.Lock.acquire is original_acquire,
              "acquire" in vars(asyncio.Condition))
    """)
    assert out.splitlines() == ["on 1 contentions 1", "off True True True False"]


def test_reloading_the_threads_module_adopts_the_hook_and_removes_it() -> None:
    out = _run("""
        import importlib, threading
        from pyprof_http.collectors import threads
        start = threading.Thread.start
        threads.THREAD_STARTS.install(32)
        importlib.reload(threads)
        threads.THREAD_STARTS.install(32)  # not stacked
        print("wraps the original", threading.Thread.start.__wrapped__ is start)
        worker = threading.Thread(target=lambda: None, name="after-reload")
        worker.start()
        worker.join()
        print("seen", threads.THREAD_STARTS.stack_of(worker) is not None)
        threads.THREAD_STARTS.uninstall()
        print("removed", threading.Thread.start is start)
    """)
    assert out.splitlines() == ["wraps the original True", "seen True", "removed True"]


def test_stopping_a_side_server_lets_go_of_its_lock_profiling() -> None:
    from pyprof_http import serve_in_background

    server = serve_in_background(port=0, settings=Settings(lock_profile_fraction=2))
    try:
        assert locks.fraction() == 2
    finally:
        server.stop()
    assert locks.fraction() == 0 and threading.Lock is ORIGINAL_LOCK
