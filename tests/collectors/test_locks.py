"""The lock-contention collector: wrapped locks behave exactly like raw ones, contention is
recorded with the waiter's stack and labels, and switching off puts everything back.

The semantic tests run the same assertions against a raw lock, a wrapped lock with profiling on
and a wrapped lock after profiling was switched off again, for both Lock and RLock; expected
exceptions are read from a raw lock at run time (messages differ between Python versions).
"""

from __future__ import annotations

import _thread
import asyncio
import copy
import os
import pickle
import queue
import re
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest

import pprof_schema
from pyprof_http import request_labels
from pyprof_http.collectors import locks
from pyprof_http.model import Profile, Sample, subtract
from pyprof_http.pprof.encode import render_pprof

ORIGINAL_LOCK = threading.Lock
ORIGINAL_RLOCK = threading.RLock
ASYNC_ORIGINALS = {
    (cls, name): cls.__dict__[name]
    for cls in (asyncio.Lock, asyncio.Semaphore)
    for name in ("acquire", "__init__")
}
HOLD = 0.2
"""How long a holder keeps a contended lock in the contention tests (seconds)."""


def assert_nothing_patched() -> None:
    assert threading.Lock is ORIGINAL_LOCK
    assert threading.RLock is ORIGINAL_RLOCK
    assert ORIGINAL_LOCK in (_thread.allocate_lock, _thread.LockType)
    for (cls, name), original in ASYNC_ORIGINALS.items():
        assert cls.__dict__[name] is original
    assert "acquire" not in asyncio.Condition.__dict__
    assert "acquire" not in asyncio.BoundedSemaphore.__dict__


@pytest.fixture(autouse=True)
def _switched_off_after() -> Iterator[None]:
    assert locks.fraction() == 0
    assert_nothing_patched()
    yield
    locks.set_fraction(0)
    locks.reset()
    assert_nothing_patched()


# --- lock kinds for the semantic suite ---------------------------------------------------------

KINDS = ["raw", "profiled", "profiled-then-off"]


def make_lock(kind: str, rlock: bool) -> Any:
    if kind == "raw":
        return ORIGINAL_RLOCK() if rlock else ORIGINAL_LOCK()
    locks.set_fraction(1)
    lock = threading.RLock() if rlock else threading.Lock()
    assert type(lock) is (locks.ProfiledRLock if rlock else locks.ProfiledLock)
    if kind == "profiled-then-off":
        locks.set_fraction(0)
    return lock


@pytest.fixture(params=[(k, r) for r in (False, True) for k in KINDS],
                ids=[f"{'RLock' if r else 'Lock'}-{k}" for r in (False, True) for k in KINDS])
def lock_case(request: pytest.FixtureRequest) -> tuple[Any, bool]:
    kind, rlock = request.param
    return make_lock(kind, rlock), rlock


@pytest.fixture(params=KINDS)
def plain_lock(request: pytest.FixtureRequest) -> Any:
    return make_lock(request.param, rlock=False)


@pytest.fixture(params=KINDS)
def rlock(request: pytest.FixtureRequest) -> Any:
    return make_lock(request.param, rlock=True)


def outcome(call: Callable[[], object]) -> tuple[str, str]:
    try:
        return "ok", repr(call())
    except Exception as exc:
        return type(exc).__name__, str(exc)


@contextmanager
def held_elsewhere(lock: Any) -> Iterator[None]:
    """``lock`` held by another thread for the duration of the block."""
    taken, done = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            taken.set()
            done.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    assert taken.wait(5)
    try:
        yield
    finally:
        done.set()
        thread.join(5)


# --- semantics: wrapped == raw -----------------------------------------------------------------


def test_acquire_release_and_context_manager(lock_case):
    lock, _ = lock_case
    assert lock.acquire() is True
    lock.release()
    assert lock.acquire(True) is True
    lock.release()
    assert lock.acquire(blocking=True, timeout=1.5) is True
    lock.release()
    with lock as entered:
        assert entered is True
    with pytest.raises(KeyError), lock:
        raise KeyError("body")
    assert lock.acquire(False) is True  # released by the failing with-block
    lock.release()


