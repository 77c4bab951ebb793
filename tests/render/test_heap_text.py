"""Go's heap debug=1 text for a tracemalloc capture: exact output for a hand-built capture."""

from __future__ import annotations

from pyprof_http.collectors.heap import (
    INUSE_OBJECTS,
    INUSE_SPACE,
    SPACE,
    HeapCapture,
    Mode,
    TraceState,
)
from pyprof_http.model import Profile, Sample, frame
from pyprof_http.render.heap_text import MAX_RECORDS, render_heap_text
from pyprof_http.render.text import TEXT_PLAIN, frame_id

ALLOC = frame("Cache.fill", "/app/cache.py", 40)  # 10 characters
HANDLER = frame("handler", "/app/web.py", 12)  # 7
OTHER = frame("load", "/app/db.py", 7)
STATE = TraceState(frames_limit=32, traced_current=9000, traced_peak=12000,
                   tracemalloc_memory=4096)


def _capture(samples: tuple[Sample, ...], mode: Mode = "window") -> HeapCapture:
    profile = Profile(
        sample_types=(INUSE_OBJECTS, INUSE_SPACE), samples=samples, period_type=SPACE, period=1,
        time_ns=1, duration_ns=2_500_000_000, comments=("a comment",),
        default_sample_type="inuse_space",
    )
    return HeapCapture(profile, mode, STATE)


def test_exact_text() -> None:
    capture = _capture((
        Sample((OTHER,), (5, 100)),
        Sample((ALLOC, HANDLER), (3, 6000)),
    ))
    rendered = render_heap_text(capture, "heap")
    assert rendered.media_type == TEXT_PLAIN
    assert rendered.filename is None
    a, h, o = frame_id(ALLOC), frame_id(HANDLER), frame_id(OTHER)
    assert rendered.body.decode() == (
        "heap profile: 8: 6100 [0: 0] @ heap/1\n"
        "# in use: 5.96kB in 8 objects\n"
        "# tracemalloc sees only live blocks: counts are in-use objects and bytes; allocation "
        "totals ([0: 0]) are not known. Every block is traced (rate 1).\n"
        "# a comment\n"
        f"3: 6000 [0: 0] @ {a} {h}\n"
        "# 5.86kB in 3 objects (98.36% of bytes)\n"
        f"#\t{a}\tCache.fill\t/app/cache.py:40\n"
        f"#\t{h}\thandler\t\t/app/web.py:12\n"
        "\n"
        f"5: 100 [0: 0] @ {o}\n"
        "# 100B in 5 objects (1.64% of bytes)\n"
        f"#\t{o}\tload\t/app/db.py:7\n"
        "\n"
        "# tracemalloc\n"
        "# Mode = window\n"
        "# WindowSeconds = 2.50\n"
        "# TracebackLimit = 32\n"
        "# TracedMemory = 9000 (8.79kB)\n"
        "# TracedPeak = 12000 (11.72kB)\n"
        "# TracemallocMemory = 4096 (4kB)\n"
    )


def test_snapshot_has_no_window_line_and_empty_profile_is_valid() -> None:
    text = render_heap_text(_capture((), mode="snapshot"), "heap").body.decode()
    assert text.startswith("heap profile: 0: 0 [0: 0] @ heap/1\n")
    assert "# Mode = snapshot\n" in text
    assert "WindowSeconds" not in text


def test_same_stack_merges_and_ties_sort_by_objects_then_stack() -> None:
    capture = _capture((
        Sample((HANDLER,), (1, 50)),
        Sample((OTHER,), (2, 100)),
        Sample((HANDLER,), (1, 50)),
        Sample((ALLOC,), (9, 100)),
    ))
    records = [line for line in render_heap_text(capture, "heap").body.decode().splitlines()
               if "[0: 0] @ 0x" in line]
    assert records == [
        f"9: 100 [0: 0] @ {frame_id(ALLOC)}",
        f"2: 100 [0: 0] @ {frame_id(HANDLER)}",  # merged 1+1: 100 bytes, tie on bytes and objs
        f"2: 100 [0: 0] @ {frame_id(OTHER)}",
    ]


def test_caps_records_and_says_how_many_were_left_out() -> None:
    samples = tuple(Sample((frame(f"f{i}", "/app/many.py", i),), (1, 10_000 - i))
                    for i in range(MAX_RECORDS + 5))
    text = render_heap_text(_capture(samples), "heap").body.decode()
    records = [line for line in text.splitlines() if "[0: 0] @ 0x" in line]
    assert len(records) == MAX_RECORDS
    assert records[0].startswith("1: 10000 ")
    assert sum(10_000 - i for i in range(MAX_RECORDS, MAX_RECORDS + 5)) == 44_990
    assert (f"# 5 more records not shown (5 objects, 43.94kB): only the top {MAX_RECORDS} "
            "by bytes are written; format=pprof has them all\n") in text
    assert text.startswith(f"heap profile: {MAX_RECORDS + 5}: ")


def test_names_cannot_forge_records() -> None:
    evil = frame("f\n1: 999999 [0: 0] @ 0x0", "/app/x\r.py", 1)
    text = render_heap_text(_capture((Sample((evil,), (1, 1)),)), "heap").body.decode()
    assert "\n1: 999999" not in text
    assert "f\\n1: 999999" in text and "/app/x\\r.py:1" in text


def test_empty_stack_prints_a_placeholder_frame() -> None:
    text = render_heap_text(_capture((Sample((), (1, 8)),)), "heap").body.decode()
    assert "1: 8 [0: 0] @ \n# 8B in 1 objects (100% of bytes)\n#\t0x0\n" in text
