"""What ``install(app)`` costs an app while nobody asks for a profile.

Run:  .venv/bin/python benchmarks/idle.py [--quick] [--rounds 8] [--seconds 2] [--clients 4]

Three child uvicorn servers (this file with ``--serve``) serve the same FastAPI app: two without
pyprof_http (``plain-a``, ``plain-b``) and one with ``pyprof_http.install(app)`` and its
lifespan (watchdog, task factory, middleware), nothing requested from it. Client threads here
(keep-alive httpx) load one server at a time for ``--seconds``, the order rotating over
``--rounds`` rounds, on two workloads:

- ``minimal``: ``GET /min``, a route that returns a constant (the per-request overhead shows
  most here);
- ``demo mix``: round robin over routes shaped like the demo's: ``/work`` (three awaits and a
  little CPU), ``/spawn`` (creates a task and awaits it: the task factory), ``/sync`` (a sync
  route on the thread pool) and ``/min``.

For each round the ratio installed/plain-a and plain-b/plain-a is taken, of throughput and of
server CPU per request (the child's user+system CPU from ``/proc``); the table shows the median
(min-max). ``plain-b`` vs ``plain-a`` is the A/A noise figure: two identical servers measured
the same way; a change smaller than its spread cannot be told from noise on this machine.

Then each server's CPU per second while idle (no requests, ``--idle-seconds``); the app's
per-request path in-process (:func:`asgi_path_cost`: ``GET /min`` as ASGI calls, each in a task
of its own as uvicorn makes one, on one event loop per variant: plain, plain again (A/A), the
mount only, the middleware only, ``install()``; no server, no lifespan, so no watchdog; best of
interleaved rounds. With no server (a no-op ``send``, no keep-alive) it leaves out part of what
the middleware costs, such as the echoed header uvicorn validates and writes, and understates
it: ``instructions.py`` counts the whole path); and the task factory in-process:
``loop.create_task`` and create+await of an empty coroutine with and without the factory,
interleaved rounds, best of each (other programs only make a round slower).
Prints one table; loopback only; the servers are always stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

from _server import ServerProcess, serve_on_free_port

MINIMAL = ("/min",)
MIX = ("/work", "/spawn", "/sync", "/min")


def serve(install: bool) -> None:
    serve_on_free_port(build_app("install()" if install else "plain"))


def build_app(variant: str) -> Any:
    """The measured FastAPI app, its routes shaped like the demo's; ``variant`` is one of
    :data:`ASGI_VARIANTS`: without pyprof_http, with the endpoints mounted only, with the
    lifecycle middleware only, or with ``install(app)`` (both)."""
    from fastapi import FastAPI

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

    async def child() -> int:
        await asyncio.sleep(0)
        return 1

    @app.get("/spawn")
    async def spawn() -> dict[str, int]:
        return {"done": await asyncio.create_task(child())}

    @app.get("/sync")
    def sync_route() -> dict[str, int]:
        return {"n": sum(range(2000))}

    if variant == "install()":
        import pyprof_http

        pyprof_http.install(app)
    elif variant == "middleware only":
        from pyprof_http.lifecycle import LifecycleMiddleware

        app.add_middleware(LifecycleMiddleware)
    elif variant == "mount only":
        from pyprof_http import PprofApp

        app.mount("/debug/pprof", PprofApp())
    return app


class Load:
    """``clients`` threads, each on a keep-alive connection, cycling through ``paths``."""

    def __init__(self, base_url: str, clients: int, paths: tuple[str, ...]) -> None:
        self.base_url, self.clients, self.paths = base_url, clients, paths
        self.count = 0
        self.errors = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def run(self, seconds: float) -> int:
        threads = [threading.Thread(target=self._client, args=(i,), daemon=True)
                   for i in range(self.clients)]
        self._stop.clear()
        self.count = 0
        for t in threads:
            t.start()
        time.sleep(seconds)
        self._stop.set()
        for t in threads:
            t.join(timeout=30)
        return self.count

    def _client(self, offset: int) -> None:
        import httpx

        done = 0
        with httpx.Client(base_url=self.base_url, timeout=30, trust_env=False) as client:
            i = offset
            while not self._stop.is_set():
                try:
                    client.get(self.paths[i % len(self.paths)]).raise_for_status()
                    done += 1
                except httpx.HTTPError:
                    self.errors += 1
                i += 1
        with self._lock:
            self.count += done


def cpu_seconds(server: ServerProcess) -> float:
    """The child's CPU so far, summed over its live threads' schedstat (ns resolution; the
    process clock in /proc/<pid>/stat counts 10 ms ticks, too coarse for an idle server)."""
    assert server.proc is not None
    total = 0
    for stat in Path(f"/proc/{server.proc.pid}/task").glob("*/schedstat"):
        try:
            total += int(stat.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile
    return total / 1e9


def window(server: ServerProcess, paths: tuple[str, ...], clients: int,
           seconds: float) -> tuple[float, float]:
    """(requests per second, server CPU µs per request) over one loaded window."""
    load = Load(f"http://127.0.0.1:{server.port}", clients, paths)
    load.run(0.3)  # warm the connections
    cpu0, t0 = cpu_seconds(server), time.monotonic()
    count = load.run(seconds)
    elapsed, cpu = time.monotonic() - t0, cpu_seconds(server) - cpu0
    return count / elapsed, cpu / max(count, 1) * 1e6


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


_SCOPE = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
          "scheme": "http", "path": "/min", "raw_path": b"/min", "root_path": "",
          "query_string": b"", "headers": [(b"host", b"127.0.0.1")],
          "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
ASGI_VARIANTS = ("plain", "plain again", "mount only", "middleware only", "install()")


def asgi_path_cost(rounds: int, n: int = 1000) -> dict[str, float]:
    """Best-of-rounds µs per ``GET /min`` ASGI call, each in its own task, per variant."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    async def batch(app: Any) -> float:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        for _ in range(n):
            await loop.create_task(app(dict(_SCOPE), receive, send))
        return (time.perf_counter() - started) / n * 1e6

    loops = {name: asyncio.new_event_loop() for name in ASGI_VARIANTS}
    apps = {name: build_app(name) for name in ASGI_VARIANTS}
    best = dict.fromkeys(ASGI_VARIANTS, float("inf"))
    try:
        for name in ASGI_VARIANTS:
            loops[name].run_until_complete(batch(apps[name]))  # warm: routes, loop registration
        for r in range(rounds):
            order = ASGI_VARIANTS[r % 5:] + ASGI_VARIANTS[:r % 5]
            for name in order:
                best[name] = min(best[name], loops[name].run_until_complete(batch(apps[name])))
    finally:
        for loop in loops.values():
            loop.close()
    return best


