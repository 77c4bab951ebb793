"""What the lock tests share: the originals, the switched-off check, deterministic contention.

Contention is driven, not hoped for: a holder keeps the lock until every waiter is seen blocked
in the wrapper's wait (its thread's top frame), so how many contentions happen does not depend
on how the scheduler ran the threads (a loaded 2-core machine once gave 9 instead of 100).
"""

from __future__ import annotations

import _thread
import asyncio
import contextlib
import inspect
import re
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pyprof_http.collectors import locks
from pyprof_http.collectors.locks import thread_locks
from pyprof_http.model import Profile, Sample

ORIGINAL_LOCK = threading.Lock
ORIGINAL_RLOCK = threading.RLock
ASYNC_ORIGINALS = {
    (cls, name): cls.__dict__[name]
    for cls in (asyncio.Lock, asyncio.Semaphore)
    for name in ("acquire", "__init__")
}
HOLD = 0.05
"""How long a holder keeps a contended lock once every waiter is blocked (seconds): the least
each waiter waits."""


def _blocking_lines() -> frozenset[tuple[str, int]]:
    """(function, line) of each blocking call in the wrapper's wait paths: a thread whose top
    frame is at one of them has taken its start time and is in (or entering) the C acquire."""
    found = set()
    for function in (thread_locks._Profiled._wait, thread_locks.ProfiledRLock._acquire_restore):
        source, first = inspect.getsourcelines(function)
        for offset, text in enumerate(source):
            if "acquire(True, timeout)" in text or "._acquire_restore(state)" in text:
                found.add((function.__name__, first + offset))
    assert len(found) == 4, found
    return frozenset(found)


_BLOCKING = _blocking_lines()


def assert_nothing_patched() -> None:
    assert threading.Lock is ORIGINAL_LOCK
    assert threading.RLock is ORIGINAL_RLOCK
    assert ORIGINAL_LOCK in (_thread.allocate_lock, _thread.LockType)
    for (cls, name), original in ASYNC_ORIGINALS.items():
        assert cls.__dict__[name] is original
    assert "acquire" not in asyncio.Condition.__dict__
    assert "acquire" not in asyncio.BoundedSemaphore.__dict__


@pytest.fixture(autouse=True)
def switched_off_after() -> Iterator[None]:
    """Import into a test module: every test there starts and ends with nothing patched."""
    assert locks.fraction() == 0
    assert_nothing_patched()
    yield
    locks.set_fraction(0)
    locks.reset()
    assert_nothing_patched()


def blocked_in_wrapper(ident: int | None) -> bool:
    """Whether thread ``ident`` is in a wrapped lock's blocking wait (past the free-lock try)."""
    frame = sys._current_frames().get(ident or 0)
    return (frame is not None and (frame.f_code.co_name, frame.f_lineno) in _BLOCKING
            and frame.f_globals.get("__name__") == thread_locks.__name__)


def wait_until_blocked(idents: list[int | None], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not all(blocked_in_wrapper(ident) for ident in idents):
        assert time.monotonic() < deadline, "the waiters never blocked on the lock"
        time.sleep(0.001)


def contention_waiter(lock: Any) -> None:
    with lock:
        time.sleep(0.002)


@contextlib.contextmanager
def helpers_unprofiled() -> Iterator[None]:
    """The test's own events and threads (a Thread has an Event) get raw locks. Made while
    profiling is on they were wrappers too, and a loaded machine could make two threads meet
    on one (the main thread made to drop the GIL inside ``Event.set``, say): one contention
    more than the test made, on a stack of ``threading``'s own."""
    patched = threading.Lock
    threading.Lock = ORIGINAL_LOCK  # type: ignore[misc]
    try:
        yield
    finally:
        threading.Lock = patched  # type: ignore[misc]


def run_contention(lock: Any, waiters: int = 4, hold: float = HOLD) -> None:
    """``waiters`` threads block on ``lock`` (a wrapper) while a holder keeps it; the holder
    lets go ``hold`` s after all of them are seen blocked: exactly ``waiters`` contentions."""
    with helpers_unprofiled():
        taken, release = threading.Event(), threading.Event()

        def holder() -> None:
            with lock:
                taken.set()
                release.wait(30)

        holding = threading.Thread(target=holder, name="holder")
        threads = [threading.Thread(target=contention_waiter, args=(lock,), name=f"waiter-{i}")
                   for i in range(waiters)]
    holding.start()
    assert taken.wait(30)
    for thread in threads:
        thread.start()
    try:
        wait_until_blocked([thread.ident for thread in threads])
        time.sleep(hold)
    finally:
        release.set()
        for thread in [holding, *threads]:
            thread.join(30)


def samples_with(profile: Profile, function: str) -> list[Sample]:
    """Samples whose stack has ``function`` (the last part of the qualified name)."""
    return [s for s in profile.samples
            if any(f.function.rsplit(".", 1)[-1] == function for f in s.stack)]


def seen_and_recorded(profile: Profile) -> tuple[int, int]:
    found = re.search(r"(\d+) contended acquisitions seen, (\d+) recorded", profile.comments[1])
    assert found is not None
    return int(found[1]), int(found[2])
