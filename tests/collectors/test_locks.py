"""Lock profiling as a whole: switching on and off, the profile (scaling, deltas, depth, the
cap), and recording never waiting for its own lock. The two halves have their own tests
(test_thread_locks.py, test_async_locks.py)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading

import pytest
from lock_helpers import (
    ASYNC_ORIGINALS,
    ORIGINAL_LOCK,
    ORIGINAL_RLOCK,
    assert_nothing_patched,
    run_contention,
    seen_and_recorded,
    switched_off_after,  # noqa: F401 (autouse fixture)
)

import pprof_schema
from pyprof_http.collectors import locks
from pyprof_http.model import subtract
from pyprof_http.pprof.encode import render_pprof

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



def test_fraction_scales_values_and_samples_about_one_in_n():
    """Contention made deterministic: the lock is held by this thread, and each timed acquire
    of it is a contended acquisition that times out (recorded: that time was spent waiting).
    Exactly ACQUISITIONS are seen, whatever the scheduler does; about 1 in 5 are recorded."""
    acquisitions = 500
    locks.set_fraction(5)
    lock = threading.Lock()
    with lock:
        for _ in range(acquisitions):
            assert lock.acquire(True, 1e-6) is False
    profile = locks.snapshot(64)
    assert profile.comments[0] == "sampling period=5"
    assert profile.samples
    assert all(s.values[0] % 5 == 0 and s.values[1] % 5 == 0 for s in profile.samples)
    seen, recorded = seen_and_recorded(profile)
    total = sum(s.values[0] for s in profile.samples)
    assert total == 5 * recorded
    assert seen == acquisitions
    # binomial(500, 1/5): 6 standard deviations (a false alarm about once in 10^9 runs)
    assert abs(recorded - seen / 5) <= 6 * (seen * 0.16) ** 0.5
    assert {s.stack[1].function.rsplit(".", 1)[-1] for s in profile.samples} == {
        "test_fraction_scales_values_and_samples_about_one_in_n"}


def test_snapshots_subtract_to_the_new_contention_only():
    locks.set_fraction(1)
    lock = threading.Lock()
    run_contention(lock, waiters=2, hold=0.05)
    before = locks.snapshot(64)
    run_contention(lock, waiters=2, hold=0.05)
    after = locks.snapshot(64)
    delta = subtract(after, before)
    assert sum(s.values[0] for s in delta.samples) == 2, [  # which stacks, if ever not 2
        (s.values, [f.function for f in s.stack]) for s in delta.samples]
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


