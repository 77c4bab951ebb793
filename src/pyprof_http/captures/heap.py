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


@dataclass(frozen=True, slots=True)
class SamplerState:
    """The heap sampler's own figures when the profile was taken (shown in the text view)."""

    active: bool
    rate: int
    stacks: int
    live_samples: int
    memory_bytes: int
    """What the sampler's tables take (its C allocations)."""
    samples_total: int
    inuse_bytes: int
    """Estimated bytes in use, from the live samples."""
    overflowed: int
    """Samples counted under the overflow stack because the stack table was full."""


@dataclass(frozen=True, slots=True)
class SampledHeapCapture:
    """A heap profile from the sampling allocator hook (Go's four sample types, scaled)."""

    profile: Profile
    state: SamplerState
    window_seconds: float
    """0 for the state now; else the growth over a window of that many seconds."""
