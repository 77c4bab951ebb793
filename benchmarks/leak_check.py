"""What ``--leak-check`` costs a test suite: 500 passing tests with it and without it.

Run:  .venv/bin/python benchmarks/leak_check.py [--tests 500] [--rounds 5]

Generates a suite in a temporary directory: half sync tests (a little arithmetic, a short-lived
thread in one test in ten), half pytest-asyncio tests (each creates and awaits a task, one in ten
also uses the loop's default executor). Every test is clean, so the check passes and this
measures what every passing test pays: the baseline, the task factory and the ``Thread.start``
hook for the test, one comparison at its end.

Each round runs pytest (a fresh process each time: what a developer waits for) three times,
interleaved so that load on the machine falls on both sides alike: without the check, with
``--leak-check``, and without it again. The ratio is with / without; the A/A figure, second
without / first without, is the noise: a ratio within it is no measurable cost. The target is
judged on the best run's CPU time (user + system, from ``getrusage``): load from other processes
only ever adds to a run, so the best of several is the least disturbed, and CPU time is
disturbed far less than wall time. Medians of CPU, wall and pytest's own session time (no
interpreter start-up) are printed too, and the in-process cost of one check, which bounds the
ratio free of that noise. Target: ratio ≤ 1.10. The exit status is 1 if the target is missed.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET = 1.10
INI = """[pytest]
asyncio_default_fixture_loop_scope = function
"""
SYNC = '''
def test_sync_{i}():
    total = sum(range(200))
    if {i} % 10 == 0:
        t = threading.Thread(target=time.sleep, args=(0,))
        t.start()
        t.join()
    assert total == 19900
'''
ASYNC = '''
@pytest.mark.asyncio
async def test_async_{i}():
    task = asyncio.create_task(asyncio.sleep(0))
    await task
    if {i} % 10 == 0:
        await asyncio.get_running_loop().run_in_executor(None, int)
'''
HEADER = "import asyncio\nimport threading\nimport time\n\nimport pytest\n"


def generate(root: Path, n: int, per_file: int = 50) -> None:
    (root / "pytest.ini").write_text(INI)
    made = 0
    for f in range((n + per_file - 1) // per_file):
        body = [HEADER]
        for _ in range(min(per_file, n - made)):
            body.append((SYNC if made % 2 == 0 else ASYNC).format(i=made))
            made += 1
        (root / f"test_gen_{f}.py").write_text("\n".join(body))


def run(root: Path, *extra: str) -> tuple[float, float, float]:
    """(CPU seconds of the pytest process, its wall seconds, seconds pytest itself reported)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
           *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    found = re.search(r"(\d+) passed in ([\d.]+)s", done.stdout)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"suite failed ({' '.join(extra) or 'no check'}):\n{done.stdout[-3000:]}")
    return cpu, wall, float(found.group(2))


def check_cost_us(n: int = 2000, rounds: int = 5) -> tuple[float, float]:
    """In-process, best of ``rounds``: µs per passing ``with check()`` and per ``async with
    check()`` around a created-and-awaited task (minus the bare task), the plugin's work per
    test. Not disturbed by process start-up, so a bound that noise cannot hide."""
    import asyncio

    from pyprof_http import leaks

    sync_best = async_best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(n):
            with leaks.check():
                pass
        sync_best = min(sync_best, (time.perf_counter() - started) / n * 1e6)

        async def loop() -> float:
            started = time.perf_counter()
            for _ in range(n):
                await asyncio.create_task(asyncio.sleep(0))
            bare = time.perf_counter() - started
            started = time.perf_counter()
            for _ in range(n):
                async with leaks.check():
                    await asyncio.create_task(asyncio.sleep(0))
            return (time.perf_counter() - started - bare) / n * 1e6

        async_best = min(async_best, asyncio.run(loop()))
    return sync_best, async_best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tests", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="leak_check_bench_") as tmp:
        root = Path(tmp)
        generate(root, args.tests)
        run(root)  # warm-up: imports into the page cache
        off, on, off2 = [], [], []
        for i in range(args.rounds):
            off.append(run(root))
            on.append(run(root, "--leak-check"))
            off2.append(run(root))
            print(f"round {i + 1}: without {off[-1][0]:.2f} s, with {on[-1][0]:.2f} s, "
                  f"without again {off2[-1][0]:.2f} s (CPU)", flush=True)
    print(f"\n{args.tests} passing tests ({args.tests // 2} sync, {args.tests - args.tests // 2}"
          f" pytest-asyncio), {args.rounds} interleaved rounds:")
    print(f"{'':24} {'without':>9} {'with':>9} {'ratio':>7} {'A/A':>7}")
    verdict = 0
    rows = (("process CPU s, best", 0, min), ("process CPU s, median", 0, statistics.median),
            ("process wall s, median", 1, statistics.median),
            ("pytest session s, median", 2, statistics.median))
    for label, k, pick in rows:
        a = pick(r[k] for r in off)
        b = pick(r[k] for r in on)
        a2 = pick(r[k] for r in off2)
        ratio = b / a
        print(f"{label:24} {a:9.2f} {b:9.2f} {ratio:7.3f} {a2 / a:7.3f}")
        if label == "process CPU s, best" and ratio > TARGET:
            verdict = 1
    per_test_ms = (min(r[0] for r in on) - min(r[0] for r in off)) / args.tests * 1000
    print(f"per test: {per_test_ms:+.3f} ms of CPU (difference of the best runs / tests)")
    sync_us, async_us = check_cost_us()
    per_test_cpu_ms = statistics.median(r[0] for r in off) / args.tests * 1000
    bound = 1 + (sync_us + async_us) / 2 / 1000 / per_test_cpu_ms
    print(f"in-process: a passing check costs {sync_us:.1f} us (sync), {async_us:.1f} us (async, "
          f"task factory included); against {per_test_cpu_ms:.2f} ms of CPU per test without "
          f"the check, that bounds the ratio at {bound:.3f}")
    print(f"target: a suite with --leak-check vs without <= {TARGET:.2f}x: "
          f"{'PASS' if verdict == 0 else 'MISS'}")
    return verdict


if __name__ == "__main__":
    sys.exit(main())
