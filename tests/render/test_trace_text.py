"""The debug=1 text view of a trace."""

from __future__ import annotations

from trace_fixtures import capture

from pyprof_http.render.trace_text import render_trace_text


def test_requests_say_where_their_time_went_and_behind_what() -> None:
    text = render_trace_text(capture()).body.decode()
    assert "GET /slow -> 200 100.0 ms at +0.000s request_id=req-1: running 0.8 ms in 2 " \
           "steps, waiting for the loop 80.5 ms, thread pool 0.0 ms" in text
    assert "waited behind task 7 <img src=x onerror=alert(1)>\\u2028\\x1b[31m</script>" \
           "\\udcff (step): 80.0 ms" in text


def test_longest_steps_first_with_their_stacks_and_markers() -> None:
    text = render_trace_text(capture()).body.decode()
    steps = text.split("longest loop steps")[1]
    assert steps.index("80.0 ms step") < steps.index("0.5 ms step")
    assert "#  hog  /app/x.py:12" in steps
    assert "mark db.query.start table=<img" in text
    assert "span render.page 10.0 ms template=home" in text
    assert "loop stalls (block watchdog): 1" in text and "GC pauses: 1" in text


def test_no_raw_control_characters() -> None:
    text = render_trace_text(capture()).body.decode()
    assert "\x1b" not in text and "\u2028" not in text and "\\udcff" in text
    assert all(line.isprintable() for line in text.splitlines())