def factory_cost(rounds: int, n: int = 2000) -> tuple[float, float, float, float]:
    """Best-of-rounds µs: create_task plain / with factory, create+await plain / factory."""
    from pyprof_http.loops import TaskOrigins

    async def noop() -> None:
        return None

    async def one() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        tasks = [loop.create_task(noop()) for _ in range(n)]
        create = (time.perf_counter() - started) / n
        await asyncio.gather(*tasks)
        started = time.perf_counter()
        for _ in range(n):
            await loop.create_task(noop())
        return create, (time.perf_counter() - started) / n

    async def main() -> tuple[float, float, float, float]:
        loop = asyncio.get_running_loop()
        origins = TaskOrigins()
        best: dict[bool, list[float]] = {False: [1.0, 1.0], True: [1.0, 1.0]}
        for r in range(rounds):
            for on in (False, True) if r % 2 else (True, False):
                if on:
                    origins.install_factory(loop)
                create, both = await one()
                origins.uninstall_factory(loop)
                best[on] = [min(best[on][0], create), min(best[on][1], both)]
        return (best[False][0] * 1e6, best[True][0] * 1e6, best[False][1] * 1e6,
                best[True][1] * 1e6)

    return asyncio.run(main())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 rounds of 1 s (~1 min)")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds, args.idle_seconds = 4, 1.0, 3.0
    me = [sys.executable, __file__, "--serve"]
    rows: list[tuple[str, str, str]] = []
    with ServerProcess([*me, "plain"]) as plain_a, ServerProcess([*me, "plain"]) as plain_b, \
            ServerProcess([*me, "install"]) as installed:
        servers = {"plain-a": plain_a, "plain-b": plain_b, "installed": installed}
        time.sleep(1.0)  # lifespans done
        idle = {}
        for name, server in servers.items():
            cpu0 = cpu_seconds(server)
            time.sleep(args.idle_seconds)
            idle[name] = (cpu_seconds(server) - cpu0) / args.idle_seconds * 1e3
        for label, paths in (("minimal", MINIMAL), ("demo mix", MIX)):
            ratios: dict[str, list[float]] = {k: [] for k in
                                              ("tp", "cpu", "tp_aa", "cpu_aa")}
            order = list(servers)
            for r in range(args.rounds):
                rotated = order[r % 3:] + order[:r % 3]
                got = {name: window(servers[name], paths, args.clients, args.seconds)
                       for name in rotated}
                base = got["plain-a"]
                ratios["tp"].append(got["installed"][0] / base[0])
                ratios["cpu"].append(got["installed"][1] / base[1])
                ratios["tp_aa"].append(got["plain-b"][0] / base[0])
                ratios["cpu_aa"].append(got["plain-b"][1] / base[1])
                print(f"  {label} round {r + 1}: " + ", ".join(
                    f"{n} {v[0]:.0f} req/s {v[1]:.0f} µs CPU/req" for n, v in got.items()),
                    flush=True)
            rows += [
                (f"{label}: throughput installed / plain", summary(ratios["tp"]), ">= 0.99"),
                (f"{label}: throughput A/A (plain-b / plain-a)", summary(ratios["tp_aa"]),
                 "noise"),
                (f"{label}: server CPU per request installed / plain", summary(ratios["cpu"]),
                 "<= 1.02"),
                (f"{label}: server CPU per request A/A", summary(ratios["cpu_aa"]), "noise"),
            ]
    rows += [(f"idle server CPU, {name}", f"{value:.2f} ms/s", "few ms/s above plain")
             for name, value in idle.items()]
    path = asgi_path_cost(rounds=max(10, 2 * args.rounds))
    rows += [(f"per request in-process (ASGI app only, no server), {name}",
              f"{value:.2f} µs ({value - path['plain']:+.2f})", "(info)")
             for name, value in path.items()]
    create, create_f, both, both_f = factory_cost(rounds=20)
    rows += [
        ("loop.create_task, plain / task factory",
         f"{create:.2f} / {create_f:.2f} µs (+{create_f - create:.2f})", "(info)"),
        ("create + await an empty task, plain / factory",
         f"{both:.2f} / {both_f:.2f} µs (x{both_f / both:.2f})", "(info)"),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    print()
    for row in rows:
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(sys.argv[2] == "install")
    else:
        sys.exit(main())