def test_non_blocking_and_timeouts_against_another_holder(lock_case):
    lock, _ = lock_case
    with held_elsewhere(lock):
        assert lock.acquire(False) is False
        assert lock.acquire(blocking=False) is False
        assert lock.acquire(True, 0) is False
        assert lock.acquire(1, 0.01) is False  # truthy, not True: the explicit-arguments path
        start = time.monotonic()
        assert lock.acquire(timeout=0.1) is False
        assert 0.09 <= time.monotonic() - start < 2
    assert lock.acquire(timeout=5) is True
    lock.release()
    assert lock.acquire(1) is True
    lock.release()


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((False, 1), {}), ((True, -2), {}), ((True, -1.5), {}), ((True, "x"), {}),
     ((True, None), {}), ((True, 1e300), {}), ((), {"timeout": -0.5}),
     ((), {"blocking": False, "timeout": 0.5}), ((), {"bogus": 1})],
)
def test_bad_arguments_raise_like_the_raw_lock(lock_case, args, kwargs):
    lock, rlock = lock_case
    raw = ORIGINAL_RLOCK() if rlock else ORIGINAL_LOCK()
    expected = outcome(lambda: raw.acquire(*args, **kwargs))
    assert expected[0] in ("ValueError", "TypeError", "OverflowError")
    got = outcome(lambda: lock.acquire(*args, **kwargs))
    if "bogus" in kwargs:  # Python's own argument error names the function: only the type
        assert got[0] == expected[0]
    else:
        assert got == expected
    assert lock.acquire(False) is True  # nothing left held
    lock.release()


def test_bad_release_raises_like_the_raw_lock(lock_case):
    lock, rlock = lock_case
    raw = ORIGINAL_RLOCK() if rlock else ORIGINAL_LOCK()
    assert outcome(lock.release) == outcome(raw.release)
    assert outcome(lock.release)[0] == "RuntimeError"


def test_locked_exists_where_the_raw_lock_has_it(lock_case):
    lock, rlock = lock_case
    raw = ORIGINAL_RLOCK() if rlock else ORIGINAL_LOCK()
    assert hasattr(lock, "locked") == hasattr(raw, "locked")
    if hasattr(raw, "locked"):
        assert lock.locked() is False
        with lock:
            assert lock.locked() is True
    for name in ("_is_owned", "_release_save", "_acquire_restore", "_recursion_count",
                 "acquire_lock", "release_lock", "locked_lock", "_at_fork_reinit"):
        assert hasattr(lock, name) == hasattr(raw, name), name


def test_lock_can_be_released_by_another_thread(plain_lock):
    plain_lock.acquire()
    errors: list[BaseException] = []

    def release() -> None:
        try:
            plain_lock.release()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=release)
    thread.start()
    thread.join(5)
    assert errors == []
    assert plain_lock.acquire(False) is True
    plain_lock.release()


def test_rlock_reentrancy_and_owner_rules(rlock):
    raw = ORIGINAL_RLOCK()
    for _ in range(3):
        assert rlock.acquire() is True
    assert rlock._is_owned() is True
    if hasattr(raw, "_recursion_count"):
        assert rlock._recursion_count() == 3
    results: list[tuple[str, str]] = []
    thread = threading.Thread(target=lambda: results.extend(
        [outcome(rlock.release), outcome(lambda: rlock.acquire(False))]))
    thread.start()
    thread.join(5)
    raw.acquire()
    other_release = []
    probe = threading.Thread(target=lambda: other_release.append(outcome(raw.release)))
    probe.start()
    probe.join(5)
    raw.release()
    assert results == [other_release[0], ("ok", "False")]
    for _ in range(3):
        rlock.release()
    assert rlock._is_owned() is False
    assert outcome(rlock.release) == outcome(raw.release)


def test_condition_wait_notify_and_wait_for(lock_case):
    lock, rlock = lock_case
    cond = threading.Condition(lock)
    items: list[int] = []

    def producer() -> None:
        for i in range(3):
            time.sleep(0.005)
            with cond:
                items.append(i)
                cond.notify()

    with cond:
        assert outcome(cond.notify)[0] == "ok"
        assert cond.wait(0.02) is False  # times out, lock held again afterwards
    assert outcome(cond.notify) == ("RuntimeError", "cannot notify on un-acquired lock")
    thread = threading.Thread(target=producer)
    with cond:
        if rlock:
            cond.acquire()  # held twice: wait must release it fully
        thread.start()
        assert cond.wait_for(lambda: len(items) == 3, timeout=5) is True
        if rlock:
            cond.release()
    thread.join(5)
    assert items == [0, 1, 2]
    assert lock.acquire(False) is True
    lock.release()


