"""The heap sampler (C extension + collector): accuracy on known sites, frees, realloc,
tracemalloc alongside, threads, fork, bounded tables. Sampling is random: the PRNG is seeded,
and every bound is many standard deviations wide (thousands of samples per site)."""

from __future__ import annotations

import gc
import os
import sys
import threading
import tracemalloc
import types
from collections.abc import Iterator

import pytest

from pyprof_http import switches
from pyprof_http.collectors import heap_sampler
from pyprof_http.model import Profile

DISABLED = os.environ.get("PYPROF_HEAP_SAMPLER_DISABLE") == "1"
pytestmark = pytest.mark.skipif(DISABLED, reason="PYPROF_HEAP_SAMPLER_DISABLE=1: the pure "
                                "path on purpose (the fallback has its own tests)")
ext = heap_sampler.ext


def test_the_extension_was_built_here() -> None:
    """``pip install`` builds it wherever a C compiler and the headers exist (every machine
    this suite runs on): a silent fallback here would hide a broken build."""
    assert heap_sampler.available(), heap_sampler.why_not_running()
RATE = 8192


@pytest.fixture
def sampler() -> Iterator[None]:
    """A fresh sampler at a fine rate with a fixed seed; the claims' state put back after."""
    assert ext is not None
    heap_sampler.stop()
    ext.seed(12345)
    assert heap_sampler.start(RATE, 64)
    ext.seed(12345)
    try:
        yield
    finally:
        ext.set_max_stacks(16384)
        heap_sampler.stop()
        with switches._held():
            if switches._heap_samplers:
                switches._apply_heap_sampler()


def by_function(profile: Profile, index: str) -> dict[str, int]:
    """Value per innermost function whose name starts with ``site_``, else ignored."""
    at = profile.value_index(index)
    totals: dict[str, int] = {}
    for sample in profile.samples:
        for f in sample.stack:
            if f.function.startswith("site_"):
                totals[f.function] = totals.get(f.function, 0) + sample.values[at]
                break
    return totals


def site_seventy() -> None:
    for _ in range(70_000):
        bytearray(1000)


def site_thirty() -> None:
    for _ in range(30_000):
        bytearray(1000)


def site_leak(keep: list[bytearray]) -> None:
    for _ in range(10_000):
        keep.append(bytearray(1000))


def test_known_split_and_leak(sampler: None) -> None:
    """100 MB allocated at 8 KiB: ~12,000 samples; a share's standard deviation is ~0.5
    point, so 4 points is 8 sigma. The leak (10 MB kept) tops inuse_space."""
    keep: list[bytearray] = []
    site_seventy()
    site_thirty()
    site_leak(keep)
    profile = heap_sampler.profile_now("inuse_space")
    alloc = by_function(profile, "alloc_space")
    split = alloc["site_seventy"] / (alloc["site_seventy"] + alloc["site_thirty"])
    assert 0.66 < split < 0.74, alloc
    total = 111 * 10**6  # bytearray(1000) is ~1,057 bytes with its header
    assert 0.85 * total < sum(alloc.values()) < 1.15 * total, alloc
    inuse = by_function(profile, "inuse_space")
    assert max(inuse, key=inuse.__getitem__) == "site_leak", inuse
    assert 0.8 * 10.5e6 < inuse["site_leak"] < 1.2 * 10.5e6, inuse
    assert inuse.get("site_seventy", 0) < 0.05 * inuse["site_leak"]  # freed at once
    top = max(profile.samples, key=lambda s: s.values[3])
    assert any(f.function == "site_leak" for f in top.stack)
    assert profile.period == RATE and profile.default_sample_type == "inuse_space"
    assert [t.type for t in profile.sample_types] == [
        "alloc_objects", "alloc_space", "inuse_objects", "inuse_space"]


def test_freed_blocks_leave_inuse_but_stay_allocated(sampler: None) -> None:
    keep: list[bytearray] = []
    site_leak(keep)
    before = by_function(heap_sampler.profile_now("inuse_space"), "inuse_space")
    assert before["site_leak"] > 5e6
    del keep
    gc.collect()
    profile = heap_sampler.profile_now("inuse_space")
    assert by_function(profile, "inuse_space").get("site_leak", 0) == 0
    assert by_function(profile, "alloc_space")["site_leak"] > 5e6


def site_grow() -> list[bytearray]:
    grown = []
    for _ in range(200):
        block = bytearray()
        for _ in range(100):
            block += b"x" * 1000  # realloc in place or moved
        grown.append(block)
    return grown


def test_realloc_moves_and_frees_are_tracked(sampler: None) -> None:
    grown = site_grow()
    inuse = by_function(heap_sampler.profile_now("inuse_space"), "inuse_space")
    assert 0.5 * 20e6 < inuse["site_grow"] < 1.5 * 20e6, inuse  # 200 blocks of 100 kB
    del grown
    after = by_function(heap_sampler.profile_now("inuse_space"), "inuse_space")
    assert after.get("site_grow", 0) == 0  # no stale entry for a block realloc moved


