"""The leak dump (``goroutineleak?debug=2``) and the leak profile in every format, from
hand-built records, hostile names included."""

from __future__ import annotations

import gzip
import json

from pyprof_http.captures.leaks import LeakCapture, LeakRecord
from pyprof_http.model import frame
from pyprof_http.pprof.encode import render_pprof
from pyprof_http.registry import BY_NAME
from pyprof_http.render.leak_dump import render_leak_dump

WAIT = frame("Event.wait", "/usr/lib/asyncio/locks.py", 213)
WORKER = frame("worker", "/app/jobs.py", 12)
SPAWN = frame("handler", "/app/web.py", 40)
OUTER = frame("run_endpoint", "/app/fastapi.py", 9)
HOSTILE = "evil\x1b[31m\n<script>\u2028\ud800\""


def _record(**kwargs: object) -> LeakRecord:
    base: dict[str, object] = dict(
        task_id=7, name="job-7", awaiting="Event.wait", stack=(WAIT, WORKER),
        chain_complete=True, creation=(SPAWN, OUTER), created_by="route /jobs",
        parent="Task-3", route="/jobs", request_id="r-1", age_s=125.25, thread="pyprof_http-render",
        recorded_ns=1, time_ns=0)
    base.update(kwargs)
    return LeakRecord(**base)  # type: ignore[arg-type]


def _capture(*records: LeakRecord) -> LeakCapture:
    groups = [((r.stack, r.creation, r.awaiting, r.task_label, r.created_by), 1) for r in records]
    return LeakCapture(tuple(groups), records, len(records), 5, ("gc.collect() ran",))


def test_exact_block() -> None:
    text = render_leak_dump(_capture(_record())).body.decode()
    lines = text.splitlines()
    assert lines[:3] == [
        "goroutineleak dump: 1 leaked tasks recorded, the 1 most recent shown (frames "
        "innermost first)",
        "# gc.collect() ran",
        "",
    ]
    assert lines[3:10] == [
        'task 7 "job-7" [awaiting Event.wait (leaked), lived 125.2 s]:',
        '  File "/usr/lib/asyncio/locks.py", line 213, in Event.wait',
        '  File "/app/jobs.py", line 12, in worker',
        'created by handler at /app/web.py:40 in task "Task-3"',
        "  from run_endpoint at /app/fastapi.py:9",
        '  for request route "/jobs" request_id "r-1"',
        lines[9],
    ]
    assert lines[9].startswith('destroyed by the garbage collector on thread '
                               '"pyprof_http-render", ')


def test_lost_chain_and_unknown_origin_are_said() -> None:
    text = render_leak_dump(_capture(_record(
        chain_complete=False, stack=(WORKER,), creation=(), age_s=None, awaiting="Future",
    ))).body.decode()
    assert 'task 7 "job-7" [awaiting Future (leaked)]:' in text
    assert "(await chain lost: " in text
    assert "created by unknown (task created before pyprof_http's task factory)" in text


def test_hostile_names_are_escaped_in_every_format() -> None:
    record = _record(name=HOSTILE, awaiting=HOSTILE, created_by=HOSTILE, parent=HOSTILE,
                     route=HOSTILE, stack=(frame(HOSTILE, HOSTILE, 1), WORKER),
                     thread=HOSTILE)
    capture = _capture(record)
    dump = render_leak_dump(capture).body.decode("utf-8", "surrogatepass")
    assert "\x1b" not in dump and "\u2028" not in dump and "\ud800" not in dump
    assert dump.count("\n") == len(dump.splitlines())  # no line forged by a name
    assert "evil\\x1b[31m\\n<script>\\u2028\\ud800" in dump
    spec = BY_NAME["goroutineleak"]
    for fmt in ("text", "folded"):
        body = spec.formats[fmt].render(capture, "goroutineleak").body.decode()
        assert "\x1b" not in body and "\u2028" not in body
    html = spec.formats["flamegraph"].render_at(capture, "goroutineleak", None).body.decode()
    assert "<script>\u2028" not in html and "\x1b" not in html
    data = spec.formats["json"].render(capture, "goroutineleak").body
    json.loads(data)
    assert b"\x1b" not in data
    gzip.decompress(render_pprof(capture.profile, "goroutineleak").body)


def test_auto_task_names_are_not_labels() -> None:
    capture = _capture(_record(name="Task-12"), _record(name="job-x"))
    labels = [dict(s.labels) for s in capture.profile.samples]
    assert "task" not in labels[0] and labels[1]["task"] == "job-x"
    assert labels[0]["awaiting"] == "Event.wait" and labels[0]["created_by"] == "route /jobs"
