"""Route and X-Request-ID reach the CPU samples taken while a request runs.

A real request goes through ``pyprof_http.install``'s middleware in-process (httpx's
ASGITransport) while ``/debug/pprof/profile`` samples the same loop. Before Python 3.12 a task's
context cannot be read from outside, so only the task the request runs in is labelled there; from
3.12 the tasks it spawns carry the request too.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from types import FrameType
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

import pyprof_http
from pyprof_http import request_labels
from pyprof_http.collectors import cpu
from pyprof_http.request_labels import enter, leave, route_of, task_request

pytestmark = pytest.mark.usefixtures("request_path")  # both request paths

BURN_TICKS = 60
"""Sampler ticks a request's burn lasts for (not seconds: under load a 1 s burn got ~40)."""
CONTEXT_READABLE = sys.version_info >= (3, 12)
DEADLINE = 60.0
_TICKS = [0]
"""Ticks the sampler has taken in this test (counted by the ``ticks_counted`` fixture)."""


@pytest.fixture(autouse=True)
def ticks_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Count the CPU sampler's ticks, so a burn lasts a number of samples, not of seconds."""
    original = cpu.Sampler.tick
    _TICKS[0] = 0

    def counting(self: cpu.Sampler, interrupted: FrameType | None = None) -> None:
        original(self, interrupted)
        _TICKS[0] += 1  # after the tick: a tick counted here has taken its sample

    monkeypatch.setattr(cpu.Sampler, "tick", counting)


def labels_burn_cpu(ticks: int) -> int:
    """Holds the loop (an ``async def`` route doing CPU work) until the sampler has interrupted
    it ``ticks`` times (or the deadline passes, which the sample count then reports)."""
    until = _TICKS[0] + ticks
    deadline = time.monotonic() + DEADLINE
    total = 0
    while _TICKS[0] < until and time.monotonic() < deadline:
        total += sum(range(200))
    return total


async def labels_child_task(ticks: int) -> int:
    return labels_burn_cpu(ticks)


