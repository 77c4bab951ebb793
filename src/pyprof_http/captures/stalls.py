"""What a ``block`` profile is: the times an event loop did not come back for at least the
threshold (each with its blocking stacks, task and route), and the profile built from them."""

from __future__ import annotations

from dataclasses import dataclass

from ..model import Frame, Profile


@dataclass(frozen=True, slots=True)
class Stall:
    """One time the loop did not come back for at least the threshold."""

    start_ns: int
    """``time.monotonic_ns()`` when the stall began (its end minus its duration)."""
    start_wall_ns: int
    """``time.time_ns()`` of the same instant."""
    duration_ns: int
    stack: tuple[Frame, ...]
    """The blocking stack, innermost first: the one sampled most often."""
    stacks: tuple[tuple[tuple[Frame, ...], int], ...]
    """Distinct stacks sampled during the stall with their counts, most sampled first."""
    task: str
    route: str
    request_id: str
    thread: str
    cpu_ns: int | None = None
    """The loop thread's CPU time from when it was last responsive to its return (None:
    not measurable on this platform)."""
    waited_ns: int | None = None
    """Of that span, time the loop thread was runnable but waiting for a CPU."""

    @property
    def end_ns(self) -> int:
        return self.start_ns + self.duration_ns


@dataclass(frozen=True, slots=True)
class StallCapture:
    """The ``block`` profile and the stalls it was built from."""

    profile: Profile
    stalls: tuple[Stall, ...]
    """Individual stalls in the capture (oldest first; the bounded history only)."""
    threshold_ms: int
    taken_ns: int
    """``time.monotonic_ns()`` at capture, so a renderer can say how long ago a stall was."""
    seen: int
    """Stalls in the capture's window, kept individually or not."""
    dropped: int
    """Of those, how many fell out of the bounded history: not in ``stalls``; still in the
    profile of a whole capture (``since_ns=None``), missing from a window's."""
