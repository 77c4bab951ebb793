"""Thread-pool work a request submits carries the request's labels, read from another thread.

Each way work enters a thread (anyio/Starlette, ``asyncio.to_thread``, ``run_in_executor`` with
and without a copied context) is run under a request, and what a sampler thread would read for
the worker (``thread_request(ident)``) is recorded from inside the work.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any

import anyio.to_thread
import pytest
from starlette.concurrency import run_in_threadpool

from pyprof_http import request_labels, thread_labels
from pyprof_http.request_labels import enter, leave, thread_request

pytestmark = pytest.mark.usefixtures("request_path")  # both request paths

SCOPE = {"type": "http", "path": "/sync/{x}", "headers": [(b"x-request-id", b"rid-thread")]}


@pytest.fixture
def installed() -> Iterator[None]:
    was = thread_labels.installed()
    thread_labels.install()
    yield
    if not was:
        thread_labels.uninstall()


def seen_from_another_thread() -> tuple[str, str] | None:
    """What a sampler thread reads for the calling thread."""
    ident = threading.get_ident()
    result: list[tuple[str, str] | None] = []
    reader = threading.Thread(target=lambda: result.append(thread_request(ident)))
    reader.start()
    reader.join()
    return result[0]


async def via_starlette() -> Any:
    return await run_in_threadpool(seen_from_another_thread)


async def via_anyio() -> Any:
    return await anyio.to_thread.run_sync(seen_from_another_thread)


async def via_to_thread() -> Any:
    return await asyncio.to_thread(seen_from_another_thread)


async def via_executor_with_context() -> Any:
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(
        None, functools.partial(context.run, seen_from_another_thread))


async def via_own_executor() -> Any:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return await asyncio.get_running_loop().run_in_executor(pool, seen_from_another_thread)


WAYS: list[Callable[[], Any]] = [via_starlette, via_anyio, via_to_thread,
                                 via_executor_with_context, via_own_executor]


@pytest.mark.parametrize("way", WAYS, ids=lambda f: f.__name__)
def test_work_submitted_by_a_request_is_labelled_in_its_thread(
        installed: None, way: Callable[[], Any]) -> None:
    async def main() -> tuple[Any, Any]:
        entered = enter(SCOPE)
        try:
            inside = await way()
        finally:
            leave(entered)
        outside = await way()  # no request: nothing labelled
        return inside, outside

    inside, outside = asyncio.run(main())
    assert inside == ("/sync/{x}", "rid-thread")
    assert outside is None
    assert request_labels._BY_THREAD == {}  # every worker let go after its call


@pytest.fixture
def switched_off() -> Iterator[None]:
    """Off for the test (apps built by other tests may hold it on), then as it was."""
    was = thread_labels.installed()
    thread_labels.uninstall()
    yield
    if was:
        thread_labels.install()


def test_switched_off_nothing_is_wrapped(switched_off: None) -> None:
    assert not thread_labels.installed()

    async def main() -> Any:
        entered = enter(SCOPE)
        try:
            return await via_to_thread()
        finally:
            leave(entered)

    assert asyncio.run(main()) is None


def test_install_twice_and_uninstall_put_the_originals_back(switched_off: None) -> None:
    submit = concurrent.futures.ThreadPoolExecutor.submit
    run_sync = anyio.to_thread.run_sync
    thread_labels.install()
    thread_labels.install()
    assert concurrent.futures.ThreadPoolExecutor.submit is not submit
    assert anyio.to_thread.run_sync is not run_sync
    thread_labels.uninstall()
    assert concurrent.futures.ThreadPoolExecutor.submit is submit
    assert anyio.to_thread.run_sync is run_sync


def test_nested_work_restores_the_outer_request() -> None:
    outer, inner = request_labels.Request(SCOPE), request_labels.Request(
        {"type": "http", "path": "/inner", "headers": []})
    seen: list[Any] = []

    def body() -> None:
        seen.append(thread_request(threading.get_ident()))
        request_labels.InThread(lambda: seen.append(
            thread_request(threading.get_ident())), inner)()
        seen.append(thread_request(threading.get_ident()))

    request_labels.InThread(body, outer)()
    assert [s[0] if s else None for s in seen] == ["/sync/{x}", "/inner", "/sync/{x}"]
    assert request_labels._BY_THREAD == {}


def test_cpu_and_wall_samples_of_the_worker_carry_the_request(installed: None) -> None:
    """A sampler tick (on this thread) while a worker runs a request's work labels its sample."""
    from pyprof_http.collectors import cpu

    started, release = threading.Event(), threading.Event()
    samplers = {mode: cpu.Sampler(mode, 64, set) for mode in ("cpu", "wall")}  # type: ignore[arg-type]

    def thread_labels_worker_spins() -> None:
        started.set()
        while not release.is_set():
            sum(range(100))

    async def main() -> None:
        entered = enter(SCOPE)
        try:
            work = asyncio.to_thread(thread_labels_worker_spins)
            task = asyncio.ensure_future(work)
            await asyncio.to_thread(started.wait)
            for sampler in samplers.values():
                sampler.baseline()
            for _ in range(5_000):  # bounded: a broken sampler fails below instead of hanging
                if all(any("thread_labels_worker_spins" in str(s.stack)
                              for s in sampler.profile(100, 0, 1, ()).samples)
                       for sampler in samplers.values()):
                    break
                await asyncio.to_thread(sum, range(10_000))  # let the worker burn some CPU
                for sampler in samplers.values():
                    sampler.tick()
            release.set()
            await task
        finally:
            release.set()
            leave(entered)

    asyncio.run(main())
    for sampler in samplers.values():
        worker = [s for s in sampler.profile(100, 0, 1, ()).samples
                  if any(f.function.endswith("thread_labels_worker_spins") for f in s.stack)]
        assert worker and all(s.labels.get("route") == "/sync/{x}"
                              and s.labels.get("request_id") == "rid-thread" for s in worker)
