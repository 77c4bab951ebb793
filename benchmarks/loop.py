"""What the event-loop stall watchdog (``/block``) costs a busy app, and what it catches (§6).

Run:  .venv/bin/python benchmarks/loop.py [--quick] [--rounds 20] [--seconds 1] [--stalls 200]
      [--period-ms 10]

A small raw-ASGI app runs under a real uvicorn in a child process (this same file, ``--serve``)
on a free 127.0.0.1 port; its ``/work`` route does ~2 ms of CPU in ``async def`` and
``--clients`` keep-alive threads here (``cpu.py``'s load generator) keep its loop busy. The
watchdog is switched on and off through ``/watch`` (``WATCHDOGS.start`` / ``stop`` on the loop's
own thread, as the lifecycle middleware does).

1. Throughput: requests/s in 1 s windows with the watchdog off, off again (an A/A control) and
   on, the order rotating over ``--rounds`` rounds; the median of the per-round on/off ratios is
   judged (target >= 0.99). On a shared 2-CPU host single windows swing by tens of percent and
   the A/A control shows how far apart two identical windows land: when on/off falls short of
   0.99 by less than the control's own deviation, the row says NOISE (not resolvable here)
   rather than PASS or MISS. Also server CPU per request (its process CPU clock) and the direct
   cost: time in the probe callbacks (the server wraps ``_Watch._probe`` with a timer) plus
   the watchdog thread's CPU, as a share of wall time.
   (1b) The same in-process, where other programs matter least: the process CPU time a busy
   loop needs for a fixed amount of work (3 coroutines doing ~2 ms units back to back, so the
   loop never idles and the probes ride on its iterations, as under load), watchdog off
   and on, alternating over ``--cpu-rounds`` short rounds; judged on the best-decile windows
   of each (other programs only ever make a window slower, as ``timeit`` takes the minimum).
2. Stalls caught, under that same load: ``--stalls`` requests to ``/stall`` each block the loop
   for a uniformly random 110-150 ms (half ``time.sleep``, GIL released; half a pure-Python
   spin, GIL held), with a random 50-150 ms pause between them, then ``--exact`` stalls of
   exactly 100 ms. Each blocks inside ``request_labels.enter`` with its own X-Request-ID and
   returns the block's true duration; the recorded stalls are matched by request id. Caught =
   recorded at the default 100 ms threshold (target >= 95 %, for both); "right stack" = its
   blocking stack's innermost frame is the blocking function. Also the error of the recorded
   duration (a lower bound by design), and stalls recorded that no request caused.
3. The watchdog thread's own CPU per second (its thread CPU clock): with the loop idle, under
   load, and while stalls happen; and the idle server's CPU with and without the watchdog (an
   idle loop is never probed: only the watchdog thread wakes). ``--period-ms`` overrides the look
   period
   (default: the collector's own, 10 ms at a 100 ms threshold) to show the trade-off: a longer
   period wakes the watchdog less often but under-measures stalls by up to one period.

Prints one table with PASS/MISS (NOISE: see 1); exit status 1 if a target is missed. Loopback
only; the server is stopped (SIGINT, then SIGKILL) whatever happens. Default ~3.5 min,
``--quick`` ~1.2 min.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import cpu  # benchmarks/cpu.py: the same load generator and table
from _server import ServerProcess, serve_on_free_port
from cpu import Load, print_table, verdict

STALL_MS = 100
WORK_SIZE = 7_500
"""~2 ms of CPU per /work request: the server's loop, not the clients, is the bottleneck."""
TARGET_THROUGHPUT = 0.99
TARGET_CAUGHT = 0.95
STALL_RANGE_MS = (110.0, 150.0)


# --------------------------------------------------------------------------------------------
# Server side (the child process)
# --------------------------------------------------------------------------------------------


def bench_stall_sleep(ms: float) -> None:
    time.sleep(ms / 1000)


def bench_stall_spin(ms: float) -> None:
    end = time.perf_counter() + ms / 1000
    while time.perf_counter() < end:
        pass


