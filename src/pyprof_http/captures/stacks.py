"""What the ``goroutine`` profile is made of: one record per thread and per task, and the
snapshot that holds them all at one moment.

A snapshot is shared by every request that arrived while it was being taken (see
:mod:`pyprof_http.collectors.stacks`), so what is derived from it (its profile, each rendering)
is computed once and kept on it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple, TypeVar

from ..in_flight import InFlight
from ..loops import TaskOrigin, is_auto_task_name
from ..model import Frame, Profile, Sample, ValueType

COUNT = ValueType("goroutine", "count")
RENDER_OTHER_LOOP_WAIT_S = 0.5
"""How long a request waits for a rendering being made on another (maybe blocked) loop."""
_T = TypeVar("_T")


class ThreadStack(NamedTuple):
    """One thread. Records are named tuples: 10,000 of them are built while the loop waits."""

    ident: int
    native_id: int | None
    name: str
    daemon: bool
    state: str
    stack: tuple[Frame, ...]
    """Innermost frame first."""
    age_s: float | None = None
    """Seconds since it was started, when the ``Thread.start`` hook saw it start."""


class TaskStack(NamedTuple):
    """One task, with what it waits on, who awaits it and where it came from."""

    id: int
    name: str
    state: str
    """``running``, ``runnable`` or ``awaiting``."""
    waiting_on: str | None
    """What the task waits for, named as a person would: ``Event.wait``, ``Task "x"``."""
    stack: tuple[Frame, ...]
    """The await chain, innermost suspended coroutine first."""
    thread: str
    """Name of the thread whose loop runs the task."""
    awaited_by: tuple[int, ...] = ()
    age_s: float | None = None
    created_by: Frame | None = None
    parent: str | None = None
    origin: TaskOrigin | None = None
    """Everything the task factory kept (creation stack, creating task's origin, request)."""


@dataclass(frozen=True)
class StackSnapshot:
    """Every thread and task at one moment; ``profile`` is the pprof view of it."""

    threads: tuple[ThreadStack, ...]
    tasks: tuple[TaskStack, ...]
    time_ns: int
    comments: tuple[str, ...] = field(default=())
    loop_hold_ns: int = 0
    """How long the requesting event loop was held to read it (the rest was done off the loop)."""
    _renderings: InFlight[Any] = field(
        default_factory=lambda: InFlight(keep=True, other_loop_wait_s=RENDER_OTHER_LOOP_WAIT_S),
        compare=False, repr=False)
    """Shared across loops as the snapshot is: a request on another loop than the rendering's
    maker waits only briefly, since that loop may block before it hands the result over."""

    async def render_once(self, key: Hashable, render: Callable[[], Awaitable[_T]]) -> _T:
        """``await render()`` once per snapshot and key, however many requests share it
        (the others wait for that one, without a thread of their own)."""
        found: _T = await self._renderings.run(key, render)
        return found

    @cached_property
    def profile(self) -> Profile:
        """One sample per distinct (stack, labels), valued by how many threads/tasks share it.

        Labels are ``kind``, ``thread``, ``state``, ``task`` — the task's name when the
        application gave it one — and ``created_by``, where the task's chain of spawns began
        (a request's route, else the first creation site; see ``TaskOrigin.created_by``).
        asyncio's automatic ``Task-N`` names are left out: they carry
        no meaning, and without them 10,000 tasks parked at one place are one sample of 10,000,
        as in Go's goroutine profile (each task's identity is in the ``debug=2`` dump).
        """
        counts: dict[tuple[tuple[Frame, ...], str, str, str, str, str], int] = {}
        for t in self.threads:
            key = (t.stack, "thread", t.name, t.state, "", "")
            counts[key] = counts.get(key, 0) + 1
        for task in self.tasks:
            name = "" if is_auto_task_name(task.name) else task.name
            created = task.origin.created_by if task.origin is not None else ""
            key = (task.stack, "task", task.thread, task.state, name, created)
            counts[key] = counts.get(key, 0) + 1
        samples = tuple(
            Sample(stack, (count,), _labels(kind, thread, state, task, created))
            for (stack, kind, thread, state, task, created), count in counts.items()
        )
        return Profile(
            sample_types=(COUNT,),
            samples=samples,
            period_type=COUNT,
            period=1,
            time_ns=self.time_ns,
            comments=self.comments,
        )


def _labels(kind: str, thread: str, state: str, task: str, created: str) -> dict[str, str]:
    labels = {"kind": kind, "thread": thread, "state": state}
    if task:
        labels["task"] = task
    if created:  # where the chain of spawns began: go tool pprof -tagroot=created_by
        labels["created_by"] = created
    return labels




def older_than(snapshot: StackSnapshot, min_age_s: float) -> StackSnapshot:
    """Only the threads and tasks known to be at least ``min_age_s`` old (``min_age``).

    A task created before the task factory was chained (or a thread started before the
    ``Thread.start`` hook, the main thread among them) has no known age: it is left out, and
    a comment says how many were, since it may well be older than the limit. The creation
    time is known for everything made after startup, the leaks this filter is for.
    """
    threads = tuple(t for t in snapshot.threads if t.age_s is not None and t.age_s >= min_age_s)
    tasks = tuple(t for t in snapshot.tasks if t.age_s is not None and t.age_s >= min_age_s)
    unknown_threads = sum(1 for t in snapshot.threads if t.age_s is None)
    unknown_tasks = sum(1 for t in snapshot.tasks if t.age_s is None)
    comment = (f"min_age={min_age_s:g}s: {len(threads)} threads and {len(tasks)} tasks at "
               f"least that old; left out as of unknown age (started before pyprof_http's "
               f"hooks): {unknown_threads} threads, {unknown_tasks} tasks")
    return StackSnapshot(threads, tasks, snapshot.time_ns, (*snapshot.comments, comment),
                         snapshot.loop_hold_ns)
