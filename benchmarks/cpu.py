"""What ``/debug/pprof/profile`` costs a busy app, and how well it measures.

Run:  .venv/bin/python benchmarks/cpu.py [--quick] [--rounds 12] [--seconds 2] [--clients 3]

1. Throughput. A FastAPI app with ``pyprof_http.install`` runs under a real uvicorn in a child
   process (this same file, ``--serve``) on a free 127.0.0.1 port; its ``/work`` route does
   ~4 ms of CPU work inside ``async def`` (it holds the event loop). ``--clients`` threads here
   hammer it over keep-alive connections for the whole run, enough to keep the server's loop
   busy all the time. Requests/s are counted in windows of the same length with no profile
   (twice: "none" and "none-b", whose ratio is the A/A noise figure: what a ratio looks like
   when nothing changed), and while a ``/profile?seconds=N`` request runs in mode cpu (100 Hz),
   wall (100 Hz) and tracing. The phases are interleaved over ``--rounds`` rounds; each is
   compared with "none" of the same round and the median ratio is judged (the spread over
   rounds is shown: on a shared VM a single 2 s window can be off by 20 %).
2. Sample rate under that load: ``achieved_hz`` from the ``X-Pyprof-Sampler`` header of the cpu
   and wall profiles above (median over rounds), and, for cpu mode (ITIMER_PROF counts the
   process's CPU time), ticks per second of server CPU read from /proc. Then the same for a
   sync route (``def``: the CPU is burnt in the thread pool while the loop's thread waits).
3. In-process: the rate when the main thread blocks (a join) while a worker burns CPU; the
   70/30 attribution (two threads burn CPU in a real 70/30 duty cycle, hashing a large buffer
   releases the GIL, so both really run; the sampled shares are compared with each thread's own
   ``time.thread_time()``: cpu weights are those clocks, so the sampled share follows the true
   one, which itself moves with the machine's load); and the share of CPU charged to a
   ``time.sleep`` line by two threads doing pure-Python bursts with 2 ms sleeps in between.
4. Memory, in-process: a workload with a fixed set of 20 call paths is profiled for
   ``--memory-long`` (60) s and for ``--memory-short`` (10) s under tracemalloc; what
   pyprof_http's code still holds at the end (the aggregate) must not grow with the duration.

Prints one table with PASS/MISS against the targets; exit status 1 if one is missed. Loopback
only; the server is stopped (SIGINT, then SIGKILL) whatever happens. ``--quick`` takes ~50 s,
the default run ~3.5 minutes.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from _server import ServerProcess, serve_on_free_port

HZ = 100
WORK_SIZE = 15_000
"""Items sorted and summed per /work request: ~4 ms of CPU, so the server, not this client, is
the bottleneck."""
STARTUP_TIMEOUT_S = 30.0
STOP_GRACE_S = 10.0
TARGET_THROUGHPUT = 0.95
TARGET_RATE = 0.90
TARGET_ATTRIBUTION_POINTS = 3.0


# --------------------------------------------------------------------------------------------
# Server side (the child process)
# --------------------------------------------------------------------------------------------


def bench_compute(size: int) -> int:
    data = [(i * 7919) % 1009 for i in range(size)]
    data.sort()
    return sum(x * x for x in data) % 1_000_003


def bench_render(value: int) -> str:
    import json

    return json.dumps({"value": value, "items": [{"id": i, "v": value % (i + 1)}
                                                 for i in range(100)]})


def serve() -> None:
    """Bind a free loopback port, print it, serve until SIGINT/SIGTERM."""
    from fastapi import FastAPI
    from starlette.responses import PlainTextResponse, Response

    import pyprof_http
    from pyprof_http.collectors import cpu

    # Benchmark-only instrumentation: the time the sampler's own tick takes, summed, so its
    # direct share of the server's time is known even when the host's noise hides it in req/s.
    tick_seconds = [0.0]
    tick = cpu.Sampler.tick

    def timed_tick(self: cpu.Sampler, interrupted: Any = None) -> None:
        started = time.perf_counter()
        tick(self, interrupted)
        tick_seconds[0] += time.perf_counter() - started

    cpu.Sampler.tick = timed_tick  # type: ignore[method-assign]
    app = FastAPI()

    @app.get("/tick-seconds")
    async def tick_total() -> PlainTextResponse:
        return PlainTextResponse(repr(tick_seconds[0]))

    @app.get("/ping")
    async def ping() -> PlainTextResponse:
        return PlainTextResponse("pong")

    @app.get("/work")
    async def work() -> Response:
        return Response(bench_render(bench_compute(WORK_SIZE)), media_type="application/json")

    @app.get("/work-sync")
    def work_sync() -> Response:  # FastAPI runs it in its thread pool
        return Response(bench_render(bench_compute(WORK_SIZE)), media_type="application/json")

    pyprof_http.install(app)
    serve_on_free_port(app)


# --------------------------------------------------------------------------------------------
# Client side: server process, load generator, throughput phases
# --------------------------------------------------------------------------------------------


def server_process() -> ServerProcess:
    """This file's app in a child uvicorn server."""
    return ServerProcess([sys.executable, os.path.abspath(__file__), "--serve"],
                         stop_grace_s=STOP_GRACE_S)


