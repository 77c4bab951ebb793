"""What a ``/trace`` window recorded, as plain data for the renderers (Chrome JSON, the HTML
timeline, the text summary). Every name here is already a string; times are nanoseconds from
the start of the window."""

from __future__ import annotations

from dataclasses import dataclass

from ..model import Frame, Profile

Args = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Lane:
    """A row of the timeline: a thread, a task (its steps, on its loop's thread), or the
    requests."""

    id: int
    kind: str
    """``thread``, ``task`` or ``requests``."""
    name: str


@dataclass(frozen=True, slots=True)
class TraceEvent:
    """One thing that happened in the window."""

    kind: str
    """``step`` (a task ran), ``callback`` (any other loop callback), ``work`` (a thread-pool
    work item), ``gc``, ``stall`` (the watchdog's), ``mark``, ``span`` or ``request``."""
    lane: int
    start_ns: int
    duration_ns: int
    name: str
    args: Args = ()
    """Details shown with the event (task, route, request id, attributes...)."""
    thread_lane: int = 0
    """For a step: the lane of the thread that ran it (the loop's)."""
    request: int = 0
    """The number of the request it served (a :class:`RequestSummary`), 0 for none."""
    wait_ns: int = 0
    """For a step: how long it was ready before the loop ran it."""
    behind: tuple[tuple[str, int], ...] = ()
    """For a step that waited: what the loop ran meanwhile (name, ns overlapping the wait),
    longest first."""
    stack: tuple[Frame, ...] = ()
    """A stack sampled while it ran (innermost first), when one was taken."""

    @property
    def end_ns(self) -> int:
        return self.start_ns + self.duration_ns


@dataclass(frozen=True, slots=True)
class RequestSummary:
    """One request from its arrival to its response, and where its time went."""

    number: int
    method: str
    route: str
    request_id: str
    status: int
    start_ns: int
    duration_ns: int
    running_ns: int
    """Its task steps and callbacks on the loop, while it was served."""
    waiting_ns: int
    """Ready to run (a step woken, a timer due), waiting for the loop behind other callbacks."""
    pool_ns: int
    """In thread-pool work items."""
    steps: int
    behind: tuple[tuple[str, int], ...]
    """What the loop ran while this request was ready and waiting, longest first."""


@dataclass(frozen=True, slots=True)
class TraceCapture:
    """A recorded window."""

    profile: Profile
    """Loop time by task (steps/count, wall/nanoseconds), so the registry's protocol holds."""
    pid: int
    started_wall_ns: int
    duration_ns: int
    lanes: tuple[Lane, ...]
    events: tuple[TraceEvent, ...]
    """In start order."""
    requests: tuple[RequestSummary, ...]
    notes: tuple[str, ...]
    """What the trace could not see, what it dropped, how it was recorded."""
    dropped: int
