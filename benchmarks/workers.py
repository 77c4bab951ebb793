"""What multi-worker support costs: ``workers=all`` latency and the idle rendezvous.

Run:  .venv/bin/python benchmarks/workers.py [--quick] [--rounds 6] [--requests 15] [--seconds 2]

1. ``goroutine?workers=all`` (merged pprof, and ``debug=1`` sections) against ``uvicorn
   --workers 4`` and ``--workers 1`` (two of those: ``1-a`` and ``1-b``), requests sent one at a
   time, the servers taken in turn over ``--rounds`` rounds; the median latency per server and
   the ratios 4/1-a (target <= 2x) and 1-b/1-a (A/A: the noise of this machine).
2. Idle cost of the rendezvous: three ``uvicorn --workers 2`` serving a plain route, one with
   ``PYPROF_WORKERS_RENDEZVOUS=on`` (a channel thread and socket per worker, nothing asked of
   them) and two with ``off`` (``off-a``, ``off-b``); a client (a connection per request) loads
   one at a time for ``--seconds``, in turn over the rounds; throughput ratios on/off-a and
   off-b/off-a (median, min-max); then each server's CPU while nobody calls it.

The servers serve this file's ``app`` (``--app-dir benchmarks``); loopback only; the servers
are always stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOKEN_ENV = {"PYTHONUNBUFFERED": "1"}


def _build_app():
    import asyncio

    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    import pyprof_http

    async def plain(request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    async def lifespan(app):  # a few parked tasks, as a service has
        event = asyncio.Event()
        tasks = [asyncio.create_task(event.wait()) for _ in range(50)]
        yield
        event.set()
        await asyncio.gather(*tasks)

    app = Starlette(routes=[Route("/plain", plain)], lifespan=contextlib.asynccontextmanager(
        lifespan))
    pyprof_http.install(app)
    return app


if os.environ.get("PYPROF_BENCH_WORKERS_SERVE") == "1":
    app = _build_app()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def family_cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its children (uvicorn's workers), from ``/proc``."""
    pids, total = [pid], 0.0
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                pids.extend(int(p) for p in f.read().split())
    for one in pids:
        with contextlib.suppress(OSError), open(f"/proc/{one}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


SERVERS: dict[int, int] = {}
"""port -> the server's pid (for its CPU)."""


@contextlib.contextmanager
def server(workers: int, rendezvous: str = "auto") -> Iterator[int]:
    port = _free_port()
    env = {**os.environ, **TOKEN_ENV, "PYPROF_BENCH_WORKERS_SERVE": "1",
           "PYPROF_WORKERS_RENDEZVOUS": rendezvous}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "workers:app", "--app-dir", str(HERE), "--port",
         str(port), "--workers", str(workers), "--log-level", "warning", "--no-access-log",
         "--loop", "asyncio", "--timeout-graceful-shutdown", "2"],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                status, headers, _ = get(port, "/debug/pprof/goroutine?workers=all&debug=1")
                joined = len(headers.get("x-pyprof-workers", "").split(","))
                if status == 200 and (rendezvous == "off" or joined == workers):
                    break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"--workers {workers} did not come up")
        SERVERS[port] = proc.pid
        yield port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def get(port: int, path: str,
        conn: http.client.HTTPConnection | None = None) -> tuple[int, dict[str, str], bytes]:
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        if own:
            conn.close()


def latency(port: int, path: str, count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        status, _headers, _body = get(port, path)
        times.append(time.perf_counter() - start)
        assert status == 200, status
    return times


def throughput(port: int, seconds: float) -> float:
    """A connection per request: a keep-alive one would wait ~40 ms per response (uvicorn
    --workers binds its socket without TCP_NODELAY on accepted connections: Nagle meets
    delayed ACK), which would hide any cost."""
    done, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        get(port, "/plain")
        done += 1
    return done / seconds


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}x ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--requests", type=int, default=15)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.requests, args.seconds = 3, 8, 1.0

    print("1. goroutine?workers=all latency (median of all requests, ms)")
    names = ("4 workers", "1 worker (a)", "1 worker (b)")
    with server(4) as four, server(1) as one_a, server(1) as one_b:
        ports = dict(zip(names, (four, one_a, one_b), strict=True))
        for query in ("workers=all", "workers=all&debug=1"):
            path = f"/debug/pprof/goroutine?{query}"
            for port in ports.values():
                latency(port, path, 3)  # warm up
            samples: dict[str, list[float]] = {name: [] for name in names}
            ratios_4: list[float] = []
            ratios_aa: list[float] = []
            for _ in range(args.rounds):
                medians = {}
                for name, port in ports.items():
                    times = latency(port, path, args.requests)
                    samples[name].extend(times)
                    medians[name] = statistics.median(times)
                ratios_4.append(medians[names[0]] / medians[names[1]])
                ratios_aa.append(medians[names[2]] / medians[names[1]])
            cells = "  ".join(f"{name}: {statistics.median(samples[name]) * 1000:.1f}"
                              for name in names)
            print(f"   {query:22s} {cells}")
            print(f"   {'':22s} 4 vs 1: {_spread(ratios_4)}   A/A 1-b vs 1-a: "
                  f"{_spread(ratios_aa)}   (target 4 vs 1 <= 2x)")

    print("2. idle rendezvous: throughput of a plain route, uvicorn --workers 2 (req/s)")
    labels = ("on", "off-a", "off-b")
    with server(2, "on") as on, server(2, "off") as off_a, server(2, "off") as off_b:
        ports = dict(zip(labels, (on, off_a, off_b), strict=True))
        rates: dict[str, list[float]] = {label: [] for label in labels}
        ratio_on: list[float] = []
        ratio_aa: list[float] = []
        for port in ports.values():
            throughput(port, 0.3)  # warm up
        for r in range(args.rounds):
            order = labels[r % 3:] + labels[:r % 3]  # rotate who goes first
            got = {label: throughput(ports[label], args.seconds) for label in order}
            for label in labels:
                rates[label].append(got[label])
            ratio_on.append(got["on"] / got["off-a"])
            ratio_aa.append(got["off-b"] / got["off-a"])
        cells = "  ".join(f"{label}: {statistics.median(rates[label]):.0f}" for label in labels)
        print(f"   {cells}")
        print(f"   on vs off-a: {_spread(ratio_on)}   A/A off-b vs off-a: {_spread(ratio_aa)}"
              "   (target: no difference beyond A/A)")
        idle = max(5.0, args.seconds * 5)  # CPU is counted in 10 ms ticks
        before = {label: family_cpu_seconds(SERVERS[port]) for label, port in ports.items()}
        time.sleep(idle)
        used = {label: (family_cpu_seconds(SERVERS[port]) - before[label]) / idle * 1000
                for label, port in ports.items()}
        cells = "  ".join(f"{label}: {used[label]:.1f}" for label in labels)
        print(f"   idle CPU over {idle:g} s, supervisor + 2 workers (ms per s): {cells}")


if __name__ == "__main__":
    main()
