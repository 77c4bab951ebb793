"""Cost of the ``objects`` profile on a big heap: time, peak extra memory, event-loop stall.

Run:  .venv/bin/python benchmarks/objects.py [--objects 100000 1000000] [--repeat 3]

For each N a fresh child process (this file with ``--child N``, so heaps do not mix and the
memory high-water mark starts clean) keeps N extra live gc-tracked objects (instances of a
``__slots__`` class) and measures, tracemalloc off:

- ``get_objects ms``: ``gc.get_objects()`` alone, one C call that holds the GIL throughout;
- ``histogram ms``: :func:`histogram` (median of ``--repeat``), then text and pprof rendering;
- ``peak extra MiB``: the process high-water mark during one pass minus the RSS before it
  (Linux: ``/proc/self/clear_refs`` resets ``VmHWM``; elsewhere ``ru_maxrss``, a lower bound);
- loop stall: the longest gap of a 1 ms asyncio ticker while the pass runs inline in the loop
  vs on a thread via ``render_in_thread``, as the route runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from pyprof_http._waiting import render_in_thread
from pyprof_http.collectors.objects import histogram
from pyprof_http.pprof.encode import render_pprof
from pyprof_http.render.objects_text import render_objects_text

COLUMNS = (
    ("extra objects", "n"),
    ("tracked total", "total"),
    ("get_objects ms", "get_objects_ms"),
    ("histogram ms", "histogram_ms"),
    ("text ms", "text_ms"),
    ("pprof ms", "pprof_ms"),
    ("peak extra MiB", "peak_mib"),
    ("stall inline ms", "stall_inline_ms"),
    ("stall thread ms", "stall_thread_ms"),
)


class Item:
    __slots__ = ("value",)

    def __init__(self, value: int) -> None:
        self.value = value


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_extra_mib() -> tuple[float, str]:
    """High-water mark of one pass over the RSS before it, and how it was measured."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # reset VmHWM to the current RSS
        rss = _status_kib("VmRSS")
        histogram()
        hwm = _status_kib("VmHWM")
        if rss is not None and hwm is not None:
            return (hwm - rss) / 1024, "VmHWM"
    except OSError:
        pass
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    histogram()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (after - before) / 1024, "ru_maxrss (lower bound)"


def timed_ms(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


async def loop_stall_ms(in_thread: bool) -> float:
    """Longest gap between ticks of a 1 ms ticker while one histogram runs."""
    worst = 0.0
    done = False

    async def ticker() -> None:
        nonlocal worst
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            worst = max(worst, now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.02)
    worst = 0.0
    if in_thread:
        await render_in_thread(histogram)
    else:
        histogram()
    await asyncio.sleep(0.005)
    done = True
    await task
    return worst * 1000


def child(n: int, repeat: int) -> None:
    keep = [Item(i) for i in range(n)]
    gc.collect()
    peak, how = peak_extra_mib()
    capture = histogram()
    result = {
        "n": n,
        "total": capture.total_objects,
        "get_objects_ms": timed_ms(gc.get_objects, repeat),
        "histogram_ms": timed_ms(histogram, repeat),
        "text_ms": timed_ms(lambda: render_objects_text(capture, "objects"), repeat),
        "pprof_ms": timed_ms(lambda: render_pprof(capture.profile, "objects"), repeat),
        "peak_mib": peak,
        "peak_how": how,
        "stall_inline_ms": asyncio.run(loop_stall_ms(False)),
        "stall_thread_ms": asyncio.run(loop_stall_ms(True)),
    }
    assert len(keep) == n
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.repeat)
        return
    results = []
    for n in args.objects:
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(n), "--repeat", str(args.repeat)],
            check=True,
            capture_output=True,
            text=True,
            timeout=300,
        )
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"Python {sys.version.split()[0]}, switch interval {sys.getswitchinterval() * 1000:g} ms")
    cells = [
        [f"{r[key]:.1f}" if isinstance(r[key], float) else str(r[key]) for _, key in COLUMNS]
        for r in results
    ]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, (h, _) in enumerate(COLUMNS)]
    print(" | ".join(h.rjust(w) for (h, _), w in zip(COLUMNS, widths, strict=True)))
    print("-|-".join("-" * w for w in widths))
    for row in cells:
        print(" | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
    print(f"peak memory measured with {results[0]['peak_how']}")


if __name__ == "__main__":
    main()
