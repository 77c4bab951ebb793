"""The one bounded cache: capped, starts over when full, shared by every long-lived memo."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from pyprof_http.bounded import BoundedCache, CodeTable


def test_starts_over_when_full_and_never_exceeds_its_cap() -> None:
    cache: BoundedCache[int, str] = BoundedCache(max_entries=3)
    for i in range(3):
        assert cache.put(i, str(i)) == str(i)
    assert len(cache) == 3 and all(i in cache for i in range(3))
    cache.put(3, "3")  # full: cleared first, then stored
    assert len(cache) == 1 and 3 in cache and cache.get(0) is None
    assert cache.get(3) == "3"


def test_unbounded_without_a_cap() -> None:
    cache: BoundedCache[int, int] = BoundedCache()
    for i in range(1000):
        cache.put(i, i)
    assert len(cache) == 1000


def test_setdefault_interns_equal_values() -> None:
    cache: BoundedCache[tuple[int, ...], tuple[int, ...]] = BoundedCache(max_entries=10)
    first = tuple([1, 2, 3])
    second = tuple([1, 2, 3])
    assert first is not second
    assert cache.setdefault(first, first) is first
    assert cache.setdefault(second, second) is first  # the kept copy
    assert cache.setdefault((), ()) == ()  # a falsy value is still a hit next time
    assert len(cache) == 2


def test_a_value_of_none_is_stored_and_seen_with_in() -> None:
    # heap's per-file table keeps None for a file without code: "in" tells it from a miss
    cache: BoundedCache[str, int | None] = BoundedCache(max_entries=2)
    cache.put("x", None)
    assert "x" in cache and cache.get("x") is None and "y" not in cache


def test_code_table_clear_keeps_working() -> None:
    table: CodeTable[int] = CodeTable(max_entries=2)
    code = compile("1", "<a>", "eval")
    table.put(code, 1)
    table.clear()
    assert len(table) == 0 and table.get(code) is None
    table.put(code, 2)
    assert table.get(code) == 2


@pytest.mark.parametrize(("module", "name", "kind"), [
    ("pyprof_http.model", "_FRAMES", BoundedCache),
    ("pyprof_http.render.dump", "_FRAME_LINES", BoundedCache),
    ("pyprof_http.collectors.heap", "_SCOPES", BoundedCache),
    ("pyprof_http.loops", "_FRAME_TABLE", CodeTable),
    ("pyprof_http.collectors.frames", "FRAMES", CodeTable),
    ("pyprof_http.collectors.task_walk", "_ASYNCIO_NAMES", CodeTable),
])
def test_process_long_memos_are_the_one_bounded_cache(module: str, name: str,
                                                      kind: type[Any]) -> None:
    cache = getattr(importlib.import_module(module), name)
    assert isinstance(cache, kind)
    inner = cache._cache if isinstance(cache, CodeTable) else cache
    assert inner._max is not None and inner._max > 0
