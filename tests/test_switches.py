"""switches: every process-wide switch stays on while any app holds it, and only what the
allowlist lets in is installed.

Two apps in one process (hypercorn dispatching lifespan to several apps, a TestClient beside a
live app) used to share module singletons: the first to shut down switched off the other's task
factory, watchdog, Thread.start hook, lock profiling and running profiles.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import subprocess
import sys
import textwrap
import threading
import warnings
from collections.abc import AsyncIterator, Iterator
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
from pyprof_http.collectors.gc_leaks import GC_LEAKS
from pyprof_http.collectors.loop import WATCHDOGS
from pyprof_http.collectors.session import CURRENT_OWNER, SESSIONS
from pyprof_http.lifecycle import LifecycleMiddleware

ORIGINAL_START = threading.Thread.start
ORIGINAL_LOCK = threading.Lock


def _factory_is_ours(loop: asyncio.AbstractEventLoop) -> bool:
    return bool(getattr(loop.get_task_factory(), "_pyprof_http", False))


def _everything_off() -> bool:
    return (threading.Thread.start is ORIGINAL_START and threading.Lock is ORIGINAL_LOCK
            and locks.fraction() == 0 and not WATCHDOGS.watching()
            and not GC_LEAKS.watched_loops())


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
        "leak recorder": GC_LEAKS.watching(loop),
    }


ALL_ON = {"factory": True, "watchdog": True, "thread hook": True, "lock fraction": 3,
          "leak recorder": True}
ALL_OFF = {"factory": False, "watchdog": False, "thread hook": False, "lock fraction": 0,
           "leak recorder": False}


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


def test_the_server_handler_comes_back_when_the_last_app_shuts_down_off_the_main_thread(
) -> None:
    """The main-thread app chains the handler; a TestClient-like app on another thread shuts
    down last, where no handler can be set: ours used to stay in front of the server's for
    good, stopping profiles on every later SIGTERM."""
    calls: list[int] = []

    def server_handler(number: int, frame: object) -> None:
        calls.append(number)

    previous = signal.signal(signal.SIGTERM, server_handler)
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, name="beside-loop")
    runner.start()
    try:
        main_app = LifespanDriver(LifecycleMiddleware(plain_lifespan_app, Settings()))
        beside = LifespanDriver(LifecycleMiddleware(plain_lifespan_app, Settings()))

        async def start_main() -> None:
            await main_app.startup()

        async def stop_main() -> None:
            await main_app.shutdown()

        main_loop = asyncio.new_event_loop()
        try:
            main_loop.run_until_complete(start_main())
            asyncio.run_coroutine_threadsafe(beside.startup(), loop).result(10)
            chained = signal.getsignal(signal.SIGTERM) is not server_handler
            main_loop.run_until_complete(stop_main())
        finally:
            main_loop.close()
        asyncio.run_coroutine_threadsafe(beside.shutdown(), loop).result(10)
        signal.raise_signal(signal.SIGTERM)  # ours, if still there, must only pass it on
        passed_on = (calls == [signal.SIGTERM], SESSIONS.shutting_down)
        switches.release_orphans()  # any switch operation on the main thread
        restored = signal.getsignal(signal.SIGTERM) is server_handler
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(10)
        loop.close()
        signal.signal(signal.SIGTERM, previous)
        SESSIONS.shutting_down = False
    assert chained
    assert passed_on == (True, False), "no app holds the chain: profiles are not stopped"
    assert restored


def test_one_app_under_two_servers_keeps_its_switches_until_the_last_shutdown() -> None:
    """A live server and a TestClient of the same module-level app: the TestClient's shutdown
    used to release the app's every claim, switching the live server's loop factory and
    watchdog, the Thread.start hook and lock profiling off."""
    app = install(Starlette(), Settings(lock_profile_fraction=3))
    loops = [asyncio.new_event_loop() for _ in range(2)]
    runners = [threading.Thread(target=loop.run_forever, name=f"server-{n}")
               for n, loop in enumerate(loops)]
    for runner in runners:
        runner.start()

    def on(loop: asyncio.AbstractEventLoop, step: Any) -> None:
        asyncio.run_coroutine_threadsafe(step(), loop).result(10)

    try:
        live = LifespanDriver(app)
        beside = LifespanDriver(app)
        on(loops[0], live.startup)
        on(loops[1], beside.startup)
        both = [_state(loop) for loop in loops]
        on(loops[1], beside.shutdown)
        after_beside = [_state(loop) for loop in loops]
        on(loops[0], live.shutdown)
        after_live = [_state(loop) for loop in loops]
    finally:
        for loop, runner in zip(loops, runners, strict=True):
            loop.call_soon_threadsafe(loop.stop)
            runner.join(10)
            loop.close()
    assert both == [ALL_ON, ALL_ON]
    assert after_beside == [ALL_ON, {**ALL_ON, "factory": False, "watchdog": False,
                                     "leak recorder": False}]
    assert after_live == [ALL_OFF, ALL_OFF]


def test_a_lifespan_whose_loop_closed_without_a_shutdown_does_not_hold_the_app() -> None:
    app = install(Starlette(), Settings(lock_profile_fraction=3))
    driver = LifespanDriver(app)

    async def start_and_abandon() -> None:
        await driver.startup()
        assert driver.task is not None
        driver.task.cancel()  # the server went away without a shutdown
        with contextlib.suppress(asyncio.CancelledError):
            await driver.task

    abandoned = asyncio.new_event_loop()
    abandoned.run_until_complete(start_and_abandon())
    abandoned.close()

    async def main() -> dict[str, object]:
        live = LifespanDriver(app)
        await live.startup()
        await live.shutdown()
        return _state(asyncio.get_running_loop())

    assert asyncio.run(main()) == ALL_OFF


def test_an_app_whose_startup_fails_lets_go_of_its_switches(server_sigterm: Any) -> None:
    """The server sends no shutdown after ``lifespan.startup.failed``: the failed app's claims
    used to keep every switch on after the other app's shutdown, for as long as it lived."""
    settings = Settings(lock_profile_fraction=3)

    @contextlib.asynccontextmanager
    async def boom(app: Any) -> AsyncIterator[None]:
        raise RuntimeError("startup failed")
        yield

    failing = install(Starlette(lifespan=boom), settings)

    async def main() -> tuple[list[str], dict[str, object], dict[str, object], bool]:
        loop = asyncio.get_running_loop()
        good = LifespanDriver(LifecycleMiddleware(plain_lifespan_app, settings))
        await good.startup()
        sent: list[str] = []

        async def receive() -> dict[str, Any]:
            return {"type": "lifespan.startup"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message["type"])

        with pytest.raises(RuntimeError, match="startup failed"):
            await failing({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                          receive, send)
        during = _state(loop)
        await good.shutdown()
        return sent, during, _state(loop), signal.getsignal(signal.SIGTERM) is server_sigterm

    sent, during, after, restored = asyncio.run(main())
    assert sent == ["lifespan.startup.failed"]
    assert during == ALL_ON, "the other app still holds everything"
    assert after == ALL_OFF and restored, "the failed app (still referenced) holds nothing"


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


def test_claims_from_many_threads_each_with_its_own_loop_are_all_let_go() -> None:
    """200 requests on 8 threads, each thread with its own loop, two apps claiming the same
    loops at once: every loop gets the factory, and after both apps let go none keeps it."""
    first, second = switches.Claims(), switches.Claims()
    barrier = threading.Barrier(8)
    seen: list[tuple[bool, int]] = []
    loops: list[asyncio.AbstractEventLoop] = []

    def serve() -> None:
        async def request(n: int) -> None:
            (first if n % 2 else second).task_factory(asyncio.get_running_loop())
            await asyncio.sleep(0)

        async def main() -> None:
            loops.append(asyncio.get_running_loop())
            barrier.wait(10)
            await asyncio.gather(*(request(n) for n in range(25)))
            loop = asyncio.get_running_loop()
            seen.append((_factory_is_ours(loop), len(switches._factories[loop])))

        loop = asyncio.new_event_loop()
        loop.run_until_complete(main())

    workers = [threading.Thread(target=serve, name=f"requests-{n}") for n in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    first.release_all()
    second.release_all()
    assert seen == [(True, 2)] * 8
    assert [loop.get_task_factory() for loop in loops] == [None] * 8
    assert not any(loop in switches._factories for loop in loops)
    for loop in loops:
        loop.close()


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


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_can_switch_while_a_parents_thread_held_the_switch_lock() -> None:
    """A release holds the switches' lock while it joins a watchdog (up to seconds): a fork
    then (gunicorn, multiprocessing) gave a child whose every app construction hung."""
    out = _run("""
        import os, signal, threading, warnings
        from pyprof_http import Settings, set_lock_profile_fraction, switches
        from pyprof_http.collectors import locks
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        taken, done = threading.Event(), threading.Event()
        def release_in_progress():
            with switches._lock:
                taken.set()
                done.wait()
        threading.Thread(target=release_in_progress, daemon=True).start()
        taken.wait()
        pid = os.fork()
        if pid == 0:
            signal.alarm(20)  # a hung child must not outlive the test
            claims = switches.Claims()
            claims.follow(Settings(lock_profile_fraction=2))
            assert locks.fraction() == 2
            claims.release_all()
            set_lock_profile_fraction(0)
            os._exit(0 if locks.fraction() == 0 else 1)
        _, status = os.waitpid(pid, 0)
        done.set()
        print("child exit", os.waitstatus_to_exitcode(status))
    """)
    assert out.splitlines() == ["child exit 0"]


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
    ({"goroutineleak"}, {"factory": True, "leak recorder": True}),
])
def test_each_switch_is_installed_when_its_profile_is_allowed(
    profiles: set[str], expected: dict[str, object],
) -> None:
    settings = Settings(profiles=frozenset(profiles), lock_profile_fraction=3)
    at_startup, after_request = _startup_state(settings)
    assert at_startup == {**ALL_OFF, **expected}
    assert after_request == {**ALL_OFF, **expected}