def test_tracemalloc_works_alongside_and_puts_the_sampler_back(sampler: None) -> None:
    assert not tracemalloc.is_tracing()
    keep: list[bytearray] = []
    tracemalloc.start(1)
    try:
        site_leak(keep)
        traced = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(True, __file__)]).statistics("lineno")
    finally:
        tracemalloc.stop()  # puts back the allocator it saw: ours
    assert sum(s.size for s in traced) > 9e6  # tracemalloc saw every block
    assert by_function(heap_sampler.profile_now("inuse_space"), "inuse_space")["site_leak"] > 5e6
    del keep
    assert by_function(heap_sampler.profile_now("inuse_space"), "inuse_space").get(
        "site_leak", 0) == 0  # frees reach the sampler again
    assert ext is not None and ext.stop() == "uninstalled"  # ours was on top again


def test_stop_under_another_hook_only_passes_through(sampler: None) -> None:
    assert ext is not None
    tracemalloc.start(1)
    try:
        assert ext.stop() == "passing through"  # tracemalloc chained onto ours
        assert not heap_sampler.running()
        bytearray(10**6)  # goes through tracemalloc, then ours, then pymalloc
    finally:
        tracemalloc.stop()
    assert heap_sampler.start(RATE, 64) and heap_sampler.running()
    assert ext.stop() == "uninstalled"


def test_refuses_to_start_under_tracemalloc(sampler: None) -> None:
    heap_sampler.stop()
    tracemalloc.start(1)
    try:
        assert not heap_sampler.start(RATE, 64)
        assert "tracemalloc was already tracing" in heap_sampler.why_not_running()
        assert ext is not None and not ext.stats()["installed"]
    finally:
        tracemalloc.stop()


def test_stack_depth_is_bounded(sampler: None) -> None:
    heap_sampler.start(RATE, 8)

    def site_deep(n: int) -> None:
        if n:
            site_deep(n - 1)
        else:
            site_seventy()

    site_deep(50)
    profile = heap_sampler.profile_now("alloc_space")
    deep = [s for s in profile.samples if s.stack[0].function == "site_seventy"]
    assert deep and all(len(s.stack) == 8 for s in deep)


def test_full_stack_table_counts_under_one_row(sampler: None) -> None:
    assert ext is not None
    ext.set_max_stacks(3)  # the overflow row, and two more
    for i in range(20):  # distinct stacks: each function is new code
        code = compile(f"def site_{i}():\n    return [bytearray(1000) for _ in range(3000)]",
                       "<gen>", "exec")
        namespace: dict[str, object] = {}
        exec(code, namespace)
        namespace[f"site_{i}"]()  # type: ignore[operator]
    profile = heap_sampler.profile_now("alloc_space")
    assert len(by_function(profile, "alloc_space")) <= 2  # 20 sites, room for at most two
    overflow = [s for s in profile.samples if s.stack == (heap_sampler.OVERFLOW,)]
    assert overflow and overflow[0].values[1] > 30e6  # most of the 60 MB


def test_hostile_code_names_are_kept_verbatim(sampler: None) -> None:
    """The collector keeps names as they are; every renderer escapes them (render tests)."""
    hostile = "<script>\u2028\x1b[31m\ud800"
    names = {"co_name": hostile} | ({"co_qualname": hostile} if sys.version_info >= (3, 11)
                                    else {})
    code = site_seventy.__code__.replace(**names)
    types.FunctionType(code, globals())()
    profile = heap_sampler.profile_now("alloc_space")
    assert any(s.stack[0].function == hostile for s in profile.samples)


def test_threads_allocating_while_snapshots_and_restarts_run(sampler: None) -> None:
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            keep: list[object] = []
            while not stop.is_set():
                keep.append([bytearray(200) for _ in range(100)])
                if len(keep) > 50:
                    keep.clear()
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    workers = [threading.Thread(target=churn) for _ in range(6)]
    for worker in workers:
        worker.start()
    try:
        for i in range(200):
            heap_sampler.profile_now("inuse_space")
            if i % 20 == 0:
                heap_sampler.stop()
                heap_sampler.start(1024, 64)
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert not errors
    assert heap_sampler.state().samples_total > 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")
def test_forked_child_keeps_sampling() -> None:
    assert ext is not None
    heap_sampler.stop()
    heap_sampler.start(RATE, 64)
    try:
        keep: list[bytearray] = []
        site_leak(keep)
        pid = os.fork()
        if pid == 0:  # the child: inherits the samples, keeps sampling, frees, stops cleanly
            code = 1
            try:
                del keep[:]
                gone = by_function(heap_sampler.profile_now("inuse_space"), "inuse_space")
                more: list[bytearray] = []
                site_leak(more)
                now = by_function(heap_sampler.profile_now("inuse_space"), "inuse_space")
                code = 0 if not gone.get("site_leak") and now["site_leak"] > 5e6 else 2
                heap_sampler.stop()
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert by_function(heap_sampler.profile_now("inuse_space"), "inuse_space")[
            "site_leak"] > 5e6  # the parent's samples are its own
    finally:
        heap_sampler.stop()
        with switches._held():
            if switches._heap_samplers:
                switches._apply_heap_sampler()


