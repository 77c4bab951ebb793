"""Where a task came from, kept cheaply per task and worked out when a dump reads it.

A leaked task is only useful if its origin leads back to the request that caused it, also when
the task that spawned it has ended and when the chain of spawns left the request's context.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import sys
import time
from typing import Any

import pytest

from pyprof_http import loops, request_labels
from pyprof_http.bounded import CodeTable
from pyprof_http.collectors import stacks
from pyprof_http.loops import ORIGINS, TaskOrigins
from pyprof_http.render.dump import render_dump

SCOPE = {"type": "http", "path": "/orders/7", "headers": [(b"x-request-id", b"rid-9")]}


@pytest.fixture(autouse=True, params=["C factory", "Python factory"])
def factory_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs with both factories: the C one (built by ``pip install``) and the
    Python one it stands in for where no compiler was found; they must keep the same records."""
    if request.param == "Python factory":
        monkeypatch.setattr(loops, "_FAST", None)
    return str(request.param)


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
    monkeypatch.setattr(loops, "_FRAME_TABLE", CodeTable(max_entries=64))  # nothing cached
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


def test_the_c_factory_was_built_and_is_the_one_installed(factory_kind: str) -> None:
    """``pip install`` builds it wherever the heap sampler builds: a silent fallback to the
    Python factory would put ~12,000 instructions back on every task."""

    async def main() -> Any:
        TaskOrigins().install_factory(asyncio.get_running_loop())
        return asyncio.get_running_loop().get_task_factory()

    factory = asyncio.run(main())
    assert factory._pyprof_http is True and factory._pyprof_previous is None
    expected = "pyprof_http._taskfactory" if factory_kind == "C factory" else loops.__name__
    assert type(factory).__module__ == expected or factory.__module__ == expected


def _records_of_a_known_shape() -> list[tuple[Any, ...]]:
    """What the factory keeps for: a task made from a callback, a task made in a request by
    that task, and a grandchild; the raw tuples with the frames as (function, offset)."""
    origins = TaskOrigins()
    made: dict[str, asyncio.Task[Any]] = {}

    async def grandchild() -> None:
        await asyncio.sleep(0)

    async def child() -> None:
        made["grandchild"] = asyncio.create_task(grandchild(), name="g")
        await made["grandchild"]

    async def top() -> None:
        entered = request_labels.enter(SCOPE)
        try:
            made["child"] = asyncio.create_task(child(), name="c")
            await made["child"]
        finally:
            request_labels.leave(entered)

    async def main() -> list[tuple[Any, ...]]:
        loop = asyncio.get_running_loop()
        origins.install_factory(loop)
        started = loop.create_future()
        loop.call_soon(lambda: started.set_result(loop.create_task(top(), name="t")))
        made["top"] = await started
        await made["top"]
        out = []
        for name in ("top", "child", "grandchild"):
            record = origins._records[id(made[name])]
            assert record[0]() is made[name] and isinstance(record[1], int)
            created, frames, parent, parent_name, request, hops = record[2]
            assert isinstance(created, float) and abs(created - time.monotonic()) < 60
            pairs = tuple((frames[i].co_name, type(frames[i + 1]))
                          for i in range(0, len(frames), 2))
            out.append((pairs[:3], parent is not None and parent[2] is not None, parent_name,
                        request is not None, hops, len(frames) // 2))
        return out

    return asyncio.run(main())


def test_both_factories_keep_the_same_records(monkeypatch: pytest.MonkeyPatch) -> None:
    """Field by field, on the three shapes of creation (from a callback, from a task, two hops
    down), the C factory keeps what the Python one keeps."""
    c_records = _records_of_a_known_shape()
    monkeypatch.setattr(loops, "_FAST", None)
    python_records = _records_of_a_known_shape()
    assert c_records == python_records
    top, child, grandchild = c_records
    assert top[1:5] == (False, None, False, 0)  # from a callback: no parent, no request
    assert child[1:5] == (True, "t", True, 1) and grandchild[1:5] == (True, "c", True, 2)
    assert "top" in [name for name, _ in child[0]]  # the creating frames, asyncio's first


def test_a_factory_set_before_is_called_first_with_every_argument() -> None:
    """Chained in front: the app's own factory still makes the task, with the keywords asyncio
    passed (name, context), and gets its factory back when ours is taken off."""
    made: list[asyncio.Task[Any]] = []

    def apps_factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
        made.append(asyncio.Task(coro, loop=loop, **kwargs))
        return made[-1]

    origins = TaskOrigins()

    async def main() -> tuple[str, bool, Any]:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(apps_factory)
        origins.install_factory(loop)
        origins.install_factory(loop)  # once only
        task = loop.create_task(asyncio.sleep(0), name="named")
        await task
        recorded = origins.origin(task) is not None and made == [task]
        TaskOrigins.uninstall_factory(loop)
        after = loop.get_task_factory()
        loop.set_task_factory(None)
        return task.get_name(), recorded, after

    name, recorded, after = asyncio.run(main())
    assert name == "named" and recorded and after is apps_factory


def test_an_error_making_the_task_reaches_the_caller_and_records_nothing() -> None:
    origins = TaskOrigins()

    def refusing(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
        coro.close()
        raise RuntimeError("no tasks today")

    async def main() -> int:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(refusing)
        origins.install_factory(loop)
        with pytest.raises(RuntimeError, match="no tasks today"):
            made = loop.create_task(asyncio.sleep(0))
            made.cancel()  # not reached
        TaskOrigins.uninstall_factory(loop)
        loop.set_task_factory(None)
        return len(origins)

    assert asyncio.run(main()) == 0


def test_records_of_ended_tasks_are_swept() -> None:
    """10,000 short tasks, 1,000 alive at a time, leave a table bounded by the live ones (a
    sweep when it has doubled since the last), not 10,000 records."""
    origins = TaskOrigins()

    async def main() -> int:
        origins.install_factory(asyncio.get_running_loop())
        for _ in range(10):
            await asyncio.gather(*[asyncio.create_task(asyncio.sleep(0)) for _ in range(1000)])
        return len(origins._records)

    assert asyncio.run(main()) < 4 * 1000
