"""What ``/goroutineleak`` costs: the request (a full collection) and the always-on handler.

Run:  .venv/bin/python benchmarks/goroutineleak.py [--objects 100000] [--tasks 10000]
          [--repeat 10] [--leaks 10000]

1. Request latency and loop stall. A child uvicorn server (this file with ``--serve``) holds
   ``--objects`` live container objects and parks ``--tasks`` healthy tasks (on an Event that
   is reachable), with a 1 ms ticker task whose longest gap is read and reset through
   ``GET /maxgap``. The client times ``GET /ping``, ``GET /debug/pprof/goroutineleak?debug=1``
   (gc=1: describe the pending tasks, then a full collection on a worker thread) and with
   ``gc=0``, plus ``GET /collect`` (a bare ``gc.collect()`` on the loop, for reference), each
   bracketed by ``/maxgap`` so the loop stall during that very request is known. The gc=1 series
   is measured twice (A and A') for the noise figure.
2. Handler cost per destroyed task, in this process: ``--leaks`` leaked tasks collected by one
   ``gc.collect()`` with only an application handler (a no-op) on the loop, and with the
   recorder chained in front of it; each measured 9 times, interleaved, medians compared, and
   the no-recorder case twice (A/A).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))

WARMUP = 2


def serve(n_objects: int, n_tasks: int) -> None:
    import contextlib
    from collections.abc import AsyncIterator

    from _server import serve_on_free_port
    from fastapi import FastAPI
    from starlette.responses import JSONResponse, PlainTextResponse

    import pyprof_http

    state = {"max_gap_s": 0.0}
    ballast = [[i] for i in range(n_objects)]  # live (gc-tracked) objects a collection examines

    async def parked(event: asyncio.Event) -> None:
        await event.wait()

    async def ticker() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            state["max_gap_s"] = max(state["max_gap_s"], now - last)
            last = now

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        release = asyncio.Event()
        tasks = [asyncio.create_task(parked(release)) for _ in range(n_tasks)]
        tick = asyncio.create_task(ticker())
        yield
        tick.cancel()
        release.set()
        await asyncio.gather(*tasks, tick, return_exceptions=True)

    app = FastAPI(lifespan=lifespan)

    @app.get("/ping")
    async def ping() -> PlainTextResponse:
        return PlainTextResponse(str(len(ballast)))

    @app.get("/collect")
    async def collect() -> PlainTextResponse:
        return PlainTextResponse(str(gc.collect()))

    @app.get("/maxgap")
    async def maxgap() -> JSONResponse:
        gap, state["max_gap_s"] = state["max_gap_s"], 0.0
        return JSONResponse({"max_gap_ms": gap * 1000.0})

    pyprof_http.install(app)
    serve_on_free_port(app)


def _series(client: Any, base: str, path: str, repeat: int) -> tuple[list[float], list[float]]:
    for _ in range(WARMUP):
        client.get(base + path).raise_for_status()
    times, stalls = [], []
    for _ in range(repeat):
        client.get(base + "/maxgap")
        started = time.perf_counter()
        client.get(base + path).raise_for_status()
        times.append((time.perf_counter() - started) * 1000)
        stalls.append(client.get(base + "/maxgap").json()["max_gap_ms"])
    return times, stalls


def request_latency(n_objects: int, n_tasks: int, repeat: int) -> None:
    import httpx
    from _server import ServerProcess

    args = [sys.executable, __file__, "--serve", "--objects", str(n_objects),
            "--tasks", str(n_tasks)]
    with ServerProcess(args) as server, httpx.Client(timeout=120) as client:
        base = f"http://127.0.0.1:{server.port}"
        leak = "/debug/pprof/goroutineleak?debug=1"
        rows = {}
        rows["/ping"] = _series(client, base, "/ping", repeat)
        rows["goroutineleak gc=1 (A)"] = _series(client, base, leak, repeat)
        rows["goroutineleak gc=0"] = _series(client, base, leak + "&gc=0", repeat)
        rows["gc.collect() on the loop"] = _series(client, base, "/collect", repeat)
        rows["goroutineleak gc=1 (A')"] = _series(client, base, leak, repeat)
    print(f"\n1. {n_objects:,} live objects, {n_tasks:,} parked healthy tasks, "
          f"{repeat} requests each (median / max)")
    print(f"{'request':28} | {'latency ms':>18} | {'loop stall ms':>18}")
    for name, (times, stalls) in rows.items():
        print(f"{name:28} | {statistics.median(times):8.1f} / {max(times):7.1f} | "
              f"{statistics.median(stalls):8.1f} / {max(stalls):7.1f}")
    a = statistics.median(rows["goroutineleak gc=1 (A)"][0])
    a2 = statistics.median(rows["goroutineleak gc=1 (A')"][0])
    bare = statistics.median(rows["gc.collect() on the loop"][1])
    ours = statistics.median(rows["goroutineleak gc=1 (A)"][1])
    print(f"A/A noise (gc=1 latency, A'/A): {a2 / a:.2f}")
    print(f"loop stall during goroutineleak vs a bare gc.collect() on the loop: "
          f"{ours / bare:.2f}x")


async def _leak() -> None:
    await asyncio.Event().wait()


def _collect_leaks(n: int, recorder: bool) -> float:
    """Seconds for one gc.collect() that destroys ``n`` leaked tasks."""
    from pyprof_http.collectors.gc_leaks import GC_LEAKS
    from pyprof_http.loops import ORIGINS

    async def main() -> float:
        loop = asyncio.get_running_loop()
        ORIGINS.install_factory(loop)
        loop.set_exception_handler(lambda _loop, _context: None)
        if recorder:
            GC_LEAKS.watch(loop)
        for _ in range(n):
            asyncio.create_task(_leak())  # noqa: RUF006 (the leak measured)
        await asyncio.sleep(0)
        started = time.perf_counter()
        gc.collect()
        took = time.perf_counter() - started
        if recorder:
            GC_LEAKS.unwatch(loop)
            GC_LEAKS.clear()
        return took

    gc.disable()  # only the measured collection finds them
    try:
        return asyncio.run(main())
    finally:
        gc.enable()


def handler_cost(n: int) -> None:
    runs: dict[str, list[float]] = {"app handler only (A)": [], "app handler only (A')": [],
                                    "recorder + app handler": []}
    _collect_leaks(n, True)  # warm-up
    for _ in range(9):
        runs["app handler only (A)"].append(_collect_leaks(n, False))
        runs["recorder + app handler"].append(_collect_leaks(n, True))
        runs["app handler only (A')"].append(_collect_leaks(n, False))
    print(f"\n2. one gc.collect() destroying {n:,} leaked tasks (median of 9)")
    med = {k: statistics.median(v) for k, v in runs.items()}
    for name, value in med.items():
        print(f"{name:26} | {value * 1000:8.1f} ms | {value / n * 1e6:6.2f} us per task")
    base = med["app handler only (A)"]
    again = med["app handler only (A')"]
    print(f"A/A noise: {again / base:.2f}")
    print(f"recorder vs none: {med['recorder + app handler'] / base:.2f}x; cost of the "
          f"recorder per destroyed task: {(med['recorder + app handler'] - base) / n * 1e6:.1f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true")
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--leaks", type=int, default=10_000)
    args = parser.parse_args()
    if args.serve:
        serve(args.objects, args.tasks)
        return
    request_latency(args.objects, args.tasks, args.repeat)
    handler_cost(args.leaks)


if __name__ == "__main__":
    main()
