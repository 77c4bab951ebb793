"""What the always-on heap sampler costs and how accurate it is (figures for the README).

Run:  .venv/bin/python benchmarks/heap_sampling.py [--rounds 11] [--slice 0.4] [--http-rounds 6]

0. HTTP: three uvicorn children (this file with ``--serve``) serve one FastAPI app with
   ``install()``: sampler off, off again (A/A), at 512 KiB; 4 keep-alive client threads load
   one at a time with a route mix (200 dicts encoded, JSON of nested calls on the thread pool,
   a churning cache); the server's CPU per request is compared (its inverse is throughput on
   a CPU-bound server; CPU, not wall time, since this machine is shared).

1. Throughput: an allocation-heavy loop (lists of small dicts and strings, 30 frames deep like a
   request handler under a framework, plus JSON encoding) runs ``--slice`` seconds at a time
   with: the sampler off (hook not installed), off again (A/A noise), sampling at 512 KiB
   (the default), sampling at 64 KiB, tracemalloc with 1 frame and, where ddtrace is
   installed, Datadog's memalloc at 512 KiB; interleaved over
   ``--rounds`` rounds, the ratio of the median iterations per CPU second to "off" is
   printed (thread CPU time: the machine is shared, wall time would measure its load).
2. Attribution: 70 % / 30 % of ~2 GB allocated from two functions plus one site that keeps
   64 MB, at the default 512 KiB: the estimated shares (error in points) and the rank of the
   leaking site in inuse_space. Repeated with several seeds.
3. Sampler memory after an hour-equivalent: a service allocating 100 MB/s allocates 360 GB an
   hour, ~690,000 samples at 512 KiB. The same number of samples is drawn at 4 KiB from 2.8 GB
   of churn over 2,000 distinct call sites with 64 MB kept live; the sampler's own memory (its
   C tables) is printed.

In-process; ~1 minute on a 2-CPU VM. Nothing is left running.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable

from pyprof_http.collectors import heap_sampler

DEFAULT_RATE = 512 * 1024


def nest(depth: int, work: Callable[[], object]) -> object:
    return nest(depth - 1, work) if depth else work()


def request_like() -> object:
    rows = [{"id": i, "name": f"user-{i}", "tags": ["a", "b", str(i)]} for i in range(20)]
    return json.dumps(rows)


def iterations(seconds: float) -> float:
    """Iterations per second of this thread's CPU time (the machine is shared: wall time
    would measure the other processes' load), for about ``seconds`` of CPU."""
    done = 0
    start = time.thread_time()
    while time.thread_time() - start < seconds:
        for _ in range(20):
            nest(30, request_like)
        done += 20
    return done / (time.thread_time() - start)


def throughput(rounds: int, slice_s: float) -> None:
    ext = heap_sampler.ext
    assert ext is not None, "the extension is not built"

    def off() -> Callable[[], None]:
        heap_sampler.stop()
        return lambda: None

    def sampling(rate: int) -> Callable[[], Callable[[], None]]:
        def on() -> Callable[[], None]:
            heap_sampler.start(rate, 128)
            return heap_sampler.stop
        return on

    def tracing() -> Callable[[], None]:
        heap_sampler.stop()
        tracemalloc.start(1)
        return tracemalloc.stop

    modes: dict[str, Callable[[], Callable[[], None]]] = {
        "off": off, "off (A/A)": off, "sampler 512 KiB": sampling(DEFAULT_RATE),
        "sampler 64 KiB": sampling(64 * 1024), "tracemalloc 1 frame": tracing,
    }
    ddtrace = _ddtrace_memalloc()
    if ddtrace is not None:
        modes["ddtrace memalloc 512 KiB"] = ddtrace
    results: dict[str, list[float]] = {name: [] for name in modes}
    iterations(slice_s)  # warm up
    for _ in range(rounds):
        for name, switch_on in modes.items():
            undo = switch_on()
            try:
                gc.collect()
                results[name].append(iterations(slice_s))
            finally:
                undo()
    base = statistics.median(results["off"])
    print(f"1. throughput, {rounds} rounds x {slice_s} s interleaved "
          f"(median iterations/s, ratio to off):")
    for name, values in results.items():
        median = statistics.median(values)
        print(f"   {name:<26} {median:10.0f}/s   x{median / base:.3f}")


