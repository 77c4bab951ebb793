"""The one in-memory profile model that every collector produces and every renderer consumes.

It is pprof's model (samples of stacks with one value per sample type, plus labels), kept in
Python objects so that transforms (merge, subtract for deltas, scale) are plain functions and
each output format is a pure function of a :class:`Profile`. Stacks are innermost first, as in
pprof, so that "leaf" means the same thing everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Final, Literal, NamedTuple

from .bounded import BoundedCache

LabelValue = str | int
Labels = Mapping[str, LabelValue]
_NO_LABELS: Final[Mapping[str, LabelValue]] = {}
Granularity = Literal["functions", "lines"]
"""What one frame of a drawn stack stands for: a function (pprof's default) or a source line."""


class Frame(NamedTuple):
    """One source location. Instances are interned by :func:`frame` so stacks share them.

    Frames, value types and samples are named tuples rather than dataclasses: a stack dump of
    10,000 tasks makes tens of thousands of them while the event loop waits, and tuples are
    built and hashed in C (a frozen dataclass is ~5x slower to build and hashes in Python).
    """

    function: str
    filename: str
    line: int


_FRAMES: BoundedCache[tuple[str, str, int], Frame] = BoundedCache(max_entries=200_000)


def frame(function: str, filename: str, line: int) -> Frame:
    """Return the interned :class:`Frame`; profiles of many stacks then cost one object per site."""
    key = (function, filename, line)
    found = _FRAMES.get(key)
    return found if found is not None else _FRAMES.put(key, Frame(function, filename, line))


class ValueType(NamedTuple):
    """A sample type or period type, e.g. ``ValueType("cpu", "nanoseconds")``."""

    type: str
    unit: str


class Sample(NamedTuple):
    """Values observed at one stack (innermost frame first), with labels to slice by."""

    stack: tuple[Frame, ...]
    values: tuple[int, ...]
    labels: Labels = _NO_LABELS

    def key(self) -> tuple[tuple[Frame, ...], tuple[tuple[str, LabelValue], ...]]:
        """Identity used when merging: same stack and same labels are the same sample."""
        return self.stack, tuple(sorted(self.labels.items()))


@dataclass(frozen=True, slots=True)
class Profile:
    """A complete profile. ``default_sample_type`` names the value pprof tools show first."""

    sample_types: tuple[ValueType, ...]
    samples: tuple[Sample, ...]
    period_type: ValueType | None = None
    period: int = 0
    time_ns: int = 0
    duration_ns: int = 0
    comments: tuple[str, ...] = ()
    default_sample_type: str | None = None

    def __post_init__(self) -> None:
        width = len(self.sample_types)
        for sample in self.samples:
            if len(sample.values) != width:
                raise ValueError(
                    f"sample has {len(sample.values)} values for {width} sample types"
                )

    def totals(self) -> tuple[int, ...]:
        """Sum of each value over all samples."""
        return sum_values(self.samples, len(self.sample_types))

    def value_index(self, sample_type: str | None = None) -> int:
        """Index of ``sample_type`` (default: ``default_sample_type``, else the last, as pprof)."""
        wanted = sample_type or self.default_sample_type
        if wanted is not None:
            for i, value_type in enumerate(self.sample_types):
                if value_type.type == wanted:
                    return i
            if sample_type is not None:
                raise KeyError(sample_type)
        return len(self.sample_types) - 1


def sum_values(samples: Iterable[Sample], width: int) -> tuple[int, ...]:
    """Per-type sums of ``samples``' values."""
    sums = [0] * width
    for sample in samples:
        for i, value in enumerate(sample.values):
            sums[i] += value
    return tuple(sums)


def _aggregate(samples: Iterable[Sample], sign: int = 1) -> dict[object, Sample]:
    merged: dict[object, Sample] = {}
    for sample in samples:
        values = sample.values if sign == 1 else tuple(-v for v in sample.values)
        key = sample.key()
        seen = merged.get(key)
        if seen is None:
            merged[key] = sample._replace(values=values)
        else:
            summed = tuple(a + b for a, b in zip(seen.values, values, strict=True))
            merged[key] = seen._replace(values=summed)
    return merged


def _check_compatible(profiles: Iterable[Profile]) -> tuple[ValueType, ...]:
    types: tuple[ValueType, ...] | None = None
    for profile in profiles:
        if types is None:
            types = profile.sample_types
        elif profile.sample_types != types:
            raise ValueError(f"incompatible sample types: {types} vs {profile.sample_types}")
    if types is None:
        raise ValueError("no profiles given")
    return types


def merge(profiles: Iterable[Profile]) -> Profile:
    """Sum profiles of the same sample types; samples with equal stack and labels add up."""
    items = list(profiles)
    _check_compatible(items)
    first, last = items[0], items[-1]
    samples = _aggregate(s for p in items for s in p.samples)
    start = min(p.time_ns for p in items)
    end = max(p.time_ns + p.duration_ns for p in items)
    return replace(
        last,
        samples=tuple(samples.values()),
        time_ns=start,
        duration_ns=end - start,
        comments=tuple(dict.fromkeys(c for p in items for c in p.comments)),
        default_sample_type=first.default_sample_type,
    )


def subtract(after: Profile, before: Profile) -> Profile:
    """``after - before``: what changed over a window (Go's ``?seconds=N`` delta profiles).

    Values may be negative (a goroutine that ended); samples that cancel out are dropped. The
    result is stamped with the end time and the window length, as Go does.
    """
    _check_compatible((after, before))
    merged = _aggregate(after.samples)
    for key, sample in _aggregate(before.samples, sign=-1).items():
        seen = merged.get(key)
        if seen is None:
            merged[key] = sample
        else:
            summed = tuple(a + b for a, b in zip(seen.values, sample.values, strict=True))
            merged[key] = seen._replace(values=summed)
    kept = tuple(s for s in merged.values() if any(s.values))
    return replace(
        after,
        samples=kept,
        time_ns=after.time_ns,
        duration_ns=max(0, after.time_ns - before.time_ns),
    )


def scale(profile: Profile, factor: float) -> Profile:
    """Multiply every value by ``factor`` (e.g. to undo 1-in-N sampling), rounding to int."""
    scaled = tuple(
        s._replace(values=tuple(round(v * factor) for v in s.values)) for s in profile.samples
    )
    return replace(profile, samples=scaled)


def by_function(profile: Profile) -> Profile:
    """Every frame widened to its function, as ``go tool pprof``'s default granularity does.

    A function is its (name, file); its frames become one, at the lowest line seen for it (the
    nearest we have to its ``def``), so a flame graph draws one box per function instead of one
    per line it was sampled at. Samples whose stacks become equal (with equal labels) add up.
    """
    first_line: dict[tuple[str, str], int] = {}
    for sample in profile.samples:
        for f in sample.stack:
            key = (f.function, f.filename)
            line = first_line.get(key)
            if line is None or f.line < line:
                first_line[key] = f.line
    widened = (
        s._replace(stack=tuple(frame(f.function, f.filename, first_line[f.function, f.filename])
                               for f in s.stack))
        for s in profile.samples
    )
    return replace(profile, samples=tuple(_aggregate(widened).values()))


def with_labels(profile: Profile, labels: Labels, comment: str | None = None) -> Profile:
    """Every sample with ``labels`` added (e.g. the ``pid`` of the process that took it), and
    ``comment`` first among the comments: who answered, in the pprof and every view of it."""
    samples = tuple(s._replace(labels={**s.labels, **labels}) for s in profile.samples)
    comments = profile.comments if comment is None else (comment, *profile.comments)
    return replace(profile, samples=samples, comments=comments)
