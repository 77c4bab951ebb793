"""Demo service: run ``make demo`` and open http://127.0.0.1:8000/debug/pprof/.

At startup it leaves the shapes that make a stack dump interesting: tasks parked on an Event,
consumers on a Queue, a periodic sleeper, a nested await chain, a gather, a lock holder and its
waiters, and worker threads waiting on a condition. Routes add more on demand (``/work`` runs
nested awaits, ``/sync`` runs on the threadpool, ``/spawn?n=100`` parks more tasks, ``/stall``
blocks the event loop for ``/block``, ``/contend`` makes threads fight over a lock for ``/mutex``,
``/leak`` leaks four tasks for ``/goroutineleak`` and ``/goroutine?min_age``, ``/hogged`` is a
quick request made slow by another task hogging the loop: see ``/trace``).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Query

import pyprof_http

shutdown = asyncio.Event()
orders: asyncio.Queue[int] = asyncio.Queue()
inventory_lock = asyncio.Lock()
_background: set[asyncio.Task[None]] = set()
_stop_threads = threading.Event()


async def wait_for_shutdown() -> None:
    await shutdown.wait()


async def order_consumer(n: int) -> None:
    while True:
        order = await orders.get()
        await asyncio.sleep(0.01 * (order % 3))
        orders.task_done()


async def heartbeat() -> None:
    while True:
        await asyncio.sleep(30)


async def fetch_price(sku: str) -> float:
    await asyncio.sleep(3600)  # an upstream that never answers
    return 1.0


async def price_lookup(sku: str) -> float:
    return await fetch_price(sku)


async def checkout_pipeline() -> None:
    await asyncio.gather(price_lookup("apple"), price_lookup("pear"))


async def hold_inventory() -> None:
    async with inventory_lock:
        await shutdown.wait()


async def reserve_inventory() -> None:
    async with inventory_lock:
        pass


def report_worker(cond: threading.Condition) -> None:
    with cond:
        while not _stop_threads.is_set():
            cond.wait(timeout=1.0)


reports: asyncio.Queue[int] = asyncio.Queue()


def build_report(ms: int) -> None:
    time.sleep(ms / 1000)  # stands for a CPU-heavy render done in async code


async def report_builder() -> None:
    """A background task that hogs the loop: each report is one step of ``ms`` milliseconds."""
    while True:
        ms = await reports.get()
        with pyprof_http.span("report.build", ms=ms):
            build_report(ms)


def _spawn(coro: object, name: str) -> None:
    task = asyncio.create_task(coro, name=name)  # type: ignore[arg-type]
    _background.add(task)
    task.add_done_callback(_background.discard)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    for i in range(3):
        _spawn(wait_for_shutdown(), f"shutdown-waiter-{i}")
    for i in range(4):
        _spawn(order_consumer(i), f"order-consumer-{i}")
    _spawn(heartbeat(), "heartbeat")
    _spawn(report_builder(), "report-builder")
    _spawn(checkout_pipeline(), "checkout-pipeline")
    _spawn(hold_inventory(), "inventory-holder")
    await asyncio.sleep(0)
    for i in range(2):
        _spawn(reserve_inventory(), f"inventory-waiter-{i}")
    cond = threading.Condition()
    workers = [threading.Thread(target=report_worker, args=(cond,), name=f"report-worker-{i}",
                                daemon=True) for i in range(2)]
    for worker in workers:
        worker.start()
    yield
    shutdown.set()
    _stop_threads.set()
    for task in list(_background):
        task.cancel()
    await asyncio.gather(*_background, return_exceptions=True)
    for worker in workers:
        worker.join(timeout=2)


app = FastAPI(title="pyprof_http demo", lifespan=lifespan)
pyprof_http.install(app)


@app.get("/")
async def root() -> dict[str, str]:
    return {"profiler": "/debug/pprof/",
            "try": "/work /sync /spawn?n=100 /order /stall?ms=250 /contend?threads=4"}


@app.get("/work")
async def work() -> dict[str, float]:
    """Nested awaits with a little CPU in between."""
    total = 0.0
    for _ in range(3):
        total += await price_step()
    return {"total": total}


async def price_step() -> float:
    await asyncio.sleep(0.005)
    return sum(i * 0.5 for i in range(2000))


@app.get("/sync")
def sync_route() -> dict[str, str]:
    """Runs on Starlette's threadpool: shows up as a worker thread in the dump."""
    digest = b""
    deadline = time.monotonic() + 0.05
    while time.monotonic() < deadline:
        digest = hashlib.sha256(digest).digest()
    time.sleep(0.05)
    return {"digest": digest.hex()}