def test_window_is_growth() -> None:
    rows = heap_sampler.window(
        _profile([10, 100, 10, 100]), _profile([15, 150, 12, 120]), 5.0).profile.samples
    assert rows[0].values == (5, 50, 2, 20)


def _profile(values: list[int]) -> Profile:
    from pyprof_http.model import Sample, frame

    return Profile(heap_sampler.SAMPLE_TYPES, (Sample((frame("f", "x.py", 1),), tuple(values)),),
                   heap_sampler.SPACE, RATE, 0, 0, (), "inuse_space")


def test_python_version_is_supported() -> None:
    assert sys.version_info >= (3, 10)
    assert ext is not None and "installed" in ext.stats()


def test_reload_keeps_the_running_sampler(sampler: None) -> None:
    import importlib

    state = heap_sampler._state
    reloaded = importlib.reload(heap_sampler)
    assert reloaded._state is state and reloaded.running()


def test_two_apps_hold_the_sampler_until_the_last_lets_go(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from pyprof_http.config import Settings

    monkeypatch.setenv("PYPROF_HEAP_SAMPLE_BYTES", "65536")
    first, second = switches.Claims(), switches.Claims()
    try:
        first.sample_heap(Settings())
        second.sample_heap(Settings(heap_sample_bytes=131072))
        assert heap_sampler.running() and heap_sampler.state().rate == 65536  # the finest
        first.release_all()
        assert heap_sampler.running() and heap_sampler.state().rate == 131072
        off = switches.Claims()
        off.sample_heap(Settings(heap_sample_bytes=0))  # 0 is off: holds nothing
        off.sample_heap(Settings(profiles=frozenset({"goroutine"})))  # neither heap nor allocs
        assert off.id not in switches._heap_samplers
    finally:
        first.release_all()
        second.release_all()
    # other test modules' apps may still hold it (at their own rate); else it is off
    assert heap_sampler.running() == bool(switches._heap_samplers)


def test_a_client_that_leaves_ends_a_sampler_window() -> None:
    """``/heap?seconds=30`` from the sampler waits like any window: a client that goes away
    ends it (bound 20 s against the 30 s window: only a stalled machine could exceed it)."""
    import asyncio
    import time

    from pyprof_http import PprofApp, Settings
    from test_waiting import _cut_off

    app = PprofApp(Settings())

    async def main() -> tuple[list[int], float]:
        started = time.monotonic()
        statuses = await _cut_off(app, "/heap?seconds=30&format=json", heap_sampler.running)
        return statuses, time.monotonic() - started

    statuses, took = asyncio.run(main())
    assert statuses == [] and took < 20, (statuses, took)
    app.claims.release_all()


_SUBINTERPRETER_SCRIPT = r"""
import sys, threading
from pyprof_http.collectors import heap_sampler
ext = heap_sampler.ext
ext.seed(7)
ext.start(256, 32)
try:
    import _interpreters as interpreters  # 3.13: isolated, its own GIL
    iid = interpreters.create()
except ImportError:
    import _xxsubinterpreters as interpreters
    iid = (interpreters.create(isolated=True) if sys.version_info >= (3, 12)
           else interpreters.create())  # 3.12: its own GIL; 3.10/3.11: one GIL for all
stop = False
def main_side():
    while not stop:
        keep = [str(i) * 3 for i in range(2000)]
        ext.snapshot()
thread = threading.Thread(target=main_side)
thread.start()
interpreters.run_string(iid, '''
def in_subinterpreter():
    for _ in range(150):
        keep = [str(i) * 3 for i in range(2000)]
in_subinterpreter()
''')
interpreters.destroy(iid)
stop = True
thread.join()
names = {code.co_name for _, stack, *_ in ext.snapshot()[1] for code, _ in stack}
assert "main_side" in names, names
print("SUBINTERPRETER SAMPLED" if "in_subinterpreter" in names else "MAIN ONLY")
ext.stop()
"""


def test_subinterpreters_are_not_sampled_and_cannot_corrupt_the_tables() -> None:
    """The hooks are process-wide, but since 3.12 a subinterpreter may run under its own GIL,
    at the same time as the main interpreter: touching the tables from there corrupted the
    heap (the process died at exit, or at once); its code objects would also outlive it. Only
    the main interpreter's allocations are tracked. A child process, so a crash fails here."""
    import subprocess

    done = subprocess.run([sys.executable, "-c", _SUBINTERPRETER_SCRIPT], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "MAIN ONLY"
