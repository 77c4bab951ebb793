"""The asyncio half: existing and new asyncio locks, semaphores and conditions are timed when
they contend, with task and route labels; semantics are unchanged."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest
from lock_helpers import (
    ASYNC_ORIGINALS,
    samples_with,
    switched_off_after,  # noqa: F401 (autouse fixture)
)

from pyprof_http import request_labels
from pyprof_http.collectors import locks

# --- asyncio -----------------------------------------------------------------------------------


async def async_lock_waiter(lock: asyncio.Lock) -> None:
    async with lock:
        pass


async def async_semaphore_waiter(sem: asyncio.Semaphore) -> None:
    async with sem:
        pass


HOLD = 0.03
"""How long the holder keeps the lock once every waiter waits for it: the least each waits."""


async def async_holder(primitive: Any, release: asyncio.Event) -> None:
    async with primitive:
        await release.wait()


async def contend(primitive: Any, waiter: Callable[[Any], Any], names: list[str]) -> None:
    """Each waiter contends, whatever the timing: the loop runs every ready task in order, so a
    few turns of the loop after creating them all have tried the lock the holder keeps."""
    release = asyncio.Event()
    holder = asyncio.create_task(async_holder(primitive, release), name="holder")
    await asyncio.sleep(0)
    waiters = [asyncio.create_task(waiter(primitive), name=n) for n in names]
    for _ in range(3):
        await asyncio.sleep(0)
    await asyncio.sleep(HOLD)
    release.set()
    await asyncio.gather(holder, *waiters)


def test_asyncio_lock_and_semaphore_contention_with_task_labels():
    async def main() -> None:
        locks.set_fraction(1)
        lock = asyncio.Lock()
        site_line = sys._getframe().f_lineno - 1
        sem = asyncio.BoundedSemaphore(1)
        await contend(lock, async_lock_waiter, ["lock-a", "lock-b"])
        await contend(sem, async_semaphore_waiter, ["sem-a"])
        async with lock:  # uncontended: not recorded
            pass
        profile = locks.snapshot(64)
        lock_samples = samples_with(profile, "async_lock_waiter")
        assert {s.labels["task"] for s in lock_samples} == {"lock-a", "lock-b"}
        assert all(s.stack[0] == locks.LEAF_ASYNC_LOCK for s in lock_samples)
        assert {s.labels["lock"] for s in lock_samples} == {
            f"test_asyncio_lock_and_semaphore_contention_with_task_labels.<locals>.main "
            f"{__file__}:{site_line}" if sys.version_info >= (3, 11) else
            f"main {__file__}:{site_line}"
        }
        assert all(s.labels["thread"] == threading.current_thread().name for s in lock_samples)
        assert sum(s.values[0] for s in lock_samples) == 2
        assert min(s.values[1] for s in lock_samples) >= HOLD * 1e9
        sem_samples = samples_with(profile, "async_semaphore_waiter")
        assert [s.labels["task"] for s in sem_samples] == ["sem-a"]
        assert sem_samples[0].stack[0] == locks.LEAF_ASYNC_SEMAPHORE
        assert not samples_with(profile, "async_holder")

    asyncio.run(main())


def test_asyncio_locks_created_before_switching_on_count():
    async def main() -> None:
        lock, sem, cond = asyncio.Lock(), asyncio.Semaphore(1), asyncio.Condition()
        locks.set_fraction(1)
        await contend(lock, async_lock_waiter, ["old-lock"])
        await contend(sem, async_semaphore_waiter, ["old-sem"])
        await contend(cond, async_lock_waiter, ["old-cond"])
        profile = locks.snapshot(64)
        by_task = {s.labels["task"]: s for s in profile.samples}
        assert set(by_task) == {"old-lock", "old-sem", "old-cond"}
        assert all(s.labels["lock"] == "unknown" for s in profile.samples)
        assert by_task["old-cond"].stack[0] == locks.LEAF_ASYNC_LOCK
        locks.set_fraction(0)
        assert "acquire" not in vars(asyncio.Condition)
        assert cond.acquire.__func__ is ASYNC_ORIGINALS[(asyncio.Lock, "acquire")]
        await contend(cond, async_lock_waiter, ["after-off"])
        assert locks.snapshot(64).samples == profile.samples

    asyncio.run(main())


def test_asyncio_condition_wait_reacquisition_is_recorded():
    async def main() -> None:
        locks.set_fraction(1)
        cond = asyncio.Condition()

        async def cond_waiter() -> None:
            async with cond:
                await cond.wait()

        task = asyncio.create_task(cond_waiter(), name="cond-waiter")
        for _ in range(3):
            await asyncio.sleep(0)  # the waiter reaches cond.wait()
        async with cond:
            cond.notify()
            for _ in range(3):
                await asyncio.sleep(0)  # woken, it must wait for the lock we hold
            await asyncio.sleep(HOLD)
        await task
        samples = samples_with(locks.snapshot(64), "cond_waiter")
        assert [s.labels["task"] for s in samples] == ["cond-waiter"]
        assert samples[0].values[1] >= HOLD * 1e9

    asyncio.run(main())


def test_asyncio_cancelled_waiter_propagates_and_records_nothing():
    async def main() -> None:
        locks.set_fraction(1)
        lock = asyncio.Lock()
        await lock.acquire()
        waiter = asyncio.create_task(async_lock_waiter(lock), name="cancelled")
        for _ in range(3):
            await asyncio.sleep(0)  # the waiter waits for the lock
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        lock.release()
        assert not lock.locked()
        assert await asyncio.wait_for(lock.acquire(), 1) is True
        lock.release()
        assert locks.snapshot(64).samples == ()

    asyncio.run(main())


def test_asyncio_semantics_are_unchanged_while_on():
    async def main() -> None:
        locks.set_fraction(1)
        lock, sem = asyncio.Lock(), asyncio.BoundedSemaphore(2)
        assert await lock.acquire() is True
        assert lock.locked()
        with pytest.raises(RuntimeError, match="Lock is not acquired"):
            asyncio.Lock().release()
        lock.release()
        assert await sem.acquire() is True and await sem.acquire() is True
        assert sem.locked()
        sem.release()
        sem.release()
        with pytest.raises(ValueError):
            sem.release()
        cond = asyncio.Condition(lock)
        async with cond:
            assert cond.locked()
        assert await asyncio.wait_for(cond.acquire(), 1) is True
        cond.release()

    asyncio.run(main())


def test_default_task_names_fold_and_route_is_labelled():
    async def main() -> None:
        locks.set_fraction(1)
        lock = asyncio.Lock()

        async def in_request() -> None:
            entered = request_labels.enter({"type": "http", "path": "/items/{id}",
                                            "headers": [(b"x-request-id", b"abc")]})
            try:
                await async_lock_waiter(lock)
            finally:
                request_labels.leave(entered)

        release = asyncio.Event()
        holder = asyncio.create_task(async_holder(lock, release))
        await asyncio.sleep(0)
        waiters = [asyncio.create_task(in_request()), asyncio.create_task(async_lock_waiter(lock))]
        for _ in range(3):
            await asyncio.sleep(0)
        release.set()
        await asyncio.gather(holder, *waiters)
        samples = samples_with(locks.snapshot(64), "async_lock_waiter")
        assert {s.labels["task"] for s in samples} == {"Task-N"}
        routes = sorted(str(s.labels.get("route")) for s in samples)
        assert routes == ["/items/{id}", "None"]
        assert all("request_id" not in s.labels for s in samples)

    asyncio.run(main())



def test_on_again_after_another_wrapper_was_left_in_place_asyncio() -> None:
    locks.set_fraction(1)
    ours = asyncio.Lock.acquire

    def theirs(self: asyncio.Lock):  # type: ignore[no-untyped-def]
        return ours(self)

    asyncio.Lock.acquire = theirs  # type: ignore[method-assign]
    try:
        locks.set_fraction(0)
        assert asyncio.Lock.__dict__["acquire"] is theirs
        locks.set_fraction(1)

        async def main() -> None:
            lock = asyncio.Lock()
            async with lock:
                assert lock.locked()

        asyncio.run(main())
    finally:
        locks.set_fraction(0)
        asyncio.Lock.acquire = ASYNC_ORIGINALS[(asyncio.Lock, "acquire")]  # type: ignore[method-assign]



# --- what an ``async with`` waiter is shown waiting on ------------------------------------------


def test_async_with_waiters_are_shown_waiting_on_the_lock_not_the_mixin():
    """``async with lock`` goes through ``_ContextManagerMixin.__aenter__``: the goroutine dump
    and the mutex profile name ``Lock.acquire`` (``Semaphore.acquire``), the mixin nowhere."""
    from pyprof_http.collectors import stacks
    from pyprof_http.loops import LOOPS

    async def main(profiled: bool) -> tuple[dict[str, str | None], set[str]]:
        LOOPS.register_running()
        if profiled:
            locks.set_fraction(1)
        lock, sem = asyncio.Lock(), asyncio.Semaphore(1)
        await lock.acquire()
        await sem.acquire()
        waiters = [asyncio.create_task(async_lock_waiter(lock), name="lock-waiter"),
                   asyncio.create_task(async_semaphore_waiter(sem), name="sem-waiter")]
        for _ in range(3):
            await asyncio.sleep(0)
        snapshot = await stacks.collect(64)
        lock.release()
        sem.release()
        await asyncio.gather(*waiters)
        waiting = {t.name: t.waiting_on for t in snapshot.tasks if t.name.endswith("-waiter")}
        functions = {f.function for s in locks.snapshot(64).samples for f in s.stack}
        locks.set_fraction(0)
        return waiting, functions

    for profiled in (False, True):
        waiting, functions = asyncio.run(main(profiled))
        assert waiting == {"lock-waiter": "Lock.acquire", "sem-waiter": "Semaphore.acquire"}, (
            profiled, waiting)
        assert not any("__aenter__" in f for f in functions), functions
    assert {"asyncio.Lock.acquire", "asyncio.Semaphore.acquire"} <= functions
