"""``goroutineleak?debug=2``: one block per recorded leaked task, like Go's dump of its leaked
goroutines (``goroutine 7 [chan receive (leaked)]:``), with where it came from and how long it
lived. Frames are printed as in the ``goroutine`` dump, innermost first.
"""

from __future__ import annotations

import time

from ..captures.leaks import LeakCapture, LeakRecord
from ..sanitize import printable, quoted
from . import Rendered, utf8
from .dump import _frames
from .text import TEXT_PLAIN


def render_leak_dump(capture: LeakCapture) -> Rendered:
    """Every record kept (most recent last), blank line between blocks."""
    shown = len(capture.records)
    out = [f"goroutineleak dump: {capture.total} leaked tasks recorded, the {shown} most "
           "recent shown (frames innermost first)"]
    out.extend(f"# {printable(comment)}" for comment in capture.comments)
    out.append("")
    now_ns = time.time_ns()
    for record in capture.records:
        out.extend(record_block(record, now_ns))
        out.append("")
    return Rendered(utf8("\n".join(out)), TEXT_PLAIN)


def record_block(record: LeakRecord, now_ns: int) -> list[str]:
    lived = f", lived {record.age_s:.1f} s" if record.age_s is not None else ""
    head = (f"task {record.task_id} {quoted(record.name)} "
            f"[awaiting {printable(record.awaiting)} (leaked){lived}]:")
    lines = [head, *_frames(record.stack)]
    if not record.chain_complete:
        lines.append("  (await chain lost: the collection closed the coroutine before the task; "
                     "the line above is its function's first line)")
    if record.creation:
        site = record.creation[0]
        parent = f" in task {quoted(record.parent)}" if record.parent else ""
        lines.append(f"created by {printable(site.function)} at {printable(site.filename)}:"
                     f"{site.line}{parent}")
        lines.extend(f"  from {printable(f.function)} at {printable(f.filename)}:{f.line}"
                     for f in record.creation[1:])
        if record.route:
            rid = f" request_id {quoted(record.request_id)}" if record.request_id else ""
            lines.append(f"  for request route {quoted(record.route)}{rid}")
    else:
        lines.append("created by unknown (task created before pyprof_http's task factory)")
    ago = max(0.0, (now_ns - record.time_ns) / 1e9)
    lines.append(f"destroyed by the garbage collector on thread {quoted(record.thread)}, "
                 f"{ago:.1f} s ago")
    return lines
