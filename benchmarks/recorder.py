"""What the flight recorder costs: throughput with it on vs off, the memory of a full window,
and how fast ``/profile?last=60`` answers.

Run:  .venv/bin/python benchmarks/recorder.py [--quick] [--rounds 6] [--seconds 2] [--hz 19,49]

Servers (this file with ``--serve``), all with ``pyprof_http.install(app)`` and the same
FastAPI app: ``off-a`` and ``off-b`` with ``PYPROF_RECORDER_HZ=0`` (``off-b`` vs ``off-a`` is
the A/A noise figure), and one per ``--hz`` rate with the recorder on (19 is the default).
Client threads here (keep-alive httpx) load one server at a time over a mix of routes (async
CPU, awaits, a sync route on the thread pool, a minimal route), the order rotating each round;
the table shows the median (min-max) of per-round ratios to ``off-a``, of throughput and of
server CPU per request.

Memory: a recorder of ``recorder_seconds`` = 300 filled in-process, measured with tracemalloc:
1,000 distinct stacks 30 frames deep, each one-second interval holding what 19 Hz ticks over 4
busy threads can see (76 keys, with route and unique request id labels), and the upper bound
where every interval holds all 1,000 stacks (20 framework frames shared by all, 10 of 300 app
functions). Latency: ``last=60`` over that full window,
merged and rendered as pprof in-process, and ``GET /profile?last=60`` on the 19 Hz server
after its load (median of 10).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
import tracemalloc
from typing import Any

import httpx
from _server import ServerProcess, serve_on_free_port
from idle import summary, window

MIX = ("/work", "/sync", "/min", "/cpu")


def serve() -> None:
    import asyncio

    from fastapi import FastAPI

    import pyprof_http

    app = FastAPI()

    @app.get("/min")
    async def minimal() -> dict[str, int]:
        return {"ok": 1}

    @app.get("/work")
    async def work() -> dict[str, float]:
        total = 0.0
        for _ in range(3):
            await asyncio.sleep(0)
            total += sum(i * 0.5 for i in range(300))
        return {"total": total}

    @app.get("/cpu")
    async def cpu() -> dict[str, int]:
        return {"n": sum(i * i for i in range(20_000))}

    @app.get("/sync")
    def sync_route() -> dict[str, int]:
        return {"n": sum(range(20_000))}

    @app.get("/tickcost")
    async def tick_cost() -> dict[str, float]:
        """CPU the shared sampler's ticks used so far, and the process's CPU."""
        import time

        from pyprof_http.collectors.sampling_hub import HUB

        stats = HUB.stats()
        return {"ticks": stats.cost_seconds if stats else 0.0, "ran": stats.ran if stats else 0,
                "process": time.process_time()}

    pyprof_http.install(app)
    serve_on_free_port(app)


def fill(recorder: Any, stacks: list[Any], keys_per_interval: int) -> None:
    """``recorder_seconds`` intervals, each with ``keys_per_interval`` (stack, labels) keys."""
    from pyprof_http.collectors.recorder import INTERVAL_NS

    rng = random.Random(1)
    routes = [f"/route/{i}" for i in range(20)]
    request = 0
    for second in range(recorder.seconds + 1):
        recorder._before_tick(second * INTERVAL_NS)
        counts = recorder._sampler._counts
        for key_no in range(keys_per_interval):
            request += 1
            stack = tuple(stacks[(second * keys_per_interval + key_no) % len(stacks)])
            labels = (f"worker-{key_no % 4}", "", rng.choice(routes), f"req-{request:08x}")
            counts[(stack, labels)] = [1, 52_000_000]


def memory_and_latency() -> list[tuple[str, str, str]]:
    from pyprof_http.collectors.recorder import RingRecorder
    from pyprof_http.model import Frame
    from pyprof_http.pprof.encode import render_pprof

    # 1,000 distinct stacks as an app has them: 20 frames of server and framework shared by
    # all, 10 of the app's own drawn from 300 functions (30,000 distinct frames would measure
    # the pprof encoder's function table, not the recorder)
    rng = random.Random(2)
    framework = [Frame(f"framework_{d}", f"/site-packages/fw_{d % 5}.py", 100 + d)
                 for d in range(20)]
    app_functions = [Frame(f"app_function_{n}", f"/app/module_{n % 12}.py", 10 + n)
                     for n in range(300)]
    stacks = [[*rng.sample(app_functions, 10), *framework] for _ in range(1000)]
    rows = []
    for label, per_interval in (("19 Hz x 4 busy threads (76 keys/s)", 76),
                                ("upper bound: all 1,000 stacks every second", 1000)):
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        recorder = RingRecorder(19, 300, 128)
        fill(recorder, stacks, per_interval)
        used = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        _, keys, estimate = recorder.memory()
        rows.append((f"memory of a full 300 s window, {label}",
                     f"{used / 2**20:.1f} MiB ({keys} keys; index shows "
                     f"{estimate / 2**20:.1f} MiB)", "bounded"))
        times = []
        for _ in range(5):
            started = time.perf_counter()
            # the window is filled with synthetic times: read the last 60 of its 300 seconds
            items = recorder.window((recorder.seconds - 60) * 1_000_000_000)
            from pyprof_http.collectors.cpu import aggregate_profile

            render_pprof(aggregate_profile("cpu", items, 19, 0, 60, ()), "profile")
            times.append(time.perf_counter() - started)
        rows.append((f"last=60 merge + pprof in-process, {label}",
                     f"{statistics.median(times) * 1000:.1f} ms", "<= 200 ms"))
    return rows


def tick_share(port: int, before: dict[str, float]) -> tuple[float, dict[str, float]]:
    """Share of the server's CPU its sampler ticks used since ``before``: a cost figure that,
    unlike throughput, does not move with what else the machine runs."""
    now = httpx.get(f"http://127.0.0.1:{port}/tickcost", timeout=30).json()
    process = now["process"] - before.get("process", 0.0)
    return (now["ticks"] - before.get("ticks", 0.0)) / process if process else 0.0, now


def middleware_cost(rounds: int = 20, n: int = 2000) -> list[tuple[str, str, str]]:
    """µs the lifecycle middleware adds to one request (its id, the echo, the keep decision),
    best of ``rounds``: a bare ASGI app called directly vs through the middleware."""
    import asyncio

    from pyprof_http.collectors.recorder import RECORDER
    from pyprof_http.config import Settings
    from pyprof_http.lifecycle import LifecycleMiddleware

    scope = {"type": "http", "method": "GET", "path": "/min", "root_path": "",
             "query_string": b"", "headers": [(b"host", b"127.0.0.1"), (b"accept", b"*/*")],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}

    async def bare(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive() -> dict[str, str]:
        return {"type": "http.request"}

    async def send(message: Any) -> None:
        pass

    async def best(app: Any) -> float:
        started = time.perf_counter()
        for _ in range(n):
            await app(dict(scope), receive, send)
        return (time.perf_counter() - started) / n * 1e6

    async def measure() -> tuple[float, float]:
        wrapped = LifecycleMiddleware(bare, Settings())
        plain = through = float("inf")
        for _ in range(rounds):
            plain = min(plain, await best(bare))
            through = min(through, await best(wrapped))
        return plain, through

    rows = []
    for label, recording in (("recorder off", False), ("recorder on", True)):
        if recording:
            RECORDER.start(19, 10, 64)
        try:
            plain, through = asyncio.run(measure())
        finally:
            RECORDER.stop()
        rows.append((f"middleware per request in-process, {label}",
                     f"+{through - plain:.2f} µs ({plain:.2f} -> {through:.2f})", "(info)"))
    return rows


def http_last(port: int) -> float:
    times = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        for _ in range(10):
            started = time.perf_counter()
            client.get("/debug/pprof/profile?last=60").raise_for_status()
            times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--hz", default="19", help="recorder rates to compare, e.g. 19,49,99")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds = 3, 1.0
    rates = [int(r) for r in args.hz.split(",")]
    me = [sys.executable, __file__, "--serve"]

    def env(hz: int) -> dict[str, str]:
        return {**os.environ, "PYPROF_RECORDER_HZ": str(hz)}

    rows: list[tuple[str, str, str]] = []
    servers: dict[str, ServerProcess] = {}
    try:
        for name, hz in (("off-a", 0), ("off-b", 0), *((f"on-{r}", r) for r in rates)):
            servers[name] = ServerProcess([*me], env=env(hz)).__enter__()
        time.sleep(1.0)
        shares: dict[str, list[float]] = {name: [] for name in servers if name.startswith("on")}
        marks = {name: tick_share(servers[name].port, {})[1] for name in shares}
        ratios: dict[str, dict[str, list[float]]] = {
            name: {"tp": [], "cpu": []} for name in servers if name != "off-a"}
        order = list(servers)
        for r in range(args.rounds):
            rotated = order[r % len(order):] + order[:r % len(order)]
            got = {name: window(servers[name], MIX, args.clients, args.seconds)
                   for name in rotated}
            base = got["off-a"]
            for name in shares:
                share, marks[name] = tick_share(servers[name].port, marks[name])
                shares[name].append(share)
            for name in ratios:
                ratios[name]["tp"].append(got[name][0] / base[0])
                ratios[name]["cpu"].append(got[name][1] / base[1])
            print(f"  round {r + 1}: " + ", ".join(
                f"{n} {v[0]:.0f} req/s {v[1]:.0f} µs CPU/req" for n, v in got.items()),
                flush=True)
        for name, values in ratios.items():
            what = "A/A (off-b / off-a)" if name == "off-b" else f"recorder {name[3:]} Hz / off"
            rows.append((f"throughput, {what}", summary(values["tp"]),
                         "noise" if name == "off-b" else ">= 0.99"))
            rows.append((f"server CPU per request, {what}", summary(values["cpu"]),
                         "noise" if name == "off-b" else "(info)"))
        for name, values in shares.items():
            rows.append((f"sampler ticks' share of server CPU under load, recorder {name[3:]} Hz",
                         f"{statistics.median(values):.2%} ({min(values):.2%}-"
                         f"{max(values):.2%})", "<= 1%"))
        rows.append(("GET /profile?last=60 after the load, 19 Hz server (median of 10)",
                     f"{http_last(servers[f'on-{rates[0]}'].port):.1f} ms", "<= 200 ms"))
    finally:
        for server in servers.values():
            server.__exit__()
    rows += memory_and_latency()
    rows += middleware_cost()
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    print()
    for row in rows:
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1] == "--serve":
        serve()
    else:
        sys.exit(main())
