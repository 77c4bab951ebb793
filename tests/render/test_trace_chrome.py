"""The Chrome Trace Event Format rendering of a trace."""

from __future__ import annotations

import json

from trace_fixtures import HOSTILE, capture

from pyprof_http.render.trace_chrome import render_trace_chrome
from trace_schema import check_chrome_trace


def test_the_document_is_well_formed_and_names_every_lane() -> None:
    rendered = render_trace_chrome(capture())
    assert rendered.media_type == "application/json" and rendered.filename == "trace.json"
    document = json.loads(rendered.body)
    events = check_chrome_trace(document)
    names = {e["tid"]: e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert names[3] == f"task 7 {HOSTILE}"  # escaped as JSON, read back intact
    assert document["otherData"]["notes"] == ["a note"]


def test_phases_by_kind() -> None:
    events = json.loads(render_trace_chrome(capture()).body)["traceEvents"]
    by_phase = {(e["ph"], e.get("cat")) for e in events if e["ph"] != "M"}
    assert {("X", "task step"), ("X", "gc"), ("X", "thread pool"), ("i", "mark"),
            ("b", "request"), ("e", "request"), ("b", "span"), ("b", "stall")} <= by_phase
    hog = next(e for e in events if e["ph"] == "X" and e["name"] == HOSTILE)
    assert hog["ts"] == 2000.0 and hog["dur"] == 80000.0
    assert hog["args"]["stack (innermost first)"][0] == "hog /app/x.py:12"
    mark = next(e for e in events if e["ph"] == "i")
    assert mark["args"]["table"] == HOSTILE and mark["tid"] == 4


def test_the_wait_is_a_slice_inside_its_request_naming_what_ran() -> None:
    events = json.loads(render_trace_chrome(capture()).body)["traceEvents"]
    request = next(e for e in events if e["ph"] == "b" and e["cat"] == "request"
                   and e["name"] == "GET /slow")
    waits = [e for e in events if e["name"] == "waiting for the loop"]
    begin, end = waits
    assert begin["id"] == end["id"] == request["id"]
    assert begin["ts"] == 1500.0 and end["ts"] == 82000.0  # ready at 82 - 80.5 ms, ran at 82
    assert begin["args"]["waited behind"] == [f"task 7 {HOSTILE} (step): 80.000 ms"]


def test_the_body_is_ascii_even_with_lone_surrogates() -> None:
    body = render_trace_chrome(capture()).body
    assert body.isascii() and b"\\udcff" in body and b"<img" in body  # JSON, not HTML