class Load:
    """``clients`` threads, each on its own keep-alive connection, hammering ``/work``."""

    def __init__(self, base_url: str, clients: int, max_seconds: float,
                 path: str = "/work") -> None:
        self.base_url, self.clients, self.path = base_url, clients, path
        self.deadline = time.monotonic() + max_seconds  # bounded whatever happens
        self.counts = [0] * clients
        self.errors = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def total(self) -> int:
        return sum(self.counts)

    def _run(self, index: int) -> None:
        import httpx

        with httpx.Client(base_url=self.base_url, timeout=30, trust_env=False) as client:
            while not self._stop.is_set() and time.monotonic() < self.deadline:
                try:
                    client.get(self.path).raise_for_status()
                    self.counts[index] += 1
                except httpx.HTTPError:
                    self.errors += 1
                    time.sleep(0.01)

    def __enter__(self) -> Load:
        self._threads = [threading.Thread(target=self._run, args=(i,), name=f"load-{i}",
                                          daemon=True) for i in range(self.clients)]
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)


@dataclass
class Phase:
    name: str
    rps: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    """Server CPU ms per request."""
    achieved_hz: list[float] = field(default_factory=list)
    per_cpu_second: list[float] = field(default_factory=list)
    tick_share: list[float] = field(default_factory=list)
    """The sampler's own tick time over the profile's duration."""


    def add(self, rps: float, cpu_ms: float) -> None:
        self.rps.append(rps)
        self.cpu_ms.append(cpu_ms)


def parse_sampler(header: str) -> dict[str, str]:
    return dict(item.strip().split("=", 1) for item in header.split(";"))


def measure_window(load: Load, server: ServerProcess, seconds: float) -> tuple[float, float]:
    """Requests/s, and server CPU ms per request, over ``seconds``."""
    before, cpu_before, started = load.total(), server.cpu_seconds(), time.monotonic()
    time.sleep(seconds)
    done, cpu_used = load.total() - before, server.cpu_seconds() - cpu_before
    return done / (time.monotonic() - started), 1000 * cpu_used / max(done, 1)


def run_phase(phase: Phase, server: ServerProcess, load: Load, seconds: int) -> None:
    """Count requests/s while ``/profile?seconds=N`` runs (or, for "none", as long)."""
    import httpx

    settle = 0.15
    window = seconds - 2 * settle
    if phase.name.startswith("none"):
        time.sleep(settle)
        phase.add(*measure_window(load, server, window))
        time.sleep(settle)
        return
    params = {"seconds": str(seconds), "mode": phase.name.removesuffix("-sync")}
    result: list[httpx.Response] = []
    cpu: list[float] = []
    ticks: list[float] = []

    def profile() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=seconds + 60,
                          trust_env=False) as client:
            ticks_before = float(client.get("/tick-seconds").text)
            cpu.append(server.cpu_seconds())
            started = time.monotonic()
            result.append(client.get("/debug/pprof/profile", params=params))
            elapsed = time.monotonic() - started
            cpu.append(server.cpu_seconds())
            ticks.append((float(client.get("/tick-seconds").text) - ticks_before) / elapsed)

    thread = threading.Thread(target=profile, name="profile-request")
    thread.start()
    time.sleep(settle)
    phase.add(*measure_window(load, server, window))
    thread.join(seconds + 60)
    if not result or result[0].status_code != 200:
        raise RuntimeError(f"profile {phase.name} failed: "
                           f"{result[0].status_code if result else 'no answer'} "
                           f"{result[0].text[:200] if result else ''}")
    header = result[0].headers.get("X-Pyprof-Sampler")
    if header:
        info = parse_sampler(header)
        hz = float(info["achieved_hz"])
        phase.achieved_hz.append(hz)
        if len(cpu) == 2 and cpu[1] > cpu[0]:
            phase.per_cpu_second.append(hz * seconds / (cpu[1] - cpu[0]))
        phase.tick_share.extend(ticks)


