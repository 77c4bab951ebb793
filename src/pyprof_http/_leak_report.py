"""How a leak is reported: its block of the goroutine dump (``render/dump.py``, the one
dumper), plus for a thread where it was started and for every leak why it counts."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, replace
from types import CodeType
from typing import Any, Literal

from ._leak_scan import Finding
from .captures.stacks import StackSnapshot, TaskStack, ThreadStack
from .collectors.frames import frame_at
from .collectors.task_walk import _await_chain
from .loops import ORIGINS, _as_origin, code_name_of
from .model import frame
from .render.dump import render_dump
from .sanitize import printable


@dataclass(frozen=True, slots=True)
class Leak:
    """One leaked task or thread, and its block of the report."""

    kind: Literal["task", "thread", "destroyed task"]
    name: str
    reason: str
    created_by: str
    """``function at file:line`` of the creation site, or "" when unknown."""
    text: str


def leaks_of(findings: list[Finding]) -> list[Leak]:
    return [leak_of(f) for f in findings]


def leak_of(finding: Finding) -> Leak:
    """The finding's block of the goroutine dump, and what the dump does not say for a
    thread: where it was started and why it counts as a leak."""
    record = finding.record
    if isinstance(record, ThreadStack):
        lines = _dump_block(StackSnapshot((record,), (), 0))
        lines.extend(f"started by {printable(f.function)} at {printable(f.filename)}:{f.line}"
                     if i == 0 else f"  from {printable(f.function)} at "
                     f"{printable(f.filename)}:{f.line}"
                     for i, f in enumerate(finding.started_by))
        if not finding.started_by:
            lines.append("started by unknown (started before pyprof_http's Thread.start hook)")
    else:
        lines = _dump_block(StackSnapshot((), (record,), 0))
    lines.append(f"leak: {finding.reason}")
    site = finding.started_by[0] if finding.started_by else None
    return Leak(finding.kind, record.name, finding.reason,
                f"{site.function} at {site.filename}:{site.line}" if site else "",
                "\n".join(lines))


def _dump_block(snapshot: StackSnapshot) -> list[str]:
    """The one record's block of ``render_dump`` (its header line dropped)."""
    lines = render_dump(snapshot).body.decode("utf-8").split("\n")[2:]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def destroyed_leak(task: asyncio.Task[Any]) -> Leak:
    """A dying task's record, read in its finalizer on its loop's thread: its await chain
    (when the collector has not closed its coroutine first: then the coroutine's function)
    and, from the factory's record (its weak reference is already cleared, the record is
    still there), its creation site."""
    coro: Any = task.get_coro()
    frames, _ = _await_chain(coro)
    stack = tuple(frame_at(f.f_code, f.f_lasti) for f in reversed(frames))
    code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
    if not stack and isinstance(code, CodeType):
        stack = (frame(code_name_of(code), code.co_filename, code.co_firstlineno),)
    record = ORIGINS._records.get(id(task))
    origin = _as_origin(record) if record is not None and record[2] is not None else None
    task_id = record[1] if record is not None else 0
    age = time.monotonic() - origin.created_at if origin is not None else None
    thread = threading.current_thread().name  # the finalizer runs on the loop's thread
    stack_record = TaskStack(task_id, task.get_name(), "destroyed", "while pending", stack,
                             thread, (), age, origin.site if origin else None,
                             origin.parent if origin else None, origin)
    reason = "destroyed by the garbage collector while pending (nothing referenced it)"
    leak = leak_of(Finding("task", stack_record, reason,
                            (origin.site,) if origin and origin.site else ()))
    return replace(leak, kind="destroyed task")
