"""Frames to model frames, and the code-keyed tables behind them."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import threading
import types
import warnings
import weakref
from typing import Any

import pytest

from pyprof_http.bounded import CodeTable
from pyprof_http.collectors import frames
from pyprof_http.collectors.frames import frame_at, line_at, thread_frames, to_frame
from pyprof_http.loops import code_name_of


def _new_code(name: str) -> types.CodeType:
    code = compile(f"def {name}():\n    return 1\n", "<reused>", "exec").co_consts[0]
    assert isinstance(code, types.CodeType)
    return code


def test_a_freed_codes_id_reused_by_another_code_never_gives_the_old_answer() -> None:
    """The id of a freed code object is soon handed to a new one of its size: a table keyed by
    id alone then gives the old code's answer for the new code (as thread_state's table of
    stdlib codes and loops' 3.10 name table could). One that keeps its code alive cannot."""
    table: CodeTable[str] = CodeTable()
    old = _new_code("old_name")
    alive = weakref.ref(old)
    table.put(old, "old_name", 7)
    old_id = id(old)
    del old
    gc.collect()

    assert alive() is not None  # the table keeps the code, so its id cannot be reused
    candidates = [_new_code("new_name") for _ in range(300)]  # kept: each takes a new block
    assert all(table.get(c, 7) is None for c in candidates)
    assert old_id not in {id(c) for c in candidates}
    assert table.get(alive(), 7) == "old_name"  # type: ignore[arg-type]


def test_code_table_is_bounded_and_keyed_by_detail() -> None:
    table: CodeTable[int] = CodeTable(max_entries=3)
    codes = [_new_code(f"f{i}") for i in range(5)]
    for i, code in enumerate(codes):
        table.put(code, i, "a")
        assert len(table) <= 3
        assert table.get(code, "a") == i
        assert table.get(code, "b") is None


def test_frame_cache_keeps_its_code_alive() -> None:
    code = _new_code("cached")
    alive = weakref.ref(code)
    frame_at(code, 0)
    del code
    gc.collect()
    assert alive() is not None
    frames.FRAMES.clear()
    gc.collect()
    assert alive() is None


async def _parked(event: asyncio.Event) -> None:
    values = [i for i in range(2)]
    await event.wait()
    del values


def _gen():  # type: ignore[no-untyped-def]
    yield 1
    yield 2


def test_frame_at_gives_the_line_f_lineno_gives() -> None:
    """Lines come from (code, offset) alone, off the loop: they must agree with ``f_lineno``
    for running, suspended and not-yet-started frames."""
    seen: list[types.FrameType] = []

    async def main() -> None:
        event = asyncio.Event()
        started = asyncio.create_task(_parked(event))
        await asyncio.sleep(0)
        fresh = asyncio.create_task(_parked(event))  # not started: at its first line
        for task in (started, fresh):
            frame = task.get_coro().cr_frame  # type: ignore[union-attr]
            assert frame is not None
            seen.append(frame)
        gen = _gen()
        assert gen.gi_frame is not None
        seen.append(gen.gi_frame)
        next(gen)
        seen.append(gen.gi_frame)
        f: types.FrameType | None = sys._getframe()
        while f is not None:
            seen.append(f)
            f = f.f_back
        # one source line: this frame is running, and its offset and line move as it does
        read = [(fr.f_code, fr.f_lasti, fr.f_lineno or 0) for fr in seen]
        for code, lasti, lineno in read:
            assert frame_at(code, lasti).line == line_at(code, lasti) == lineno
        event.set()
        await asyncio.gather(started, fresh)

    asyncio.run(main())
    assert len(seen) > 6


def test_to_frame_and_frame_at_agree() -> None:
    f = sys._getframe()
    assert to_frame(f) == frame_at(f.f_code, f.f_lasti)
    assert to_frame(f).function == code_name_of(f.f_code)


