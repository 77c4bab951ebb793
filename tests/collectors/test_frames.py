"""Frames to model frames, and the code-keyed tables behind them."""

from __future__ import annotations

import asyncio
import gc
import sys
import types
import weakref

from pyprof_http.bounded import CodeTable
from pyprof_http.collectors import frames
from pyprof_http.collectors.frames import frame_at, line_at, to_frame
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
