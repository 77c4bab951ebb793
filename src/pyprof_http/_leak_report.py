"""How a leak is reported: its block of the goroutine dump (``render/dump.py``, the one
dumper), plus for a thread where it was started and for every leak why it counts."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from ._leak_scan import Finding
from .captures.leaks import LeakRecord
from .captures.stacks import StackSnapshot, ThreadStack
from .render.dump import render_dump
from .render.leak_dump import record_block
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


def destroyed_leak(record: LeakRecord) -> Leak:
    """A task the garbage collector destroyed while pending, as ``/goroutineleak`` recorded it
    (its await chain when the leak recorder could still read it, its creation site, its age)."""
    lines = record_block(record, time.time_ns())
    reason = "destroyed by the garbage collector while pending (nothing referenced it)"
    lines.append(f"leak: {reason}")
    site = record.creation[0] if record.creation else None
    return Leak("destroyed task", record.name, reason,
                f"{site.function} at {site.filename}:{site.line}" if site else "",
                "\n".join(lines))
