"""What a wait waited behind: the range-maximum lookup agrees with summing every overlap."""

from __future__ import annotations

import random
from collections import defaultdict

from pyprof_http.captures.trace import TraceEvent
from pyprof_http.collectors import trace_behind
from pyprof_http.collectors.trace_behind import Track


def _events(n: int, seed: int) -> list[TraceEvent]:
    rng = random.Random(seed)
    out, at = [], 0
    for i in range(n):
        duration = rng.choice([1_000, 5_000, 80_000_000, rng.randrange(1, 3_000_000)])
        out.append(TraceEvent("step", 1, at, duration, f"task {i % 7}"))
        at += duration + rng.randrange(0, 2_000)
    return out


def _brute(events: list[TraceEvent], ready: int, start: int) -> dict[str, int]:
    overlap: dict[str, int] = defaultdict(int)
    for e in events:
        shared = min(e.end_ns, start) - max(e.start_ns, ready)
        if shared > 0 and e.start_ns < start:
            overlap[e.name] += shared
    return overlap


def test_the_longest_in_a_range_come_longest_first() -> None:
    events = _events(300, 1)
    track = Track(list(reversed(events)))  # any order in: sorted by start inside
    for lo, hi in ((0, 300), (5, 6), (17, 211), (299, 300), (40, 40)):
        expected = sorted(events[lo:hi], key=lambda e: -e.duration_ns)[:8]
        got = track.longest(lo, hi, 8)
        assert [e.duration_ns for e in got] == [e.duration_ns for e in expected]


def test_behind_matches_the_sum_of_overlaps_when_all_are_looked_at(monkeypatch) -> None:
    monkeypatch.setattr(trace_behind, "TOP", 1_000)
    events = _events(200, 2)
    track = Track(events)
    rng = random.Random(3)
    for _ in range(50):
        a, b = sorted(rng.randrange(0, events[-1].end_ns + 10) for _ in range(2))
        got = dict(track.behind(a, b, lambda e: e.name, keep=100))
        assert got == {k: v for k, v in _brute(events, a, b).items() if v > 0}


def test_with_the_default_budget_the_hog_is_named_first() -> None:
    tiny = [TraceEvent("callback", 1, i * 10_000, 1_000, "tick") for i in range(5_000)]
    hog = TraceEvent("step", 1, 25_000_005, 80_000_000, "hog")
    track = Track([*tiny, hog])
    behind = track.behind(0, 200_000_000, lambda e: e.name, keep=5)
    assert behind[0] == ("hog", 80_000_000)
