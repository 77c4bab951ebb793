"""pyprof_http.leaks: find / verify_none / check(), ignore rules, retries, the report.

Every leak a test makes here is released at its end (events set, pools shut down, tasks
cancelled), so the suite itself leaks nothing. Retries are shortened (``max_sleep``) where a
leak is expected, so the expected failure does not wait the whole default budget.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import re
import threading
import time

import pytest

from pyprof_http import leaks

FAST = {"retries": 5, "max_sleep": 0.001}


def start_parked_thread(event: threading.Event, name: str = "parked") -> threading.Thread:
    thread = threading.Thread(target=event.wait, name=name)
    thread.start()
    return thread


async def wait_forever(event: asyncio.Event) -> None:
    await event.wait()


def spawn_waiter(event: asyncio.Event) -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(wait_forever(event), name="waiter")


def test_check_reports_a_thread_started_in_the_block_with_where_it_was_started() -> None:
    event = threading.Event()
    try:
        with pytest.raises(leaks.LeakError) as caught, leaks.check(**FAST):
            start_parked_thread(event)
    finally:
        event.set()
    [leak] = caught.value.leaks
    assert (leak.kind, leak.name) == ("thread", "parked")
    assert leak.created_by.startswith("start_parked_thread at ")
    text = str(caught.value)
    assert re.search(r'thread \d+ native \d+ "parked" \[', text)
    assert "Event.wait" in text
    line = start_parked_thread.__code__.co_firstlineno + 2  # the thread.start() line
    assert f"started by start_parked_thread at {__file__}:{line}" in text
    assert "leak: non-daemon thread still running" in text


def test_threads_that_existed_before_the_block_are_not_leaks() -> None:
    event = threading.Event()
    thread = start_parked_thread(event, "older")
    try:
        with leaks.check(**FAST):
            pass
    finally:
        event.set()
        thread.join()


def test_a_thread_ending_within_the_retry_budget_is_not_reported() -> None:
    # a ~3 s budget against 20 ms of sleep: a loaded machine may delay the thread's exit by
    # far more than the sleep, not by seconds (on a failure, the report names the thread)
    with leaks.check(max_sleep=1.0):
        threading.Thread(target=time.sleep, args=(0.02,)).start()


def test_a_pool_not_shut_down_is_a_leak_and_one_shut_down_is_not() -> None:
    with pytest.raises(leaks.LeakError) as caught, leaks.check(**FAST):
        pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="unshut")
        pool.submit(int).result()
    pool.shutdown()
    [leak] = caught.value.leaks
    assert leak.name.startswith("unshut")
    assert "ThreadPoolExecutor that was not shut down" in leak.reason
    assert "test_a_pool_not_shut_down_is_a_leak" in leak.created_by  # not the stdlib's frames
    with leaks.check(), concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(int).result()


def test_a_pool_started_through_our_request_labelling_wrapper_names_the_caller() -> None:
    """An installed app wraps ThreadPoolExecutor.submit (thread-pool work carries its
    request's labels): the leak must still point at the code that submitted, not at us."""
    from pyprof_http.switches import Claims

    claims = Claims()
    claims.label_threads()
    try:
        with pytest.raises(leaks.LeakError) as caught, leaks.check(**FAST):
            pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="wrapped")
            pool.submit(int).result()
        pool.shutdown()
    finally:
        claims.release_all()
    [leak] = caught.value.leaks
    assert "test_a_pool_started_through_our_request_labelling" in leak.created_by


def test_find_without_a_baseline_sees_every_thread_but_the_runners() -> None:
    event = threading.Event()
    start_parked_thread(event, "stray")
    try:
        names = [leak.name for leak in leaks.find(**FAST)]
    finally:
        event.set()
    assert "stray" in names
    assert threading.current_thread().name not in names
    with pytest.raises(leaks.LeakError, match='"stray2"'):
        event2 = threading.Event()
        start_parked_thread(event2, "stray2")
        try:
            leaks.verify_none(**FAST)
        finally:
            event2.set()


