"""Where a task came from, kept cheaply per task and worked out when a dump reads it.

A leaked task is only useful if its origin leads back to the request that caused it, also when
the task that spawned it has ended and when the chain of spawns left the request's context.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import sys
from typing import Any

import pytest

from pyprof_http import loops, request_labels
from pyprof_http.collectors import stacks
from pyprof_http.loops import ORIGINS, TaskOrigins
from pyprof_http.render.dump import render_dump

SCOPE = {"type": "http", "path": "/orders/7", "headers": [(b"x-request-id", b"rid-9")]}


async def parked(forever: asyncio.Event) -> None:
    await forever.wait()


def _spawn(coro: Any, name: str | None, fresh_context: bool = False) -> asyncio.Task[Any]:
    """A helper between the code that wants a task and create_task (the demo's leak shape)."""
    if fresh_context:  # a pool or framework that runs work in its own context
        return contextvars.Context().run(asyncio.create_task, coro, name=name)
    return asyncio.create_task(coro, name=name)


def two_hops(fresh_context: bool) -> tuple[TaskOrigin_, int]:
    """The request task spawns ``hop-1`` and ends; ``hop-1`` spawns ``hop-2``, which parks."""
    origins = TaskOrigins()
    kept: dict[str, Any] = {}

    async def hop1(forever: asyncio.Event) -> None:
        kept["hop2"] = _spawn(parked(forever), "hop-2", fresh_context)
        await asyncio.sleep(0)

    async def request_task(forever: asyncio.Event) -> None:
        entered = request_labels.enter(SCOPE)
        try:
            kept["hop1"] = _spawn(hop1(forever), "hop-1", fresh_context)
        finally:
            request_labels.leave(entered)

    async def main() -> TaskOrigin_:
        origins.install_factory(asyncio.get_running_loop())
        forever = asyncio.Event()
        await asyncio.create_task(request_task(forever), name="the-request")
        await kept["hop1"]  # the spawners have ended; hop-2 is parked
        gc.collect()
        origin = origins.origin(kept["hop2"])
        assert origin is not None
        forever.set()
        await kept["hop2"]
        return origin

    return asyncio.run(main()), len(origins)


TaskOrigin_ = loops.TaskOrigin


@pytest.mark.parametrize("fresh_context", [False, True])
def test_a_task_two_hops_from_a_request_leads_back_to_it(fresh_context: bool) -> None:
    """Through the context the request set, or, when a spawner ran in a context of its own,
    through the creating tasks' own origins (kept after they ended)."""
    origin, _ = two_hops(fresh_context)
    assert origin.parent == "hop-1"
    assert origin.site is not None and origin.site.function.endswith("_spawn")
    assert [f.function.rsplit(".", 1)[-1] for f in origin.stack[:2]] == ["_spawn", "hop1"]
    assert (origin.route, origin.request_id) == ("/orders/7", "rid-9")
    assert origin.created_by == "route /orders/7"
    up = origin.parent_origin  # hop-1's origin, though hop-1 has ended
    assert up is not None and up.parent == "the-request"
    assert [f.function.rsplit(".", 1)[-1] for f in up.stack[:2]] == ["_spawn", "request_task"]


def test_chains_are_bounded() -> None:
    """A task that spawns its successor forever keeps at most MAX_ORIGIN_HOPS origins."""
    origins = TaskOrigins()
    alive: list[asyncio.Task[None]] = []

    async def successor(n: int, done: asyncio.Future[TaskOrigin_ | None]) -> None:
        if n == 0:
            done.set_result(origins.origin(asyncio.current_task()))  # type: ignore[arg-type]
            return
        alive.append(asyncio.create_task(successor(n - 1, done)))

    async def main() -> TaskOrigin_ | None:
        origins.install_factory(asyncio.get_running_loop())
        done: asyncio.Future[TaskOrigin_ | None] = asyncio.get_running_loop().create_future()
        alive.append(asyncio.create_task(successor(50, done)))
        return await done

    origin = asyncio.run(main())
    hops = 0
    while origin is not None:
        origin, hops = origin.parent_origin, hops + 1
    assert hops <= loops.MAX_ORIGIN_HOPS + 1


def test_creating_a_task_resolves_no_frame_and_reads_no_request(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The factory keeps code objects and offsets; names, files and lines are worked out when
    a dump reads them, and the request's id only then (counted through the hooks)."""
    made: list[str] = []
    real = loops.frame
    monkeypatch.setattr(loops, "frame", lambda *a: made.append(a[0]) or real(*a))
    request_labels.RESOLVED.clear()
    origins = TaskOrigins()

    async def main() -> list[asyncio.Task[None]]:
        origins.install_factory(asyncio.get_running_loop())
        entered = request_labels.enter(SCOPE)
        try:
            tasks = [asyncio.create_task(asyncio.sleep(0)) for _ in range(50)]
            await asyncio.gather(*tasks)
        finally:
            request_labels.leave(entered)
        return tasks

    tasks = asyncio.run(main())
    assert made == [] and sum(request_labels.RESOLVED.values()) == 0
    origin = origins.origin(tasks[0])
    assert origin is not None and origin.site is not None and origin.request_id == "rid-9"
    assert made and request_labels.RESOLVED["request_id"] == 1


def test_goroutine_samples_carry_created_by_and_the_dump_shows_the_chain() -> None:
    """``go tool pprof -tagroot=created_by`` groups tasks by where their spawning began."""

    async def main() -> stacks.StackSnapshot:
        ORIGINS.install_factory(asyncio.get_running_loop())
        forever = asyncio.Event()
        leaks: list[asyncio.Task[None]] = []

        async def request_task() -> None:
            entered = request_labels.enter(SCOPE)
            try:
                leaks.extend(_spawn(parked(forever), None) for _ in range(3))
            finally:
                request_labels.leave(entered)

        try:
            await asyncio.create_task(request_task())
            snapshot = await stacks.collect()
            forever.set()
            await asyncio.gather(*leaks)
            return snapshot
        finally:
            ORIGINS.uninstall_factory(asyncio.get_running_loop())

    snapshot = asyncio.run(main())
    leaks = [s for s in snapshot.profile.samples if s.labels.get("created_by") == "route /orders/7"]
    assert len(leaks) == 1 and leaks[0].values == (3,)  # one stack, three tasks, one group
    dump = render_dump(snapshot).body.decode()
    assert dump.count('for request route "/orders/7" request_id "rid-9"') == 3


@pytest.mark.skipif(sys.version_info < (3, 11), reason="context= in create_task is 3.11+")
def test_explicit_context_keyword_still_reaches_the_task() -> None:
    origins = TaskOrigins()

    async def main() -> bool:
        origins.install_factory(asyncio.get_running_loop())
        task = asyncio.get_running_loop().create_task(
            asyncio.sleep(0), context=contextvars.Context())
        await task
        return origins.origin(task) is not None

    assert asyncio.run(main())