def measure_throughput(rounds: int, seconds: int, clients: int) -> dict[str, Phase]:
    """Interleaved rounds of none / cpu / none-b / wall / tracing on one server under constant
    load on the async route, then cpu profiles with the load on the sync route."""
    names = ("none", "none-b", "cpu", "wall", "tracing")
    phases = {name: Phase(name) for name in (*names, "cpu-sync")}
    sync_rounds = max(2, rounds // 2)
    budget = rounds * len(names) * (seconds + 3) + 30
    # Not pinned to CPUs: pinning the load threads to one CPU made them, not the server, the
    # bottleneck (the server idled ~20 % of the time and cpu-mode ticks fell to ~80/s).
    with server_process() as server:
        base = f"http://127.0.0.1:{server.port}"
        _wait_ready(base)
        with Load(base, clients, budget) as load:
            time.sleep(1.0)  # warm up
            for r in range(rounds):
                # alternate the order of the compared phases (drift cancels out); tracing,
                # which slows the server most, always comes last
                order = [phases[n] for n in ("none", "cpu", "none-b", "wall")]
                if r % 2:
                    order.reverse()
                for phase in (*order, phases["tracing"]):
                    run_phase(phase, server, load, seconds)
                    _print_round(f"{r + 1}/{rounds}", phase)
            if load.errors:
                print(f"  ({load.errors} load requests failed)")
        with Load(base, clients, sync_rounds * (seconds + 3) + 30, "/work-sync") as load:
            time.sleep(1.0)
            for r in range(sync_rounds):
                run_phase(phases["cpu-sync"], server, load, seconds)
                _print_round(f"sync {r + 1}/{sync_rounds}", phases["cpu-sync"])
    return phases


def _print_round(label: str, phase: Phase) -> None:
    print(f"  round {label} {phase.name:>8}: {phase.rps[-1]:7.1f} req/s, "
          f"{phase.cpu_ms[-1]:.2f} server CPU ms/req"
          + (f", achieved {phase.achieved_hz[-1]:.1f} Hz" if phase.achieved_hz else ""),
          flush=True)


def round_ratios(phases: dict[str, Phase], name: str) -> list[float]:
    """Throughput of ``name`` over "no profile" in the same round, for each round."""
    return [p / n for p, n in zip(phases[name].rps, phases["none"].rps, strict=True)]


def _wait_ready(base: str) -> None:
    import httpx

    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/ping", timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError("server not ready")


# --------------------------------------------------------------------------------------------
# In-process: attribution and memory
# --------------------------------------------------------------------------------------------


def attribution(seconds: float) -> tuple[float, float, str]:
    """(true share of the 70 % thread, sampled share, driver description)."""
    import asyncio
    import hashlib

    from pyprof_http.collectors import cpu

    buffer = b"\x5a" * (256 * 1024)
    go, stop, leave = threading.Event(), threading.Event(), threading.Event()
    truth: dict[str, float] = {}

    def burner(work_ms: float) -> None:
        name = threading.current_thread().name
        go.wait()
        started = time.thread_time()
        while not stop.is_set():
            cycle = time.thread_time()
            while time.thread_time() - cycle < work_ms / 1000:
                hashlib.sha256(buffer).digest()
            time.sleep((10 - work_ms) / 1000)
        truth[name] = time.thread_time() - started
        leave.wait()

    threads = [threading.Thread(target=burner, args=(7.0,), name="burn-70"),
               threading.Thread(target=burner, args=(3.0,), name="burn-30")]
    for t in threads:
        t.start()

    async def wait(duration: float) -> None:
        go.set()
        await asyncio.sleep(duration)
        stop.set()
        while len(truth) < 2:
            await asyncio.sleep(0.001)

    try:
        capture = asyncio.run(cpu.record("cpu", HZ, seconds, 64, wait))
    finally:
        go.set()
        stop.set()
        leave.set()
        for t in threads:
            t.join()
    sampled: dict[str, int] = {}
    for sample in capture.profile.samples:
        name = str(sample.labels["thread"])
        sampled[name] = sampled.get(name, 0) + sample.values[1]
    true_share = truth["burn-70"] / (truth["burn-70"] + truth["burn-30"])
    our_share = sampled["burn-70"] / (sampled["burn-70"] + sampled["burn-30"])
    return true_share, our_share, capture.describe()


def _bench_hot(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i
    return total


def blocked_main_rate(seconds: float) -> tuple[float, float, str]:
    """(ticks per wall second, per second of CPU, driver) while the main thread blocks in a
    join and a worker burns pure Python: only the signal driver's helper thread can tick."""
    from pyprof_http.collectors import cpu
    from pyprof_http.collectors.drivers import SignalDriver, TickGate

    stop = threading.Event()

    def burner() -> None:
        while not stop.is_set():
            _bench_hot(2000)

    sampler = cpu.Sampler("cpu", 64, set)
    driver = SignalDriver("cpu")
    worker = threading.Thread(target=burner, name="bench-burner")
    timer = threading.Timer(seconds, stop.set)
    sampler.baseline()
    cpu_before, started = time.process_time(), time.monotonic()
    driver.start(TickGate(sampler.tick, 1.0 / HZ))
    try:
        worker.start()
        timer.start()
        worker.join()
    finally:
        driver.stop()
        stop.set()
        timer.cancel()
    wall, cpu_used = time.monotonic() - started, time.process_time() - cpu_before
    return sampler.ticks / wall, sampler.ticks / cpu_used, driver.name


def sleep_line_share(seconds: float) -> float:
    """Share of two bursting threads' sampled CPU charged to their ``time.sleep`` line (they
    burn pure Python for 7 or 3 ms, then sleep 2 ms: the true share is ~0)."""
    import asyncio

    from pyprof_http.collectors import cpu

    go, stop = threading.Event(), threading.Event()
    done: list[str] = []

    def burner(work_ms: float) -> None:
        go.wait()
        while not stop.is_set():
            cycle = time.thread_time()
            while time.thread_time() - cycle < work_ms / 1000:
                _bench_hot(2000)
            time.sleep(0.002)  # the sleep line
        done.append(threading.current_thread().name)

    threads = [threading.Thread(target=burner, args=(ms,), name=f"bursts-{ms:.0f}")
               for ms in (7.0, 3.0)]
    for t in threads:
        t.start()

    async def wait(duration: float) -> None:
        go.set()
        await asyncio.sleep(duration)
        stop.set()

    try:
        capture = asyncio.run(cpu.record("cpu", HZ, seconds, 64, wait))
    finally:
        go.set()
        stop.set()
        for t in threads:
            t.join()
    total = at_sleep = 0
    for sample in capture.profile.samples:
        if str(sample.labels["thread"]).startswith("bursts-"):
            total += sample.values[1]
            if sample.stack and sample.stack[0].function.endswith("burner"):
                at_sleep += sample.values[1]
    return at_sleep / total if total else 0.0


def _mem_leaf(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i
    return total


def _mem_recurse(depth: int) -> int:
    return _mem_leaf(20_000) if depth == 0 else _mem_recurse(depth - 1)


@dataclass
class MemoryResult:
    seconds: float
    held_bytes: int
    peak_bytes: int
    stacks: int
    samples: int
    rss_delta_kib: int


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def memory(seconds: float) -> MemoryResult:
    """Profile a workload with 20 distinct stacks for ``seconds``; what pyprof_http holds."""
    import asyncio
    import gc
    import tracemalloc

    from pyprof_http.collectors import cpu
    from pyprof_http.collectors.drivers import TickGate, choose_driver

    own_dir = os.path.dirname(os.path.dirname(os.path.abspath(cpu.__file__)))  # pyprof_http/
    stop = threading.Event()

    def workload() -> None:
        depth = 0
        while not stop.is_set():
            _mem_recurse(depth)
            depth = (depth + 1) % 20

    worker = threading.Thread(target=workload, name="mem-workload")
    worker.start()
    gc.collect()
    rss_before = _rss_kib()
    tracemalloc.start(1)
    try:
        async def record() -> tuple[cpu.Sampler, int]:
            # cpu.record's own composition, keeping the sampler to measure its aggregate
            driver = choose_driver("cpu")
            sampler = cpu.Sampler("cpu", 64, driver.skipped_threads)
            sampler.baseline()
            tracemalloc.reset_peak()
            driver.start(TickGate(sampler.tick, 1.0 / HZ))
            try:
                await asyncio.sleep(seconds)
            finally:
                driver.stop()
            return sampler, sampler.ticks

        sampler, _ticks = asyncio.run(record())
        gc.collect()
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(True, os.path.join(own_dir, "*"))])
        held = sum(stat.size for stat in snapshot.statistics("filename"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        stop.set()
        worker.join()
    profile = sampler.profile(HZ, 0, int(seconds * 1e9), ())
    return MemoryResult(seconds, held, peak, len(profile.samples),
                        sum(s.values[0] for s in profile.samples), _rss_kib() - rss_before)


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def print_table(rows: list[tuple[str, str, str, str]]) -> None:
    header = ("metric", "measured", "target", "result")
    lines = [header, *rows]
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    for n, line in enumerate(lines):
        print(" | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
        if n == 0:
            print("-+-".join("-" * w for w in widths))


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (~50 s)")
    parser.add_argument("--rounds", type=int, default=None, help="throughput rounds (12)")
    parser.add_argument("--seconds", type=int, default=None, help="profile length (2)")
    parser.add_argument("--clients", type=int, default=3, help="load threads (3)")
    parser.add_argument("--attribution-seconds", type=float, default=None, help="(3)")
    parser.add_argument("--memory-long", type=float, default=None, help="(60)")
    parser.add_argument("--memory-short", type=float, default=None, help="(10)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return 0
    quick = args.quick
    rounds = args.rounds or (3 if quick else 12)
    seconds = args.seconds or 2
    attribution_s = args.attribution_seconds or (2.0 if quick else 3.0)
    mem_long = args.memory_long or (12.0 if quick else 60.0)
    mem_short = args.memory_short or (2.0 if quick else 10.0)
    if rounds < 1 or seconds < 2 or args.clients < 1:
        parser.error("--rounds >= 1, --seconds >= 2, --clients >= 1")

    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
          f"{rounds} round(s) x 5 phases of /profile?seconds={seconds}, {args.clients} load "
          f"threads on /work (~4 ms CPU in async def); load average {os.getloadavg()[0]:.1f} "
          "(other processes on this machine move every figure: compare with the A/A row)")
    phases = measure_throughput(rounds, seconds, args.clients)
    print(f"attribution: 70/30 duty cycle for {attribution_s:.0f} s ...", flush=True)
    true_share, our_share, described = attribution(attribution_s)
    print(f"main thread blocked, a worker burning: {attribution_s:.0f} s ...", flush=True)
    blocked_wall, blocked_cpu, blocked_driver = blocked_main_rate(attribution_s)
    print(f"bursts and 2 ms sleeps: {attribution_s:.0f} s ...", flush=True)
    at_sleep = sleep_line_share(attribution_s)
    print(f"memory: {mem_short:.0f} s and {mem_long:.0f} s profiles of 20 stacks ...", flush=True)
    short, long_ = memory(mem_short), memory(mem_long)

    base = statistics.median(phases["none"].rps)
    rows: list[tuple[str, str, str, str]] = []
    ok = True
    rows.append(("throughput, no profile", f"{base:.0f} req/s", "", ""))
    noise = round_ratios(phases, "none-b")
    rows.append(("A/A noise: none-b / none", f"{statistics.median(noise):.2f} (rounds "
                 f"{min(noise):.2f}-{max(noise):.2f})", "(a ratio of nothing)", ""))
    for name, target in (("cpu", TARGET_THROUGHPUT), ("wall", TARGET_THROUGHPUT),
                         ("tracing", None)):
        ratios = round_ratios(phases, name)
        ratio = statistics.median(ratios)
        cost = statistics.median(p / n for p, n in zip(phases[name].cpu_ms,
                                                       phases["none"].cpu_ms, strict=True))
        spread = (f"{ratio:.2f} (rounds {min(ratios):.2f}-{max(ratios):.2f}; "
                  f"server CPU/req x{cost:.2f})")
        if phases[name].tick_share and name != "tracing":
            spread += f"; ticks {statistics.median(phases[name].tick_share):.1%} of server time"
        if target is None:
            rows.append((f"throughput during {name} / none", spread, "(info)", ""))
        else:
            ok &= ratio >= target
            rows.append((f"throughput during {name} {HZ} Hz / none", spread,
                         f">= {target:.2f}", verdict(ratio >= target)))
    for name in ("cpu", "wall"):
        hz = statistics.median(phases[name].achieved_hz) if phases[name].achieved_hz else 0.0
        rate, unit = hz, " Hz"
        extra = ""
        if name == "cpu" and phases[name].per_cpu_second:
            # ITIMER_PROF ticks per second of the process's CPU: on a shared machine the
            # server may get less than a core, and the rate per wall second with it
            rate, unit = statistics.median(phases[name].per_cpu_second), "/CPU s"
            extra = f"; {rate:.0f}/server CPU s"
        ok &= rate >= TARGET_RATE * HZ
        rows.append((f"achieved rate under load, {name}", f"{hz:.1f} Hz{extra}",
                     f">= {TARGET_RATE * HZ:.0f}{unit}", verdict(rate >= TARGET_RATE * HZ)))
    sync = phases["cpu-sync"]
    if sync.achieved_hz:
        hz = statistics.median(sync.achieved_hz)
        per_cpu = statistics.median(sync.per_cpu_second) if sync.per_cpu_second else 0.0
        ok &= per_cpu >= TARGET_RATE * HZ
        rows.append(("achieved rate, cpu, sync route (pool threads)",
                     f"{hz:.1f} Hz; {per_cpu:.0f}/server CPU s",
                     f">= {TARGET_RATE * HZ:.0f}/CPU s", verdict(per_cpu >= TARGET_RATE * HZ)))
    ok &= blocked_cpu >= TARGET_RATE * HZ
    rows.append((f"achieved rate, main thread blocked ({blocked_driver})",
                 f"{blocked_wall:.1f} Hz; {blocked_cpu:.0f}/CPU s",
                 f">= {TARGET_RATE * HZ:.0f}/CPU s", verdict(blocked_cpu >= TARGET_RATE * HZ)))
    rows.append(("CPU charged to a time.sleep line", f"{at_sleep:.1%} (true: ~0)", "(info)", ""))
    error = abs(our_share - true_share) * 100
    ok &= error <= TARGET_ATTRIBUTION_POINTS
    rows.append(("attribution error, 70/30 split",
                 f"{error:.2f} pts (truth {true_share:.1%}, sampled {our_share:.1%})",
                 f"<= {TARGET_ATTRIBUTION_POINTS:.0f} pts",
                 verdict(error <= TARGET_ATTRIBUTION_POINTS)))
    for result in (short, long_):
        rows.append((f"memory held after {result.seconds:.0f} s profile",
                     f"{result.held_bytes / 1024:.0f} KiB ({result.stacks} stacks, "
                     f"{result.samples} samples; peak {result.peak_bytes / 1024:.0f} KiB, "
                     f"RSS {result.rss_delta_kib:+d} KiB)", "", ""))
    growth = long_.held_bytes / max(short.held_bytes, 1)
    samples_growth = long_.samples / max(short.samples, 1)
    bounded = long_.held_bytes <= 1.25 * short.held_bytes + 64 * 1024
    ok &= bounded
    rows.append((f"memory {long_.seconds:.0f} s / {short.seconds:.0f} s",
                 f"x{growth:.2f} (samples x{samples_growth:.1f})",
                 "bounded by stacks", verdict(bounded)))
    print()
    print(f"in-process sampler: {described}")
    print_table(rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