def test_ignore_rules_each_silence_their_leak_and_only_it() -> None:
    event = threading.Event()
    rules = {
        "name": leaks.ignore_name("pa*ed"),
        "top": leaks.ignore_top_function("Condition.wait"),
        "any": leaks.ignore_any_function("threading.Event.wait"),
        "created_by": leaks.ignore_created_by("test_leaks.start_parked_thread"),
    }
    try:
        for rule in rules.values():
            with leaks.check(ignore=[rule], **FAST):
                start_parked_thread(event)
        with pytest.raises(leaks.LeakError), leaks.check(
                ignore=[leaks.ignore_name("other"), leaks.ignore_created_by("elsewhere")],
                **FAST):
            start_parked_thread(event)
    finally:
        event.set()


def test_a_block_that_raises_is_not_checked_and_switches_go_back() -> None:
    event = threading.Event()
    try:
        with pytest.raises(ZeroDivisionError), leaks.check(**FAST):
            start_parked_thread(event)
            1 / 0  # noqa: B018
    finally:
        event.set()


def test_sync_forms_refuse_to_sleep_a_running_loop() -> None:
    async def main() -> None:
        with pytest.raises(RuntimeError, match="async form"):
            leaks.find()
        with pytest.raises(RuntimeError, match="async form"), leaks.check():
            pass

    asyncio.run(main())


def test_async_check_reports_a_pending_task_with_its_creation_site() -> None:
    async def main() -> None:
        event = asyncio.Event()
        loop = asyncio.get_running_loop()
        with pytest.raises(leaks.LeakError) as caught:
            async with leaks.check(**FAST):
                task = spawn_waiter(event)
        assert loop.get_task_factory() is None  # the factory was claimed for the block only
        event.set()
        await task
        [leak] = caught.value.leaks
        assert leak.kind == "task"
        text = str(caught.value)
        assert re.search(r'task \d+ "waiter" \[awaiting Event.wait\]:', text)
        assert f'File "{__file__}", line {wait_forever.__code__.co_firstlineno + 1}' in text
        site = f"{__file__}:{spawn_waiter.__code__.co_firstlineno + 1}"
        assert f"created by spawn_waiter at {site} in task " in text
        assert leak.created_by == f"spawn_waiter at {site}"

    asyncio.run(main())


def test_async_check_lets_the_loop_finish_short_tasks_and_ignores_older_ones() -> None:
    async def main() -> None:
        older = spawn_waiter(asyncio.Event())
        async with leaks.check():
            asyncio.get_running_loop().create_task(asyncio.sleep(0.02))
            asyncio.get_running_loop().call_later(0.01, lambda: None)
        older.cancel()

    asyncio.run(main())


def test_the_default_executor_idle_is_reused_but_busy_is_a_leak() -> None:
    async def idle() -> None:  # a generous budget: the worker must get back to its queue
        async with leaks.check(max_sleep=1.0):
            await asyncio.get_running_loop().run_in_executor(None, int)

    release = threading.Event()

    async def busy() -> None:  # a fresh loop: its executor's thread is made in the block
        with pytest.raises(leaks.LeakError, match="default executor, still running"):
            async with leaks.check(**FAST):
                asyncio.get_running_loop().run_in_executor(None, release.wait)
        release.set()

    asyncio.run(idle())
    try:
        asyncio.run(busy())
    finally:
        release.set()


def test_a_pending_task_destroyed_by_the_collector_in_the_block_is_a_leak() -> None:
    async def orphan() -> None:
        await asyncio.get_running_loop().create_future()  # only this task refers to it

    def spawn_orphan() -> None:
        asyncio.get_running_loop().create_task(orphan(), name="orphan")

    async def main() -> None:
        with pytest.raises(leaks.LeakError) as caught:
            async with leaks.check(**FAST):
                spawn_orphan()
                await asyncio.sleep(0)  # it runs up to its await, then nothing holds it
                gc.collect()
        [leak] = caught.value.leaks
        assert (leak.kind, leak.name) == ("destroyed task", "orphan")
        assert "destroyed by the garbage collector while pending" in leak.text
        line = spawn_orphan.__code__.co_firstlineno + 1
        assert leak.created_by.endswith(f"spawn_orphan at {__file__}:{line}")  # 3.10: no qualname
        assert re.search(r", in (\S+\.)?orphan$", leak.text, re.M)  # its await chain

    asyncio.run(main())


