"""The heap sampler's capture as Go's heap debug=1 text (render/heap_text.py)."""

from __future__ import annotations

from pyprof_http.captures.heap import SampledHeapCapture, SamplerState
from pyprof_http.collectors.heap_sampler import SAMPLE_TYPES, SPACE
from pyprof_http.model import Profile, Sample, frame
from pyprof_http.pprof.encode import render_pprof
from pyprof_http.render.flamegraph import render_flamegraph
from pyprof_http.render.heap_text import render_any_heap_text

STATE = SamplerState(True, 524288, 3, 40, 123456, 900, 5_000_000, 0)
HOARD = frame("hoard", "app.py", 10)
CHURN = frame("churn", "app.py", 20)
HOSTILE = frame("evil\n1: 2 [3: 4] @ 0x1\x1b[31m\u2028", "<x>.py", 1)


def capture(default: str, window: float = 0.0) -> SampledHeapCapture:
    samples = (
        Sample((HOARD,), (10, 1000, 8, 800)),  # alloc_objects, alloc_space, inuse_*
        Sample((CHURN,), (500, 90000, 1, 50)),
        Sample((HOSTILE,), (1, 10, 1, 10)),
    )
    return SampledHeapCapture(Profile(SAMPLE_TYPES, samples, SPACE, 524288, 0, 0, ("note",),
                                      default), STATE, window)


def test_go_header_and_records_sorted_by_the_default_type() -> None:
    text = render_any_heap_text(capture("inuse_space"), "heap").body.decode()
    lines = text.splitlines()
    assert lines[0] == "heap profile: 10: 860 [511: 91010] @ heap/1"  # inuse [alloc]
    records = [line for line in lines if " @ 0x" in line]
    assert records[0].startswith("8: 800 [10: 1000] @ ")  # hoard: most in use
    allocs = render_any_heap_text(capture("alloc_space"), "allocs").body.decode()
    assert allocs.startswith("allocs profile: ")
    assert next(line for line in allocs.splitlines() if " @ 0x" in line).startswith(
        "1: 50 [500: 90000] @ ")  # churn: most allocated
    assert "# SampleRate = 524288" in text and "# Mode = now" in text
    assert "# SamplerMemory = 123456" in text


def test_window_says_so() -> None:
    text = render_any_heap_text(capture("inuse_space", 5.0), "heap").body.decode()
    assert "# Mode = window" in text and "# WindowSeconds = 5" in text


def test_hostile_names_cannot_forge_records_or_escape() -> None:
    text = render_any_heap_text(capture("inuse_space"), "heap").body.decode()
    assert "\x1b" not in text and "\u2028" not in text
    assert not any(line.startswith("1: 2 [3: 4]") for line in text.splitlines())
    page = render_flamegraph(capture("inuse_space").profile, "heap").body.decode()
    assert "evil\n1" not in page and "\x1b" not in page
    assert render_pprof(capture("inuse_space").profile, "heap").body[:2] == b"\x1f\x8b"