def _ddtrace_memalloc() -> Callable[[], Callable[[], None]] | None:
    """Datadog's sampling allocator hook (ddtrace's profiler, in C), where ddtrace is
    installed (it is not a dependency: ``pip install ddtrace`` into the venv to compare):
    the same 512 KiB mean, 64 frames, mem domain off (its third argument, 3.12+)."""
    try:
        from ddtrace.profiling.collector import _memalloc  # type: ignore[import-not-found]
    except ImportError:
        print("   (ddtrace not installed: its memory profiler is not compared)")
        return None

    def on() -> Callable[[], None]:
        heap_sampler.stop()
        _memalloc.start(64, DEFAULT_RATE, False)
        return _memalloc.stop

    try:
        on()()
    except (TypeError, RuntimeError) as error:  # another ddtrace version's signature
        print(f"   (ddtrace's memalloc could not be started here: {error})")
        return None
    return on


def site_seventy(n: int) -> None:
    for _ in range(n):
        bytearray(1000)


def site_thirty(n: int) -> None:
    for _ in range(n):
        bytearray(1000)


def site_leak(keep: list[bytearray], n: int) -> None:
    for _ in range(n):
        keep.append(bytearray(1000))


def attribution(seeds: list[int]) -> None:
    ext = heap_sampler.ext
    assert ext is not None
    print("2. attribution at 512 KiB: 1.4 GB from site_seventy, 0.6 GB from site_thirty, "
          "64 MB kept by site_leak")
    errors = []
    for seed in seeds:
        heap_sampler.stop()
        ext.seed(seed)
        heap_sampler.start(DEFAULT_RATE, 128)
        keep: list[bytearray] = []
        site_seventy(1_400_000)
        site_thirty(600_000)
        site_leak(keep, 64_000)
        profile = heap_sampler.profile_now("inuse_space")
        alloc: dict[str, int] = {}
        inuse: dict[str, int] = {}
        for sample in profile.samples:
            name = sample.stack[0].function
            alloc[name] = alloc.get(name, 0) + sample.values[1]
            inuse[name] = inuse.get(name, 0) + sample.values[3]
        share = alloc.get("site_seventy", 0) / (
            alloc.get("site_seventy", 0) + alloc.get("site_thirty", 0))
        ranked = sorted(inuse, key=lambda k: -inuse[k])
        errors.append(abs(share - 0.7) * 100)
        print(f"   seed {seed}: site_seventy {share * 100:5.1f} % (error "
              f"{abs(share - 0.7) * 100:.1f} points), estimated allocated "
              f"{sum(alloc.values()) / 1e9:.2f} GB (true ~2.11 GB incl. headers); "
              f"inuse top: {ranked[0]} {inuse[ranked[0]] / 1e6:.1f} MB "
              f"(true ~67.6 MB); samples {heap_sampler.state().samples_total}")
        del keep
        heap_sampler.stop()
    print(f"   mean error {statistics.mean(errors):.2f} points, max {max(errors):.2f}")


def hour_equivalent() -> None:
    ext = heap_sampler.ext
    assert ext is not None
    heap_sampler.stop()
    heap_sampler.start(4096, 128)
    sites = []
    for i in range(2000):
        namespace: dict[str, object] = {}
        exec(compile(f"def site_{i}(n):\n    return [bytearray(500) for _ in range(n)]",
                     f"<site {i}>", "exec"), namespace)
        sites.append(namespace[f"site_{i}"])
    keep = [sites[i % 2000](100) for i in range(1200)]  # 1200 x 100 x ~560 B = 67 MB live
    started = time.perf_counter()
    churned = 0
    while heap_sampler.state().samples_total < 690_000:
        for site in sites:
            site(50)  # freed at once
        churned += 2000 * 50 * 557
    state = heap_sampler.state()
    print(f"3. hour-equivalent: {state.samples_total} samples (= ~360 GB at 512 KiB) from "
          f"{churned / 1e9:.1f} GB churned in {time.perf_counter() - started:.0f} s, 67 MB "
          f"live, 2,000 sites: {state.stacks} stacks, {state.live_samples} live samples, "
          f"sampler memory {state.memory_bytes / 2**20:.1f} MiB")
    del keep
    heap_sampler.stop()


