"""Latency of the ``goroutine`` endpoints under a real uvicorn server.

Run:  .venv/bin/python benchmarks/stacks.py [--tasks 1000 10000] [--threads 100] [--repeat 15]
          [--concurrent 1 25 50 200] [--concurrent-tasks 2000]

For each task count N this script starts a fresh uvicorn server in a child process (this same
file, in ``--serve`` mode) on a free 127.0.0.1 port. The served FastAPI app has
``pyprof_http.install(app)``, and at startup parks N asyncio tasks (each awaits an
``asyncio.Event`` through a 3-level coroutine chain), starts T threads blocked on a
``threading.Event``, and runs a 1 ms ticker task that records the longest gap between its ticks
(``GET /maxgap`` returns it and resets it). The client here then times ``GET /ping`` (baseline)
and ``GET /debug/pprof/goroutine?debug=0|1|2``: 2 warm-up requests, then ``--repeat`` timed ones,
each bracketed by ``/maxgap`` calls, so the loop stall seen during that very request is known.

Then, against a server parking ``--concurrent-tasks`` tasks (default 2,000), it fires
C concurrent ``goroutine?debug=2`` requests for each C in ``--concurrent`` and prints the worst
loop stall and the slowest response of the burst (target: loop lateness during 100 concurrent
dumps no more than one dump's time).

Prints the tables and the performance targets with PASS/MISS. Only loopback traffic; the server is
stopped (SIGINT, then SIGKILL after a grace period) whatever happens.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass

from _server import ServerProcess, serve_on_free_port

ENDPOINTS = (
    ("/ping", "/ping"),
    ("debug=0", "/debug/pprof/goroutine?debug=0"),
    ("debug=1", "/debug/pprof/goroutine?debug=1"),
    ("debug=2", "/debug/pprof/goroutine?debug=2"),
)
TARGETS_MS = {"debug=1": 150.0, "debug=2": 500.0}
TARGET_TASKS, TARGET_THREADS = 10_000, 100
WARMUP = 2
STARTUP_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 60.0
STOP_GRACE_S = 15.0


# --------------------------------------------------------------------------------------------
# Server side (runs in the child process)
# --------------------------------------------------------------------------------------------


def serve(n_tasks: int, n_threads: int, loop_impl: str) -> None:
    """Build the app, bind a free loopback port, print it, serve until SIGINT/SIGTERM."""
    import asyncio
    import contextlib
    import threading
    from collections.abc import AsyncIterator

    from fastapi import FastAPI
    from starlette.responses import JSONResponse, PlainTextResponse

    import pyprof_http

    state = {"max_gap_s": 0.0, "parked": 0}
    release_threads = threading.Event()

    async def level3(event: asyncio.Event) -> None:
        state["parked"] += 1
        await event.wait()

    async def level2(event: asyncio.Event) -> None:
        await level3(event)

    async def level1(event: asyncio.Event) -> None:
        await level2(event)

    async def ticker() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            state["max_gap_s"] = max(state["max_gap_s"], now - last)
            last = now

    def blocked_thread() -> None:
        release_threads.wait()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        release_tasks = asyncio.Event()
        threads = [
            threading.Thread(target=blocked_thread, name=f"bench-blocked-{i}", daemon=True)
            for i in range(n_threads)
        ]
        for t in threads:
            t.start()
        tasks = [asyncio.create_task(level1(release_tasks), name=f"parked-{i}")
                 for i in range(n_tasks)]
        tick = asyncio.create_task(ticker(), name="bench-ticker")
        try:
            yield
        finally:
            tick.cancel()
            release_tasks.set()
            release_threads.set()
            await asyncio.gather(*tasks, tick, return_exceptions=True)
            for t in threads:
                t.join(timeout=5)

    app = FastAPI(lifespan=lifespan)

    @app.get("/ping")
    async def ping() -> PlainTextResponse:
        return PlainTextResponse("pong")

    @app.get("/ready")
    async def ready() -> JSONResponse:
        return JSONResponse({"parked": state["parked"], "threads": threading.active_count()})

    @app.get("/maxgap")
    async def maxgap() -> JSONResponse:
        gap, state["max_gap_s"] = state["max_gap_s"], 0.0
        return JSONResponse({"max_gap_ms": gap * 1000.0})

    pyprof_http.install(app)
    serve_on_free_port(app, loop=loop_impl, backlog=128, graceful_s=None)


# --------------------------------------------------------------------------------------------
# Client side (the benchmark process)
# --------------------------------------------------------------------------------------------


@dataclass
class Row:
    tasks: int
    threads: int
    endpoint: str
    median_ms: float
    p90_ms: float
    max_ms: float
    size: int
    stall_ms: float
    stall_median_ms: float


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def server_process(n_tasks: int, n_threads: int, loop_impl: str) -> ServerProcess:
    """This file's app in a child uvicorn server, parking ``n_tasks`` and ``n_threads``."""
    return ServerProcess([sys.executable, os.path.abspath(__file__), "--serve", str(n_tasks),
                          str(n_threads), "--loop", loop_impl], stop_grace_s=STOP_GRACE_S)