def test_heap_tracing_at_start_needs_heap_on_the_allowlist() -> None:
    """tracemalloc slows every allocation x3-x33: an app that excludes /heap used to start it."""
    import tracemalloc

    assert not tracemalloc.is_tracing()
    try:
        PprofApp(Settings(profiles=frozenset({"goroutine"}), heap_trace_at_start=True))
        excluded = tracemalloc.is_tracing()
        PprofApp(Settings(profiles=frozenset({"heap"}), heap_trace_at_start=True))
        allowed = tracemalloc.is_tracing()
    finally:
        tracemalloc.stop()
    assert (excluded, allowed) == (False, True)


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


def test_a_side_server_that_cannot_bind_lets_go_of_its_lock_profiling() -> None:
    """It raises, so nobody can call stop(): its claims used to stay (lock patches on) for as
    long as the exception, and so the app, was referenced."""
    import socket

    from pyprof_http import serve_in_background

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError) as raised:
            serve_in_background(port=taken.getsockname()[1],
                                settings=Settings(lock_profile_fraction=2))
        assert raised.traceback  # (keeps the failed call's frame, and its app, alive)
        assert locks.fraction() == 0 and threading.Lock is ORIGINAL_LOCK


def test_leak_recorder_chained_once_per_loop_for_two_apps_and_put_back_by_the_last() -> None:
    def app_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None: ...

    async def main() -> list[object]:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(app_handler)
        first = LifespanDriver(LifecycleMiddleware(plain_lifespan_app, Settings()))
        second = LifespanDriver(LifecycleMiddleware(plain_lifespan_app, Settings()))
        await first.startup()
        await second.startup()
        chained = loop.get_exception_handler()
        seen: list[object] = [getattr(chained, "previous", None)]
        await first.shutdown()
        seen.append(loop.get_exception_handler() is chained)
        await second.shutdown()
        seen.append(loop.get_exception_handler())
        return seen

    previous, kept, after = asyncio.run(main())
    assert previous is app_handler  # one chain, in front of the app's handler
    assert kept is True
    assert after is app_handler


def test_a_mounted_app_records_leaks_from_its_first_request() -> None:
    app = PprofApp(Settings(profiles=frozenset({"goroutineleak"})))

    async def main() -> tuple[bool, bool]:
        loop = asyncio.get_running_loop()
        before = GC_LEAKS.watching(loop)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://127.0.0.1") as client:
            await client.get("/")
        during = GC_LEAKS.watching(loop)
        app.claims.release_all()
        return before, during

    assert asyncio.run(main()) == (False, True)
