"""The aggregate both lock halves record into: who waited, where, how long, 1 in N.

Only a *contended* acquisition reaches this module: :func:`should_record` makes the 1-in-N draw
(``random.random() * N < 1``: unbiased whatever the pattern) and counts the ones not drawn;
:func:`capture` takes the waiter's stack and labels before it blocks; :func:`add` records the
wait once the lock is held. Values are scaled by the fraction in force when each was recorded
(Go scales by the current one at write time).

**Labels and memory.** ``lock`` is the creation site (the first frame outside threading, queue,
asyncio and this package), ``thread``, ``task`` (asyncio's default ``Task-<n>`` names are
folded to ``Task-N``: the profile lives as long as the process, and a label per request would
grow without bound) and ``route`` (read from the waiter's own context, so it works on every
version and for ``asyncio.to_thread`` workers). Samples are aggregated in a dict of
(stack, labels) -> [count, delay] capped at :data:`MAX_KEYS`; past it new keys fold into one
``[truncated]`` stack per lock kind.

**Never waiting for itself.** A thread records *after* it got the lock it waited for, so it
holds an application lock; the thread holding the aggregate's lock (a snapshot) may meanwhile
run a signal handler or a ``__del__`` that wants that application lock. Waiting there would
deadlock both. So a contention is appended to :data:`_pending` (atomic in CPython) and folded
into the aggregate by whoever finds the aggregate's lock free, and by every snapshot. The
aggregate's lock is a raw ``_thread`` lock (replaced in a forked child, where a parent's thread
may have held it), the thread name is read from ``threading._active`` (``current_thread()`` can
create a ``_DummyThread``, which takes ``_active_limbo_lock``, an ``RLock`` after a fork), and
any error is swallowed.

State is kept across ``importlib.reload`` (``globals().get``): a reload must not forget what was
recorded nor that profiling is on while the patched classes stay in place.
"""

from __future__ import annotations

import _thread
import asyncio
import collections
import os
import random
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, Final, TypeVar

from ...loops import is_auto_task_name
from ...model import Frame, ValueType, frame
from ...request_labels import current_request, route_of
from ..frames import frame_stack, to_frame

CONTENTIONS: Final = ValueType("contentions", "count")
DELAY: Final = ValueType("delay", "nanoseconds")
"""Go's mutex and block profile types; ``/block`` (collectors/loop.py) uses them too."""
MAX_KEYS: Final = 10_000
"""Distinct (stack, labels) kept; further ones fold into a ``[truncated]`` stack."""
MAX_RECORDED_DEPTH: Final = 512
"""Frames kept per recorded stack (innermost first), before ``snapshot``'s ``max_depth``."""
PENDING_MAX: Final = 100_000

LEAF_LOCK: Final = frame("threading.Lock.acquire", "<lock>", 0)
LEAF_RLOCK: Final = frame("threading.RLock.acquire", "<lock>", 0)
LEAF_ASYNC_LOCK: Final = frame("asyncio.Lock.acquire", "<lock>", 0)
LEAF_ASYNC_SEMAPHORE: Final = frame("asyncio.Semaphore.acquire", "<lock>", 0)
TRUNCATED: Final = frame(f"[truncated: more than {MAX_KEYS} distinct stacks]", "<lock>", 0)

Key = tuple[tuple[Frame, ...], Frame | None, str, str, str]
"""stack (leaf first), lock creation site, thread, task, route ("" when absent)."""

OWN_PACKAGE: Final = __name__.rpartition(".")[0]
_SITE_SKIP: Final = frozenset({"threading", "queue"})
_draw: Final = random.Random().random  # noqa: S311 (sampling, not secrets)
now: Final = time.perf_counter_ns


_T = TypeVar("_T")


class Counters:
    __slots__ = ("dropped", "folded", "recorded", "seen")

    def __init__(self) -> None:
        self.seen = self.recorded = self.folded = self.dropped = 0


def _kept(name: str, make: Callable[[], _T]) -> _T:
    """The value ``name`` had before a reload of this module, else a new one."""
    return globals()[name] if name in globals() else make()


_fraction: int = _kept("_fraction", int)
switch: _thread.LockType = _kept("switch", _thread.allocate_lock)
"""Serialises switching on and off (a raw lock: never wrapped)."""
_data_lock: _thread.LockType = _kept("_data_lock", _thread.allocate_lock)
"""Guards the aggregate; raw, so recording never enters a wrapped lock."""
samples: dict[Key, list[int]] = _kept("samples", dict)
counters: Counters = _kept("counters", Counters)
pending: collections.deque[tuple[Key | None, int, int] | None] = _kept(
    "pending", collections.deque)
"""Contentions not yet added to the aggregate: ``None`` for one seen but not sampled."""
_recording: Any = _kept("_recording", _thread._local)
"""``busy`` is set while this thread holds :data:`_data_lock`."""


def _after_fork_in_child() -> None:
    """A thread of the parent may have held our locks at the fork: the child gets new ones."""
    global switch, _data_lock, _recording
    switch, _data_lock = _thread.allocate_lock(), _thread.allocate_lock()
    _recording = _thread._local()


