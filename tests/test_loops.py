"""Loop registry and task origins (the chained task factory)."""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import time
import weakref

import pytest

from pyprof_http.loops import LOOPS, ORIGINS, LoopRegistry, TaskOrigins, code_name


def _run_in_thread(coro_fn, name: str = "other-loop-thread"):
    """Run ``asyncio.run(coro_fn())`` in a fresh thread and return its result."""
    box: dict = {}

    def target() -> None:
        try:
            box["result"] = asyncio.run(coro_fn())
        except BaseException as exc:  # pragma: no cover - surfaced below
            box["error"] = exc

    thread = threading.Thread(target=target, name=name)
    thread.start()
    thread.join(5)
    assert not thread.is_alive()
    if "error" in box:
        raise box["error"]
    return box["result"]


# --- LoopRegistry ---------------------------------------------------------------------------


def test_register_running_registers_once_with_its_thread() -> None:
    registry = LoopRegistry()

    async def main():
        loop = registry.register_running()
        assert loop is asyncio.get_running_loop()
        first = registry.running()
        assert registry.register_running() is loop
        second = registry.running()
        return first, second

    first, second = asyncio.run(main())
    assert len(first) == 1
    assert second == first  # the record was not replaced
    info = first[0]
    assert info.thread_ident == threading.get_ident()
    assert info.thread_name == threading.current_thread().name


def test_register_running_outside_a_loop_raises() -> None:
    with pytest.raises(RuntimeError):
        LoopRegistry().register_running()


def test_loops_on_two_threads_are_told_apart() -> None:
    registry = LoopRegistry()
    started = threading.Event()
    release = threading.Event()
    seen: dict = {}

    async def other() -> None:
        registry.register_running()
        seen["ident"] = threading.get_ident()
        started.set()
        while not release.is_set():
            await asyncio.sleep(0.005)

    thread = threading.Thread(target=lambda: asyncio.run(other()), name="second-loop")
    thread.start()
    try:
        assert started.wait(5)

        async def main():
            registry.register_running()
            return registry.running()

        infos = asyncio.run(main())
    finally:
        release.set()
        thread.join(5)
    by_name = {i.thread_name: i for i in infos}
    assert set(by_name) == {"second-loop", threading.current_thread().name}
    assert by_name["second-loop"].thread_ident == seen["ident"]
    assert by_name["second-loop"].loop is not by_name[threading.current_thread().name].loop


def test_running_drops_stopped_loops() -> None:
    registry = LoopRegistry()

    async def main():
        registry.register_running()
        return len(registry.running())

    assert asyncio.run(main()) == 1
    assert registry.running() == []  # asyncio.run stopped and closed it


def test_stopped_but_not_closed_loop_is_dropped() -> None:
    registry = LoopRegistry()
    loop = asyncio.new_event_loop()
    try:
        async def main():
            registry.register_running()

        loop.run_until_complete(main())
        assert not loop.is_closed()
        assert registry.running() == []
    finally:
        loop.close()


def test_loops_are_held_weakly() -> None:
    registry = LoopRegistry()

    async def main():
        registry.register_running()

    loop = asyncio.new_event_loop()
    loop.run_until_complete(main())
    loop.close()
    ref = weakref.ref(loop)
    del loop
    gc.collect()
    assert ref() is None
    assert len(registry._loops) == 0


# --- TaskOrigins: the factory ---------------------------------------------------------------


async def _idle() -> None:
    await asyncio.sleep(0)


def test_factory_records_creation_site_parent_and_age() -> None:
    origins = TaskOrigins()

    async def main():
        asyncio.current_task().set_name("the-parent")
        origins.install_factory(asyncio.get_running_loop())
        before = time.monotonic()
        line = sys._getframe().f_lineno + 1
        task = asyncio.create_task(_idle(), name="kid")
        after = time.monotonic()
        origin = origins.origin(task)
        await task
        return origin, line, before, after, task.get_name()

    origin, line, before, after, name = asyncio.run(main())
    assert name == "kid"
    assert origin is not None
    assert origin.site is not None
    assert origin.site.filename == __file__  # the test, not asyncio
    assert origin.site.line == line
    assert origin.site.function.split(".")[-1] == "main"
    if sys.version_info >= (3, 11):
        assert origin.site.function == (
            "test_factory_records_creation_site_parent_and_age.<locals>.main"
        )
    assert origin.parent == "the-parent"
    assert before <= origin.created_at <= after


