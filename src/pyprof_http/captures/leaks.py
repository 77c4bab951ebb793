"""What the ``goroutineleak`` profile is made of: tasks the garbage collector destroyed while
they were still pending (Go's leaked goroutines), as strings only.

A record never references the task, its coroutine, its frames or what it awaited: it is made
inside the task's finalizer and kept after the task is gone, so anything it held would be kept
alive by the profiler. Frames are the model's interned :class:`~pyprof_http.model.Frame`
(a function name, a file name and a line).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from ..loops import is_auto_task_name
from ..model import Frame, Profile, Sample, ValueType

COUNT = ValueType("goroutineleak", "count")


@dataclass(frozen=True, slots=True)
class LeakRecord:
    """One task destroyed while pending, as it was when the collector found it."""

    task_id: int
    """The library's stable task number (0 when the task was never seen by it)."""
    name: str
    awaiting: str
    """What it was parked on: ``Event.wait``, ``Queue.get``, ``Future``, ``Task "x"``."""
    stack: tuple[Frame, ...]
    """The await chain at its destruction, innermost first; when the chain was lost (see
    ``chain_complete``) only the task's coroutine function."""
    chain_complete: bool
    """False when CPython had already closed the coroutine before the task's finalizer ran
    (a collection nobody described the tasks for): the line it was parked on is unknown."""
    creation: tuple[Frame, ...]
    """Where it was created, innermost (the code that asked for it) first; () if unknown."""
    created_by: str
    """Where its chain of spawns began (``route /x`` or ``function file:line``), or ""."""
    parent: str
    """Name of the task that created it, or ""."""
    route: str
    request_id: str
    age_s: float | None
    """How long it lived, when its creation time is known."""
    thread: str
    """The thread whose allocation set off the collection that found it."""
    recorded_ns: int
    """``time.monotonic_ns()`` when recorded."""
    time_ns: int
    """``time.time_ns()`` when recorded."""
    loop_id: int = 0
    """``id()`` of the loop whose exception handler recorded it (0: unknown): tells loops
    apart while they live (a leak check counts only its own loop's)."""

    @property
    def task_label(self) -> str:
        """The ``task`` label: the name, unless it is asyncio's meaningless ``Task-N``."""
        return "" if is_auto_task_name(self.name) else self.name


GroupKey = tuple[tuple[Frame, ...], tuple[Frame, ...], str, str, str]
"""(stack, creation stack, awaiting, task label, created_by): what leaks are counted by."""


@dataclass(frozen=True)
class LeakCapture:
    """Leaks recorded so far (or in a window): counts per distinct leak, and the most recent
    individual records (for ``debug=2``)."""

    groups: tuple[tuple[GroupKey, int], ...]
    records: tuple[LeakRecord, ...]
    """Most recent last; bounded by the recorder's ring."""
    total: int
    time_ns: int
    comments: tuple[str, ...] = field(default=())
    duration_ns: int = 0

    @cached_property
    def profile(self) -> Profile:
        """One sample per distinct leak: its await chain with the creation stack as the
        outermost frames (so ``go tool pprof -traces`` ends where the task came from), labels
        ``task``, ``awaiting`` and ``created_by``."""
        samples = tuple(
            Sample(stack + creation, (count,), _labels(awaiting, task, created_by))
            for (stack, creation, awaiting, task, created_by), count in self.groups
        )
        return Profile(
            sample_types=(COUNT,),
            samples=samples,
            period_type=COUNT,
            period=1,
            time_ns=self.time_ns,
            duration_ns=self.duration_ns,
            comments=self.comments,
        )


def _labels(awaiting: str, task: str, created_by: str) -> dict[str, str]:
    labels = {"awaiting": awaiting}
    if task:
        labels["task"] = task
    if created_by:
        labels["created_by"] = created_by
    return labels
