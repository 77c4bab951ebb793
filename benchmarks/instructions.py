"""Instructions per request with and without pyprof_http: the idle cost, free of machine noise.

Run:  .venv/bin/python benchmarks/instructions.py [--requests 200] [--warm 50] [--repeat 3]
      [--jobs 2] [--routes minimal]

Why instructions: on a shared 2-core machine two identical servers differ by ~10 % in throughput
and CPU per request (the A/A rows of ``idle.py``), far above the ≤ 2 % being judged. Valgrind's
callgrind counts the instructions a process executes, whatever else runs on the machine: the same
program counted twice gives nearly the same number. So each variant's request path runs in a
child process under ``valgrind --tool=callgrind`` and the difference between a run of
``warm + requests`` requests and one of ``warm`` requests, over ``requests``, is the exact
per-request count of that path (start-up, imports and warm-up cancel out).

The path is the whole server's, not only the app's: uvicorn's own ``H11Protocol`` parses each
request from bytes and writes the response to an in-memory transport (keep-alive, one
connection, as a load generator's), on an asyncio loop, so the per-request task uvicorn creates
goes through our task factory as it does in production. What it leaves out: the kernel's socket
work (the same with or without us, so including it would only lower our share) and the app's
lifespan, whose threads are timed rather than counted (under valgrind a program runs ~50x
slower, so the watchdog's looks, every 25 ms of wall time, would be counted 50x too often):
their cost on a busy server is ``loop.py``'s "watchdog thread CPU under load" and ``cpu.py`` /
``recorder.py``'s tick share, to be added to the ratio printed here.

Routes: ``/min`` (a constant: our share shows most) and the demo mix of ``idle.py`` (``/work``,
``/spawn``, ``/sync``, ``/min`` in turn). Variants: plain, the mount only (its constructor turns
on the heap sampler's allocator hook), the middleware only, ``install(app)``, ``install(app)``
with its lifespan run (see :data:`LIFESPAN_ENV`), and the same with the heap sampler off (what
the request path costs apart from the allocator hook). Each is run ``--repeat`` times (an installed
variant's count moves 1-2 % between runs: the heap sampler samples at random points); prints
the median instructions per request, the range, and the ratio to plain; target ≤ 1.02 for
``install()`` with its lifespan.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

import idle

ROUTES = {"minimal": idle.MINIMAL, "demo mix": idle.MIX}
NO_HOOK = "install() + lifespan, heap_sample_bytes=0"
VARIANTS = ("plain", "mount only", "middleware only", "install()", "install() + lifespan",
            NO_HOOK)
LIFESPAN_ENV = {
    "PYPROF_RECORDER_HZ": "1",
    "PYPROF_PROFILES": "goroutine,goroutineleak,profile,recorder,requests,heap,allocs,objects,"
                       "mutex,threadcreate,trace,cmdline",
}
"""``install() + lifespan`` runs what the lifespan starts (heap sampler, flight recorder, leak
recorder, task factory) except the watchdog (``block`` left out: its looks follow the wall
clock, which valgrind stretches ~50x), with the recorder at 1 Hz: its ticks follow CPU time,
also stretched, and are the recorder's own cost (``recorder.py``), not the request path's."""
TARGET = 1.02
NO_HOOK_ENV = {"PYPROF_HEAP_SAMPLE_BYTES": "0"}
"""The last variant: ``install() + lifespan`` with the always-on heap profile turned off, to
split what the request path costs from what the allocator hook costs (every allocation pays
it, so its share depends on the route, not on pyprof_http's per-request code)."""
FREEZE_AFTER = 20
"""Requests served before the heap is frozen (fewer than ``--warm``)."""


class _Transport(asyncio.Transport):
    """The connection as uvicorn's protocol sees it: writes are kept until a whole response
    (headers and ``content-length`` bytes of body) has arrived, then ``done`` is resolved."""

    def __init__(self) -> None:
        super().__init__()
        self.buffer = bytearray()
        self.done: asyncio.Future[bytes] | None = None
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        length = re.search(rb"(?i)content-length: *(\d+)", self.buffer[:end])
        if length is None or len(self.buffer) < end + 4 + int(length.group(1)):
            return
        response, self.buffer = bytes(self.buffer), bytearray()
        if self.done is not None and not self.done.done():
            self.done.set_result(response)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _requests(variant: str, paths: tuple[str, ...], count: int) -> None:
    from uvicorn.config import Config
    from uvicorn.protocols.http.h11_impl import H11Protocol
    from uvicorn.server import ServerState

    lifespan = "+ lifespan" in variant
    config = Config(idle.build_app(variant.split(" + ")[0]), log_level="warning",
                    access_log=False, lifespan="on" if lifespan else "off")
    config.load()
    startup: Any = None
    if lifespan:
        from uvicorn.lifespan.on import LifespanOn

        startup = LifespanOn(config)
        await startup.startup()
        if startup.startup_failed:
            raise RuntimeError("lifespan startup failed")
    loop = asyncio.get_running_loop()
    protocol = H11Protocol(config, ServerState(), {}, loop)
    transport = _Transport()
    protocol.connection_made(transport)
    requests = [f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1:8000\r\nuser-agent: bench\r\n"
                f"accept: */*\r\n\r\n".encode() for path in paths]
    for i in range(count):
        if i == FREEZE_AFTER:
            # a full collection scans every object the imports made (~200,000); whether one
            # falls inside the counted requests or not moved a variant by 20,000 instructions
            # a request between runs. Frozen, they are not scanned; the objects requests make
            # (ours included) are still collected as they would be.
            gc.collect()
            gc.freeze()
        transport.done = loop.create_future()
        # from a callback, as the selector calls it: uvicorn's task per request is then made
        # outside any task, as in production (the task factory's short path)
        loop.call_soon(protocol.data_received, requests[i % len(requests)])
        response = await transport.done
        if not response.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"{paths[i % len(paths)]}: {response[:200]!r}")
    transport.close()
    protocol.connection_lost(None)
    if startup is not None:
        await startup.shutdown()


