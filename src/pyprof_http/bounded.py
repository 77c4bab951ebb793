"""The one bounded cache: a dict of recomputable values that starts over when it is full.

Every memo that lives as long as the process (interned frames, formatted frame lines, a file's
function names, code-object tables) grows with what the application runs, so each is capped.
When full it is cleared rather than trimmed: every value can be computed again, a clear is one
C call, and there is no per-hit bookkeeping (an LRU would cost a list update on every hit, on
paths run tens of thousands of times per request). Reads and writes are single dict operations,
so threads may share a cache without a lock (a reader racing a clear just misses).

:class:`CodeTable` is that cache keyed by a code object, safe by identity (see its docstring).
"""

from __future__ import annotations

from collections.abc import Hashable
from types import CodeType
from typing import Generic, TypeVar

_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


class BoundedCache(Generic[_K, _V]):
    """A map of at most ``max_entries`` recomputable values (None: unbounded, for tables built
    once from a fixed set)."""

    __slots__ = ("_entries", "_max")

    def __init__(self, max_entries: int | None = None) -> None:
        self._entries: dict[_K, _V] = {}
        self._max = max_entries

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def get(self, key: _K) -> _V | None:
        return self._entries.get(key)

    def put(self, key: _K, value: _V) -> _V:
        """Store and return ``value``; a full cache starts over first."""
        entries = self._entries
        if self._max is not None and len(entries) >= self._max:
            entries.clear()
        entries[key] = value
        return value

    def setdefault(self, key: _K, value: _V) -> _V:
        """The value kept for ``key``, storing ``value`` if there is none (interning)."""
        found = self._entries.get(key)
        return found if found is not None else self.put(key, value)

    def clear(self) -> None:
        self._entries.clear()


class CodeTable(Generic[_V]):
    """A :class:`BoundedCache` from a code object (plus an optional hashable detail) to a
    value, safe by identity.

    Keyed by the code's *id*: hashing a code object is not cached and recurses into its
    constants, an id is one pointer. The code object is kept in the value and a hit confirmed
    by identity: a freed code's id can be reused by a new code object (a reload, gevent's
    patching), and keeping the code alive means that never happens while the entry exists, so
    a table can never give one function's answer for another.
    """

    __slots__ = ("_cache", "_entries")

    def __init__(self, max_entries: int | None = None) -> None:
        self._cache: BoundedCache[tuple[int, Hashable], tuple[CodeType, _V]] = BoundedCache(
            max_entries)
        self._entries = self._cache._entries  # the same dict (cleared in place): one lookup

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, code: CodeType, detail: Hashable = None) -> _V | None:
        found = self._entries.get((id(code), detail))
        return found[1] if found is not None and found[0] is code else None

    def put(self, code: CodeType, value: _V, detail: Hashable = None) -> _V:
        self._cache.put((id(code), detail), (code, value))
        return value

    def clear(self) -> None:
        self._cache.clear()
