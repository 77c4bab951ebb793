"""Callgrind output of a tracing capture, for KCachegrind / QCachegrind and ``gprof2dot``.

The format (https://valgrind.org/docs/manual/cl-format.html) is per function: its own (self) cost,
then one ``cfl=`` / ``cfn=`` / ``calls=`` block per callee with the inclusive cost of those calls,
which is exactly what a tracer measures. Files and functions are written once and then referred to
by number (name compression), which keeps big captures small.

Tracing gives no call-site lines, so every cost line is at the caller's first line and ``calls=``
targets the callee's first line. ``gprof2dot`` tells functions apart by name alone, so a name that
occurs in more than one place gets its location appended; the others stay short.
"""

from __future__ import annotations

from collections import Counter

from pyprof_http.captures.tracing import CallStats, TracingCapture
from pyprof_http.model import Frame
from pyprof_http.render import Rendered
from pyprof_http.sanitize import printable


class _Names:
    """Numbers for files and functions, and the unique display name of each function."""

    def __init__(self, frames: list[Frame]) -> None:
        self._count = Counter(f.function for f in set(frames))
        self._files: dict[str, int] = {}
        self._functions: dict[Frame, int] = {}

    def file(self, filename: str) -> str:
        """``(id) name`` the first time a file is seen, ``(id)`` afterwards."""
        if filename in self._files:
            return f"({self._files[filename]})"
        self._files[filename] = len(self._files) + 1
        return f"({len(self._files)}) {printable(filename)}"

    def function(self, frame: Frame) -> str:
        if frame in self._functions:
            return f"({self._functions[frame]})"
        self._functions[frame] = len(self._functions) + 1
        name = frame.function
        if self._count[name] > 1:
            name = f"{name} {frame.filename}:{frame.line}"
        return f"({len(self._functions)}) {printable(name)}"


def render_callgrind(capture: TracingCapture, name: str) -> Rendered:
    """``callgrind.out.<name>``; the event is the capture's clock in nanoseconds."""
    callees: dict[Frame, list[tuple[Frame, CallStats]]] = {}
    for fn in capture.functions:
        for caller, edge in fn.callers:
            callees.setdefault(caller, []).append((fn.frame, edge))
    self_ns = {fn.frame: fn.tsub_ns for fn in capture.functions}
    for caller in callees:
        self_ns.setdefault(caller, 0)
    names = _Names([*self_ns, *(c for edges in callees.values() for c, _ in edges)])
    event = f"{capture.clock.capitalize()}_ns"
    lines = [
        "# callgrind format",
        "version: 1",
        "creator: pyprof_http (yappi)",
        f"event: {event} : {capture.clock} time (nanoseconds)",
        "positions: line",
        f"events: {event}",
        f"summary: {sum(self_ns.values())}",
    ]
    for frame, cost in sorted(self_ns.items(), key=lambda item: -item[1]):
        lines += ["", f"fl={names.file(frame.filename)}", f"fn={names.function(frame)}",
                  f"{frame.line} {cost}"]
        for callee, edge in callees.get(frame, ()):
            lines += [f"cfl={names.file(callee.filename)}", f"cfn={names.function(callee)}",
                      f"calls={edge.ncall} {callee.line}", f"{frame.line} {edge.ttot_ns}"]
    body = ("\n".join(lines) + "\n").encode("utf-8", "backslashreplace")
    return Rendered(body, "application/octet-stream", filename=f"callgrind.out.{name}")