def count_instructions(variant: str, routes: str, count: int) -> int:
    """Instructions a child process executes serving ``count`` requests (callgrind)."""
    for _attempt in range(3):
        try:
            return _count_once(variant, routes, count)
        except _KilledByTimerSignal as killed:
            print(f"  (rerun: {killed})", flush=True)
    return _count_once(variant, routes, count)


class _KilledByTimerSignal(RuntimeError):
    """Under valgrind one lifespan child in ~250 runs was killed at exit by SIGPROF: the
    recorder's timer signal, queued by valgrind's own signal emulation, delivered after the
    default action came back. Natively, setting SIG_IGN before that discards a pending signal
    (POSIX; ``drivers.SignalDriver._undo``), so the run is repeated rather than counted."""


def _count_once(variant: str, routes: str, count: int) -> int:
    env = {**os.environ, "PYTHONHASHSEED": "0",
           **(LIFESPAN_ENV if "+ lifespan" in variant else {}),
           **(NO_HOOK_ENV if variant == NO_HOOK else {})}
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
         __file__, "--child", variant, routes, str(count)],
        capture_output=True, text=True, env=env, check=False, timeout=1800)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode == -signal.SIGPROF:
        raise _KilledByTimerSignal(f"{variant}, {routes}, {count}: SIGPROF under valgrind")
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"callgrind run failed ({done.returncode}): {done.stderr[-2000:]}")
    return int(found.group(1))


def per_request(variant: str, routes: str, warm: int, requests: int) -> float:
    """Instructions per request: (count of warm + requests) - (count of warm), over requests."""
    base = count_instructions(variant, routes, warm)
    return (count_instructions(variant, routes, warm + requests) - base) / requests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warm", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs per variant; the median is judged, the range shown")
    parser.add_argument("--jobs", type=int, default=2, help="valgrind runs at once")
    parser.add_argument("--routes", nargs="+", choices=list(ROUTES), default=list(ROUTES))
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)")
        return 2
    jobs = [(label, variant) for _ in range(args.repeat) for label in args.routes
            for variant in VARIANTS]
    counts: dict[tuple[str, str], list[float]] = {job: [] for job in jobs}
    with ThreadPoolExecutor(args.jobs) as pool:  # each run is a child process
        futures = {pool.submit(per_request, variant, label, args.warm, args.requests):
                   (label, variant) for label, variant in jobs}
        for future in as_completed(futures):
            label, variant = futures[future]
            counts[label, variant].append(future.result())
            print(f"  {label}, {variant}: {counts[label, variant][-1]:,.0f} instructions "
                  "per request", flush=True)
    rows: list[tuple[str, str, str, str]] = []
    verdict = True
    for label in args.routes:
        plain = statistics.median(counts[label, "plain"])
        for variant in VARIANTS:
            values = counts[label, variant]
            median = statistics.median(values)
            ratio = median / plain
            judged = variant == "install() + lifespan"
            verdict &= not judged or ratio <= TARGET
            rows.append((f"{label}: {variant}",
                         f"{median:,.0f} ({min(values):,.0f}-{max(values):,.0f})",
                         f"x{ratio:.4f} ({median - plain:+,.0f})",
                         (("PASS" if ratio <= TARGET else "MISS") + f" (<= {TARGET})")
                         if judged else ""))
    header = ("path", "instructions / request, median (range)", "vs plain", "target")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    print()
    for row in [header, *rows]:
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0 if verdict else 1


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        asyncio.run(_requests(sys.argv[2], ROUTES[sys.argv[3]], int(sys.argv[4])))
    else:
        sys.exit(main())
