"""What ``/requests`` shows: the recently profiled requests, each with its own profile.

Plain values only (renderers import this, never the collectors that fill it).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from ..model import Profile, merge


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One profiled request: who it was, why it was kept, and its samples."""

    request_id: str
    route: str
    method: str
    status: int | None
    """None: no response was started (the client went away, or the app raised)."""
    started: float
    """Unix time the request started."""
    duration_ms: float
    samples: int
    reason: str
    """``slow``, ``sampled`` (its id's hash fell in request_sample_rate) or ``asked``."""
    profile: Profile


@dataclass(frozen=True)
class RequestsCapture:
    """The kept requests, most recent first."""

    records: tuple[RequestRecord, ...]
    empty: Profile

    @cached_property
    def profile(self) -> Profile:
        """All their samples together (``format=pprof`` of the list)."""
        return merge([r.profile for r in self.records]) if self.records else self.empty