def serve(sample_bytes: int) -> None:
    """The child server: FastAPI with install(), an allocation-heavy route mix."""
    import os

    os.environ["PYPROF_HEAP_SAMPLE_BYTES"] = str(max(0, sample_bytes))
    if sample_bytes < 0:  # tracemalloc with 1 frame, from startup
        os.environ.update(PYPROF_HEAP_TRACE_AT_START="1", PYPROF_HEAP_FRAMES="1")
    from _server import serve_on_free_port
    from fastapi import FastAPI

    import pyprof_http

    app = FastAPI()
    pyprof_http.install(app)
    cache: list[object] = []

    @app.get("/rows")
    async def rows() -> list[dict[str, object]]:  # FastAPI validates and encodes 200 dicts
        return [{"id": i, "name": f"user-{i}", "tags": ["a", str(i)]} for i in range(200)]

    @app.get("/text")
    def text() -> str:  # a sync route on the thread pool
        return json.dumps([nest(20, request_like) for _ in range(5)])

    @app.get("/keep")
    async def keep() -> int:  # a bounded cache that churns
        cache.append(bytearray(4096))
        if len(cache) > 1000:
            del cache[:500]
        return len(cache)

    serve_on_free_port(app)


def http_mix(rounds: int, seconds: float) -> None:
    """Server CPU per request (user+system of the child, robust to this machine's other
    load) for the sampler off, off again (A/A) and at 512 KiB, interleaved rounds."""
    import threading

    import httpx
    from _server import ServerProcess

    variants = {"off": 0, "off (A/A)": 0, "sampler 512 KiB": DEFAULT_RATE,
                "tracemalloc 1 frame": -1}
    paths = ["/rows", "/text", "/keep"]
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    with contextlib.ExitStack() as stack:
        servers = {name: stack.enter_context(ServerProcess(
            [sys.executable, __file__, "--serve", str(rate)])) for name, rate in variants.items()}
        for _ in range(rounds):
            for name, server in servers.items():
                done = [0]
                end = time.monotonic() + seconds

                def client(server: ServerProcess = server, done: list[int] = done,
                           end: float = end) -> None:
                    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}") as http:
                        i = 0
                        while time.monotonic() < end:
                            http.get(paths[i % 3]).raise_for_status()
                            i += 1
                        done[0] += i

                before = server.cpu_seconds()
                clients = [threading.Thread(target=client) for _ in range(4)]
                for thread in clients:
                    thread.start()
                for thread in clients:
                    thread.join()
                cpu[name].append((server.cpu_seconds() - before) / max(1, done[0]))
    base = statistics.median(cpu["off"])
    print(f"0. HTTP route mix (uvicorn + FastAPI, 4 clients, {rounds} rounds x {seconds} s): "
          "server CPU per request, ratio to off (throughput ratio = its inverse):")
    for name, values in cpu.items():
        median = statistics.median(values)
        print(f"   {name:<26} {median * 1e6:8.0f} us/request   x{median / base:.3f} CPU   "
              f"throughput x{base / median:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--slice", type=float, default=0.4)
    parser.add_argument("--http-rounds", type=int, default=6)
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve)
        return
    print(f"Python {sys.version.split()[0]}")
    http_mix(args.http_rounds, 2.0)
    throughput(args.rounds, args.slice)
    attribution([1, 2, 3])
    hour_equivalent()


if __name__ == "__main__":
    main()
