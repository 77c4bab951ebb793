"""``/trace?format=chrome``: the Trace Event Format JSON (Perfetto UI, ``chrome://tracing``,
speedscope).

One process (the server's pid); one track per lane: each thread (its loop callbacks, thread-pool
work, GC pauses), each task (its steps), named by ``thread_name`` metadata and sorted threads
first. Steps, callbacks, work items and GC pauses are complete events (``ph: "X"``), which nest
on a track because a thread runs one thing at a time. What may overlap another event on its
track without nesting is an async slice (``ph: "b"/"e"`` with an id, its own row): requests (with
a nested "waiting for the loop" slice for every wait of their steps, naming what the loop ran
meanwhile), spans and stalls. Markers are instant events (``ph: "i"``). Times are microseconds
from the start of the window; ``otherData`` carries the wall-clock start and the notes.

Names are JSON strings (``json.dumps`` escapes them; lone surrogates become ``\\udxxx``, which
Perfetto and browsers read).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from ..captures.trace import TraceCapture, TraceEvent
from . import Rendered

_COMPLETE = {"step": "task step", "callback": "callback", "work": "thread pool", "gc": "gc"}
_ASYNC = {"span": "span", "stall": "stall", "request": "request"}


def _us(ns: int) -> float:
    return round(ns / 1000, 3)


def _args(event: TraceEvent) -> dict[str, Any]:
    args: dict[str, Any] = dict(event.args)
    if event.wait_ns:
        args["ready before it ran (ms)"] = round(event.wait_ns / 1e6, 3)
    if event.behind:
        args["waited behind"] = [f"{who}: {ns / 1e6:.3f} ms" for who, ns in event.behind]
    if event.stack:
        args["stack (innermost first)"] = [f"{f.function} {f.filename}:{f.line}"
                                           for f in event.stack]
    return args


def chrome_events(capture: TraceCapture) -> list[dict[str, Any]]:
    pid = capture.pid
    out: list[dict[str, Any]] = [
        {"ph": "M", "pid": pid, "tid": 0, "name": "process_name",
         "args": {"name": f"pyprof_http trace (pid {pid})"}}]
    for lane in capture.lanes:
        out.append({"ph": "M", "pid": pid, "tid": lane.id, "name": "thread_name",
                    "args": {"name": lane.name}})
        out.append({"ph": "M", "pid": pid, "tid": lane.id, "name": "thread_sort_index",
                    "args": {"sort_index": lane.id}})
    steps: dict[int, list[TraceEvent]] = {}
    for event in capture.events:
        if event.kind in ("step", "callback") and event.request and event.wait_ns:
            steps.setdefault(event.request, []).append(event)
    next_id = 0
    for event in capture.events:
        base = {"pid": pid, "tid": event.lane, "name": event.name, "ts": _us(event.start_ns)}
        if event.kind in _COMPLETE:
            out.append({**base, "ph": "X", "cat": _COMPLETE[event.kind],
                        "dur": _us(event.duration_ns), "args": _args(event)})
        elif event.kind == "mark":
            out.append({**base, "ph": "i", "s": "t", "cat": "mark", "args": _args(event)})
        elif event.kind in _ASYNC:
            next_id += 1
            cat = _ASYNC[event.kind]
            ident = f"0x{next_id:x}"
            out.append({**base, "ph": "b", "cat": cat, "id": ident, "args": _args(event)})
            if event.kind == "request":
                out += _waits(steps.get(event.request, ()), event, pid, cat, ident)
            out.append({**base, "ph": "e", "cat": cat, "id": ident,
                        "ts": _us(event.end_ns), "args": {}})
    return out


def _waits(steps: Iterable[TraceEvent], request: TraceEvent, pid: int, cat: str,
           ident: str) -> list[dict[str, Any]]:
    """Nested slices on the request's row: each time one of its steps (or callbacks, such as
    the timer of its sleep) waited for the loop while it was served."""
    out: list[dict[str, Any]] = []
    for step in steps:
        ready = max(step.start_ns - step.wait_ns, request.start_ns)
        if ready >= step.start_ns or step.start_ns > request.end_ns:
            continue
        behind = {"waited behind": [f"{who}: {ns / 1e6:.3f} ms" for who, ns in step.behind],
                  "then ran": f"{step.name} ({step.duration_ns / 1e6:.3f} ms)"}
        name = "waiting for the loop"
        common = {"pid": pid, "tid": request.lane, "cat": cat, "id": ident, "name": name}
        out.append({**common, "ph": "b", "ts": _us(ready), "args": behind})
        out.append({**common, "ph": "e", "ts": _us(step.start_ns), "args": {}})
    return out


def trace_document(capture: TraceCapture) -> dict[str, Any]:
    return {
        "traceEvents": chrome_events(capture),
        "displayTimeUnit": "ms",
        "otherData": {"pid": capture.pid, "started_wall_ns": capture.started_wall_ns,
                      "duration_ns": capture.duration_ns, "dropped_events": capture.dropped,
                      "notes": list(capture.notes)},
    }


def render_trace_chrome(capture: TraceCapture, name: str = "trace") -> Rendered:
    body = json.dumps(trace_document(capture), separators=(",", ":"))
    return Rendered(body.encode("utf-8", "backslashreplace"), "application/json",
                    filename=f"{name}.json")
