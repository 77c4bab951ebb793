"""The ``debug=2`` dump: one block per thread and per task, like Go's ``goroutine?debug=2``.

Frames are printed the way Python prints a traceback (``File "...", line N, in f``) so editors and
people recognise them, but innermost first as in Go, which the header says.
"""

from __future__ import annotations

from ..collectors.stacks import StackSnapshot, TaskStack, ThreadStack
from ..model import Frame
from . import Rendered
from .text import TEXT_PLAIN


def render_dump(snapshot: StackSnapshot) -> Rendered:
    """Every thread, then every task (running first), blank line between blocks."""
    names = {task.id: task.name for task in snapshot.tasks}
    out = [
        f"goroutine dump: {len(snapshot.threads)} threads, {len(snapshot.tasks)} tasks "
        "(frames innermost first)",
    ]
    out.extend(f"# {comment}" for comment in snapshot.comments)
    out.append("")
    for thread in snapshot.threads:
        out.extend(_thread_block(thread))
        out.append("")
    for task in snapshot.tasks:
        out.extend(_task_block(task, names))
        out.append("")
    return Rendered("\n".join(out).encode(), TEXT_PLAIN)


def _frames(stack: tuple[Frame, ...]) -> list[str]:
    return [f'  File "{f.filename}", line {f.line}, in {f.function}' for f in stack]


def _thread_block(thread: ThreadStack) -> list[str]:
    daemon = " daemon" if thread.daemon else ""
    native = f" native {thread.native_id}" if thread.native_id is not None else ""
    head = f'thread {thread.ident}{native} "{_quote(thread.name)}"{daemon} [{thread.state}]:'
    return [head, *_frames(thread.stack)]


def _task_block(task: TaskStack, names: dict[int, str]) -> list[str]:
    state = task.state if task.waiting_on is None else f"{task.state} {task.waiting_on}"
    if task.age_s is not None and task.age_s >= 60:
        state += f", {int(task.age_s // 60)} minutes"
    lines = [f'task {task.id} "{_quote(task.name)}" [{state}]:', *_frames(task.stack)]
    lines.extend(f'awaited by task {i} "{_quote(names.get(i, "?"))}"' for i in task.awaited_by)
    if task.created_by is not None:
        site = task.created_by
        age = f", {task.age_s:.1f} s ago" if task.age_s is not None else ""
        parent = f' in task "{_quote(task.parent)}"' if task.parent else ""
        lines.append(f"created by {site.function} at {site.filename}:{site.line}{parent}{age}")
    else:
        lines.append("created by unknown (task created before pyprof_http's task factory)")
    lines.append(f"on thread \"{_quote(task.thread)}\"")
    return lines


def _quote(name: str) -> str:
    """Names are user-controlled: keep each record on its own lines whatever they contain."""
    return name.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