def test_condition_notify_all_wakes_every_waiter(lock_case):
    lock, _ = lock_case
    cond = threading.Condition(lock)
    ready: list[bool] = []
    woke: list[bool] = []
    go: list[bool] = []

    def waiter() -> None:
        with cond:
            ready.append(True)
            woke.append(cond.wait_for(lambda: bool(go), timeout=5))

    threads = [threading.Thread(target=waiter) for _ in range(3)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5
    while len(ready) < 3 and time.monotonic() < deadline:
        time.sleep(0.002)
    with cond:
        go.append(True)
        cond.notify_all()
    for thread in threads:
        thread.join(5)
    assert woke == [True, True, True]


def test_pickle_and_copy_are_refused_the_same_way(lock_case):
    lock, rlock = lock_case
    raw = ORIGINAL_RLOCK() if rlock else ORIGINAL_LOCK()
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        expected = outcome(lambda p=protocol: pickle.dumps(raw, p))
        assert expected[0] in ("TypeError", "PicklingError")
        assert outcome(lambda p=protocol: pickle.dumps(lock, p)) == expected
    for func in (copy.copy, copy.deepcopy):
        assert outcome(lambda f=func: f(lock)) == outcome(lambda f=func: f(raw))


def test_at_fork_reinit_frees_a_held_lock(lock_case):
    lock, _ = lock_case
    lock.acquire()
    lock._at_fork_reinit()
    assert lock.acquire(False) is True
    lock.release()


def test_repr_keeps_the_locked_state_and_weakrefs_work(lock_case):
    lock, rlock = lock_case
    raw = ORIGINAL_RLOCK() if rlock else ORIGINAL_LOCK()
    assert repr(lock).startswith("<unlocked ")
    with lock:
        assert repr(lock).startswith("<locked ")
    if type(lock) is not type(raw):
        assert "profiled by pyprof_http" in repr(lock)
        assert repr(lock).split(" object ")[0] == repr(raw).split(" object ")[0]
    assert weakref.ref(lock)() is lock


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_logging_and_queues_work_in_a_forked_child():
    """A wrapped handler lock held by another thread at fork is reinitialised in the child, and
    so is the collector's own lock."""
    script = textwrap.dedent("""
        import logging, os, queue, sys, threading, warnings
        from concurrent.futures import ThreadPoolExecutor
        from pyprof_http.collectors import locks
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        locks.set_fraction(1)
        handler = logging.StreamHandler(sys.stdout)
        logging.getLogger("t").addHandler(handler)
        assert type(handler.lock) is locks.ProfiledRLock, type(handler.lock)
        q = queue.Queue()
        with ThreadPoolExecutor(2) as pool:
            assert list(pool.map(abs, [-1, -2])) == [1, 2]
        taken, done = threading.Event(), threading.Event()
        def hold():
            with handler.lock:
                taken.set()
                done.wait()
        threading.Thread(target=hold, daemon=True).start()
        taken.wait()
        locks.recording._data_lock.acquire()  # as if a parent's thread were recording at the fork
        pid = os.fork()
        if pid == 0:
            locks.snapshot(8)  # would hang on the parent's held lock
            logging.getLogger("t").warning("child logs")
            q.put(1)
            assert q.get(timeout=1) == 1
            sys.stdout.flush()
            os._exit(0)
        locks.recording._data_lock.release()
        _, status = os.waitpid(pid, 0)
        done.set()
        print("child exit", status)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    assert "child logs" in out.stdout
    assert "child exit 0" in out.stdout


# --- the stdlib built on wrapped locks ---------------------------------------------------------


def test_stdlib_synchronisation_built_after_switching_on():
    locks.set_fraction(1)
    sem, bounded = threading.Semaphore(2), threading.BoundedSemaphore(1)
    event, barrier, q = threading.Event(), threading.Barrier(3), queue.Queue()
    cond = threading.Condition()
    assert type(cond._lock) is locks.ProfiledRLock
    assert type(q.mutex) is locks.ProfiledLock
    assert type(sem._cond._lock) is locks.ProfiledLock
    assert type(event._cond._lock) is locks.ProfiledLock
    results: list[int] = []

    def worker(i: int) -> None:
        with sem:
            time.sleep(0.005)
        barrier.wait(5)
        event.wait(5)
        q.put(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(0.02)
    event.set()
    for _ in range(3):
        results.append(q.get(timeout=5))
        q.task_done()
    q.join()
    for thread in threads:
        thread.join(5)
    assert sorted(results) == [0, 1, 2]
    bounded.acquire()
    bounded.release()
    with pytest.raises(ValueError, match="Semaphore released too many times"):
        bounded.release()
    with ThreadPoolExecutor(4) as pool:
        assert sum(pool.map(lambda x: x * 2, range(100))) == 9900


def test_isinstance_with_threading_lock_holds_while_on():
    raw = threading.Lock()
    locks.set_fraction(1)
    wrapped = threading.Lock()
    assert isinstance(wrapped, threading.Lock)
    assert isinstance(raw, threading.Lock)  # raw C locks still count as threading.Lock
    assert issubclass(type(raw), threading.Lock)
    assert not isinstance(threading.RLock(), threading.Lock)


# --- switching ---------------------------------------------------------------------------------


def test_off_patches_nothing_and_on_off_restores_the_originals():
    assert locks.set_fraction(0) == 0
    assert_nothing_patched()
    assert not locks.is_enabled()
    assert locks.set_fraction(3) == 0
    assert locks.is_enabled() and locks.fraction() == 3
    assert threading.Lock is locks.ProfiledLock and threading.RLock is locks.ProfiledRLock
    assert asyncio.Lock.__dict__["acquire"] is not ASYNC_ORIGINALS[(asyncio.Lock, "acquire")]
    assert "acquire" in asyncio.Condition.__dict__
    assert asyncio.iscoroutinefunction(asyncio.Lock.acquire)
    assert asyncio.iscoroutinefunction(asyncio.Semaphore.acquire)
    assert locks.set_fraction(7) == 3  # changing the rate keeps the patches
    assert threading.Lock is locks.ProfiledLock
    assert locks.set_fraction(0) == 7
    assert_nothing_patched()


def test_a_failed_patch_leaves_nothing_patched(monkeypatch):
    def broken() -> None:
        raise RuntimeError("cannot patch")

    monkeypatch.setattr(locks.async_locks, "ConditionAcquire", broken)  # the last patch fails
    with pytest.raises(RuntimeError, match="cannot patch"):
        locks.set_fraction(1)
    assert locks.fraction() == 0
    assert_nothing_patched()


def test_bad_fractions_are_refused():
    with pytest.raises(ValueError):
        locks.set_fraction(-1)
    with pytest.raises(TypeError):
        locks.set_fraction(True)
    with pytest.raises(TypeError):
        locks.set_fraction(1.5)  # type: ignore[arg-type]
    assert locks.fraction() == 0


def test_concurrent_switching_leaves_a_consistent_state():
    def toggle(n: int) -> None:
        for i in range(200):
            locks.set_fraction((i + n) % 3)

    threads = [threading.Thread(target=toggle, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert (threading.Lock is locks.ProfiledLock) == locks.is_enabled()
    locks.set_fraction(0)
    assert_nothing_patched()


def test_a_patch_replaced_by_someone_else_is_left_alone():
    locks.set_fraction(1)

    def theirs() -> None: ...

    threading.Lock = theirs  # type: ignore[misc,assignment]
    try:
        locks.set_fraction(0)
        assert threading.Lock is theirs
        assert threading.RLock is ORIGINAL_RLOCK
    finally:
        threading.Lock = ORIGINAL_LOCK  # type: ignore[misc]


def test_reason_says_how_to_switch_on():
    reason = locks.NOT_ENABLED_REASON
    assert "\n" not in reason
    for needle in ("PYPROF_LOCK_PROFILE_FRACTION=N", "Settings(lock_profile_fraction=N)",
                   "pyprof_http.set_lock_profile_fraction(N)", "created after"):
        assert needle in reason


# --- threading contention ----------------------------------------------------------------------


def contention_waiter(lock: Any, start: threading.Barrier) -> None:
    start.wait(5)
    with lock:
        time.sleep(0.002)


def run_contention(lock: Any, waiters: int = 4, hold: float = HOLD) -> None:
    """A holder keeps ``lock`` for ``hold`` s while ``waiters`` threads block on it."""
    start = threading.Barrier(waiters + 1)

    def holder() -> None:
        with lock:
            start.wait(5)
            time.sleep(hold)

    threads = [threading.Thread(target=holder, name="holder")]
    threads += [threading.Thread(target=contention_waiter, args=(lock, start), name=f"waiter-{i}")
                for i in range(waiters)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)


def samples_with(profile: Profile, function: str) -> list[Sample]:
    """Samples whose stack has ``function`` (the last part of the qualified name)."""
    return [s for s in profile.samples
            if any(f.function.rsplit(".", 1)[-1] == function for f in s.stack)]


def seen_and_recorded(profile: Profile) -> tuple[int, int]:
    found = re.search(r"(\d+) contended acquisitions seen, (\d+) recorded", profile.comments[1])
    assert found is not None
    return int(found[1]), int(found[2])


def test_contended_lock_records_the_waiters_stack_labels_and_delay():
    locks.set_fraction(1)
    lock = threading.Lock()
    site_line = sys._getframe().f_lineno - 1
    run_contention(lock)
    profile = locks.snapshot(64)
    assert profile.sample_types == (locks.CONTENTIONS, locks.DELAY)
    assert profile.period_type == locks.CONTENTIONS and profile.period == 1
    assert profile.default_sample_type == "delay"
    assert profile.time_ns > 0
    assert profile.comments[0] == "sampling period=1"
    samples = samples_with(profile, "contention_waiter")
    assert sum(s.values[0] for s in samples) == 4
    assert all(s.stack[0] == locks.LEAF_LOCK for s in samples)
    assert all(s.stack[1].function == "contention_waiter" for s in samples)
    assert {s.labels["thread"] for s in samples} == {f"waiter-{i}" for i in range(4)}
    site = f"test_contended_lock_records_the_waiters_stack_labels_and_delay {__file__}:{site_line}"
    assert {s.labels["lock"] for s in samples} == {site}
    assert all("task" not in s.labels and "route" not in s.labels for s in samples)
    delays = sorted(s.values[1] for s in samples)
    assert delays[0] >= 0.5 * HOLD * 1e9  # each waiter blocked for most of the hold
    assert sum(delays) < 10 * 1e9
    assert "4 contended acquisitions seen, 4 recorded" in profile.comments[1]
    assert not samples_with(profile, "holder")


def test_rlock_and_condition_reacquisition_are_recorded():
    locks.set_fraction(1)
    rlock = threading.RLock()
    run_contention(rlock, waiters=2, hold=0.05)
    samples = samples_with(locks.snapshot(64), "contention_waiter")
    assert sum(s.values[0] for s in samples) == 2
    assert all(s.stack[0] == locks.LEAF_RLOCK for s in samples)
    locks.reset()
    cond = threading.Condition()  # over a wrapped RLock
    woken = threading.Event()

    def condition_waiter() -> None:
        with cond:
            woken.set()
            cond.wait(5)

    thread = threading.Thread(target=condition_waiter)
    thread.start()
    assert woken.wait(5)
    with cond:
        cond.notify()
        time.sleep(0.05)  # the waiter wakes and must wait for the lock: _acquire_restore
    thread.join(5)
    samples = samples_with(locks.snapshot(64), "condition_waiter")
    assert [s.stack[0] for s in samples] == [locks.LEAF_RLOCK]
    assert samples[0].values[0] == 1 and samples[0].values[1] >= 0.02 * 1e9
    assert any("wait" in f.function for f in samples[0].stack)


def test_fraction_scales_values_and_samples_about_one_in_n():
    locks.set_fraction(5)
    lock = threading.Lock()

    def hammer() -> None:
        for _ in range(150):
            with lock:
                time.sleep(0.0003)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    profile = locks.snapshot(64)
    assert profile.comments[0] == "sampling period=5"
    assert profile.samples
    assert all(s.values[0] % 5 == 0 and s.values[1] % 5 == 0 for s in profile.samples)
    seen, recorded = seen_and_recorded(profile)
    total = sum(s.values[0] for s in profile.samples)
    assert total == 5 * recorded
    assert seen >= 100, "the workload should contend"
    # binomial(seen, 1/5): 6 standard deviations
    assert abs(recorded - seen / 5) <= 6 * (seen * 0.16) ** 0.5 + 1


def test_snapshots_subtract_to_the_new_contention_only():
    locks.set_fraction(1)
    lock = threading.Lock()
    run_contention(lock, waiters=2, hold=0.05)
    before = locks.snapshot(64)
    run_contention(lock, waiters=2, hold=0.05)
    after = locks.snapshot(64)
    delta = subtract(after, before)
    assert sum(s.values[0] for s in delta.samples) == 2
    assert {s.key() for s in delta.samples} <= {s.key() for s in after.samples}
    assert {s.key() for s in delta.samples} == {s.key() for s in before.samples}
    assert delta.duration_ns == after.time_ns - before.time_ns
    assert all(v > 0 for s in delta.samples for v in s.values)


def test_wrapped_locks_record_nothing_after_switching_off():
    locks.set_fraction(1)
    lock = threading.Lock()
    locks.set_fraction(0)
    run_contention(lock, waiters=2, hold=0.05)
    assert locks.snapshot(64).samples == ()
    assert_nothing_patched()


def test_max_depth_keeps_the_leaf_and_innermost_frames():
    locks.set_fraction(1)
    run_contention(threading.Lock(), waiters=2, hold=0.05)
    profile = locks.snapshot(2)
    assert profile.samples
    for sample in profile.samples:
        assert len(sample.stack) == 2
        assert sample.stack[0] == locks.LEAF_LOCK
        assert sample.stack[1].function == "contention_waiter"
    assert sum(s.values[0] for s in profile.samples) == 2
    with pytest.raises(ValueError):
        locks.snapshot(0)


def test_distinct_stacks_past_the_cap_fold_into_one_truncated_sample(monkeypatch):
    monkeypatch.setattr(locks.recording, "MAX_KEYS", 1)
    locks.set_fraction(1)
    run_contention(threading.Lock(), waiters=3, hold=0.05)  # three thread labels
    profile = locks.snapshot(64)
    truncated = [s for s in profile.samples if locks.TRUNCATED in s.stack]
    assert len(truncated) == 1 and truncated[0].labels == {}
    assert truncated[0].stack == (locks.LEAF_LOCK, locks.TRUNCATED)
    assert sum(s.values[0] for s in profile.samples) == 3
    assert truncated[0].values[0] == 2
    assert any("folded into [truncated]" in c for c in profile.comments)


def test_recording_errors_never_reach_the_caller(monkeypatch):
    def broken(*args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(locks.recording, "frame_stack", broken)
    locks.set_fraction(1)
    run_contention(threading.Lock(), waiters=2, hold=0.05)
    profile = locks.snapshot(64)
    assert profile.samples == ()
    assert "2 contended acquisitions seen, 0 recorded" in profile.comments[1]


def test_the_profile_encodes_to_pprof():
    locks.set_fraction(1)
    run_contention(threading.Lock(), waiters=2, hold=0.05)
    body = render_pprof(locks.snapshot(64), "mutex").body
    message = pprof_schema.decode(body)
    strings = message.string_table
    assert [strings[t.type] for t in message.sample_type] == ["contentions", "delay"]
    assert strings[message.period_type.type] == "contentions" and message.period == 1
    functions = {strings[f.name] for f in message.function}
    assert {"threading.Lock.acquire", "contention_waiter"} <= functions


# --- asyncio -----------------------------------------------------------------------------------


async def async_lock_waiter(lock: asyncio.Lock) -> None:
    async with lock:
        pass


async def async_semaphore_waiter(sem: asyncio.Semaphore) -> None:
    async with sem:
        pass


async def async_holder(primitive: Any, hold: float) -> None:
    async with primitive:
        await asyncio.sleep(hold)


async def contend(primitive: Any, waiter: Callable[[Any], Any], names: list[str]) -> None:
    holder = asyncio.create_task(async_holder(primitive, 0.05), name="holder")
    await asyncio.sleep(0)
    await asyncio.gather(*(asyncio.create_task(waiter(primitive), name=n) for n in names))
    await holder


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
        assert min(s.values[1] for s in lock_samples) >= 0.02 * 1e9
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
        await asyncio.sleep(0.01)
        async with cond:
            cond.notify()
            await asyncio.sleep(0.03)  # the waiter is woken and must wait for the lock
        await task
        samples = samples_with(locks.snapshot(64), "cond_waiter")
        assert [s.labels["task"] for s in samples] == ["cond-waiter"]
        assert samples[0].values[1] >= 0.01 * 1e9

    asyncio.run(main())


def test_asyncio_cancelled_waiter_propagates_and_records_nothing():
    async def main() -> None:
        locks.set_fraction(1)
        lock = asyncio.Lock()
        await lock.acquire()
        waiter = asyncio.create_task(async_lock_waiter(lock), name="cancelled")
        await asyncio.sleep(0.01)
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

        holder = asyncio.create_task(async_holder(lock, 0.03))
        await asyncio.sleep(0)
        await asyncio.gather(asyncio.create_task(in_request()),
                             asyncio.create_task(async_lock_waiter(lock)))
        await holder
        samples = samples_with(locks.snapshot(64), "async_lock_waiter")
        assert {s.labels["task"] for s in samples} == {"Task-N"}
        routes = sorted(str(s.labels.get("route")) for s in samples)
        assert routes == ["/items/{id}", "None"]
        assert all("request_id" not in s.labels for s in samples)

    asyncio.run(main())


def test_threading_lock_contended_inside_a_task_carries_the_task():
    locks.set_fraction(1)
    lock = threading.Lock()

    async def main() -> None:
        holder_done = threading.Event()

        def hold() -> None:
            with lock:
                holder_done.set()
                time.sleep(0.03)

        threading.Thread(target=hold).start()
        assert holder_done.wait(5)
        await asyncio.create_task(task_blocked_on_thread_lock(lock), name="loop-blocker")

    asyncio.run(main())
    samples = samples_with(locks.snapshot(64), "task_blocked_on_thread_lock")
    assert [s.labels["task"] for s in samples] == ["loop-blocker"]
    assert samples[0].stack[0] == locks.LEAF_LOCK


async def task_blocked_on_thread_lock(lock: Any) -> None:
    with lock:  # blocks the event loop: exactly what the profile should show
        pass


# --- recording never waits for the aggregate's lock ------------------------------------------

_REENTRANCY_SCRIPT = textwrap.dedent("""
    import signal, sys, threading, time
    from pyprof_http.collectors import locks
    from pyprof_http.model import frame

    FRACTION = int(sys.argv[1])
    locks.set_fraction(FRACTION)
    if FRACTION:  # a profile that has been collecting for a while
        for i in range(3000):
            locks.recording.add(((frame(f"f{i}", "x.py", i),), None, "MainThread", "", ""), 1000, 1)

    other = threading.Lock()      # created while on: profiled (think: a logging handler's lock)
    stop = threading.Event()

    def busy():                   # another thread uses it all the time
        while not stop.is_set():
            with other:
                time.sleep(0.001)

    threading.Thread(target=busy, daemon=True).start()

    in_handler = False
    def handler(signum, frame):   # e.g. a handler that logs; not re-entered
        global in_handler
        if in_handler:
            return
        in_handler = True
        try:
            with other:
                pass
        finally:
            in_handler = False

    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 0.003, 0.003)
    end = time.monotonic() + 2
    while time.monotonic() < end:
        locks.snapshot(64)        # what GET /debug/pprof/mutex does on the loop (main) thread
    signal.setitimer(signal.ITIMER_REAL, 0, 0)
    stop.set()
    print("done")
""")


@pytest.mark.parametrize("fraction", [1, 5])
def test_a_signal_handler_taking_a_contended_lock_during_a_snapshot_does_not_deadlock(
    fraction: int,
) -> None:
    """The main thread holds the aggregate's lock in snapshot(); a signal handler there takes a
    profiled lock another thread holds; that thread records its own wait after acquiring it.
    If recording waited for the aggregate's lock, both threads would wait forever."""
    try:
        done = subprocess.run([sys.executable, "-c", _REENTRANCY_SCRIPT, str(fraction)],
                              capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"fraction={fraction}: the process deadlocked (no output within 30 s)")
    assert done.returncode == 0, done.stderr
    assert "done" in done.stdout


# --- switching on again after someone wrapped ours ---------------------------------------------


def test_on_again_after_another_wrapper_was_left_in_place_threading() -> None:
    """Another library wraps our threading.Lock while on; off leaves its wrapper (it is not
    ours to remove); on again must still call the real lock, not that wrapper (which calls
    ours: endless recursion)."""
    locks.set_fraction(1)
    ours = threading.Lock

    def theirs() -> object:
        return ours()

    threading.Lock = theirs  # type: ignore[misc,assignment]
    try:
        locks.set_fraction(0)
        assert threading.Lock is theirs
        locks.set_fraction(1)
        lock = threading.Lock()
        with lock:
            assert lock.locked()
        assert type(lock) is locks.ProfiledLock
    finally:
        locks.set_fraction(0)
        threading.Lock = ORIGINAL_LOCK  # type: ignore[misc]


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
