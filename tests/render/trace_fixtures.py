"""A small trace capture with hostile names, for the renderer tests."""

from __future__ import annotations

from pyprof_http.captures.trace import Lane, RequestSummary, TraceCapture, TraceEvent
from pyprof_http.model import Profile, frame

HOSTILE = "<img src=x onerror=alert(1)>\u2028\x1b[31m</script>\udcff"


def capture() -> TraceCapture:
    lanes = (Lane(1, "requests", "requests"), Lane(2, "thread", "MainThread"),
             Lane(3, "task", f"task 7 {HOSTILE}"), Lane(4, "task", "task 8 victim"))
    hog_stack = (frame("hog", "/app/x.py", 12), frame(HOSTILE, "/app/y.py", 3))
    events = (
        TraceEvent("request", 1, 0, 100_000_000, "GET /slow",
                   (("status", "200"), ("route", "/slow")), request=1,
                   behind=((f"task 7 {HOSTILE} (step)", 80_000_000),)),
        TraceEvent("step", 4, 1_000_000, 500_000, "victim", (("task", "task 8 victim"),),
                   thread_lane=2, request=1),
        TraceEvent("step", 3, 2_000_000, 80_000_000, HOSTILE, (("task", f"task 7 {HOSTILE}"),),
                   thread_lane=2, request=1, stack=hog_stack),
        TraceEvent("mark", 4, 2_100_000, 0, "db.query.start",
                   (("table", HOSTILE), ("route", "/slow"))),
        TraceEvent("gc", 2, 3_000_000, 200_000, "gc generation 2", (("generation", "2"),)),
        TraceEvent("step", 4, 82_000_000, 300_000, "victim", (("task", "task 8 victim"),),
                   thread_lane=2, request=1, wait_ns=80_500_000,
                   behind=((f"task 7 {HOSTILE} (step)", 80_000_000),)),
        TraceEvent("span", 4, 82_100_000, 10_000_000, "render.page", (("template", "home"),)),
        TraceEvent("work", 2, 90_000_000, 5_000_000, "blocking", ()),
        TraceEvent("stall", 2, 2_000_000, 80_000_000, "loop stall 80 ms", (), stack=hog_stack),
    )
    summary = RequestSummary(1, "GET", "/slow", "req-1", 200, 0, 100_000_000, 800_000,
                             80_500_000, 0, 2, ((f"task 7 {HOSTILE} (step)", 80_000_000),))
    return TraceCapture(Profile((), ()), 4242, 1_700_000_000_000_000_000, 1_000_000_000, lanes,
                        events, (summary,), ("a note",), 0)
