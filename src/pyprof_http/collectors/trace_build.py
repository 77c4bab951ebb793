"""Turn a recorded ``/trace`` window into a :class:`~pyprof_http.captures.trace.TraceCapture`.

Run off the loop after the window: task ids and names, routes and request ids, function names
are read here, once per distinct object, not while recording. Each task step that waited
(ready before the loop ran it) gets what the loop ran on its thread meanwhile, and each request
the sum of its steps (running), of their waits (waiting for the loop) and of its thread-pool
work.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any, Final

from .. import markers
from ..captures.stalls import Stall
from ..captures.trace import Lane, RequestSummary, TraceCapture, TraceEvent
from ..loops import ORIGINS, code_name_of
from ..model import Frame, Profile, Sample, ValueType, frame
from .trace_behind import Track
from .trace_hooks import Recording, callable_name

MAX_ATTR_CHARS: Final = 200
MAX_BEHIND: Final = 5
MIN_WAIT_NS: Final = 100_000
"""Waits shorter than this get no "behind" list (the loop's own turn-around)."""
MAX_WAITS_EXPLAINED: Final = 5_000
STEPS: Final = ValueType("steps", "count")
WALL: Final = ValueType("wall", "nanoseconds")


def function_name(fn: Any) -> str:
    code = getattr(fn, "__code__", None)
    if code is not None:
        return code_name_of(code)
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    return str(name) if name else type(fn).__qualname__


def _text(value: Any) -> str:
    try:
        text = value if isinstance(value, str) else str(value)
    except Exception:  # an attribute whose __str__ fails must not fail the trace
        text = f"<{type(value).__qualname__}>"
    return text[:MAX_ATTR_CHARS]


class _Builder:
    def __init__(self, recording: Recording) -> None:
        self.rec = recording
        self.origin = recording.started_ns
        self.lanes: list[Lane] = []
        self.thread_lanes: dict[int, int] = {}
        self.thread_lane_by_name: dict[str, int] = {}
        self.task_lanes: dict[int, tuple[Any, int, str, str]] = {}
        """id(task) -> (task, lane, label "task N", name)."""
        self.requests: dict[int, tuple[Any, int]] = {}
        """id(Request) -> (request, number)."""
        self.requests_lane = 0

    def lane(self, kind: str, name: str) -> int:
        lane = len(self.lanes) + 1
        self.lanes.append(Lane(lane, kind, name))
        return lane

    def thread_lane(self, ident: int) -> int:
        found = self.thread_lanes.get(ident)
        if found is None:
            name = self.rec.thread_names.get(ident) or f"thread {ident}"
            found = self.thread_lanes[ident] = self.lane("thread", name)
            self.thread_lane_by_name.setdefault(name, found)
        return found

    def task(self, task: Any) -> tuple[int, str, str]:
        """(lane, "task N", name) of ``task``."""
        found = self.task_lanes.get(id(task))
        if found is None or found[0] is not task:
            number = ORIGINS.task_id(task)
            try:
                name = str(task.get_name())
            except Exception:
                name = "?"
            lane = self.lane("task", f"task {number} {name}")
            found = self.task_lanes[id(task)] = (task, lane, f"task {number}", name)
        return found[1], found[2], found[3]

    def request(self, request: Any) -> int:
        if request is None:
            return 0
        found = self.requests.get(id(request))
        if found is None or found[0] is not request:
            found = self.requests[id(request)] = (request, len(self.requests) + 1)
        return found[1]

    def labels(self, thread: int, task: Any, request: Any) -> list[tuple[str, str]]:
        out = [("thread", self.rec.thread_names.get(thread) or f"thread {thread}")]
        if task is not None:
            _, label, name = self.task(task)
            out += [("task", f"{label} {name}")]
        if request is not None:
            out += [("route", _text(request.route)), ("request_id", _text(request.request_id)),
                    ("request", str(self.request(request)))]
        return out


def build(recording: Recording, stalls: Iterable[Stall] = ()) -> TraceCapture:
    """The capture of ``recording`` (and the watchdog's ``stalls`` that ended in it)."""
    b = _Builder(recording)
    origin = recording.started_ns
    raw = sorted(recording.buffer.events, key=lambda e: e[1])
    b.requests_lane = b.lane("requests", "requests")
    events: list[TraceEvent] = []
    requests: list[tuple[Any, int, int, str, int]] = []
    """(request, start, duration, method, status)."""
    for kind, start, duration, thread, task, request, name, extra in raw:
        rel = start - origin
        if kind == markers.STEP:
            lane, _, task_name = b.task(task)
            thread_lane = b.thread_lane(thread)
            wait = max(0, start - extra) if extra else 0
            events.append(TraceEvent(
                "step", lane, rel, duration, task_name, tuple(b.labels(thread, task, request)),
                thread_lane=thread_lane, request=b.request(request), wait_ns=wait,
                stack=recording.samples.get((thread, start), ())))
        elif kind == markers.CALLBACK:
            # a request's own callbacks (the timer of its sleep) wait for the loop too
            wait = max(0, start - extra) if extra and request is not None else 0
            events.append(TraceEvent(
                "callback", b.thread_lane(thread), rel, duration,
                function_name(callable_name(name)),
                tuple(b.labels(thread, None, request)), thread_lane=b.thread_lane(thread),
                request=b.request(request), wait_ns=wait,
                stack=recording.samples.get((thread, start), ())))
        elif kind == markers.WORK:
            events.append(TraceEvent(
                "work", b.thread_lane(thread), rel, duration, function_name(name),
                tuple(b.labels(thread, None, request)), request=b.request(request)))
        elif kind == markers.GC:
            events.append(TraceEvent(
                "gc", b.thread_lane(thread), rel, duration, f"gc generation {name}",
                (("generation", str(name)), ("collected", str(extra)),
                 ("thread", recording.thread_names.get(thread) or str(thread)))))
        elif kind in (markers.MARK, markers.SPAN):
            lane = b.task(task)[0] if task is not None else b.thread_lane(thread)
            attrs = [(_text(k), _text(v)) for k, v in (extra or {}).items()]
            events.append(TraceEvent(
                "mark" if kind == markers.MARK else "span", lane, rel, duration, _text(name),
                tuple(attrs + b.labels(thread, task, request)), request=b.request(request)))
        elif kind == markers.REQUEST:
            requests.append((request, start, duration, str(name), int(extra)))
    for stall in stalls:
        if stall.end_ns <= origin or stall.start_ns >= recording.ended_ns:
            continue
        lane = b.thread_lane_by_name.get(stall.thread) or b.lane("thread", stall.thread)
        args = [("thread", stall.thread), ("task", stall.task), ("route", stall.route),
                ("request_id", stall.request_id)]
        events.append(TraceEvent("stall", lane, stall.start_ns - origin, stall.duration_ns,
                                 f"loop stall {stall.duration_ns / 1e6:.0f} ms",
                                 tuple((k, v) for k, v in args if v), stack=stall.stack))
    events = _with_behind(events)
    summaries = _summaries(b, requests, events, origin)
    for summary in summaries:
        events.append(TraceEvent(
            "request", b.requests_lane, summary.start_ns, summary.duration_ns,
            f"{summary.method} {summary.route}",
            (("status", str(summary.status)), ("route", summary.route),
             ("request_id", summary.request_id), ("request", str(summary.number)),
             ("running", _ms(summary.running_ns)), ("waiting for the loop",
                                                     _ms(summary.waiting_ns)),
             ("thread pool", _ms(summary.pool_ns))),
            request=summary.number, behind=summary.behind))
    events.sort(key=lambda e: (e.start_ns, -e.duration_ns))
    return TraceCapture(
        profile=_profile(events, recording), pid=os.getpid(),
        started_wall_ns=recording.started_wall_ns,
        duration_ns=recording.ended_ns - recording.started_ns, lanes=tuple(b.lanes),
        events=tuple(events), requests=tuple(summaries), notes=_notes(recording, events),
        dropped=recording.buffer.dropped)


def _ms(ns: int) -> str:
    return f"{ns / 1e6:.3f} ms"


def _with_behind(events: list[TraceEvent]) -> list[TraceEvent]:
    """Steps and callbacks that waited at least :data:`MIN_WAIT_NS`, with what their thread ran
    meanwhile (see :mod:`.trace_behind`): the :data:`MAX_WAITS_EXPLAINED` longest waits, those
    serving a request first (10,000 tasks woken at once would otherwise cost seconds)."""
    by_thread: dict[int, list[TraceEvent]] = defaultdict(list)
    waits: list[tuple[bool, int, int]] = []
    for i, event in enumerate(events):
        if event.kind in ("step", "callback"):
            by_thread[event.thread_lane].append(event)
            if event.wait_ns >= MIN_WAIT_NS:
                waits.append((bool(event.request), event.wait_ns, i))
    tracks = {lane: Track(ran) for lane, ran in by_thread.items()}
    out = list(events)
    for _, _, i in sorted(waits, reverse=True)[:MAX_WAITS_EXPLAINED]:
        event = events[i]
        out[i] = replace(event, behind=tracks[event.thread_lane].behind(
            event.start_ns - event.wait_ns, event.start_ns, _who, MAX_BEHIND))
    return out


def _who(event: TraceEvent) -> str:
    if event.kind == "step":
        task = dict(event.args).get("task", event.name)
        return f"{task} (step)"
    return f"{event.name} (callback)"


def _summaries(b: _Builder, requests: Sequence[tuple[Any, int, int, str, int]],
               events: Sequence[TraceEvent], origin: int) -> list[RequestSummary]:
    running: dict[int, int] = defaultdict(int)
    waiting: dict[int, int] = defaultdict(int)
    pool: dict[int, int] = defaultdict(int)
    steps: dict[int, int] = defaultdict(int)
    behind: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    spans = {b.request(request): (start - origin, start - origin + duration)
             for request, start, duration, _, _ in requests}
    for event in events:
        if not event.request or event.request not in spans:
            continue
        begin, end = spans[event.request]
        if event.kind in ("step", "callback"):
            # only what happened while the request was served counts (a handle made in its
            # context may run long after it, e.g. a transport's resumed reader)
            ran = max(0, min(event.end_ns, end) - max(event.start_ns, begin))
            ready = max(event.start_ns - event.wait_ns, begin)
            waited = max(0, min(event.start_ns, end) - ready)
            if not ran and not waited:
                continue
            running[event.request] += ran
            waiting[event.request] += waited
            steps[event.request] += event.kind == "step"
            scale = waited / event.wait_ns if event.wait_ns else 0
            for who, ns in event.behind:
                behind[event.request][who] += int(ns * scale)
        elif event.kind == "work":
            pool[event.request] += event.duration_ns
    out = []
    for request, start, duration, method, status in requests:
        number = b.request(request)
        out.append(RequestSummary(
            number=number, method=method, route=_text(request.route),
            request_id=_text(request.request_id), status=status, start_ns=start - origin,
            duration_ns=duration, running_ns=running[number], waiting_ns=waiting[number],
            pool_ns=pool[number], steps=steps[number],
            behind=tuple(sorted(behind[number].items(), key=lambda kv: -kv[1])[:MAX_BEHIND])))
    return out


def _profile(events: Sequence[TraceEvent], recording: Recording) -> Profile:
    """Loop time by task and callback (a sampled stack when one was taken)."""
    totals: dict[tuple[tuple[Frame, ...], str], list[int]] = {}
    for event in events:
        if event.kind not in ("step", "callback"):
            continue
        stack = event.stack or (frame(event.name, "", 0),)
        entry = totals.setdefault((stack, event.kind), [0, 0])
        entry[0] += 1
        entry[1] += event.duration_ns
    samples = tuple(Sample(stack, (n, ns), {"kind": kind})
                    for (stack, kind), (n, ns) in totals.items())
    return Profile(sample_types=(STEPS, WALL), samples=samples, period_type=STEPS, period=1,
                   time_ns=recording.started_wall_ns,
                   duration_ns=recording.ended_ns - recording.started_ns,
                   default_sample_type=WALL.type)


def _notes(recording: Recording, events: Sequence[TraceEvent]) -> tuple[str, ...]:
    notes = [f"recorded {(recording.ended_ns - recording.started_ns) / 1e9:.3f} s; hooked "
             f"during the window only: {', '.join(recording.hooked) or 'nothing'}"]
    for loop in recording.blind_loops:
        notes.append(f"a {loop} event loop runs its callbacks in C: its task steps and "
                     "callbacks cannot be seen from Python and are missing; requests, markers, "
                     "thread-pool work, GC pauses and stalls are recorded")
    if recording.buffer.dropped:
        at = (recording.buffer.full_at_ns - recording.started_ns) / 1e9
        notes.append(f"the trace filled up at +{at:.3f} s: {recording.buffer.dropped} later "
                     f"events were dropped (at most {recording.buffer.capacity} are kept)")
    if not recording.watchdog:
        notes.append("no loop is watched by the block watchdog (block not allowed, or no "
                     "lifespan yet): stalls cannot be shown")
    elif not any(e.kind == "stall" for e in events):
        notes.append("stalls come from the block watchdog (loops stalled over loop_stall_ms); "
                     "none ended in this window")
    return tuple(notes)
