"""What the loop ran while a callback waited for it: the ``behind`` of a trace's waits.

A wait in a ``gather`` of 10,000 tasks overlaps thousands of other steps, so summing every
overlap of every wait is quadratic (minutes for one trace). Per thread the callbacks run one
at a time, so a wait's window is a contiguous run of them in start order; a sparse table of
range maxima gives the :data:`TOP` longest callbacks of any run in O(TOP log n), and their
overlaps with the wait, summed per task or callback name, are what it waited behind. Short
callbacks beyond those are left out: they are not the answer to "behind what?".
"""

from __future__ import annotations

import bisect
import heapq
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Final

from ..captures.trace import TraceEvent

TOP: Final = 8
"""Longest callbacks looked at per wait."""


class Track:
    """One thread's callbacks and steps, in start order, with range-maximum lookups."""

    def __init__(self, events: Sequence[TraceEvent]) -> None:
        self.events = sorted(events, key=lambda e: e.start_ns)
        self.starts = [e.start_ns for e in self.events]
        self.durations = durations = [e.duration_ns for e in self.events]
        self.table: list[list[int]] = [list(range(len(durations)))]
        level = 1
        while (1 << level) <= len(durations):
            previous, half = self.table[-1], 1 << (level - 1)
            self.table.append([a if durations[a] >= durations[b] else b
                               for a, b in zip(previous, previous[half:], strict=False)])
            level += 1

    def _argmax(self, lo: int, hi: int) -> int:
        """Index of the longest event in ``[lo, hi)`` (non-empty)."""
        level = (hi - lo).bit_length() - 1
        row = self.table[level]
        a, b = row[lo], row[hi - (1 << level)]
        return a if self.durations[a] >= self.durations[b] else b

    def longest(self, lo: int, hi: int, count: int) -> list[TraceEvent]:
        """The ``count`` longest events in ``[lo, hi)``, longest first."""
        if lo >= hi:
            return []
        out: list[TraceEvent] = []
        first = self._argmax(lo, hi)
        heap = [(-self.durations[first], first, lo, hi)]
        while heap and len(out) < count:
            _, at, left, right = heapq.heappop(heap)
            out.append(self.events[at])
            for a, b in ((left, at), (at + 1, right)):
                if a < b:
                    best = self._argmax(a, b)
                    heapq.heappush(heap, (-self.durations[best], best, a, b))
        return out

    def behind(self, ready_ns: int, start_ns: int, who: Callable[[TraceEvent], str],
               keep: int) -> tuple[tuple[str, int], ...]:
        """What ran on this thread between ``ready_ns`` and ``start_ns``: (name, overlapping
        ns) of the longest, summed per name, at most ``keep``, longest first."""
        lo = max(0, bisect.bisect_right(self.starts, ready_ns) - 1)
        hi = bisect.bisect_left(self.starts, start_ns)
        overlap: dict[str, int] = defaultdict(int)
        for other in self.longest(lo, hi, TOP):
            shared = min(other.end_ns, start_ns) - max(other.start_ns, ready_ns)
            if shared > 0:
                overlap[who(other)] += shared
        return tuple(sorted(overlap.items(), key=lambda kv: -kv[1])[:keep])
