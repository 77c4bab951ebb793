"""The ``block`` profile as text for curl: the worst event-loop stalls first, one record each.

Go's ``block?debug=1`` groups identical stacks (``--- contention:``, then ``delay count @ pcs``).
For a loop the single stall is what people look for ("what held the loop for 2 s at 03:08?"),
so this view lists stalls, not stacks: the longest first, each with its duration, when it
happened, the thread, task, route and request id that held the loop, what the loop thread's
scheduler counters measured (time on a CPU, time waiting for one), then its blocking stack as
``#\\tID\\tfunction\\tfile:line`` lines with the same stable frame ids as every other text view,
and one line per other stack the watchdog saw during the same stall. The grouped-by-stack view
is ``debug=1``'s job (``render_text``) and pprof's. At most :data:`MAX_STALLS_SHOWN` records are
written, then one line sums up the rest. Names come from the application, so they are quoted by
the package's one sanitiser (a newline in a task name cannot forge a record).
"""

from __future__ import annotations

import datetime
import heapq
from typing import Final

from ..captures.stalls import Stall, StallCapture
from ..sanitize import quoted as _quote
from . import Rendered, utf8
from .text import TEXT_PLAIN, clean, frame_id, frame_lines

MAX_STALLS_SHOWN: Final = 100


def render_stalls_text(capture: StallCapture, name: str) -> Rendered:
    """Header, the profile's comments, then the worst :data:`MAX_STALLS_SHOWN` stalls."""
    profile = capture.profile
    count_at, delay_at = profile.value_index("contentions"), profile.value_index("delay")
    totals = profile.totals()
    out = [
        f"{name} profile: {totals[count_at]} stalls, total {_ms(totals[delay_at])}, "
        f"threshold {capture.threshold_ms} ms",
        *(f"# {clean(comment)}" for comment in profile.comments),
    ]
    if not capture.stalls:
        out.append(f"# no stalls: no watched event loop stayed away for {capture.threshold_ms} "
                   "ms or more in this window")
        return Rendered(utf8("\n".join(out) + "\n"), TEXT_PLAIN)
    worst = heapq.nsmallest(MAX_STALLS_SHOWN, capture.stalls,
                            key=lambda s: (-s.duration_ns, s.start_ns))
    out.append(f"# worst first: {len(worst)} of the {len(capture.stalls)} stalls kept")
    out.append("")
    for rank, stall in enumerate(worst, 1):
        out.extend(_record(rank, stall, capture.taken_ns))
        out.append("")
    rest = len(capture.stalls) - len(worst)
    if rest:
        rest_ns = sum(s.duration_ns for s in capture.stalls) - sum(s.duration_ns for s in worst)
        out.append(f"# {rest} shorter stalls not shown ({_ms(rest_ns)} in all); "
                   "format=pprof or debug=1 has them all, grouped by stack")
        out.append("")
    return Rendered(utf8("\n".join(out) + "\n"), TEXT_PLAIN)


def _record(rank: int, stall: Stall, taken_ns: int) -> list[str]:
    """``stall N: duration, when, who`` then the blocking stack and the other stacks seen."""
    sampled = sum(count for _, count in stall.stacks)
    who = [f"thread {_quote(stall.thread)}"]
    for label, value in (("task", stall.task), ("route", stall.route),
                         ("request_id", stall.request_id)):
        if value:
            who.append(f"{label} {_quote(value)}")
    measured = ""
    if stall.cpu_ns is not None:
        measured = f", loop thread on a CPU {_ms(stall.cpu_ns)}"
        if stall.waited_ns:
            measured += f", waiting for a CPU {_ms(stall.waited_ns)}"
    out = [
        f"stall {rank}: {_ms(stall.duration_ns)}, {_age(taken_ns - stall.end_ns)} ago "
        f"(began {_utc(stall.start_wall_ns)}), {', '.join(who)}{measured}, "
        f"{sampled} samples @ {' '.join(frame_id(f) for f in stall.stack)}",
        *frame_lines(stall.stack),
    ]
    for stack, count in stall.stacks:
        if stack != stall.stack and stack:
            leaf = stack[0]
            out.append(f"# also sampled {count} of {sampled}: {clean(leaf.function)} "
                       f"{clean(leaf.filename)}:{leaf.line}")
    return out


def _ms(ns: int) -> str:
    return f"{ns / 1e6:.1f} ms"


def _age(ns: int) -> str:
    seconds = max(ns, 0) / 1e9
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _utc(wall_ns: int) -> str:
    moment = datetime.datetime.fromtimestamp(wall_ns / 1e9, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