def wait_ready(client: object, n_tasks: int, n_threads: int) -> None:
    import httpx

    assert isinstance(client, httpx.Client)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            state = client.get("/ready").json()
        except httpx.TransportError:
            time.sleep(0.05)
            continue
        if state["parked"] >= n_tasks and state["threads"] >= n_threads + 1:
            return
        time.sleep(0.05)
    raise RuntimeError(f"server not ready after {STARTUP_TIMEOUT_S}s")


def measure(n_tasks: int, n_threads: int, repeat: int, loop_impl: str) -> list[Row]:
    import httpx

    rows: list[Row] = []
    with server_process(n_tasks, n_threads, loop_impl) as server, httpx.Client(
        base_url=f"http://127.0.0.1:{server.port}", timeout=REQUEST_TIMEOUT_S, trust_env=False,
    ) as client:
        wait_ready(client, n_tasks, n_threads)
        for label, path in ENDPOINTS:
            for _ in range(WARMUP):
                client.get(path).raise_for_status()
            latencies: list[float] = []
            stalls: list[float] = []
            size = 0
            for _ in range(repeat):
                client.get("/maxgap").raise_for_status()  # reset
                start = time.perf_counter()
                response = client.get(path)
                elapsed = time.perf_counter() - start
                response.raise_for_status()
                stalls.append(client.get("/maxgap").json()["max_gap_ms"])
                latencies.append(elapsed * 1000.0)
                size = len(response.content)
            rows.append(Row(n_tasks, n_threads, label, statistics.median(latencies),
                            percentile(latencies, 90), max(latencies), size, max(stalls),
                            statistics.median(stalls)))
    return rows


@dataclass
class Burst:
    concurrent: int
    stall_ms: float
    slowest_ms: float
    total_ms: float


def measure_bursts(n_tasks: int, n_threads: int, sizes: list[int], loop_impl: str) -> list[Burst]:
    """For each size C: C concurrent debug=2 requests at once; the loop's worst stall meanwhile."""
    import asyncio

    import httpx

    async def burst(client: httpx.AsyncClient, n: int) -> Burst:
        (await client.get("/maxgap")).raise_for_status()  # reset

        async def one() -> float:
            start = time.perf_counter()
            response = await client.get("/debug/pprof/goroutine?debug=2")
            response.raise_for_status()
            return (time.perf_counter() - start) * 1000.0

        start = time.perf_counter()
        times = await asyncio.gather(*(one() for _ in range(n)))
        total = (time.perf_counter() - start) * 1000.0
        stall = (await client.get("/maxgap")).json()["max_gap_ms"]
        return Burst(n, stall, max(times), total)

    async def run() -> list[Burst]:
        limits = httpx.Limits(max_connections=max(sizes) + 2, max_keepalive_connections=None)
        with server_process(n_tasks, n_threads, loop_impl) as server:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}",
                                         timeout=REQUEST_TIMEOUT_S * 5, trust_env=False,
                                         limits=limits) as client:
                with httpx.Client(base_url=f"http://127.0.0.1:{server.port}",
                                  timeout=REQUEST_TIMEOUT_S, trust_env=False) as sync_client:
                    wait_ready(sync_client, n_tasks, n_threads)
                await burst(client, min(sizes))  # warm-up
                return [await burst(client, n) for n in sizes]

    return asyncio.run(run())