if hasattr(os, "register_at_fork") and "_fork_hook_registered" not in globals():
    os.register_at_fork(after_in_child=lambda: _after_fork_in_child())  # late-bound: reloads
    _fork_hook_registered = True


def fraction() -> int:
    """The current sampling fraction (0: off)."""
    return _fraction


def set_value(n: int) -> None:
    """Set the fraction; the caller holds :data:`switch` and has patched or unpatched."""
    global _fraction
    _fraction = n


def hold(wait: bool = True) -> bool:
    """Take :data:`_data_lock` unless this thread already holds it (a handler that interrupted
    our own code: the caller skips instead of deadlocking with itself)."""
    recording = _recording
    if getattr(recording, "busy", False):
        return False
    recording.busy = True
    try:
        if _data_lock.acquire(wait):
            return True
    except BaseException:
        recording.busy = False
        raise
    recording.busy = False
    return False


def release() -> None:
    _data_lock.release()
    _recording.busy = False


def _record(item: tuple[Key | None, int, int] | None) -> None:
    """Queue one contention (``None``: seen, not sampled) and fold the queue in if free."""
    if len(pending) < PENDING_MAX:
        pending.append(item)
    else:
        counters.dropped += 1  # approximate: only while nobody could fold for a long time
    if hold(wait=False):
        try:
            fold_pending()
        finally:
            release()


def fold_pending() -> None:
    """Add the queued contentions to the aggregate; :data:`_data_lock` is held."""
    pop = pending.popleft
    while True:
        try:
            item = pop()
        except IndexError:
            return
        counters.seen += 1
        if item is not None:
            _add_held(*item)


def should_record() -> int:
    """For a contended acquisition: the fraction to scale by if sampled, else 0 (counted)."""
    fraction = _fraction
    if fraction == 0:
        return 0
    if fraction == 1 or _draw() * fraction < 1.0:
        return fraction
    _record(None)
    return 0


def _thread_name() -> str:
    ident = _thread.get_ident()
    active: dict[int, threading.Thread] = getattr(threading, "_active", {})
    thread = active.get(ident)
    return thread.name if thread is not None else f"thread-{ident}"


def _task_name() -> str:
    loop = asyncio._get_running_loop()
    task = asyncio.current_task(loop) if loop is not None else None
    if task is None:
        return ""
    name = task.get_name()
    return "Task-N" if is_auto_task_name(name) else name


def _route() -> str:
    # the waiter's context, else the request whose work its thread runs (run_in_executor
    # without a copied context: request_labels.InThread)
    request = current_request()
    if request is None:
        return ""
    return route_of(request.scope)


def _ours_or_plumbing(f: FrameType) -> bool:
    """Frames between the waiter and the lock: this package's, and asyncio's ``async with``
    (``_ContextManagerMixin.__aenter__`` says nothing the leaf does not)."""
    module = f.f_globals.get("__name__")
    if not isinstance(module, str):
        return False
    if module == OWN_PACKAGE or module.startswith(OWN_PACKAGE + "."):
        return True
    return module == "asyncio.locks" and f.f_code.co_name == "__aenter__"


def capture(caller: FrameType | None, leaf: Frame, site: Frame | None) -> Key | None:
    """The waiter's stack (from the first frame that is not plumbing) and labels; never
    raises."""
    try:
        while caller is not None and _ours_or_plumbing(caller):
            caller = caller.f_back
        stack = (leaf, *frame_stack(caller, MAX_RECORDED_DEPTH))
        return stack, site, _thread_name(), _task_name(), _route()
    except Exception:
        return None


def add(key: Key | None, delay_ns: int, fraction: int) -> None:
    """Count one sampled contention, scaled by ``fraction``."""
    _record((key, delay_ns, fraction))


def _add_held(key: Key | None, delay_ns: int, fraction: int) -> None:
    if key is None:
        return
    entry = samples.get(key)
    if entry is None:
        if len(samples) >= MAX_KEYS:
            key = ((key[0][0], TRUNCATED), None, "", "", "")
            counters.folded += 1
            entry = samples.get(key)
        if entry is None:
            entry = samples[key] = [0, 0]
    entry[0] += fraction
    entry[1] += delay_ns * fraction
    counters.recorded += 1


def creation(caller: FrameType | None) -> tuple[Frame | None, str]:
    """Where a lock is being made: the first frame outside threading, queue, asyncio and this
    package, and that frame's module name ("" if unknown); never raises."""
    try:
        while caller is not None:
            module = caller.f_globals.get("__name__")
            if not isinstance(module, str):
                return to_frame(caller), ""
            top = module.partition(".")[0]
            if not (module in _SITE_SKIP or top == "asyncio" or module == OWN_PACKAGE
                    or module.startswith(OWN_PACKAGE + ".")):
                return to_frame(caller), module
            caller = caller.f_back
    except Exception:
        return None, ""
    return None, ""


def reset() -> None:
    """Forget everything recorded (for tests)."""
    if hold():
        try:
            pending.clear()
            samples.clear()
            counters.seen = counters.recorded = counters.folded = counters.dropped = 0
        finally:
            release()


def contentions() -> int:
    """Contended acquisitions seen so far (sampled or not), for the index's count column."""
    return counters.seen + len(pending)
