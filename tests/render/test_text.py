"""Go's debug=1 text: exact output for a hand-built profile."""

from __future__ import annotations

import zlib

from pyprof_http.model import Frame, Profile, Sample, ValueType, frame
from pyprof_http.render.text import TEXT_PLAIN, frame_id, render_text

COUNT = ValueType("goroutine", "count")

WAIT = frame("Event.wait", "/usr/lib/asyncio/locks.py", 213)  # 10 characters
HANDLER = frame("handler", "/app/web.py", 12)  # 7
MAIN = frame("main", "/app/main.py", 3)  # 4


def _id(f: Frame) -> str:
    """The documented pseudo address: CRC-32 of function, file and line, NUL-separated."""
    key = "\0".join((f.function, f.filename, str(f.line))).encode()
    return f"0x{zlib.crc32(key):08x}"


def _profile() -> Profile:
    return Profile(
        sample_types=(COUNT,),
        samples=(
            Sample((HANDLER, MAIN), (1,), {"kind": "thread", "thread": "MainThread"}),
            Sample((WAIT, HANDLER, MAIN), (1,), {"kind": "task", "state": "awaiting", "task": "a"}),
            Sample((WAIT, HANDLER, MAIN), (1,), {"kind": "task", "state": "awaiting", "task": "b"}),
        ),
        comments=("read from another thread", "second comment"),
    )


def test_exact_text() -> None:
    rendered = render_text(_profile(), "goroutine")
    assert rendered.media_type == TEXT_PLAIN == "text/plain; charset=utf-8"
    assert rendered.filename is None
    assert rendered.content_security_policy is None
    w, h, m = _id(WAIT), _id(HANDLER), _id(MAIN)
    assert rendered.body.decode() == (
        "goroutine profile: total 3\n"
        "# read from another thread\n"
        "# second comment\n"
        f"2 @ {w} {h} {m}\n"
        '# labels: {"kind":"task", "state":"awaiting"}\n'  # task a/b differ: not shown
        f"#\t{w}\tEvent.wait\t/usr/lib/asyncio/locks.py:213\n"
        f"#\t{h}\thandler\t\t/app/web.py:12\n"
        f"#\t{m}\tmain\t\t/app/main.py:3\n"
        "\n"
        f"1 @ {h} {m}\n"
        '# labels: {"kind":"thread", "thread":"MainThread"}\n'
        f"#\t{h}\thandler\t/app/web.py:12\n"
        f"#\t{m}\tmain\t/app/main.py:3\n"
        "\n"
    )


def test_frame_ids_are_stable_and_distinct() -> None:
    assert frame_id(HANDLER) == frame_id(Frame("handler", "/app/web.py", 12)) == _id(HANDLER)
    ids = {frame_id(f) for f in (WAIT, HANDLER, MAIN, frame("handler", "/app/web.py", 13),
                                 frame("handler", "/app/web2.py", 12))}
    assert len(ids) == 5
    assert all(len(i) == 10 and i.startswith("0x") for i in ids)
    # same in a second rendering
    assert render_text(_profile(), "goroutine").body == render_text(_profile(), "goroutine").body


def test_function_column_is_tab_aligned_per_record() -> None:
    names = ["f", "seven77", "exactly8", "sixteen_chars_xx", "a_name_of_21_chars_x_"]
    stack = tuple(frame(n, f"/src/{n}.py", i + 1) for i, n in enumerate(names))
    body = render_text(Profile((COUNT,), (Sample(stack, (1,)),)), "goroutine").body.decode()
    lines = [line for line in body.splitlines() if line.startswith("#\t")]
    assert len(lines) == len(names)
    columns = {line.expandtabs(8).index("/src/") for line in lines}
    assert len(columns) == 1  # every file name starts in the same column
    column = columns.pop()
    widest = 24 + max(len(n) for n in names)  # "#\t0x........\t" ends at column 24
    assert widest < column <= widest + 8


def test_sorted_by_count_then_by_stack() -> None:
    a, b, c = frame("a", "/x.py", 1), frame("b", "/x.py", 2), frame("c", "/x.py", 3)
    profile = Profile((COUNT,), (
        Sample((c,), (1,)),
        Sample((b,), (5,)),
        Sample((a,), (1,)),
        Sample((a, c), (2,)),
    ))
    body = render_text(profile, "goroutine").body.decode()
    records = [line for line in body.splitlines() if " @ " in line]
    assert records == [
        f"5 @ {_id(b)}",
        f"2 @ {_id(a)} {_id(c)}",
        f"1 @ {_id(a)}",  # ties: by function names, innermost first
        f"1 @ {_id(c)}",
    ]
    assert body.splitlines()[0] == "goroutine profile: total 9"