_WALK_WHILE_THREADS_EXIT = """
import _thread, gc, sys, threading, time
from pyprof_http.collectors.frames import thread_frames

sys.setswitchinterval(0.0005)
def work(n):
    return 0 if n == 0 else work(n - 1) + 1
class Garbage:  # a cycle: freed by a GC that may run inside a new thread's first frame
    def __init__(self):
        self.me = self
    def __del__(self):
        work(20)
def first():
    y = 1  # a cell: MAKE_CELL allocates (and may run the GC) before the frame is complete
    def c():
        return y
    Garbage(); Garbage()
    c()
stop = False
def spawner():
    while not stop:
        _thread.start_new_thread(first, ())
        Garbage()
        time.sleep(0)
walks = [0, 0]
def walker(i):
    while not stop:
        for ident, frames in thread_frames(1000):
            for f in frames:
                f.f_code, f.f_lasti, f.f_lineno
        walks[i] += 1
gc.set_threshold(1, 1, 1)
ts = [threading.Thread(target=spawner) for _ in range(2)]
ts += [threading.Thread(target=walker, args=(i,)) for i in range(2)]
for t in ts:
    t.start()
time.sleep(2)
stop = True
for t in ts:
    t.join()
print("walks", sum(walks))
"""


def test_thread_frames_survives_threads_exiting_mid_walk() -> None:
    # CPython 3.11: a `while f: f = f.f_back` walk over sys._current_frames() crashed this
    # workload with SIGSEGV in 5 of 6 runs of 6 s (a frame returning from a finalizer run in
    # a new thread's incomplete first frame keeps a dangling `previous`; the thread exits
    # between two steps of the walk). thread_frames walks in one C call. A crash only ever
    # fails this test; a lucky run of broken code passes it, never the other way round.
    # The workload itself (a GC at every allocation, threads born and dying without end) has
    # also been seen to hang the interpreter, once in about 40 runs: a hang is killed after
    # 60 s and reported, since it proves neither a crash nor its absence; a crash fails.
    proc = subprocess.Popen([sys.executable, "-X", "faulthandler", "-c", _WALK_WHILE_THREADS_EXIT],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        warnings.warn("the frame-walk stress workload hung and was killed", stacklevel=1)
        return
    assert proc.returncode == 0, err[-3000:]
    assert int(out.split()[-1]) > 0  # the walkers did walk


def test_thread_frames_reads_every_thread_innermost_first() -> None:
    started, release = threading.Event(), threading.Event()

    def parked() -> None:
        started.set()
        release.wait(10)

    t = threading.Thread(target=parked)
    t.start()
    try:
        assert started.wait(10)
        by_ident = dict(thread_frames(1000))
        mine = by_ident[threading.get_ident()]
        assert mine[0].f_code is sys._getframe().f_code
        codes = [f.f_code for f in by_ident[t.ident]]
        assert codes.index(threading.Event.wait.__code__) < codes.index(parked.__code__)
        assert len(thread_frames(2)[0][1]) <= 2
    finally:
        release.set()
        t.join()


@pytest.mark.parametrize("read", ["current_frames", "thread_frames"])
def test_the_collector_is_off_during_current_frames_where_cpython_can_deadlock(
        read: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """CPython 3.10/3.11 (#106883): a collection inside ``sys._current_frames()`` can free a
    ``threading.local`` whose cleanup waits for the lock the call holds; the process hangs."""
    real = sys._current_frames
    seen: list[bool] = []

    def spying() -> dict[int, Any]:
        seen.append(gc.isenabled())
        return real()

    monkeypatch.setattr(sys, "_current_frames", spying)
    walk = {"current_frames": frames.current_frames,
            "thread_frames": lambda: frames.thread_frames(8)}[read]
    assert gc.isenabled()
    walk()
    assert gc.isenabled()  # back on afterwards
    gc.disable()
    try:
        walk()
        assert not gc.isenabled()  # an application that switched it off keeps it off
    finally:
        gc.enable()
    assert seen == [sys.version_info >= (3, 12), False]