def test_factory_site_for_loop_create_task_and_ensure_future() -> None:
    origins = TaskOrigins()

    async def main():
        loop = asyncio.get_running_loop()
        origins.install_factory(loop)
        line1 = sys._getframe().f_lineno + 1
        t1 = loop.create_task(_idle())
        line2 = sys._getframe().f_lineno + 1
        t2 = asyncio.ensure_future(_idle())
        await asyncio.gather(t1, t2)
        return [(origins.origin(t).site.filename, origins.origin(t).site.line)
                for t in (t1, t2)], (line1, line2)

    sites, lines = asyncio.run(main())
    assert sites == [(__file__, lines[0]), (__file__, lines[1])]


def test_task_created_outside_any_task_has_no_parent() -> None:
    origins = TaskOrigins()

    async def main():
        loop = asyncio.get_running_loop()
        origins.install_factory(loop)
        made: list = []
        done = loop.create_future()

        def callback() -> None:  # runs as a plain callback: no current task
            made.append(loop.create_task(_idle()))
            done.set_result(None)

        loop.call_soon(callback)
        await done
        await made[0]
        return origins.origin(made[0])

    origin = asyncio.run(main())
    assert origin is not None
    assert origin.parent is None
    assert origin.site is not None and origin.site.function.endswith("callback")


def test_task_created_by_a_callback_during_a_request_keeps_the_request() -> None:
    """The factory's short path (no running task: a server's per-request task is made from
    a protocol callback) still records the request of the callback's context."""
    from pyprof_http import request_labels

    origins = TaskOrigins()

    async def main():
        loop = asyncio.get_running_loop()
        origins.install_factory(loop)
        made: list = []
        done = loop.create_future()

        def callback() -> None:
            made.append(loop.create_task(_idle()))
            done.set_result(None)

        entered = request_labels.enter({"type": "http", "path": "/from/callback"})
        loop.call_soon(callback)  # copies the context: the request, and no current task
        await done
        await made[0]
        request_labels.leave(entered)
        return origins.origin(made[0])

    origin = asyncio.run(main())
    assert origin is not None and origin.parent is None
    assert origin.route == "/from/callback"
    assert origin.created_by == "route /from/callback"


def test_task_created_before_the_factory_has_no_origin() -> None:
    origins = TaskOrigins()

    async def main():
        early = asyncio.create_task(_idle())
        origins.install_factory(asyncio.get_running_loop())
        late = asyncio.create_task(_idle())
        await asyncio.gather(early, late)
        return origins.origin(early), origins.origin(late)

    early, late = asyncio.run(main())
    assert early is None
    assert late is not None


def test_factory_chains_to_existing_factory_and_uninstall_restores_it() -> None:
    origins = TaskOrigins()
    calls: list[str] = []

    def previous(loop, coro, **kwargs):
        calls.append(getattr(coro, "__qualname__", "?"))
        task = asyncio.Task(coro, loop=loop, **kwargs)
        task.made_by_previous = True  # type: ignore[attr-defined]
        return task

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_task_factory(previous)
        origins.install_factory(loop)
        ours = loop.get_task_factory()
        assert ours is not previous
        task = asyncio.create_task(_idle(), name="chained")
        await task
        recorded = origins.origin(task) is not None
        calls_before_uninstall = list(calls)
        origins.uninstall_factory(loop)
        restored = loop.get_task_factory()
        after = asyncio.create_task(_idle())
        await after
        return task, recorded, restored, origins.origin(after), calls_before_uninstall

    task, recorded, restored, after_origin, made = asyncio.run(main())
    assert made == ["_idle"]  # the previous factory made the task, through ours
    assert calls[1] == "_idle"  # and still makes tasks after ours is gone
    assert getattr(task, "made_by_previous", False)
    assert task.get_name() == "chained"
    assert recorded
    assert restored is previous
    assert after_origin is None  # after uninstall nothing is recorded


