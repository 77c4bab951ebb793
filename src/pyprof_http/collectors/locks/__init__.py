"""Lock contention: Go's mutex profile and ``SetMutexProfileFraction``, for threading and asyncio.

``set_fraction(N)`` with N > 0 switches it on: 1 in N *contended* acquisitions (the lock was
taken, so the caller had to wait) is recorded with the waiter's stack, its labels and how long
it waited; ``set_fraction(0)`` puts every patched attribute back. The profile is cumulative
since it was first switched on, like Go's; ``seconds=N`` deltas subtract two snapshots. Go
records the stack of the goroutine that *unlocked* (the end of the critical section that made
others wait); here it is the waiter's, as in Go's block profile, because knowing at release
whether anyone waits would put work on every release.

The package: :mod:`.thread_locks` (wrapped ``threading.Lock``/``RLock``),
:mod:`.async_locks` (patched asyncio classes), :mod:`.recording` (the aggregate both record
into) and, here, switching and the profile. ``set_fraction`` is the mechanism; the process-wide
decision (several apps, each with its own settings, and the application's own call) is made in
:mod:`pyprof_http.switches`, which is what ``pyprof_http.set_lock_profile_fraction`` calls.
"""

from __future__ import annotations

import sys
import time
from typing import Final

from ...loops import code_name
from ...model import Frame, LabelValue, Profile, Sample
from . import async_locks, recording, thread_locks
from .recording import (
    CONTENTIONS,
    DELAY,
    LEAF_ASYNC_LOCK,
    LEAF_ASYNC_SEMAPHORE,
    LEAF_LOCK,
    LEAF_RLOCK,
    MAX_KEYS,
    TRUNCATED,
    contentions,
    fraction,
    reset,
)
from .thread_locks import RAW_LOCK_PACKAGES, ProfiledLock, ProfiledRLock

__all__ = [
    "CONTENTIONS", "DELAY", "LEAF_ASYNC_LOCK", "LEAF_ASYNC_SEMAPHORE", "LEAF_LOCK", "LEAF_RLOCK",
    "MAX_KEYS", "NOT_ENABLED_REASON", "RAW_LOCK_PACKAGES", "TRUNCATED", "ProfiledLock",
    "ProfiledRLock", "contentions", "fraction", "is_enabled", "reset", "set_fraction",
    "snapshot",
]

NOT_ENABLED_REASON: Final = (
    "lock profiling is off: start the process with PYPROF_LOCK_PROFILE_FRACTION=N (or "
    "Settings(lock_profile_fraction=N), or call pyprof_http.set_lock_profile_fraction(N) at "
    "startup) to record 1 in N contended acquisitions; threading locks are seen only if created "
    "after that, asyncio locks at once"
)


def _patch() -> None:
    code_name(sys._getframe())  # warm its name table now: 3.10 builds it from the classes
    thread_locks.patch()
    async_locks.patch()


def _unpatch() -> None:
    async_locks.unpatch()
    thread_locks.unpatch()


def set_fraction(n: int) -> int:
    """Record 1 in ``n`` contended acquisitions (0: off, nothing patched); return the previous
    value, as Go's ``runtime.SetMutexProfileFraction``."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"lock profile fraction must be an int, not {type(n).__name__}")
    if n < 0:
        raise ValueError(f"lock profile fraction must be >= 0, got {n}")
    with recording.switch:
        previous = recording.fraction()
        if n and not previous:
            try:
                _patch()
            except BaseException:
                _unpatch()  # all or nothing
                raise
        recording.set_value(n)
        if previous and not n:
            _unpatch()
        return previous


def is_enabled() -> bool:
    return recording.fraction() > 0


# --- the profile -----------------------------------------------------------------------------


def _site_text(site: Frame | None) -> str:
    return "unknown" if site is None else f"{site.function} {site.filename}:{site.line}"


def _labels(key: recording.Key) -> dict[str, LabelValue]:
    stack, site, thread, task, route = key
    if stack[-1] == TRUNCATED:
        return {}
    labels: dict[str, LabelValue] = {"lock": _site_text(site), "thread": thread}
    if task:
        labels["task"] = task
    if route:
        labels["route"] = route
    return labels


def snapshot(max_depth: int) -> Profile:
    """Contention recorded since lock profiling was first switched on (cumulative, like Go):
    per waiter stack (innermost first, the lock operation as the leaf) and labels, the number
    of contentions and the nanoseconds waited, both scaled by the sampling fraction."""
    if max_depth < 1:
        raise ValueError(f"max_depth must be >= 1, got {max_depth}")
    items: list[tuple[recording.Key, int, int]] = []
    seen = recorded = folded = dropped = 0
    if recording.hold():  # (not held: called from a handler that interrupted recording: empty)
        try:
            recording.fold_pending()
            items = [(key, entry[0], entry[1]) for key, entry in recording.samples.items()]
            counters = recording.counters
            seen, recorded, folded = counters.seen, counters.recorded, counters.folded
            dropped = counters.dropped
        finally:
            recording.release()
    merged: dict[tuple[tuple[Frame, ...], tuple[tuple[str, LabelValue], ...]], list[int]] = {}
    for key, count, delay in items:
        labels = tuple(sorted(_labels(key).items()))
        entry = merged.setdefault((key[0][:max_depth], labels), [0, 0])
        entry[0] += count
        entry[1] += delay
    samples = [
        Sample(stack, (count, delay), dict(labels))
        for (stack, labels), (count, delay) in merged.items()
    ]
    samples.sort(key=lambda s: (-s.values[1], -s.values[0]))
    return Profile(
        sample_types=(CONTENTIONS, DELAY),
        samples=tuple(samples),
        period_type=CONTENTIONS,
        period=1,
        time_ns=time.time_ns(),
        comments=_comments(seen, recorded, folded, dropped),
        default_sample_type=DELAY.type,
    )


def _comments(seen: int, recorded: int, folded: int, dropped: int) -> tuple[str, ...]:
    comments = [
        f"sampling period={recording.fraction()}",
        f"{seen} contended acquisitions seen, {recorded} recorded; values are scaled by the "
        "sampling period in force when each was recorded",
        "threading locks created before lock profiling was switched on are not seen",
    ]
    if folded:
        comments.append(
            f"{folded} recorded contentions had a new stack past {recording.MAX_KEYS} distinct "
            "stacks and were folded into [truncated] samples without labels"
        )
    if dropped:
        comments.append(f"{dropped} contentions were dropped: more than "
                        f"{recording.PENDING_MAX} waited to be added while the profile was busy")
    return tuple(comments)