def make_app() -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def read_item(item_id: int) -> dict[str, int]:
        labels_burn_cpu(BURN_TICKS)
        return {"item_id": item_id}

    @app.get("/spawn/{n}")
    async def spawn(n: int) -> dict[str, int]:
        child = asyncio.create_task(labels_child_task(BURN_TICKS // 2), name="labels-child")
        return {"n": await child}

    pyprof_http.install(app)  # a FastAPI app is changed in place
    return app


def profile_during(path: str, request_id: str) -> tuple[dict[str, Any], httpx.Response]:
    """Run ``GET path`` (task ``labels-request``) inside a wall profile; return both.

    The request starts once the sampler has ticked (not after a fixed sleep), and its burn holds
    the loop, so the profile cannot end before the burn does: the window always covers it (2 s
    leave ample time for the request to reach its route).
    """
    app = make_app()

    async def main() -> tuple[httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            profile = asyncio.create_task(client.get(
                "/debug/pprof/profile",
                params={"seconds": "2", "mode": "wall", "format": "json"}))
            deadline = time.monotonic() + DEADLINE
            while _TICKS[0] == 0 and not profile.done():
                assert time.monotonic() < deadline, "the sampler never ticked"
                await asyncio.sleep(0.005)
            request = asyncio.create_task(
                client.get(path, headers={"X-Request-ID": request_id}), name="labels-request")
            return await profile, await request

    profile, response = asyncio.run(main())
    assert profile.status_code == 200, profile.text
    assert response.status_code == 200, response.text
    assert "driver=signal" in profile.headers["X-Pyprof-Sampler"]
    return profile.json(), response


def labels_of_burning_samples(data: dict[str, Any]) -> Counter[tuple[tuple[str, Any], ...]]:
    found: Counter[tuple[tuple[str, Any], ...]] = Counter()
    for sample in data["samples"]:
        if any(frame["function"] == "labels_burn_cpu" for frame in sample["stack"]):
            found[tuple(sorted(sample["labels"].items()))] += sample["values"][0]
    return found


def test_route_template_and_request_id_label_samples_of_the_request() -> None:
    data, _ = profile_during("/items/42", "req-7f3a")
    found = labels_of_burning_samples(data)
    # every tick of the burn samples it (a few at its edges may not): 60 counted
    assert sum(found.values()) >= BURN_TICKS - 5, f"expected {BURN_TICKS} samples: {found}"
    assert found == {
        (("request_id", "req-7f3a"), ("route", "/items/{item_id}"),
         ("task", "labels-request"), ("thread", "MainThread")): sum(found.values()),
    }, found
    # samples outside the request have no request labels
    other = [s["labels"] for s in data["samples"]
             if not any(f["function"] == "labels_burn_cpu" for f in s["stack"])]
    assert other and all("request_id" not in labels for labels in other
                         if labels.get("task") != "labels-request")


def test_tasks_spawned_by_a_request_are_labelled_from_3_12() -> None:
    data, response = profile_during("/spawn/1", "req-child")
    assert response.json()["n"] > 0
    found = labels_of_burning_samples(data)
    assert sum(found.values()) >= BURN_TICKS // 2 - 5, found
    labels = [dict(key) for key in found]
    assert all(item["task"] == "labels-child" and item["thread"] == "MainThread"
               for item in labels), labels
    if CONTEXT_READABLE:
        assert all(item.get("route") == "/spawn/{n}" and item.get("request_id") == "req-child"
                   for item in labels), labels
    else:  # only the request's own task is known there
        assert all("route" not in item and "request_id" not in item for item in labels), labels


def test_enter_and_leave_mark_the_current_task() -> None:
    scope = {"type": "http", "path": "/raw/path", "headers": [(b"x-request-id", b"abc")]}

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        assert task_request(task) is None
        entered = enter(scope)
        assert task_request(task) == ("/raw/path", "abc")
        leave(entered)
        assert task_request(task) is None
        assert request_labels.CURRENT_REQUEST.get() is None
        assert request_labels._BY_TASK == {}

    asyncio.run(main())


@pytest.mark.parametrize(
    ("header", "kept"),
    [(b"plain-id", True), (b"0af7651916cd43dd8448eb211c80319c", True),
     (b"00-4bf92f3577b34da6-00f067aa0ba902b7-01", True), (b"a/b+c=d@e:f_g.h", True),
     (b"a\x1b[31mb\x00c", False), (b"x" * 129, False), (b"caf\xe9", False),
     (b"<script>", False), (b"a b", False), (b"", False)],
)
def test_a_sane_request_id_is_kept_and_any_other_replaced(header: bytes, kept: bool) -> None:
    """An id travels into labels, logs, URLs and HTML: one that is not plainly an id is
    replaced by a new one rather than cleaned up (a cleaned id matches nobody's)."""
    scope = {"type": "http", "path": "/", "headers": [(b"x-request-id", header)]}

    async def main() -> tuple[str, str] | None:
        entered = enter(scope)
        try:
            task = asyncio.current_task()
            assert task is not None
            return task_request(task)
        finally:
            leave(entered)

    found = asyncio.run(main())
    assert found is not None
    assert (found[1] == header.decode("latin-1")) is kept
    assert request_labels.valid_id(found[1])


def test_new_ids_are_unique_and_valid() -> None:
    ids = {request_labels.new_request_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(request_labels.valid_id(i) for i in ids)


def test_route_of_prefers_the_template_and_falls_back_to_the_path() -> None:
    class FakeRoute:
        path = "/orders/{order_id}"

    assert route_of({"path": "/orders/9", "route": FakeRoute()}) == "/orders/{order_id}"
    assert route_of({"path": "/orders/9"}) == "/orders/9"
    assert route_of({"path": "/x", "route": object()}) == "/x"
    assert route_of({}) == ""


def test_an_ended_request_keeps_only_its_route_and_request_id() -> None:
    """A long-lived task spawned by a request keeps the request's context for its whole life:
    the ended Request must not keep the scope (state, headers, body-sized values) with it."""
    big = bytearray(1_000_000)
    route = type("Route", (), {"path": "/items/{item_id}"})()
    scope = {"type": "http", "path": "/items/7", "route": route, "state": {"big": big},
             "headers": [(b"cookie", b"c" * 4000), (b"x-request-id", b"rid-1")]}

    async def main() -> None:
        forever = asyncio.Event()
        entered = enter(scope)
        spawned = asyncio.create_task(forever.wait())
        leave(entered)
        request = spawned.get_context().get(request_labels.CURRENT_REQUEST) \
            if sys.version_info >= (3, 12) else entered[1]
        assert request is entered[1] and not request.live
        assert request.scope is not scope and "state" not in request.scope
        assert all(name == b"x-request-id" for name, _ in request.scope["headers"])
        assert (request.route, request.request_id) == ("/items/{item_id}", "rid-1")
        spawned.cancel()


def test_enter_with_the_running_loop_marks_the_current_task_without_asking_asyncio() -> None:
    """The middleware passes the loop it has: the request's task is found from asyncio's own
    table (before 3.12), ``current_task()`` is not called per request, and leave() undoes it."""
    scope = {"type": "http", "path": "/p", "headers": [(b"x-request-id", b"id-1")]}

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        real = asyncio.current_task
        calls = 0

        def counting(loop: Any = None) -> Any:
            nonlocal calls
            calls += 1
            return real(loop)

        asyncio.current_task = counting  # type: ignore[assignment]
        try:
            entered = enter(scope, asyncio.get_running_loop())
        finally:
            asyncio.current_task = real
        assert calls == 0
        assert task_request(task) == ("/p", "id-1")
        leave(entered)
        assert task_request(task) is None
        assert request_labels.CURRENT_REQUEST.get() is None
        assert request_labels._BY_TASK == {}

    asyncio.run(main())


def test_a_raw_path_used_as_route_is_bounded() -> None:
    """With no template matched the route is the client's raw path: bounded, so that kept
    stalls, lock waits and labels cannot be made to hold megabytes per entry."""
    from pyprof_http.request_labels import route_of

    assert route_of({"path": "/x" * 10_000}) == ("/x" * 10_000)[:256]
    assert route_of({"path": "/short"}) == "/short"