def test_uninstall_without_previous_restores_none() -> None:
    origins = TaskOrigins()

    async def main():
        loop = asyncio.get_running_loop()
        origins.install_factory(loop)
        assert loop.get_task_factory() is not None
        origins.uninstall_factory(loop)
        return loop.get_task_factory()

    assert asyncio.run(main()) is None


def test_uninstall_leaves_a_foreign_factory_alone() -> None:
    def foreign(loop, coro, **kwargs):
        return asyncio.Task(coro, loop=loop, **kwargs)

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_task_factory(foreign)
        TaskOrigins.uninstall_factory(loop)
        return loop.get_task_factory()

    assert asyncio.run(main()) is foreign


def test_installing_twice_does_not_double_wrap() -> None:
    origins = TaskOrigins()
    calls: list[int] = []

    def previous(loop, coro, **kwargs):
        calls.append(1)
        return asyncio.Task(coro, loop=loop, **kwargs)

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_task_factory(previous)
        origins.install_factory(loop)
        first = loop.get_task_factory()
        origins.install_factory(loop)
        ORIGINS.install_factory(loop)  # another TaskOrigins instance does not wrap either
        second = loop.get_task_factory()
        await asyncio.create_task(_idle())
        made = len(calls)
        origins.uninstall_factory(loop)
        return first, second, loop.get_task_factory(), made

    first, second, restored, made = asyncio.run(main())
    assert second is first
    assert first._pyprof_previous is previous
    assert made == 1  # one task, one call of the previous factory
    assert restored is previous  # one uninstall undoes the single install


# --- TaskOrigins: ids and lifetime ----------------------------------------------------------


def test_task_ids_are_stable_and_unique() -> None:
    origins = TaskOrigins()

    async def main():
        origins.install_factory(asyncio.get_running_loop())
        tasks = [asyncio.create_task(_idle()) for _ in range(20)]
        ids = [origins.task_id(t) for t in tasks]
        t0 = tasks[0]
        t0.set_name("renamed")
        again = [origins.task_id(t) for t in tasks]
        await asyncio.gather(*tasks)
        current = asyncio.current_task()  # not made by the factory: gets an id lazily
        lazy = origins.task_id(current)
        return ids, again, lazy, origins.task_id(current)

    ids, again, lazy, lazy_again = asyncio.run(main())
    assert ids == again
    assert len(set(ids)) == 20
    assert all(isinstance(i, int) and i > 0 for i in ids)
    assert lazy == lazy_again
    assert lazy not in ids


def test_entries_vanish_when_tasks_are_gone() -> None:
    origins = TaskOrigins()
    refs: list[weakref.ref] = []

    async def main():
        origins.install_factory(asyncio.get_running_loop())
        tasks = [asyncio.create_task(_idle()) for _ in range(5)]
        await asyncio.gather(*tasks)
        refs.extend(weakref.ref(t) for t in tasks)
        assert len(origins) == 5

    asyncio.run(main())
    gc.collect()
    assert all(r() is None for r in refs)  # origins does not keep tasks alive
    assert len(origins) == 0


def test_code_name_is_qualified_where_python_has_it() -> None:
    class Holder:
        def method(self):
            return code_name(sys._getframe())

    name = Holder().method()
    if sys.version_info >= (3, 11):
        assert name.endswith("Holder.method")
    else:
        assert name == "method"


def test_the_310_name_table_keeps_its_code_and_checks_identity() -> None:
    """Keyed by id(code): each entry keeps its code alive (so a reload cannot free it and hand
    its id to new code) and a lookup confirms identity before giving the stdlib name."""
    import asyncio.locks

    from pyprof_http import loops

    table = loops._qualnames()
    assert table and all(id(code) == key for key, (code, _) in table.items())
    wait = asyncio.locks.Event.wait.__code__
    assert table[id(wait)] == (wait, "Event.wait")
    impostor = compile("def wait():\n    pass\n", "<x>", "exec").co_consts[0]
    saved = table.get(id(impostor))
    table[id(impostor)] = (wait, "Event.wait")  # an entry whose code is not this one
    try:
        assert loops.code_name_of(impostor) == "wait"
    finally:
        if saved is None:
            del table[id(impostor)]
        else:
            table[id(impostor)] = saved


def test_module_singletons_exist() -> None:
    assert isinstance(LOOPS, LoopRegistry)
    assert isinstance(ORIGINS, TaskOrigins)
