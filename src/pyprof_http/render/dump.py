"""The ``debug=2`` dump: one block per thread and per task, like Go's ``goroutine?debug=2``.

Frames are printed the way Python prints a traceback (``File "...", line N, in f``) so editors and
people recognise them, but innermost first as in Go, which the header says.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..bounded import BoundedCache
from ..captures.stacks import StackSnapshot, TaskStack, ThreadStack
from ..model import Frame
from ..sanitize import printable, quoted
from . import Rendered, utf8
from .text import TEXT_PLAIN

if TYPE_CHECKING:
    from ..loops import TaskOrigin


def render_dump(snapshot: StackSnapshot) -> Rendered:
    """Every thread, then every task (running first), blank line between blocks."""
    names = {task.id: task.name for task in snapshot.tasks}
    out = [
        f"goroutine dump: {len(snapshot.threads)} threads, {len(snapshot.tasks)} tasks "
        "(frames innermost first)",
    ]
    out.extend(f"# {printable(comment)}" for comment in snapshot.comments)
    out.append("")
    for thread in snapshot.threads:
        out.extend(_thread_block(thread))
        out.append("")
    for task in snapshot.tasks:
        out.extend(_task_block(task, names))
        out.append("")
    return Rendered(utf8("\n".join(out)), TEXT_PLAIN)


_FRAME_LINES: BoundedCache[Frame, str] = BoundedCache(max_entries=50_000)


def _frames(stack: tuple[Frame, ...]) -> list[str]:
    """Formatted frame lines; cached per frame, since 10,000 tasks share a few hundred."""
    lines = []
    for f in stack:
        line = _FRAME_LINES.get(f)
        if line is None:
            line = _FRAME_LINES.put(
                f, f"  File {quoted(f.filename)}, line {f.line}, in {printable(f.function)}")
        lines.append(line)
    return lines


def _thread_block(thread: ThreadStack) -> list[str]:
    daemon = " daemon" if thread.daemon else ""
    native = f" native {thread.native_id}" if thread.native_id is not None else ""
    head = f"thread {thread.ident}{native} {quoted(thread.name)}{daemon} [{thread.state}]:"
    return [head, *_frames(thread.stack)]


def _task_block(task: TaskStack, names: dict[int, str]) -> list[str]:
    state = task.state if task.waiting_on is None else f"{task.state} {printable(task.waiting_on)}"
    if task.age_s is not None and task.age_s >= 60:
        state += f", {int(task.age_s // 60)} minutes"
    lines = [f"task {task.id} {quoted(task.name)} [{state}]:", *_frames(task.stack)]
    lines.extend(f"awaited by task {i} {quoted(names.get(i, '?'))}" for i in task.awaited_by)
    if task.created_by is not None:
        site = task.created_by
        age = f", {task.age_s:.1f} s ago" if task.age_s is not None else ""
        parent = f" in task {quoted(task.parent)}" if task.parent else ""
        lines.append(f"created by {printable(site.function)} at {printable(site.filename)}:"
                     f"{site.line}{parent}{age}")
        if task.origin is not None:
            lines.extend(_origin_lines(task.origin))
    else:
        lines.append("created by unknown (task created before pyprof_http's task factory)")
    lines.append(f"on thread {quoted(task.thread)}")
    return lines


def _origin_lines(origin: TaskOrigin) -> list[str]:
    """The rest of the creation stack, the request served, and the creating tasks' origins."""
    lines = [f"  from {printable(f.function)} at {printable(f.filename)}:{f.line}"
             for f in origin.stack[1:]]
    if origin.route:
        rid = f" request_id {quoted(origin.request_id)}" if origin.request_id else ""
        lines.append(f"  for request route {quoted(origin.route)}{rid}")
    up = origin.parent_origin
    for _ in range(3):
        if up is None or up.site is None:
            break
        lines.append(f"  spawner created by {printable(up.site.function)} at "
                     f"{printable(up.site.filename)}:{up.site.line}"
                     + (f" in task {quoted(up.parent)}" if up.parent else ""))
        up = up.parent_origin
    return lines
