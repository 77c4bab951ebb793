"""Lock waits in thread-pool work a request submitted without copying its context
(``run_in_executor(pool, fn)``) carry the request's route: the waiter's thread says which
request's work it runs (``request_labels.InThread``), where its context cannot."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

from lock_helpers import (
    contention_waiter,
    samples_with,
    switched_off_after,  # noqa: F401  (autouse: nothing patched before and after)
    wait_until_blocked,
)

from pyprof_http import thread_labels
from pyprof_http.collectors import locks
from pyprof_http.request_labels import enter, leave

SCOPE = {"type": "http", "path": "/pool", "headers": [(b"x-request-id", b"mutex-1")]}


def test_a_lock_wait_in_executor_work_carries_the_route() -> None:
    was = thread_labels.installed()
    thread_labels.install()
    locks.set_fraction(1)
    lock = threading.Lock()
    waiting: list[int | None] = []

    def work() -> None:
        waiting.append(threading.get_ident())
        contention_waiter(lock)

    async def main() -> None:
        entered = enter(SCOPE)
        try:
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                with lock:  # held: the worker's acquire is contended
                    future = asyncio.get_running_loop().run_in_executor(pool, work)
                    while not waiting:
                        await asyncio.sleep(0.001)
                    await asyncio.to_thread(wait_until_blocked, waiting)
                await future
        finally:
            leave(entered)

    try:
        asyncio.run(main())
        samples = samples_with(locks.snapshot(64), "contention_waiter")
    finally:
        if not was:
            thread_labels.uninstall()
    assert samples and all(s.labels.get("route") == "/pool" for s in samples)
