"""``go tool pprof -top`` as text, so a CPU or wall profile can be read with curl alone.

People who know pprof read this table without a legend: the same header lines (``Type:``,
``Duration: ..., Total samples = ...``), the same ``flat flat% sum% cum cum%`` columns, the same
unit scaling (``1.20s``, ``10ms``, ``1.50MB``) and percentage format. Rows are functions, keyed by
(function, filename) as pprof's default function granularity does, so one function sampled at many
lines is one row; the line shown is the lowest line seen for it, the nearest we have to its
``def``. ``flat`` is what the function spent as the innermost frame; ``cum`` counts every sample
in which the function appears, once per sample even when it recurses, so ``cum`` never exceeds
the total. A ``thread`` label breakdown (pprof's ``-tags`` layout) follows, because "which thread
burned the CPU" is the next question during an incident.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Final

from ..model import Profile
from ..sanitize import printable
from . import Rendered, utf8

TEXT_PLAIN: Final = "text/plain; charset=utf-8"
COLUMNS: Final = "      flat  flat%   sum%        cum   cum%"

_Key = tuple[str, str]

# (suffix, size in the base unit), smallest first: pprof's measurement package's choices.
_TIME_UNITS: Final = (
    ("ns", 1),
    ("us", 10**3),
    ("ms", 10**6),
    ("s", 10**9),
    ("mins", 60 * 10**9),
    ("hrs", 3600 * 10**9),
)
_BYTE_UNITS: Final = (("B", 1), ("kB", 1 << 10), ("MB", 1 << 20), ("GB", 1 << 30), ("TB", 1 << 40))
_SCALES: Final = {"nanoseconds": _TIME_UNITS, "bytes": _BYTE_UNITS}


def scaled(value: int, unit: str) -> str:
    """pprof's ``ScaledLabel``: the largest unit the value reaches, 2 decimals, ``.00`` dropped.

    Units other than nanoseconds and bytes (counts) are printed as plain integers.
    """
    units = _SCALES.get(unit)
    if units is None:
        return str(value)
    suffix, size = units[0]
    for candidate, candidate_size in units:
        if abs(value) >= candidate_size:
            suffix, size = candidate, candidate_size
    text = f"{value / size:.2f}".removesuffix(".00")
    return "0" if text in ("0", "-0") else text + suffix


def percentage(value: int, total: int) -> str:
    """pprof's ``percentage``: 6 characters wide, ``  100%`` for the whole, ``%g`` below 1%."""
    ratio = abs(value / total) * 100 if total else 0.0
    if 99.95 <= ratio <= 100.05:
        return "  100%"
    if ratio >= 1.0:
        return f"{ratio:5.2f}%"
    return f"{ratio:5.2g}%"


def render_top(profile: Profile, name: str, sample_type: str | None = None) -> Rendered:
    """The ``-top`` table of ``profile`` for ``sample_type`` (default: the profile's default).

    ``name`` is used only when the profile has no sample types. Raises :class:`KeyError` for a
    ``sample_type`` the profile does not have.
    """
    if not profile.sample_types:
        return Rendered(utf8(f"Type: {name}\nno samples\n"), TEXT_PLAIN)
    index = profile.value_index(sample_type)
    value_type = profile.sample_types[index]
    unit = value_type.unit
    flat: dict[_Key, int] = {}
    cum: dict[_Key, int] = {}
    lines: dict[_Key, int] = {}
    threads: dict[str, int] = {}
    total = 0
    for sample in profile.samples:
        value = sample.values[index]
        if not value or not sample.stack:
            continue
        total += value
        leaf = sample.stack[0]
        leaf_key = (leaf.function, leaf.filename)
        flat[leaf_key] = flat.get(leaf_key, 0) + value
        seen: set[_Key] = set()
        for f in sample.stack:
            key = (f.function, f.filename)
            lines[key] = min(lines.get(key, f.line), f.line)
            if key not in seen:  # recursion: a sample counts once towards a function's cum
                seen.add(key)
                cum[key] = cum.get(key, 0) + value
        thread = sample.labels.get("thread")
        if thread is not None:
            threads[str(thread)] = threads.get(str(thread), 0) + value
    out = _header(profile, value_type.type, unit, total)
    if not cum:
        out.append("no samples")
    else:
        out.append(
            f"Showing nodes accounting for {scaled(total, unit)}, "
            f"{percentage(total, total).strip()} of {scaled(total, unit)} total"
        )
        out.append(COLUMNS)
        # pprof's order: flat, then cum, both descending, then name.
        rows = sorted(cum, key=lambda k: (-flat.get(k, 0), -cum[k], k))
        running = 0
        for key in rows:
            own = flat.get(key, 0)
            running += own
            out.append(
                f"{scaled(own, unit):>10} {percentage(own, total)} {percentage(running, total)} "
                f"{scaled(cum[key], unit):>10} {percentage(cum[key], total)}  "
                f"{printable(key[0])} {printable(key[1])}:{lines[key]}"
            )
        if threads:
            out.append("")
            out.extend(_breakdown("thread", threads.items(), unit))
    return Rendered(utf8("\n".join(out) + "\n"), TEXT_PLAIN)


def _header(profile: Profile, type_name: str, unit: str, total: int) -> list[str]:
    out = [f"Type: {type_name}"]
    if profile.time_ns:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(profile.time_ns / 1e9))
        out.append(f"Time: {stamp}")
    if profile.duration_ns:
        line = f"Duration: {scaled(profile.duration_ns, 'nanoseconds')}"
        if unit == "nanoseconds":  # as pprof: the share of wall time the samples cover
            line += (
                f", Total samples = {scaled(total, unit)} "
                f"({percentage(total, profile.duration_ns)})"
            )
        out.append(line)
    out.extend(f"# {printable(comment)}" for comment in profile.comments)
    return out


def _breakdown(label: str, values: Iterable[tuple[str, int]], unit: str) -> list[str]:
    """pprof's ``-tags`` layout for one label: its total, then each value, heaviest first."""
    items = sorted(values, key=lambda item: (-item[1], item[0]))
    total = sum(v for _, v in items)
    out = [f"label {label}: Total {scaled(total, unit)}"]
    out.extend(
        f"{scaled(v, unit):>10} ({percentage(v, total)}): {printable(value)}" for value, v in items
    )
    return out
