"""What an ``objects`` profile is: live gc-tracked objects counted per type with their shallow
bytes (or the growth between two such counts), and its pprof view."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ..model import Frame, Profile, Sample, ValueType

COUNT: Final = ValueType("objects", "count")
SPACE: Final = ValueType("space", "bytes")
FILENAME: Final = "<objects>"
"""The file of every synthetic frame: one frame per type, there is no real source location."""
UNTRACKED_NOTE: Final = (
    "only gc-tracked objects are counted (containers, instances); ints, strs, floats and other "
    "atoms are mostly untracked and absent; bytes are shallow (object.__sizeof__; built-in "
    "containers: their own __sizeof__; an application's __sizeof__ is never called)"
)


@dataclass(frozen=True, slots=True)
class TypeRow:
    """One type: live objects and their shallow bytes (growth: the increase). Not a named
    tuple: a field named ``count`` would shadow ``tuple.count``."""

    name: str
    count: int
    bytes: int


@dataclass(frozen=True, slots=True)
class ObjectsCapture:
    """A histogram (or the growth between two): per-type counts and shallow bytes.

    The data is two ``str -> int`` dicts (do not mutate), which the GC does not track, and
    ``rows`` and ``profile`` are built on access: a ``before`` capture held through a growth
    window adds one object (itself) to the ``after`` histogram, not a few per type that would
    show up as growth of ``tuple``, ``Frame`` and ``Sample``. ``elapsed``: None, or the growth
    window in seconds; ``unsized``: objects whose size could not be read (counted as 0 bytes).
    """

    counts: dict[str, int]
    sizes: dict[str, int]
    total_objects: int
    time_ns: int
    unsized: int = 0
    elapsed: float | None = None
    total_before: int | None = None
    """For growth: the tracked objects at the start of the window."""

    @property
    def rows(self) -> tuple[TypeRow, ...]:
        """One row per type, by count then bytes, descending (ties by name, for stable output)."""
        sizes = self.sizes
        rows = (TypeRow(name, count, sizes[name]) for name, count in self.counts.items())
        return tuple(sorted(rows, key=lambda r: (-r.count, -r.bytes, r.name)))

    @property
    def comments(self) -> tuple[str, ...]:
        """The totals and the untracked-objects note."""
        types = len(self.counts)
        if self.elapsed is None:
            first = f"{self.total_objects} gc-tracked objects in {types} types"
        else:
            first = (
                f"growth over {self.elapsed:.1f} s: +{sum(self.counts.values())} objects in "
                f"{types} types whose count grew; {self.total_before} -> {self.total_objects} "
                "gc-tracked objects"
            )
        unsized = f"{self.unsized} objects whose size could not be read are counted with 0 bytes"
        return (first, UNTRACKED_NOTE, *([unsized] if self.unsized else []))

    @property
    def profile(self) -> Profile:
        """One sample per type, its stack a single synthetic frame named after the type."""
        return Profile(
            sample_types=(COUNT, SPACE),
            samples=tuple(
                Sample((Frame(row.name, FILENAME, 0),), (row.count, row.bytes)) for row in self.rows
            ),
            time_ns=self.time_ns,
            duration_ns=round((self.elapsed or 0) * 1e9),
            comments=self.comments,
            default_sample_type=SPACE.type,
        )
