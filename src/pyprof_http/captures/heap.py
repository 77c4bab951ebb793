"""What a ``heap`` profile is: the pprof view of tracemalloc's live blocks and tracemalloc's own
figures when it was taken (the text view shows them as Go's MemStats)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..model import Profile

Mode = Literal["snapshot", "window"]


@dataclass(frozen=True, slots=True)
class TraceState:
    """tracemalloc's own figures, read when the snapshot was taken (before a window stops)."""

    frames_limit: int
    traced_current: int
    traced_peak: int
    tracemalloc_memory: int


@dataclass(frozen=True, slots=True)
class HeapCapture:
    """A heap profile and how it was taken; the text view shows ``state`` as Go's MemStats."""

    profile: Profile
    mode: Mode
    state: TraceState
