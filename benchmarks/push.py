"""What pushing to Pyroscope costs the demo app, and how many bytes it sends.

Run:  .venv/bin/python benchmarks/push.py [--rounds 6] [--seconds 3] [--clients 4]
                                          [--interval 15]

Three child uvicorn servers (this file with ``--serve``) run the demo app (demo_app/main.py,
``pyprof_http.install(app)``): ``off-a`` and ``off-b`` without a ``push_url``, ``on`` with
``PYPROF_PUSH_URL`` pointing at a capture server in this process (HTTP on 127.0.0.1 that
answers 200 and counts what arrives) and ``PYPROF_PUSH_INTERVAL=--interval``. Client threads
(keep-alive httpx) load one server at a time for ``--seconds`` over the demo's ``/`` and
``/work`` (nested awaits, a little CPU), the order rotating over ``--rounds`` rounds.
Per round: throughput on/off-a and off-b/off-a (the A/A noise figure: two identical servers
measured the same way); the table shows median (min-max).

The same for the server's CPU per request (user+system of the child, from ``/proc``).
Then the bytes the ``on`` server pushed (request bodies as sent: gzipped Connect
``PushRequest`` s) per minute of its life, with the number of pushes and series; the ``on``
server is left running idle to the end of a whole number of intervals so the figure covers
full batches, idle and loaded. Last, the pusher's own CPU measured in-process from its two
threads' CPU clocks (``pusher_cpu``: pushing every second, the worst case of a short
interval), the figure a loaded machine disturbs least. Loopback only; servers always stopped.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

from _server import ServerProcess, serve_on_free_port
from idle import window

ROOT = Path(__file__).resolve().parent.parent

PATHS = ("/", "/work")
"""CPU-bound enough to show an overhead (``/sync`` and ``/spawn`` would measure their sleeps and
the tasks they park)."""


def pusher_cpu(seconds: float, interval: float) -> tuple[float, int]:
    """The pusher's own CPU (its thread and its sampler's), in-process, while a loop with 200
    parked tasks and 20 idle threads runs beside it: (CPU ms per second, pushes). Thread CPU
    clocks count only time on a core, so a loaded machine changes this figure far less than
    it changes throughput."""
    import asyncio

    from capture_server import CaptureServer
    from pyprof_http.collectors.cpu import thread_cpu_ns
    from pyprof_http.config import Settings
    from pyprof_http.push.pusher import Pusher

    loop = asyncio.new_event_loop()
    stop = threading.Event()
    parked = [threading.Thread(target=stop.wait, daemon=True) for _ in range(20)]
    for thread in parked:
        thread.start()

    async def park() -> None:
        await asyncio.Event().wait()

    tasks = [loop.create_task(park()) for _ in range(200)]
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    with CaptureServer() as capture:
        pusher = Pusher(Settings(push_url=capture.url, push_interval=interval), loop)
        pusher.start()
        time.sleep(0.5)
        threads = [t for t in threading.enumerate() if t.name.startswith("pyprof_http-push")]

        def used() -> int:
            return sum(thread_cpu_ns(t.native_id) or 0 for t in threads if t.native_id)

        cpu0, t0 = used(), time.monotonic()
        time.sleep(seconds)
        cpu, wall = used() - cpu0, time.monotonic() - t0
        pusher.stop()
        pushes = len(capture.requests)

    async def finish() -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run_coroutine_threadsafe(finish(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    runner.join(10)
    loop.close()
    stop.set()
    return cpu / 1e6 / wall, pushes


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--interval", type=float, default=15.0)
    parser.add_argument("--cpu-seconds", type=float, default=10.0)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from capture_server import CaptureServer  # the tests' Pyroscope stand-in

    capture = CaptureServer().__enter__()
    me = [sys.executable, __file__, "--serve"]
    base = {k: v for k, v in os.environ.items() if not k.startswith("PYPROF_")}
    on_env = {**base, "PYPROF_PUSH_URL": capture.url,
              "PYPROF_PUSH_INTERVAL": str(args.interval), "PYPROF_PUSH_SERVICE_NAME": "demo"}
    ratios_on: list[float] = []
    ratios_aa: list[float] = []
    cpu_on: list[float] = []
    cpu_aa: list[float] = []
    with (ServerProcess(me, env=base) as off_a, ServerProcess(me, env=base) as off_b,
          ServerProcess(me, env=on_env) as on):
        born = time.monotonic()
        servers = {"off-a": off_a, "off-b": off_b, "on": on}
        names = list(servers)
        for round_no in range(args.rounds):
            order = names[round_no % 3:] + names[:round_no % 3]
            got = {name: window(servers[name], PATHS, args.clients, args.seconds)
                   for name in order}
            rps = {name: value[0] for name, value in got.items()}
            ratios_on.append(rps["on"] / rps["off-a"])
            ratios_aa.append(rps["off-b"] / rps["off-a"])
            cpu_on.append(got["on"][1] / got["off-a"][1])
            cpu_aa.append(got["off-b"][1] / got["off-a"][1])
            print(f"round {round_no + 1}: " + ", ".join(f"{n} {rps[n]:.0f} req/s"
                                                         for n in names), flush=True)
        # idle to the end of whole intervals, so every batch counted is complete
        lived = time.monotonic() - born
        whole = max(1, int(lived // args.interval) + 1) * args.interval
        time.sleep(max(0.0, whole - lived + 1.0))
        minutes = (time.monotonic() - born) / 60
        pushes, sent = len(capture.requests), sum(len(r.body) for r in capture.requests)
    capture.__exit__()
    print()
    print("| measure | value |")
    print("|---|---|")
    print(f"| throughput push on / off-a (median, min-max of {args.rounds}) | "
          f"{summary(ratios_on)} |")
    print(f"| throughput off-b / off-a (A/A noise) | {summary(ratios_aa)} |")
    print(f"| server CPU per request push on / off-a | {summary(cpu_on)} |")
    print(f"| server CPU per request off-b / off-a (A/A noise) | {summary(cpu_aa)} |")
    print(f"| pushes received (interval {args.interval:g} s, {minutes:.2f} min) | {pushes} |")
    print(f"| bytes pushed per minute (gzipped request bodies) | {sent / minutes:,.0f} |")
    print(f"| bytes per push | {sent / max(pushes, 1):,.0f} |")
    for interval, seconds in ((1.0, args.cpu_seconds), (15.0, 2 * 15.0)):
        ms, count = pusher_cpu(seconds, interval)
        print(f"| pusher CPU in-process, {interval:g} s interval, 200 tasks + 20 threads "
              f"({count} pushes in {seconds:g} s) | {ms:.1f} ms per s ({ms / 10:.2f} % of a "
              "core) |")


def serve() -> None:
    sys.path.insert(0, str(ROOT))
    from demo_app.main import app

    serve_on_free_port(app)


if __name__ == "__main__":
    if "--serve" in sys.argv:
        serve()
    else:
        main()