def test_async_check_works_under_trio_for_threads() -> None:
    trio = pytest.importorskip("trio")
    event = threading.Event()

    async def main() -> None:
        with pytest.raises(leaks.LeakError, match='"under-trio"'):
            async with leaks.check(**FAST):
                start_parked_thread(event, "under-trio")

    try:
        trio.run(main)
    finally:
        event.set()


def test_hostile_task_names_are_escaped_in_the_report() -> None:
    hostile = "evil\x1b[31m\u2028<b>\"\udc80"

    async def main() -> None:
        with pytest.raises(leaks.LeakError) as caught:
            async with leaks.check(**FAST):
                task = asyncio.get_running_loop().create_task(
                    wait_forever(asyncio.Event()), name=hostile)
        task.cancel()
        text = str(caught.value)
        assert "\x1b" not in text and "\u2028" not in text and "\udc80" not in text
        assert caught.value.leaks[0].name == hostile  # the record keeps the real name

    asyncio.run(main())


def test_ten_thousand_leaked_tasks_are_counted_and_the_message_stays_bounded() -> None:
    async def main() -> None:
        event = asyncio.Event()
        with pytest.raises(leaks.LeakError) as caught:
            async with leaks.check(retries=1, max_sleep=0.001):
                tasks = [spawn_waiter(event) for _ in range(10_000)]
        event.set()
        await asyncio.gather(*tasks)
        assert len(caught.value.leaks) == 10_000
        assert "found 10000 leaks (10000 tasks)" in str(caught.value)
        assert str(caught.value).count('"waiter" [awaiting Event.wait]') == leaks.MAX_SHOWN
        assert f"... and {10_000 - leaks.MAX_SHOWN} more" in str(caught.value)

    asyncio.run(main())


def test_the_retry_schedule_is_goleaks() -> None:
    delays = list(leaks._delays(leaks.RETRIES, leaks.MAX_SLEEP))
    assert len(delays) == 20
    assert delays[:3] == [1e-6, 2e-6, 4e-6]
    assert delays[-4:] == [0.065536, 0.1, 0.1, 0.1]  # doubling, capped at 100 ms
    assert 0.42 < sum(delays) < 0.44


def test_a_baseline_task_the_collector_destroys_during_the_check_is_not_its_leak() -> None:
    """A task pending when the check began (an earlier test's, on a session-scoped loop) that
    only becomes garbage, and is destroyed, inside the block is not the block's leak; one
    made in the block still is."""
    async def orphan() -> None:
        await asyncio.get_running_loop().create_future()  # only this task refers to it

    async def main() -> None:
        loop = asyncio.get_running_loop()
        held = [loop.create_task(orphan(), name="earlier")]
        await asyncio.sleep(0)
        with pytest.raises(leaks.LeakError) as caught:
            async with leaks.check(**FAST):
                held.clear()  # garbage now: the collection below destroys it
                loop.create_task(orphan(), name="made-here")  # noqa: RUF006 (the leak)
                await asyncio.sleep(0)
                gc.collect()
        assert [leak.name for leak in caught.value.leaks] == ["made-here"]

    gc.disable()  # no automatic collection before the block's own
    try:
        asyncio.run(main())
    finally:
        gc.enable()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_idle_workers_of_anyio_and_trio_thread_pools_are_not_leaks(backend: str) -> None:
    """``anyio.to_thread`` leaves its workers idle in AnyIO's pool (asyncio) or trio's thread
    cache: both reuse them and stop them themselves (recognised on 3.10 too, whose frames
    have no class name)."""
    anyio = pytest.importorskip("anyio")
    pytest.importorskip(backend)
    # as many calls at once as trio may have cached idle threads, plus one: one is new
    calls = 1 + sum(t.name.startswith("Trio thread") for t in threading.enumerate())
    barrier = threading.Barrier(calls, timeout=30)
    before = set(threading.enumerate())

    async def main() -> set[threading.Thread]:
        async with leaks.check(**FAST), anyio.create_task_group() as tg:
            for _ in range(calls):
                tg.start_soon(anyio.to_thread.run_sync, barrier.wait)
        return set(threading.enumerate()) - before

    assert anyio.run(main, backend=backend)  # the check did see a new, idle worker