def test_equal_stacks_with_different_labels_form_one_record() -> None:
    profile = Profile((COUNT,), (
        Sample((MAIN,), (1,), {"task": "x", "n": 1}),
        Sample((MAIN,), (1,), {"task": "y", "n": 1}),
        Sample((MAIN,), (1,), {"n": 1}),
    ))
    body = render_text(profile, "goroutine").body.decode()
    assert f"3 @ {_id(MAIN)}\n# labels: {{\"n\":1}}\n" in body


def test_no_shared_labels_means_no_labels_line() -> None:
    profile = Profile((COUNT,), (
        Sample((MAIN,), (1,), {"task": "x"}),
        Sample((MAIN,), (1,), {"thread": "y"}),
    ))
    body = render_text(profile, "goroutine").body.decode()
    assert "labels" not in body


def test_multiple_sample_types() -> None:
    profile = Profile(
        sample_types=(ValueType("samples", "count"), ValueType("cpu", "nanoseconds")),
        samples=(Sample((MAIN,), (3, 30_000)), Sample((HANDLER, MAIN), (1, 50_000))),
    )
    body = render_text(profile, "profile").body.decode()
    lines = body.splitlines()
    assert lines[0] == "profile profile: samples/count 4, cpu/nanoseconds 80000"
    assert lines[1] == "# total: 4 samples, 80us cpu"  # times said as pprof says them
    # heaviest by the default sample type (pprof's: the last, cpu) first
    assert lines[2:4] == [f"1 50000 @ {_id(HANDLER)} {_id(MAIN)}",
                          "# 1 samples, 50us cpu (62.50% of cpu)"]


def test_mutex_delay_is_humanised_and_stays_exact() -> None:
    """Raw nanoseconds are hard to read under stress; the record line keeps them exact."""
    types = (ValueType("contentions", "count"), ValueType("delay", "nanoseconds"))
    profile = Profile(types, (
        Sample((MAIN,), (9, 1_000_000)),
        Sample((HANDLER, MAIN), (3, 1_200_000_000), {"thread": "a"}),
    ), default_sample_type="delay")
    lines = render_text(profile, "mutex").body.decode().splitlines()
    assert lines[:5] == [
        "mutex profile: contentions/count 12, delay/nanoseconds 1201000000",
        "# total: 12 contentions, 1.20s delay",
        f"3 1200000000 @ {_id(HANDLER)} {_id(MAIN)}",  # the longest wait first, not the most
        "# 3 contentions, 1.20s delay (99.92% of delay)",
        '# labels: {"thread":"a"}',
    ]
    assert f"9 1000000 @ {_id(MAIN)}" in lines
    assert "# 9 contentions, 1ms delay (0.083% of delay)" in lines


def test_counts_only_keep_gos_exact_shape() -> None:
    profile = Profile((COUNT,), (Sample((MAIN,), (2,)),))
    assert render_text(profile, "goroutine").body.decode().splitlines()[:2] == [
        "goroutine profile: total 2", f"2 @ {_id(MAIN)}"]


def test_empty_profile_and_empty_stack() -> None:
    assert render_text(Profile((COUNT,), ()), "goroutine").body == b"goroutine profile: total 0\n"
    body = render_text(Profile((COUNT,), (Sample((), (2,)),)), "goroutine").body.decode()
    assert body == "goroutine profile: total 2\n2 @ \n#\t0x0\n\n"


def test_negative_delta_values_are_printed() -> None:
    profile = Profile((COUNT,), (Sample((MAIN,), (-2,)), Sample((HANDLER,), (1,))))
    lines = render_text(profile, "goroutine").body.decode().splitlines()
    assert lines[0] == "goroutine profile: total -1"
    assert [line for line in lines if " @ " in line] == [f"1 @ {_id(HANDLER)}",
                                                         f"-2 @ {_id(MAIN)}"]


def test_every_record_ends_with_a_blank_line() -> None:
    body = render_text(_profile(), "goroutine").body.decode()
    blocks = body.split("\n\n")
    assert blocks[-1] == ""
    assert len(blocks) == 3  # two records, then the end


def test_control_characters_in_names_cannot_forge_a_record() -> None:
    forged = frame("f\n1 @ 0xdeadbeef\n#\tforged", "/app/x\r.py", 3)
    profile = Profile(
        sample_types=(ValueType("goroutine", "count"),),
        samples=(Sample((forged,), (1,)),),
        comments=("a comment\nwith a second line",),
    )
    text = render_text(profile, "goroutine").body.decode()
    lines = text.splitlines()
    assert [line for line in lines if line.startswith("1 @")] == [f"1 @ {_id(forged)}"]
    assert "f\\n1 @ 0xdeadbeef\\n#\\tforged" in text
    assert "/app/x\\r.py:3" in text
    assert "# a comment\\nwith a second line" in lines
