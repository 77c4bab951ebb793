"""``/trace?debug=1``: the window as text, to answer "why was this request slow?" from a terminal.

Per request (slowest first): where its time went — running on the loop, ready but waiting for
the loop (and behind what), in the thread pool; then the longest loop steps with a sampled stack
where one was taken, the stalls, GC pauses and the application's markers and spans. Every name
goes through :func:`~pyprof_http.sanitize.printable`.
"""

from __future__ import annotations

from typing import Final

from ..captures.trace import TraceCapture, TraceEvent
from ..sanitize import printable
from . import Rendered, utf8
from .text import TEXT_PLAIN

MAX_REQUESTS: Final = 50
MAX_STEPS: Final = 20
MAX_MARKS: Final = 200
MAX_FRAMES: Final = 12


def _ms(ns: int) -> str:
    return f"{ns / 1e6:.1f} ms"


def _at(ns: int) -> str:
    return f"+{ns / 1e9:.3f}s"


def _args(event: TraceEvent, skip: tuple[str, ...] = ()) -> str:
    return " ".join(f"{printable(k)}={printable(v)}" for k, v in event.args
                    if k not in skip and v)


def render_trace_text(capture: TraceCapture, name: str = "trace") -> Rendered:
    events = capture.events
    kinds: dict[str, int] = {}
    for event in events:
        kinds[event.kind] = kinds.get(event.kind, 0) + 1
    out = [f"trace: {capture.duration_ns / 1e9:.3f} s of pid {capture.pid}, {len(events)} events "
           f"({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}), "
           f"{capture.dropped} dropped"]
    out += [f"# {printable(note)}" for note in capture.notes]
    out.append("")
    requests = sorted(capture.requests, key=lambda r: -r.duration_ns)
    out.append(f"requests: {len(requests)} (slowest first; running = its task steps and "
               "callbacks on the loop, waiting = ready but the loop ran something else)")
    for r in requests[:MAX_REQUESTS]:
        rid = f" request_id={printable(r.request_id)}" if r.request_id else ""
        out.append(f"  {printable(r.method)} {printable(r.route)} -> {r.status} "
                   f"{_ms(r.duration_ns)} at {_at(r.start_ns)}{rid}: running "
                   f"{_ms(r.running_ns)} in {r.steps} steps, waiting for the loop "
                   f"{_ms(r.waiting_ns)}, thread pool {_ms(r.pool_ns)}")
        for who, ns in r.behind:
            out.append(f"      waited behind {printable(who)}: {_ms(ns)}")
    if len(requests) > MAX_REQUESTS:
        out.append(f"  ... {len(requests) - MAX_REQUESTS} more")
    out.append("")
    steps = sorted((e for e in events if e.kind in ("step", "callback")),
                   key=lambda e: -e.duration_ns)[:MAX_STEPS]
    out.append(f"longest loop steps and callbacks (top {MAX_STEPS}):")
    for e in steps:
        out.append(f"  {_ms(e.duration_ns)} {e.kind} {printable(e.name)} at {_at(e.start_ns)} "
                   f"{_args(e)}".rstrip())
        if e.wait_ns >= 100_000:
            out.append(f"      was ready {_ms(e.wait_ns)} before it ran")
        out += _stack(e)
    for title, kind in (("loop stalls (block watchdog)", "stall"), ("GC pauses", "gc"),
                        ("thread-pool work", "work")):
        chosen = sorted((e for e in events if e.kind == kind), key=lambda e: -e.duration_ns)
        if not chosen:
            continue
        out += ["", f"{title}: {len(chosen)} (longest first)"]
        for e in chosen[:MAX_STEPS]:
            out.append(f"  {_ms(e.duration_ns)} {printable(e.name)} at {_at(e.start_ns)} "
                       f"{_args(e)}".rstrip())
            if kind == "stall":
                out += _stack(e)
    marks = [e for e in events if e.kind in ("mark", "span")]
    out += ["", f"markers and spans: {len(marks)}"]
    for e in marks[:MAX_MARKS]:
        length = f" {_ms(e.duration_ns)}" if e.kind == "span" else ""
        out.append(f"  {_at(e.start_ns)} {e.kind} {printable(e.name)}{length} {_args(e)}"
                   .rstrip())
    out.append("")
    return Rendered(utf8("\n".join(out)), TEXT_PLAIN)


def _stack(event: TraceEvent) -> list[str]:
    lines = [f"      #  {printable(f.function)}  {printable(f.filename)}:{f.line}"
             for f in event.stack[:MAX_FRAMES]]
    if len(event.stack) > MAX_FRAMES:
        lines.append(f"      #  ... {len(event.stack) - MAX_FRAMES} more frames")
    return lines
