"""mark() and span(): nothing while no trace records; while one does, bounded events with the
task, thread and request they came from."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from pyprof_http import mark, markers, request_labels, span
from pyprof_http.markers import MARK, REQUEST, SPAN, TraceBuffer


@pytest.fixture
def buffer() -> Iterator[TraceBuffer]:
    recording = TraceBuffer(100)
    markers.ACTIVE = recording
    try:
        yield recording
    finally:
        markers.ACTIVE = None


def test_off_records_nothing_and_span_is_one_shared_object() -> None:
    assert markers.ACTIVE is None
    assert mark("x", a=1) is None
    first, second = span("a"), span("b", k=2)
    assert first is second  # nothing allocated per call while off
    with first as entered:
        assert entered is first

    async def main() -> None:
        async with span("c"):
            pass

    asyncio.run(main())


def test_mark_carries_thread_task_and_request(buffer: TraceBuffer) -> None:
    async def handler() -> asyncio.Task[None] | None:
        entered = request_labels.enter({"type": "http", "path": "/orders", "headers": [
            (b"x-request-id", b"req-7")]})
        try:
            mark("db.query.start", table="users")
        finally:
            request_labels.leave(entered)
        return asyncio.current_task()  # type: ignore[return-value]

    task = asyncio.run(handler())
    mark("outside")  # no loop, no request
    (kind, start, duration, thread, on_task, request, name, attrs), outside = buffer.events
    assert (kind, duration, name, attrs) == (MARK, 0, "db.query.start", {"table": "users"})
    assert thread == threading.get_ident() and start > 0
    assert on_task is task
    assert (request.route, request.request_id) == ("/orders", "req-7")
    assert outside[4] is None and outside[5] is None and outside[6] == "outside"


def test_span_as_with_and_async_with(buffer: TraceBuffer) -> None:
    with span("parse", size=3):
        pass
    with pytest.raises(ValueError), span("fails"):
        raise ValueError("boom")

    async def main() -> None:
        async with span("db", table="t"):
            await asyncio.sleep(0.001)

    asyncio.run(main())
    names = [(e[0], e[6], e[7]) for e in buffer.events]
    assert names == [(SPAN, "parse", {"size": 3}), (SPAN, "fails", {"error": "ValueError"}),
                     (SPAN, "db", {"table": "t"})]
    assert buffer.events[2][4] is not None  # the task that entered the async span
    assert all(e[2] >= 0 for e in buffer.events)
    assert buffer.events[2][2] >= 1_000_000 * 0.5  # it slept ~1 ms (a generous lower bound)


def test_a_span_ending_after_its_window_is_not_recorded(buffer: TraceBuffer) -> None:
    opened = span("long")
    opened.__enter__()
    markers.ACTIVE = TraceBuffer(10)  # the window ended and another one began
    opened.__exit__(None, None, None)
    assert buffer.events == [] and markers.ACTIVE.events == []


def test_the_buffer_is_bounded_and_counts_what_it_dropped(buffer: TraceBuffer) -> None:
    small = TraceBuffer(2)
    markers.ACTIVE = small
    for i in range(5):
        mark(f"m{i}")
    assert [e[6] for e in small.events] == ["m0", "m1"]
    assert small.dropped == 3 and small.full_at_ns >= small.events[-1][1]


def test_a_request_trace_notes_status_and_times_until_closed(buffer: TraceBuffer) -> None:
    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    async def main() -> None:
        traced = buffer.request("labels", {"method": "POST"})
        wrapped = traced.wrap(send)
        await wrapped({"type": "http.response.start", "status": 201})
        await wrapped({"type": "http.response.body", "body": b""})
        traced.close()

    asyncio.run(main())
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    (event,) = buffer.events
    assert (event[0], event[5], event[6], event[7]) == (REQUEST, "labels", "POST", 201)
