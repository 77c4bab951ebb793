"""Go's ``debug=1`` text: records of identical stacks, most frequent first, frames innermost first.

``go tool pprof`` users read this with curl. Go prints return PCs after ``@``; Python has none, so
each frame gets a stable id (a CRC of its function, file and line) that is the same in every
request of the process's life, so a frame can be followed across dumps with grep.

Values stay exact integers on the header and record lines (the shape Go's parsers read). Where a
value is a time or a size (the mutex profile's delay), a ``#`` line after the header and after
each record says it as pprof does (``1.20s``, ``3.40MB``), with the record's share of the total.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Sequence

from ..model import Frame, Labels, LabelValue, Profile, Sample, sum_values
from ..sanitize import printable
from . import Rendered, utf8
from .top import percentage, scaled

TEXT_PLAIN = "text/plain; charset=utf-8"


def frame_id(f: Frame) -> str:
    """A stable pseudo address for a frame, shown where Go shows a PC."""
    key = utf8("\0".join((f.function, f.filename, str(f.line))))
    return f"0x{zlib.crc32(key):08x}"


def render_text(profile: Profile, name: str) -> Rendered:
    """``<name> profile: total N`` then one record per distinct stack, as Go's debug=1."""
    groups: dict[tuple[Frame, ...], list[Sample]] = {}
    for sample in profile.samples:
        groups.setdefault(sample.stack, []).append(sample)
    width = len(profile.sample_types)
    main = profile.value_index() if width else 0  # heaviest by the default type first (delay)
    records = sorted(
        ((sum_values(samples, width), stack, samples) for stack, samples in groups.items()),
        key=lambda r: (-r[0][main] if width else 0, tuple(-v for v in r[0]),
                       [(f.function, f.filename, f.line) for f in r[1]]),
    )
    totals = profile.totals()
    readable = any(t.unit in _SCALED_UNITS for t in profile.sample_types)
    out: list[str] = [_header(profile, name, totals)]
    if readable:
        out.append(f"# total: {_readable(profile, totals)}")
    out.extend(f"# {clean(comment)}" for comment in profile.comments)
    for values, stack, samples in records:
        out.append(f"{' '.join(str(v) for v in values)} @ {' '.join(frame_id(f) for f in stack)}")
        if readable:
            out.append(f"# {_readable(profile, values, totals)}")
        shared = _shared_labels(s.labels for s in samples)
        if shared:
            out.append("# labels: " + json.dumps(shared, separators=(", ", ":")))
        out.extend(frame_lines(stack))
        out.append("")
    return Rendered(utf8("\n".join(out) + "\n"), TEXT_PLAIN)


def _header(profile: Profile, name: str, totals: Sequence[int]) -> str:
    if len(totals) == 1:
        return f"{name} profile: total {totals[0]}"
    described = ", ".join(
        f"{t.type}/{t.unit} {v}" for t, v in zip(profile.sample_types, totals, strict=True)
    )
    return f"{name} profile: {described}"


_SCALED_UNITS = frozenset({"nanoseconds", "bytes"})


def _readable(profile: Profile, values: Sequence[int],
              totals: Sequence[int] | None = None) -> str:
    """``3 contentions, 1.20s delay`` and, for a record, ``(45.00% of delay)``."""
    types = profile.sample_types
    text = ", ".join(f"{scaled(v, t.unit)} {t.type}" for t, v in zip(types, values, strict=True))
    if totals is None:
        return text
    main = profile.value_index()
    return f"{text} ({percentage(values[main], totals[main]).strip()} of {types[main].type})"


def _shared_labels(label_sets: Iterable[Labels]) -> dict[str, LabelValue]:
    """Labels every sample in the record has with the same value; the others would be noise."""
    shared: dict[str, LabelValue] | None = None
    for labels in label_sets:
        items = dict(labels)
        shared = items if shared is None else {k: v for k, v in shared.items() if items.get(k) == v}
        if not shared:
            return {}
    return dict(sorted((shared or {}).items()))


clean = printable
"""File, function and comment text is not ours: a newline in it must not forge a record (the
package's one sanitiser, under the name the text views have always imported)."""


def frame_lines(stack: Sequence[Frame]) -> list[str]:
    """``#\\tID\\tfunction\\tfile:line``, the function column padded by tabs as Go's tabwriter."""
    if not stack:
        return ["#\t0x0"]
    functions = [clean(f.function) for f in stack]
    stop = (max(len(function) for function in functions) // 8 + 1) * 8
    return [
        f"#\t{frame_id(f)}\t{function}{chr(9) * max(1, -(-(stop - len(function)) // 8))}"
        f"{clean(f.filename)}:{f.line}"
        for f, function in zip(stack, functions, strict=True)
    ]