def serve() -> None:
    """Bind a free loopback port, print it, serve until SIGINT/SIGTERM."""
    import asyncio
    from urllib.parse import parse_qs

    from pyprof_http import request_labels
    from pyprof_http.collectors import loop as loop_mod
    from pyprof_http.collectors.cpu import thread_cpu_ns

    beat_ns = [0]  # benchmark-only: the probes' own time on the loop, summed
    probe = loop_mod._Watch._probe

    def timed_probe(self: loop_mod._Watch, seq: int) -> None:
        started = time.perf_counter_ns()
        probe(self, seq)
        beat_ns[0] += time.perf_counter_ns() - started

    loop_mod._Watch._probe = timed_probe  # type: ignore[method-assign]
    period_ms = float(os.environ.get("BENCH_PERIOD_MS", "0"))
    if period_ms:
        loop_mod.MAX_PERIOD_NS = int(period_ms * 1e6)  # type: ignore[misc]

    def watchdog_cpu_ns() -> int:
        return sum(thread_cpu_ns(t.native_id) or 0 for t in threading.enumerate()
                   if t.name == loop_mod.THREAD_NAME and t.native_id is not None)

    def stalls(since: int) -> list[dict[str, Any]]:
        return [{"request_id": s.request_id, "duration_ns": s.duration_ns,
                 "top": s.stack[0].function if s.stack else "",
                 "samples": sum(n for _, n in s.stacks)}
                for s in loop_mod.WATCHDOGS.capture(since).stalls]

    async def route(path: str, query: dict[str, str], scope: dict[str, Any]) -> Any:
        loop = asyncio.get_running_loop()
        if path == "/work":
            return cpu.bench_compute(WORK_SIZE)
        if path == "/watch":
            if query["on"] == "1":
                loop_mod.WATCHDOGS.start(loop, STALL_MS)
            else:
                loop_mod.WATCHDOGS.stop(loop)
            return loop_mod.WATCHDOGS.is_watching(loop)
        if path == "/stall":
            block = bench_stall_sleep if query["kind"] == "sleep" else bench_stall_spin
            entered = request_labels.enter(scope)
            started = time.monotonic_ns()
            block(float(query["ms"]))
            took = time.monotonic_ns() - started
            request_labels.leave(entered)
            return took
        if path == "/stats":
            return {"now_ns": time.monotonic_ns(), "watchdog_cpu_ns": watchdog_cpu_ns(),
                    "beat_ns": beat_ns[0], "cpu_ns": time.process_time_ns()}
        if path == "/stalls":
            return stalls(int(query["since"]))
        return "pong"

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        body = json.dumps(await route(scope["path"], query, scope)).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    serve_on_free_port(app, lifespan="off")


# --------------------------------------------------------------------------------------------
# Client side
# --------------------------------------------------------------------------------------------


class Server(ServerProcess):
    """This file's app in a child uvicorn server, with the look period to use."""

    def __init__(self, period_ms: float) -> None:
        super().__init__([sys.executable, os.path.abspath(__file__), "--serve"],
                         env={**os.environ, "BENCH_PERIOD_MS": str(period_ms)},
                         stop_grace_s=cpu.STOP_GRACE_S)

    def __enter__(self) -> Server:
        super().__enter__()
        return self

    def get(self, path: str, **params: str | float) -> Any:
        import httpx

        response = httpx.get(f"http://127.0.0.1:{self.port}{path}", params=params, timeout=60,
                             trust_env=False)
        response.raise_for_status()
        return response.json()


@dataclass
class Cost:
    """Per-window figures with the watchdog off or on."""

    rps: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    """Server CPU ms per request (its process CPU clock): what the app pays per request,
    which other programs on the host disturb far less than requests/s."""
    direct: list[float] = field(default_factory=list)
    """Probe time + watchdog CPU over the window's wall time."""
    watchdog_ms_per_s: list[float] = field(default_factory=list)


