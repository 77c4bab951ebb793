"""The threading half: wrapped locks behave exactly like raw ones, contention is recorded with
the waiter's stack and labels, and code that needs the C lock (trio) gets it.

The semantic tests run the same assertions against a raw lock, a wrapped lock with profiling on
and a wrapped lock after profiling was switched off again, for both Lock and RLock; expected
exceptions are read from a raw lock at run time (messages differ between Python versions).
"""

from __future__ import annotations

import asyncio
import copy
import os
import pickle
import queue
import subprocess
import sys
import textwrap
import threading
import time
import types
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
from lock_helpers import (
    HOLD,
    ORIGINAL_LOCK,
    ORIGINAL_RLOCK,
    run_contention,
    samples_with,
    switched_off_after,  # noqa: F401 (autouse fixture)
    wait_until_blocked,
)

from pyprof_http.collectors import locks

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
        assert 0.09 <= time.monotonic() - start < 30  # (the upper bound only catches a hang)
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



# --- threading contention ----------------------------------------------------------------------


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
    assert delays[0] >= HOLD * 1e9  # each waiter was blocked before the holder's HOLD began
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
        wait_until_blocked([thread.ident])  # woken, and waiting for the lock: _acquire_restore
    thread.join(5)
    samples = samples_with(locks.snapshot(64), "condition_waiter")
    assert [s.stack[0] for s in samples] == [locks.LEAF_RLOCK]
    assert samples[0].values[0] == 1 and samples[0].values[1] > 0
    assert any("wait" in f.function for f in samples[0].stack)



def test_threading_lock_contended_inside_a_task_carries_the_task():
    locks.set_fraction(1)
    lock = threading.Lock()

    async def main() -> None:
        holder_done = threading.Event()
        loop_thread = threading.get_ident()

        def hold() -> None:
            with lock:
                holder_done.set()
                wait_until_blocked([loop_thread])  # the loop thread waits for it

        holder = threading.Thread(target=hold)
        holder.start()
        assert holder_done.wait(5)
        await asyncio.create_task(task_blocked_on_thread_lock(lock), name="loop-blocker")
        holder.join(30)

    asyncio.run(main())
    samples = samples_with(locks.snapshot(64), "task_blocked_on_thread_lock")
    assert [s.labels["task"] for s in samples] == ["loop-blocker"]
    assert samples[0].stack[0] == locks.LEAF_LOCK


async def task_blocked_on_thread_lock(lock: Any) -> None:
    with lock:  # blocks the event loop: exactly what the profile should show
        pass


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




# --- code that needs the C lock (issue 10 item 13) ---------------------------------------------

_TRIO_SCRIPT = textwrap.dedent("""
    import threading
    from pyprof_http.collectors import locks

    locks.set_fraction(1)  # before trio is imported: its entry queue reads threading.RLock
    import trio
    from trio._core._entry_queue import EntryQueue

    async def main():
        await trio.sleep(0)
        # from another thread into the run: the entry queue and its signal-safe lock
        return await trio.to_thread.run_sync(lambda: 42)

    print("on", trio.run(main), type(EntryQueue().lock).__module__)
    assert type(threading.RLock()) is locks.ProfiledRLock  # everyone else's is still profiled
    locks.set_fraction(0)
    print("off", trio.run(main), type(EntryQueue().lock).__module__)
    locks.set_fraction(1)
    print("on again", trio.run(main))
""")


def test_trio_runs_with_lock_profiling_switched_on_before_it_was_imported():
    pytest.importorskip("trio")  # a dev dependency; its absence is an install problem
    done = subprocess.run([sys.executable, "-c", _TRIO_SCRIPT], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["on 42 _thread", "off 42 _thread", "on again 42"]


def test_packages_named_in_raw_lock_packages_get_the_raw_lock(monkeypatch):
    module = types.ModuleType("needs_c_locks.core")
    exec("import threading\ndef make():\n    return threading.Lock(), threading.RLock()\n",
         module.__dict__)
    locks.set_fraction(1)
    assert {type(lock) for lock in module.make()} == {locks.ProfiledLock, locks.ProfiledRLock}
    monkeypatch.setattr(locks.thread_locks, "RAW_LOCK_PACKAGES", {"trio", "needs_c_locks"})
    lock, rlock = module.make()
    assert type(lock) is type(ORIGINAL_LOCK()) and type(rlock) is type(ORIGINAL_RLOCK())
    assert type(threading.Lock()) is locks.ProfiledLock  # this module is not excluded
