"""The ``objects`` profile as a table for curl: ``count  bytes  type``, most numerous first.

objgraph's ``show_most_common_types`` / ``show_growth`` layout, because that is what people who
hunt leaks in Python already read. A heap has thousands of types, most with a handful of
objects, so the table stops at :data:`MAX_ROWS` and sums up the rest in one line. Type names
come from the application (``type("<img src=x>", (), {})`` is legal), so characters that could
forge a line (newlines, control characters) are printed as escapes; everything else is data in a
``text/plain`` body.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from ..captures.objects import UNTRACKED_NOTE, ObjectsCapture, TypeRow
from ..sanitize import printable
from . import Rendered, utf8

TEXT_PLAIN: Final = "text/plain; charset=utf-8"
MAX_ROWS: Final = 500
"""Rows shown; the remainder is one "N more types" line (the pprof output has them all)."""


def render_objects_text(capture: ObjectsCapture, name: str) -> Rendered:
    """Header with totals and the untracked-objects note, then the top rows by count."""
    rows = capture.rows
    shown, rest = rows[:MAX_ROWS], rows[MAX_ROWS:]
    growth = capture.elapsed is not None
    sign = "+" if growth else ""
    out = [_header(capture, rows, name), f"# {UNTRACKED_NOTE}"]
    if capture.unsized:
        out.append(f"# {capture.unsized} objects whose __sizeof__ raised are counted with 0 bytes")
    counts = [_number(row.count, growth) for row in shown]
    sizes = [_number(row.bytes, growth) for row in shown]
    count_width = max(map(len, [f"{sign}count", *counts]))
    bytes_width = max(map(len, [f"{sign}bytes", *sizes]))
    out.append(f"{sign + 'count':>{count_width}}  {sign + 'bytes':>{bytes_width}}  type")
    for row, count, size in zip(shown, counts, sizes, strict=True):
        out.append(f"{count:>{count_width}}  {size:>{bytes_width}}  {printable(row.name)}")
    if rest:
        out.append(
            f"... {len(rest)} more types: {_number(_sum(rest, 'count'), growth)} objects, "
            f"{_number(_sum(rest, 'bytes'), growth)} bytes"
        )
    return Rendered(utf8("\n".join(out) + "\n"), TEXT_PLAIN)


def _header(capture: ObjectsCapture, rows: Sequence[TypeRow], name: str) -> str:
    count, size = _sum(rows, "count"), _sum(rows, "bytes")
    if capture.elapsed is None:
        return (
            f"{name}: {capture.total_objects} gc-tracked objects in {len(rows)} types, {size} bytes"
        )
    before = capture.total_before if capture.total_before is not None else "?"
    return (
        f"{name} growth over {capture.elapsed:.1f} s: {_number(count, True)} objects, "
        f"{_number(size, True)} bytes in {len(rows)} types whose count grew "
        f"({before} -> {capture.total_objects} gc-tracked objects)"
    )


def _sum(rows: Sequence[TypeRow], field: str) -> int:
    return sum(getattr(row, field) for row in rows)


def _number(value: int, signed: bool) -> str:
    return f"{value:+d}" if signed else str(value)