def print_bursts(bursts: list[Burst], n_tasks: int, n_threads: int) -> None:
    print()
    print(f"concurrent goroutine?debug=2 against {n_tasks:,} tasks + {n_threads} threads:")
    print("concurrent | loop worst stall ms | slowest response ms | whole burst ms")
    for b in bursts:
        print(f"{b.concurrent:>10} | {b.stall_ms:>19.1f} | {b.slowest_ms:>19.1f} | "
              f"{b.total_ms:>14.1f}")


def print_table(rows: list[Row]) -> None:
    ping = {r.tasks: r.median_ms for r in rows if r.endpoint == "/ping"}
    header = ("tasks", "threads", "endpoint", "median ms", "p90 ms", "max ms", "bytes",
              "loop stall median ms", "loop max stall ms", "x /ping")
    lines = [header]
    for r in rows:
        ratio = r.median_ms / ping[r.tasks] if ping.get(r.tasks) else float("nan")
        lines.append((f"{r.tasks:,}", str(r.threads), r.endpoint, f"{r.median_ms:.1f}",
                      f"{r.p90_ms:.1f}", f"{r.max_ms:.1f}", f"{r.size:,}",
                      f"{r.stall_median_ms:.1f}", f"{r.stall_ms:.1f}", f"{ratio:.0f}x"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for n, line in enumerate(lines):
        print(" | ".join(cell.rjust(w) if i not in (2,) else cell.ljust(w)
                         for i, (cell, w) in enumerate(zip(line, widths, strict=True))))
        if n == 0:
            print("-+-".join("-" * w for w in widths))


def print_targets(rows: list[Row]) -> bool:
    print()
    print(f"performance targets ({TARGET_TASKS:,} tasks + {TARGET_THREADS} threads; judged on the "
          "median, p90 shown):")
    ok = True
    for endpoint, target in TARGETS_MS.items():
        found = [r for r in rows if r.endpoint == endpoint and r.tasks == TARGET_TASKS
                 and r.threads == TARGET_THREADS]
        if not found:
            print(f"  goroutine?{endpoint} <= {target:.0f} ms: NOT MEASURED "
                  f"(run with --tasks {TARGET_TASKS} --threads {TARGET_THREADS})")
            continue
        r = found[0]
        verdict = "PASS" if r.median_ms <= target else "MISS"
        ok = ok and verdict == "PASS"
        print(f"  goroutine?{endpoint} <= {target:.0f} ms: median {r.median_ms:.1f} ms, "
              f"p90 {r.p90_ms:.1f} ms  {verdict}")
    return ok


# --------------------------------------------------------------------------------------------
# In-process breakdown (--breakdown): where the time of one request goes, stage by stage
# --------------------------------------------------------------------------------------------


def breakdown(n_tasks: int, n_threads: int, repeat: int, top: int) -> None:
    """Time each stage of the goroutine endpoints in-process, then cProfile the whole pipeline."""
    import asyncio
    import cProfile
    import gc
    import io
    import pstats
    import threading

    from pyprof_http.collectors import stacks, task_walk
    from pyprof_http.loops import LOOPS, ORIGINS
    from pyprof_http.pprof.encode import render_pprof
    from pyprof_http.render.dump import render_dump
    from pyprof_http.render.text import render_text

    async def level3(event: asyncio.Event) -> None:
        await event.wait()

    async def level2(event: asyncio.Event) -> None:
        await level3(event)

    async def level1(event: asyncio.Event) -> None:
        await level2(event)

    def timed(label: str, fn: object) -> None:
        assert callable(fn)
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1000.0)
        print(f"  {label:<46} median {statistics.median(times):7.1f} ms   "
              f"max {max(times):7.1f} ms")

    async def run() -> None:
        loop = asyncio.get_running_loop()
        LOOPS.register_running()
        ORIGINS.install_factory(loop)
        info = next(i for i in LOOPS.running() if i.loop is loop)
        release = threading.Event()
        threads = [threading.Thread(target=release.wait, daemon=True) for _ in range(n_threads)]
        for t in threads:
            t.start()
        event = asyncio.Event()
        tasks = [asyncio.create_task(level1(event)) for _ in range(n_tasks)]
        await asyncio.sleep(0.05)
        snap = await stacks.collect()

        def fresh() -> stacks.StackSnapshot:  # profile is a cached_property: rebuild each time
            return stacks.StackSnapshot(snap.threads, snap.tasks, snap.time_ns, snap.comments)

        def pipeline() -> None:
            tasks_ = stacks.walk_loop_tasks(info, 128)
            s = stacks.StackSnapshot(tuple(stacks.walk_threads(128)), tuple(tasks_), 0)
            render_pprof(s.profile, "goroutine")
            render_text(s.profile, "goroutine")
            render_dump(s)

        try:
            print(f"in-process breakdown: {n_tasks:,} tasks + {n_threads} threads, "
                  f"median of {repeat} runs")
            gc.disable()
            try:
                timed("capture_tasks (on the loop: holds it, gc off)",
                      lambda: task_walk.capture_tasks(info, 128))
                captured = task_walk.capture_tasks(info, 128)
                timed("build_tasks (worker thread)", lambda: task_walk.build_tasks(captured))
            finally:
                gc.enable()
            timed("walk_threads (capture + build)", lambda: stacks.walk_threads(128))
            holds = []
            for _ in range(repeat):
                stacks._SNAPSHOTS = type(stacks._SNAPSHOTS)()  # no sharing between runs
                holds.append((await stacks.collect()).loop_hold_ns / 1e6)
            print(f"  {'collect(): loop held (recorded)':<46} median "
                  f"{statistics.median(holds):7.1f} ms   max {max(holds):7.1f} ms")
            timed("StackSnapshot.profile (samples + labels)", lambda: fresh().profile)
            timed("render_text (debug=1, excl. .profile)", lambda: render_text(snap.profile,
                                                                               "goroutine"))
            timed("render_dump (debug=2)", lambda: render_dump(snap))
            timed("render_pprof (debug=0, excl. .profile)", lambda: render_pprof(snap.profile,
                                                                                 "goroutine"))
            profiler = cProfile.Profile()
            profiler.enable()
            pipeline()
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
            print(f"\ncProfile of walk + all three renderers, top {top} by own time:")
            print(out.getvalue().split("\n\n", 2)[-1].rstrip())  # drop pstats' preamble
        finally:
            event.set()
            release.set()
            await asyncio.gather(*tasks)
            for t in threads:
                t.join(timeout=5)

    asyncio.run(run())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument("--threads", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--loop", default="asyncio", choices=("asyncio", "uvloop", "auto"),
                        help="uvicorn event loop implementation (default: asyncio)")
    parser.add_argument("--concurrent", type=int, nargs="*", default=[1, 25, 50, 200],
                        help="burst sizes of concurrent debug=2 requests (none: skip)")
    parser.add_argument("--concurrent-tasks", type=int, default=2_000,
                        help="tasks parked by the server the bursts are fired at")
    parser.add_argument("--breakdown", action="store_true",
                        help="instead: time each stage in-process (largest --tasks) and cProfile")
    parser.add_argument("--top", type=int, default=15, help="cProfile rows with --breakdown")
    parser.add_argument("--serve", type=int, nargs=2, metavar=("TASKS", "THREADS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], args.serve[1], args.loop)
        return 0
    if args.repeat < 1 or args.threads < 0 or min(args.tasks) < 0:
        parser.error("--repeat must be >= 1, --tasks and --threads >= 0")
    if args.breakdown:
        breakdown(max(args.tasks), args.threads, min(args.repeat, 7), args.top)
        return 0

    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
          f"uvicorn loop={args.loop}; {WARMUP} warm-up + {args.repeat} timed requests each; "
          "server in a child process, client httpx (keep-alive)")
    started = time.perf_counter()
    rows: list[Row] = []
    for n in args.tasks:
        rows.extend(measure(n, args.threads, args.repeat, args.loop))
    print()
    print_table(rows)
    print("('loop stall' = longest gap between ticks of a 1 ms asyncio.sleep ticker on the "
          "server loop during one request, median and max over the timed requests; ~1 ms means "
          "no stall)")
    ok = print_targets(rows)
    if args.concurrent:
        bursts = measure_bursts(args.concurrent_tasks, args.threads, args.concurrent, args.loop)
        print_bursts(bursts, args.concurrent_tasks, args.threads)
    print(f"\ntotal {time.perf_counter() - started:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
