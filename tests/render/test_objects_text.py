"""The objects text table: exact output for hand-built captures, the row cap, hostile names."""

from __future__ import annotations

from pyprof_http.captures.objects import UNTRACKED_NOTE, ObjectsCapture
from pyprof_http.collectors.objects import growth, histogram
from pyprof_http.render.objects_text import MAX_ROWS, TEXT_PLAIN, render_objects_text


def _capture(rows: dict[str, tuple[int, int]], total: int, time_ns: int = 1) -> ObjectsCapture:
    return ObjectsCapture(
        counts={name: c for name, (c, _) in rows.items()},
        sizes={name: b for name, (_, b) in rows.items()},
        total_objects=total,
        time_ns=time_ns,
    )


def test_histogram_table():
    capture = _capture({"dict": (10, 1840), "app.Order": (120, 6720), "list": (10, 2000)}, 140)
    rendered = render_objects_text(capture, "objects")
    assert rendered.media_type == TEXT_PLAIN
    assert rendered.filename is None
    assert rendered.body.decode() == (
        "objects: 140 gc-tracked objects in 3 types, 10560 bytes\n"
        f"# {UNTRACKED_NOTE}\n"
        "count  bytes  type\n"
        "  120   6720  app.Order\n"
        "   10   2000  list\n"
        "   10   1840  dict\n"
    )


def test_growth_table():
    before = _capture({"app.Order": (100, 5600), "dict": (50, 9200), "list": (5, 400)}, 155, 10**9)
    after = _capture(
        {"app.Order": (600, 33600), "dict": (40, 7360), "list": (6, 80)}, 646, 3 * 10**9
    )
    rendered = render_objects_text(growth(before, after), "objects")
    assert rendered.body.decode() == (
        "objects growth over 2.0 s: +501 objects, +27680 bytes in 2 types whose count grew "
        "(155 -> 646 gc-tracked objects)\n"
        f"# {UNTRACKED_NOTE}\n"
        "+count  +bytes  type\n"
        "  +500  +28000  app.Order\n"
        "    +1    -320  list\n"
    )


def test_unsized_objects_are_said():
    capture = ObjectsCapture({"x.Bad": 2}, {"x.Bad": 0}, 2, 1, unsized=2)
    text = render_objects_text(capture, "objects").body.decode()
    assert "# 2 objects whose __sizeof__ raised are counted with 0 bytes\n" in text


def test_capped_to_the_top_rows_with_a_remainder_line():
    rows = {f"m.T{i}": (1000 - i, 10) for i in range(MAX_ROWS + 7)}
    text = render_objects_text(_capture(rows, 10**6), "objects").body.decode()
    lines = text.splitlines()
    assert len(lines) == 3 + MAX_ROWS + 1
    assert lines[3].endswith("  m.T0")
    assert lines[-2].endswith(f"  m.T{MAX_ROWS - 1}")
    left = sum(1000 - i for i in range(MAX_ROWS, MAX_ROWS + 7))
    assert lines[-1] == f"... 7 more types: {left} objects, 70 bytes"


def test_hostile_names_stay_data_and_cannot_forge_lines():
    names = {
        "m.<img src=x>": (3, 168),
        "m.a\nfake  row": (2, 112),
        "m.\x1b[31mred\u2028": (1, 56),
        "m.\udcff": (1, 56),
    }
    body = render_objects_text(_capture(names, 7), "objects").body
    text = body.decode()
    assert "  m.<img src=x>\n" in text
    assert "  m.a\\nfake  row\n" in text
    assert "  m.\\x1b[31mred\\u2028\n" in text
    assert "  m.\\udcff\n" in text
    assert len(text.splitlines()) == 3 + len(names)


def test_real_histogram_renders():
    class ObjectsProbe:
        pass

    probes = [ObjectsProbe() for _ in range(1234)]
    text = render_objects_text(histogram(), "objects").body.decode()
    assert text.startswith("objects: ")
    assert any(
        line.split()[0] == "1234" and line.endswith(".ObjectsProbe") for line in text.splitlines()
    )
    assert len(probes) == 1234
