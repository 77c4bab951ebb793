"""What ``/debug/pprof/heap`` costs: a snapshot of a big traced heap, and a window's slowdown.

Run:  .venv/bin/python benchmarks/heap.py [--blocks 100000 1000000] [--frames 1 32]
                                          [--rounds 3] [--seconds 1]

1. Snapshot (in-process, tracemalloc on as when the app traces): for each ``--blocks`` N and
   ``--frames`` F, trace with F frames, keep N small objects allocated from 200 distinct call
   paths 10-50 frames deep (so 32 frames are really captured), then time each stage of
   :func:`snapshot_profile`: ``take_snapshot`` (one C call), grouping by traceback, building
   the profile (function names read cold from each file's code), then the text and pprof
   renderings. ``loop stall ms`` is the longest gap of a 1 ms asyncio ticker while the whole
   snapshot runs on a thread through ``render_in_thread``, as the route runs it
   (``take_snapshot`` holds the GIL, so the loop stalls anyway for that part).
2. Slowdown: an allocation-heavy loop (lists of 20 small dicts, 30 frames deep like a request
   handler under a framework) runs ``--seconds`` with no tracing and inside a real
   ``trace_window`` with F frames, interleaved over ``--rounds`` rounds; the ratio of the
   medians of iterations/s is printed (1.00 = no cost).

In-process and bounded: ~40 s for the defaults on a 2-CPU VM. Nothing is left tracing.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
import tracemalloc
from collections.abc import Callable

from pyprof_http._waiting import render_in_thread
from pyprof_http.collectors import heap
from pyprof_http.pprof.encode import render_pprof
from pyprof_http.render.heap_text import render_heap_text

SITES = 5
DEPTHS = 40
HANDLER_DEPTH = 30


def nest(depth: int, count: int, site: int, out: list[object]) -> None:
    if depth:
        nest(depth - 1, count, site, out)
    elif site == 0:
        out.extend(object() for _ in range(count))
    elif site == 1:
        out.extend([object() for _ in range(count)])
    elif site == 2:
        for _ in range(count):
            out.append(object())
    elif site == 3:
        out.extend(map(lambda _: object(), range(count)))
    else:
        out += [object() for _ in range(count)]


def keep_blocks(n: int) -> list[object]:
    """N live traced blocks from DEPTHS x SITES call paths, 10 to 49 frames deep."""
    out: list[object] = []
    chunk = max(1, n // (DEPTHS * SITES))
    i = 0
    while len(out) < n:
        nest(10 + i % DEPTHS, min(chunk, n - len(out)), (i // DEPTHS) % SITES, out)
        i += 1
    return out


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


async def stall_while(fn: Callable[[], object]) -> float:
    """Longest gap of a 1 ms ticker while ``fn`` runs on a render thread."""
    gaps = [0.0]
    done = False

    async def ticker() -> None:
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps[0] = max(gaps[0], now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    await render_in_thread(fn)
    done = True
    await task
    return gaps[0]


def snapshot_row(n: int, frames: int) -> list[str]:
    tracemalloc.start(frames)
    try:
        started = time.perf_counter()
        kept = keep_blocks(n)
        allocated = time.perf_counter() - started
        heap._SCOPES.clear()  # the first request reads every file's code
        t0 = time.perf_counter()
        snapshot, state = heap.take_snapshot()
        t1 = time.perf_counter()
        sites = heap.group_sites(snapshot)
        del snapshot
        t2 = time.perf_counter()
        profile = heap.build_profile(sites, state, mode="snapshot", note="bench", time_ns=1)
        t3 = time.perf_counter()
        capture = heap.HeapCapture(profile, "snapshot", state)
        text = render_heap_text(capture, "heap")
        t4 = time.perf_counter()
        pprof = render_pprof(profile, "heap")
        t5 = time.perf_counter()
        stall = asyncio.run(stall_while(lambda: heap.snapshot_profile("bench", False)))
        row = [f"{n:,}", str(frames), f"{len(sites):,}", f"{allocated:.1f}", ms(t1 - t0),
               ms(t2 - t1), ms(t3 - t2), ms(t4 - t3), ms(t5 - t4), ms(t5 - t0), ms(stall),
               f"{state.tracemalloc_memory / 2**20:.0f}", f"{len(text.body) // 1024}",
               f"{len(pprof.body) // 1024}"]
        del kept
        return row
    finally:
        tracemalloc.stop()
        gc.collect()


def handler_work(depth: int, deadline: float) -> int:
    """Build lists of small dicts until ``deadline``, ``depth`` frames down; iterations done."""
    if depth:
        return handler_work(depth - 1, deadline)
    done = 0
    while time.perf_counter() < deadline:
        rows = [{"id": i, "name": "x", "tags": [i, i + 1]} for i in range(20)]
        done += len(rows) // 20
    return done


def rate_plain(seconds: float) -> float:
    return handler_work(HANDLER_DEPTH, time.perf_counter() + seconds) / seconds


def rate_in_window(seconds: float, frames: int) -> float:
    result = [0.0]

    async def wait(s: float) -> None:
        await asyncio.sleep(0.01)  # a window starts tracing once the request is parked
        assert tracemalloc.is_tracing()
        result[0] = handler_work(HANDLER_DEPTH, time.perf_counter() + s) / s

    asyncio.run(heap.trace_window(seconds, frames, wait))
    assert not tracemalloc.is_tracing()
    return result[0]


def table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(" | ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--frames", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    assert not tracemalloc.is_tracing(), "run without -X tracemalloc"

    rows = [snapshot_row(n, f) for n in args.blocks for f in args.frames]
    print("\n1. Snapshot of a traced heap (ms; tracing on throughout, as when the app traces)\n")
    table(["blocks", "frames", "tracebacks", "alloc s", "snapshot", "group", "build", "text",
           "pprof", "total", "loop stall", "tm MiB", "text KiB", "pprof KiB"], rows)

    plain: list[float] = []
    window: dict[int, list[float]] = {f: [] for f in args.frames}
    for _ in range(args.rounds):
        plain.append(rate_plain(args.seconds))
        for f in args.frames:
            window[f].append(rate_in_window(args.seconds, f))
    base = statistics.median(plain)
    print(f"\n2. Allocation-heavy loop during a {args.seconds:g} s heap window vs none "
          f"(median of {args.rounds} rounds, {HANDLER_DEPTH} frames deep)\n")
    table(["frames", "iter/s none", "iter/s window", "ratio", "slowdown"],
          [[str(f), f"{base:,.0f}", f"{statistics.median(v):,.0f}",
            f"{statistics.median(v) / base:.2f}", f"x{base / statistics.median(v):.1f}"]
           for f, v in window.items()])


if __name__ == "__main__":
    main()