def window(server: Server, load: Load | None, seconds: float, cost: Cost) -> float:
    """Measure one window; returns the server's CPU seconds per wall second."""
    before, stats = (load.total() if load else 0), server.get("/stats")
    started = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    after = server.get("/stats")
    cpu_ns = after["cpu_ns"] - stats["cpu_ns"]
    if load is not None:
        done = load.total() - before
        cost.rps.append(done / elapsed)
        cost.cpu_ms.append(cpu_ns / 1e6 / max(done, 1))
    watchdog_ns = after["watchdog_cpu_ns"] - stats["watchdog_cpu_ns"]
    cost.direct.append((watchdog_ns + after["beat_ns"] - stats["beat_ns"]) / (elapsed * 1e9))
    cost.watchdog_ms_per_s.append(watchdog_ns / 1e6 / elapsed)
    return cpu_ns / 1e9 / elapsed


def best_decile(values: list[int]) -> int:
    """The 10th-percentile CPU time: other programs only ever make a window slower."""
    return sorted(values)[int(0.1 * (len(values) - 1))]


def busy_loop_cpu(rounds: int, units: int) -> tuple[list[int], list[int]]:
    """(1b) Process CPU ns for ``units`` work units per round: (watchdog off, watchdog on)."""
    import asyncio

    from pyprof_http.collectors.loop import WATCHDOGS

    async def worker(n: int) -> None:
        for _ in range(n):
            cpu.bench_compute(WORK_SIZE)
            await asyncio.sleep(0)

    async def timed(on: bool) -> int:
        loop = asyncio.get_running_loop()
        if on:
            WATCHDOGS.start(loop, STALL_MS)
        started = time.process_time_ns()
        await asyncio.gather(*(worker(units // 3) for _ in range(3)))
        used = time.process_time_ns() - started
        WATCHDOGS.stop(loop)
        return used

    async def main() -> tuple[list[int], list[int]]:
        await timed(False)  # warm up
        used: dict[bool, list[int]] = {False: [], True: []}
        for r in range(rounds):
            for on in ((False, True) if r % 2 == 0 else (True, False)):
                used[on].append(await timed(on))
        return used[False], used[True]

    return asyncio.run(main())


@dataclass
class StallResult:
    true_ms: float
    recorded_ms: float | None
    top: str
    expected_top: str


def inject_stalls(server: Server, durations: list[float], seed: int) -> list[StallResult]:
    """One blocking request at a time, random pauses between; match what was recorded."""
    import httpx

    rng = random.Random(seed)
    since = server.get("/stats")["now_ns"]
    true: dict[str, tuple[float, str]] = {}
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=60,
                      trust_env=False) as client:
        for i, ms in enumerate(durations):
            kind = "sleep" if i % 2 == 0 else "spin"
            rid = f"stall-{seed}-{i}"
            took = client.get("/stall", params={"ms": f"{ms:.3f}", "kind": kind},
                              headers={"X-Request-ID": rid}).json()
            true[rid] = (took / 1e6, f"bench_stall_{kind}")
            time.sleep(rng.uniform(0.05, 0.15))
        time.sleep(0.1)
        recorded = {s["request_id"]: s for s in server.get("/stalls", since=since)}
    stray = [s for rid, s in recorded.items() if rid not in true]
    if stray:
        print(f"  {len(stray)} stall(s) recorded that no /stall request caused: "
              f"{[(s['top'], round(s['duration_ns'] / 1e6, 1)) for s in stray][:5]}")
    return [StallResult(ms, recorded[rid]["duration_ns"] / 1e6 if rid in recorded else None,
                        recorded[rid]["top"] if rid in recorded else "", expected)
            for rid, (ms, expected) in true.items()]


def describe_errors(results: list[StallResult]) -> str:
    errors = sorted(r.recorded_ms - r.true_ms for r in results if r.recorded_ms is not None)
    if not errors:
        return "-"
    p5, p95 = errors[int(0.05 * (len(errors) - 1))], errors[int(0.95 * (len(errors) - 1))]
    return (f"median {statistics.median(errors):+.1f} ms, p5..p95 {p5:+.1f}..{p95:+.1f}, "
            f"range {errors[0]:+.1f}..{errors[-1]:+.1f}")


def caught(results: list[StallResult]) -> tuple[float, float]:
    """(share recorded, share recorded with the blocking function innermost)."""
    found = [r for r in results if r.recorded_ms is not None]
    right = [r for r in found if r.top.rsplit(".", 1)[-1] == r.expected_top]
    return len(found) / len(results), len(right) / len(results)


@dataclass
class Run:
    idle_cpu: dict[str, float] = field(default_factory=dict)
    idle: Cost = field(default_factory=Cost)
    off: Cost = field(default_factory=Cost)
    on: Cost = field(default_factory=Cost)
    during_stalls: Cost = field(default_factory=Cost)
    ranged: list[StallResult] = field(default_factory=list)
    exact: list[StallResult] = field(default_factory=list)
    load_errors: int = 0
    control: Cost = field(default_factory=Cost)
    """A second "off" window per round (A/A): how far two identical windows differ here."""
    busy_off: list[int] = field(default_factory=list)
    busy_on: list[int] = field(default_factory=list)


def measure(args: argparse.Namespace) -> Run:
    run = Run()
    rng = random.Random(1)
    budget = args.rounds * 3 * (args.seconds + 1) + (args.stalls + args.exact) * 0.5 + 60
    period = f"{args.period_ms:g} ms" if args.period_ms else "default"
    print(f"watchdog look period: {period}", flush=True)
    with Server(args.period_ms) as server:
        cpu._wait_ready(f"http://127.0.0.1:{server.port}")
        for state in ("0", "1"):  # idle: what the watchdog's wake-ups cost an idle server
            server.get("/watch", on=state)
            time.sleep(0.2)
            run.idle_cpu[state] = window(server, None, args.idle_seconds,
                                         run.idle if state == "1" else Cost())
        server.get("/watch", on="0")
        with Load(f"http://127.0.0.1:{server.port}", args.clients, budget) as load:
            time.sleep(1.0)  # warm up
            states = [("0", run.off), ("0", run.control), ("1", run.on)]
            for r in range(args.rounds):
                for state, cost in states[r % 3:] + states[:r % 3]:  # rotate the order
                    server.get("/watch", on=state)
                    time.sleep(0.2)
                    window(server, load, args.seconds, cost)
                print(f"  round {r + 1}/{args.rounds}: off {run.off.rps[-1]:6.1f}, "
                      f"off again {run.control.rps[-1]:6.1f}, on {run.on.rps[-1]:6.1f} req/s",
                      flush=True)
            server.get("/watch", on="1")
            print(f"  {args.stalls} stalls of {STALL_RANGE_MS[0]:.0f}-{STALL_RANGE_MS[1]:.0f} ms "
                  f"and {args.exact} of exactly {STALL_MS} ms under load ...", flush=True)
            before = server.get("/stats")
            started = time.monotonic()
            run.ranged = inject_stalls(server, [rng.uniform(*STALL_RANGE_MS)
                                                for _ in range(args.stalls)], seed=1)
            run.exact = inject_stalls(server, [float(STALL_MS)] * args.exact, seed=2)
            elapsed, after = time.monotonic() - started, server.get("/stats")
            run.during_stalls.watchdog_ms_per_s.append(
                (after["watchdog_cpu_ns"] - before["watchdog_cpu_ns"]) / 1e6 / elapsed)
            run.load_errors = load.errors
    print(f"  in-process busy loop, {args.cpu_rounds} rounds ...", flush=True)
    run.busy_off, run.busy_on = busy_loop_cpu(args.cpu_rounds, units=150)
    return run


def _spread(ratios: list[float]) -> str:
    return (f"{statistics.median(ratios):.3f} per-round median, "
            f"range {min(ratios):.2f}-{max(ratios):.2f}")


def report(run: Run, args: argparse.Namespace) -> bool:
    ratios = [on / off for on, off in zip(run.on.rps, run.off.rps, strict=True)]
    ratio = statistics.median(ratios)
    control = [again / off for again, off in zip(run.control.rps, run.off.rps, strict=True)]
    noise = abs(1 - statistics.median(control))
    capacity = [off / on for on, off in zip(run.on.cpu_ms, run.off.cpu_ms, strict=True)]
    busy_ratios = [off / on for on, off in zip(run.busy_on, run.busy_off, strict=True)]
    busy = best_decile(run.busy_off) / best_decile(run.busy_on)
    share, right = caught(run.ranged)
    exact_share, exact_right = caught(run.exact)
    throughput = ("PASS" if ratio >= TARGET_THROUGHPUT
                  else "NOISE" if 1 - ratio <= noise else "MISS")
    ok = throughput != "MISS" and busy >= TARGET_THROUGHPUT and share >= TARGET_CAUGHT
    rows = [
        ("throughput, watchdog off", f"{statistics.median(run.off.rps):.0f} req/s, "
         f"{statistics.median(run.off.cpu_ms):.2f} server CPU ms/req", "", ""),
        ("throughput on / off", _spread(ratios), f">= {TARGET_THROUGHPUT:.2f}", throughput),
        ("  control: off / off (A/A)", _spread(control), "(noise floor)", ""),
        ("  server CPU/request off / on", _spread(capacity), "(info)", ""),
        ("busy loop in-process, CPU off / on",
         f"{busy:.4f} best deciles ({_spread(busy_ratios)})",
         f">= {TARGET_THROUGHPUT:.2f}", verdict(busy >= TARGET_THROUGHPUT)),
        ("direct cost under load", f"{statistics.median(run.on.direct):.3%} of wall time "
         "(probes + watchdog CPU)", "(info)", ""),
        (f"stalls {STALL_RANGE_MS[0]:.0f}-{STALL_RANGE_MS[1]:.0f} ms caught",
         f"{share:.1%} of {len(run.ranged)} (right stack {right:.1%})",
         f">= {TARGET_CAUGHT:.0%}", verdict(share >= TARGET_CAUGHT)),
        ("  recorded - true duration", describe_errors(run.ranged), "(info)", ""),
        (f"stalls of exactly {STALL_MS} ms caught",
         f"{exact_share:.1%} of {len(run.exact)} (right stack {exact_right:.1%})",
         f">= {TARGET_CAUGHT:.0%}", verdict(exact_share >= TARGET_CAUGHT)),
        ("  recorded - true duration", describe_errors(run.exact), "(info)", ""),
        ("watchdog thread CPU, idle loop",
         f"{statistics.median(run.idle.watchdog_ms_per_s):.3f} ms/s", "(info)", ""),
        ("watchdog thread CPU, under load",
         f"{statistics.median(run.on.watchdog_ms_per_s):.3f} ms/s", "(info)", ""),
        ("watchdog thread CPU, during stalls",
         f"{run.during_stalls.watchdog_ms_per_s[0]:.3f} ms/s", "(info)", ""),
        ("idle server CPU, off -> on",
         f"{run.idle_cpu['0'] * 1e3:.2f} -> {run.idle_cpu['1'] * 1e3:.2f} ms/s "
         "(watchdog wake-ups)", "(info)", ""),
    ]
    if run.load_errors:
        print(f"  ({run.load_errors} load requests failed)")
    print()
    print_table(rows)
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (~1 min)")
    parser.add_argument("--rounds", type=int, default=None, help="throughput rounds (20)")
    parser.add_argument("--seconds", type=float, default=1.0, help="window length (1)")
    parser.add_argument("--cpu-rounds", type=int, default=None, help="(1b) rounds (40)")
    parser.add_argument("--period-ms", type=float, default=0.0, help="watchdog look period")
    parser.add_argument("--clients", type=int, default=3, help="load threads (3)")
    parser.add_argument("--stalls", type=int, default=None, help="110-150 ms stalls (200)")
    parser.add_argument("--exact", type=int, default=None, help="exactly-100 ms stalls (50)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return 0
    args.rounds = args.rounds or (10 if args.quick else 20)
    args.cpu_rounds = args.cpu_rounds or (12 if args.quick else 40)
    args.idle_seconds = 3.0 if args.quick else 6.0
    args.stalls = args.stalls or (60 if args.quick else 200)
    args.exact = args.exact or (20 if args.quick else 50)
    if args.rounds < 1 or args.seconds < 0.5 or args.clients < 1 or args.stalls < 1:
        parser.error("--rounds, --clients, --stalls >= 1; --seconds >= 0.5")
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
          f"{args.rounds} round(s) x off/on windows of {args.seconds} s, {args.clients} load "
          f"threads on /work (~2 ms CPU in async def); threshold {STALL_MS} ms")
    return 0 if report(measure(args), args) else 1


if __name__ == "__main__":
    sys.exit(main())
