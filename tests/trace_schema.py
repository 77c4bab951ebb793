"""A structural check of Chrome's Trace Event Format, as Perfetto and chrome://tracing read it
(the JSON object form): shared by the renderer's unit tests and the integration tests."""

from __future__ import annotations

from collections import Counter
from typing import Any

PHASES = {"X", "B", "E", "i", "b", "e", "M"}


def check_chrome_trace(document: Any) -> list[dict[str, Any]]:
    """Assert ``document`` is a well-formed trace; return its events."""
    assert isinstance(document, dict) and isinstance(document["traceEvents"], list)
    assert document.get("displayTimeUnit") in (None, "ms", "ns")
    events: list[dict[str, Any]] = document["traceEvents"]
    opened: Counter[tuple[str, str, str]] = Counter()
    named_tids: set[tuple[int, int]] = set()
    for event in events:
        assert event["ph"] in PHASES, event
        assert isinstance(event["pid"], int) and isinstance(event["tid"], int), event
        assert isinstance(event["name"], str), event
        if event["ph"] == "M":
            assert event["name"] in ("process_name", "thread_name", "thread_sort_index"), event
            if event["name"] == "thread_name":
                assert isinstance(event["args"]["name"], str)
                named_tids.add((event["pid"], event["tid"]))
            continue
        assert isinstance(event["ts"], (int, float)) and event["ts"] >= 0, event
        assert isinstance(event.get("args", {}), dict), event
        if event["ph"] == "X":
            assert isinstance(event["dur"], (int, float)) and event["dur"] >= 0, event
        if event["ph"] == "i":
            assert event.get("s") in ("t", "p", "g"), event
        if event["ph"] in ("b", "e"):
            key = (event["cat"], event["id"], str(event["pid"]))
            opened[key] += 1 if event["ph"] == "b" else -1
            assert opened[key] >= 0, f"end before begin: {event}"
    assert all(n == 0 for n in opened.values()), "unbalanced async slices"
    _check_nesting(events)
    used = {(e["pid"], e["tid"]) for e in events if e["ph"] != "M" and e["tid"]}
    assert used <= named_tids, f"tracks without a name: {used - named_tids}"
    return events


EPSILON_US = 0.002
"""Times are whole nanoseconds written as microseconds with three decimals."""


def _check_nesting(events: list[dict[str, Any]]) -> None:
    """Complete events on one track must nest (Perfetto and chrome://tracing draw a track as
    a stack of slices; a slice overlapping another's end is misdrawn or dropped)."""
    tracks: dict[tuple[int, int], list[tuple[float, float, str]]] = {}
    for e in events:
        if e["ph"] == "X":
            tracks.setdefault((e["pid"], e["tid"]), []).append(
                (e["ts"], e["ts"] + e["dur"], e["name"]))
    for track, slices in tracks.items():
        slices.sort(key=lambda s: (s[0], -s[1]))
        open_ends: list[tuple[float, str]] = []
        for start, end, name in slices:
            while open_ends and open_ends[-1][0] <= start + EPSILON_US:
                open_ends.pop()
            if open_ends:
                assert end <= open_ends[-1][0] + EPSILON_US, (
                    f"on track {track}, {name!r} [{start}, {end}] overlaps the end of "
                    f"{open_ends[-1][1]!r} (ends {open_ends[-1][0]})")
            open_ends.append((end, name))