@app.get("/spawn")
async def spawn(n: int = Query(10, ge=1, le=10_000)) -> dict[str, int]:
    """Park ``n`` more tasks on the shutdown event (try n=10000, then goroutine?debug=1)."""
    for i in range(n):
        _spawn(wait_for_shutdown(), f"parked-{len(_background)}-{i}")
    return {"tasks": len(_background)}


@app.get("/order")
async def order(n: int = Query(1, ge=1, le=1000)) -> dict[str, int]:
    for i in range(n):
        await orders.put(i)
    return {"queued": orders.qsize()}


def parse_report(seconds: float) -> None:
    time.sleep(seconds)  # stands for a sync driver call or a CPU-heavy parse


@app.get("/stall")
async def stall(ms: int = Query(250, ge=1, le=5000)) -> dict[str, int]:
    """The classic asyncio mistake, a blocking call in ``async def``: see /debug/pprof/block."""
    parse_report(ms / 1000)
    return {"blocked_ms": ms}


def update_cache(lock: threading.Lock, hold_s: float) -> None:
    with lock:
        time.sleep(hold_s)


@app.get("/contend")
async def contend(threads: int = Query(4, ge=2, le=32)) -> dict[str, int]:
    """Threads fighting over one lock: see /debug/pprof/mutex (start the demo with
    PYPROF_LOCK_PROFILE_FRACTION=1; locks are seen when created after it is on)."""
    lock = threading.Lock()
    await asyncio.gather(*(asyncio.to_thread(update_cache, lock, 0.02) for _ in range(threads)))
    return {"threads": threads}


# --- /leak: the four ways a task leaks (for /goroutineleak and /goroutine?min_age) ----------

forgotten_jobs: asyncio.Queue[str] = asyncio.Queue()
"""A module-level queue nobody feeds: its waiters are reachable, so never garbage."""


async def await_reply(reply: asyncio.Future[str]) -> None:
    await reply  # nobody else has the future


async def wait_for_signal() -> None:
    signal = asyncio.Event()
    await signal.wait()  # only this task holds the event


async def consume_jobs(jobs: asyncio.Queue[str]) -> None:
    await jobs.get()  # its creator dropped the queue (or, for forgotten_jobs, never feeds it)


@app.get("/leak")
async def leak() -> dict[str, int]:
    """Leak one task of each kind; three are garbage, found by /goroutineleak, the fourth is
    parked on a module-level queue, found by /goroutine?min_age=N once it is N s old."""
    loop = asyncio.get_running_loop()
    asyncio.create_task(await_reply(loop.create_future()), name="leak-future")  # noqa: RUF006
    asyncio.create_task(wait_for_signal(), name="leak-event")  # noqa: RUF006
    asyncio.create_task(consume_jobs(asyncio.Queue()), name="leak-queue")  # noqa: RUF006
    asyncio.create_task(consume_jobs(forgotten_jobs), name="leak-forgotten")  # noqa: RUF006
    return {"leaked": 4}


@app.get("/hogged")
async def hogged(ms: int = Query(80, ge=1, le=5000)) -> dict[str, int]:
    """A quick handler made slow by its neighbour: it queues a report (the report-builder task
    will block the loop for ``ms``), then awaits a 1 ms lookup that is ready long before the
    loop comes back to it. ``/debug/pprof/trace?debug=1`` shows the wait and who caused it."""
    reports.put_nowait(ms)
    pyprof_http.mark("lookup.start", sku="apple")
    async with pyprof_http.span("lookup", sku="apple"):
        await asyncio.sleep(0.001)
    return {"neighbour_ms": ms}
