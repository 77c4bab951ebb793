"""Lock contention: Go's mutex profile and ``SetMutexProfileFraction``, for threading and asyncio.

``set_fraction(N)`` with N > 0 switches it on: 1 in N *contended* acquisitions (the lock was
taken, so the caller had to wait) is recorded with the waiter's stack, its labels and how long
it waited; ``set_fraction(0)`` puts every patched attribute back. The profile is cumulative
since it was first switched on, like Go's; ``seconds=N`` deltas subtract two snapshots. Go
records the stack of the goroutine that *unlocked* (the end of the critical section that made
others wait); here it is the waiter's, as in Go's block profile, because knowing at release
whether anyone waits would put work on every release.

**threading.** ``threading.Lock`` and ``threading.RLock`` (module attributes) are replaced by
:class:`ProfiledLock` and :class:`ProfiledRLock`, so locks created *afterwards* are wrappers,
including those made inside ``Condition()``, ``Semaphore``, ``Event``, ``Barrier``,
``queue.Queue``, ``concurrent.futures`` and ``logging`` handlers, which look ``Lock``/``RLock``
up at call time. Locks created before are raw C locks and stay unseen: a lock cannot be swapped
under the code that holds it, nor can ``from threading import Lock`` done earlier be changed
(and one done while on keeps making wrappers after switching off: they work, at the fast-path
cost below). threading's private ``_allocate_lock`` (Condition waiters, thread state locks) is
left alone: waiting on a Condition is not lock contention. Each wrapper is a ``__slots__``
object around the raw lock; ``release`` and ``locked`` are the raw lock's own bound methods
stored in slots (no Python frame at all); ``acquire``/``__enter__`` first try the raw
``acquire(False)`` and return at once when it succeeds, so an uncontended acquisition costs one
Python call, whether profiling is on or off. Only when that try fails and the caller wanted to
block is the 1-in-N draw made (``random.random() * N < 1``: unbiased whatever the pattern) and,
if drawn, the blocking acquire timed with ``perf_counter_ns``. The waiter's stack is taken
*before* blocking (time it would spend waiting anyway); the aggregate is updated once the lock
is held. Measured (``benchmarks/locks.py``: net of the loop, each paired with a raw lock timed
next to it, median of 9 rounds), whatever N: 3.11 ``with lock:`` 1.9x a raw lock (~400 vs
~210 ns), ``acquire(); release()`` 2.5x (~237 vs ~93 ns); 3.13 1.75x / 2.3x; 3.10, whose
Python calls are slower, 2.2x / 3.1x. A lock made while off is the raw lock (1.00x). With two
thirds of the acquisitions contended, throughput stays within noise of a raw lock (0.95-1.0x
at N=1, 1.0x at N=100): one stack walk per sampled wait is small next to the wait itself. No
``__getattr__``: a class with one gets a slow attribute lookup on every access (x1.6 on the
fast path, measured).

Arguments behave exactly as the raw lock's: a blocking call with a timeout is first checked by
the raw C parser on a fresh free lock, so invalid combinations raise the same exception with
the same, version-specific message; the full timeout is passed to the blocking acquire after
the non-blocking try (which takes well under a microsecond). ``release()`` errors, ``locked()``,
the deprecated ``release_lock``/``locked_lock``, RLock's ``_is_owned``/``_release_save``/
``_recursion_count`` and ``_at_fork_reinit`` are the raw lock's bound methods (properties, each
defined only when the raw lock type has it; ``acquire_lock`` is the profiled ``acquire``).
RLock's ``_acquire_restore`` (how ``Condition.wait`` takes the lock back) is profiled.
Pickling and ``copy`` get the raw lock's own ``__reduce_ex__``, so they fail exactly as for the
raw lock (``TypeError``; ``PicklingError`` for a Lock with protocols 0-1); the repr is the raw
lock's plus ``(profiled by pyprof_http)``; wrappers are weak-referenceable like the raw locks.
Too many positional arguments raise ``TypeError`` as the raw lock does, with Python's wording.

**isinstance.** The stdlib of 3.10-3.13 has no ``isinstance`` or ``type`` check on lock objects
outside its tests (grep for ``LockType``, ``allocate_lock``, ``_CRLock``, ``isinstance(...Lock``);
internally it only calls ``Lock()``/``RLock()`` and the methods above. ``threading.Lock`` is a
builtin function up to 3.12 (``isinstance`` with it raises ``TypeError``) and the type
``_thread.lock`` in 3.13, where user code may check ``isinstance(x, threading.Lock)``: the
replacement is a class whose metaclass also accepts raw ``_thread.lock`` objects, so that check
holds for every lock while profiling is on. What cannot hold: ``isinstance(wrapper,
_thread.LockType)`` (a builtin type cannot be told about another class), and, on 3.13 after
switching off, ``isinstance(wrapper, threading.Lock)``. ``threading.RLock`` is a factory
function on every version, so nothing checks instances against it (the replacement is a class;
``isinstance`` with it now works instead of raising).

**asyncio.** The classes are patched, so locks that already exist count too:
``Lock.acquire`` and ``Semaphore.acquire`` (``BoundedSemaphore`` inherits it) become plain
functions that, when the lock is free (the original's own test: not locked and no live waiter;
``Semaphore.locked()``), return the original coroutine itself, so the uncontended cost is one
Python call and no extra frame. When it would wait, the draw is made and a sampled wait is
awaited inside a timing coroutine. ``asyncio.Condition.__init__`` copies ``lock.acquire`` into
the instance: a data descriptor on the class wins over that instance attribute and hands
out the patched acquire, so existing Conditions count too. Uncontended cost (3.10-3.13):
``async with lock:`` 1.1x, ``await acquire(); release()`` 1.3x; Semaphore 1.1x. The patched
``acquire`` is marked so ``asyncio.iscoroutinefunction`` still says yes (``inspect`` too on
3.12+). Creation sites are recorded for
asyncio locks made while on (patched ``__init__``, kept in a ``WeakKeyDictionary`` so instances
are untouched); older ones show ``lock=unknown``. A wait ended by an exception (cancellation,
a timeout around it, ``KeyboardInterrupt`` in a thread) records nothing and the exception passes
through unchanged; a threading wait that times out is recorded (that time was spent waiting).

**Labels and memory.** ``lock`` is the creation site (the first frame outside threading, queue,
asyncio and this module), ``thread``, ``task`` (asyncio's default ``Task-<n>`` names are
folded to ``Task-N``: the profile lives as long as the process, and a label per request would
grow without bound) and ``route`` (read from the waiter's own context, so it works on every
version and for ``asyncio.to_thread`` workers). Samples are aggregated in a dict of
(stack, labels) -> [count, delay] capped at :data:`MAX_KEYS`; past it new keys fold into one
``[truncated]`` stack per lock kind, and the profile says how many. Values are scaled by the
fraction in force when each was recorded (Go scales by the current one at write time).

Recording never takes a wrapped lock and never waits for its own: a recorded contention is
queued and folded into the aggregate by whoever finds the aggregate's lock free, so a thread
that holds an application lock never waits behind a snapshot (whose thread may run a signal
handler wanting that very lock). The aggregate's lock is a raw ``_thread`` lock (replaced in a
forked child, where a parent's thread may have held it), the thread name is read from
``threading._active`` (``current_thread()`` can create a ``_DummyThread``, which takes
``_active_limbo_lock``, an ``RLock`` after a fork), and any error is swallowed.
"""

from __future__ import annotations

import _thread
import asyncio
import collections
import contextlib
import functools
import inspect
import os
import random
import sys
import threading
import time
import types
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from types import FrameType
from typing import Any, ClassVar, Final, Protocol, SupportsIndex

from ..loops import code_name, is_auto_task_name
from ..model import Frame, LabelValue, Profile, Sample, ValueType, frame
from ..request_labels import CURRENT_REQUEST, route_of
from .frames import frame_stack, to_frame

CONTENTIONS: Final = ValueType("contentions", "count")
DELAY: Final = ValueType("delay", "nanoseconds")
"""Go's mutex and block profile types; ``/block`` (collectors/loop.py) uses them too."""
MAX_KEYS: Final = 10_000
"""Distinct (stack, labels) kept; further ones fold into a ``[truncated]`` stack."""
MAX_RECORDED_DEPTH: Final = 512
"""Frames kept per recorded stack (innermost first), before ``snapshot``'s ``max_depth``."""
NOT_ENABLED_REASON: Final = (
    "lock profiling is off: start the process with PYPROF_LOCK_PROFILE_FRACTION=N (or "
    "Settings(lock_profile_fraction=N), or call pyprof_http.set_lock_profile_fraction(N) at "
    "startup) to record 1 in N contended acquisitions; threading locks are seen only if created "
    "after that, asyncio locks at once"
)

LEAF_LOCK: Final = frame("threading.Lock.acquire", "<lock>", 0)
LEAF_RLOCK: Final = frame("threading.RLock.acquire", "<lock>", 0)
LEAF_ASYNC_LOCK: Final = frame("asyncio.Lock.acquire", "<lock>", 0)
LEAF_ASYNC_SEMAPHORE: Final = frame("asyncio.Semaphore.acquire", "<lock>", 0)
TRUNCATED: Final = frame(f"[truncated: more than {MAX_KEYS} distinct stacks]", "<lock>", 0)

_Key = tuple[tuple[Frame, ...], Frame | None, str, str, str]
"""stack (leaf first), lock creation site, thread, task, route ("" when absent)."""

_OWN_GLOBALS: Final = globals()
_SITE_SKIP: Final = frozenset({"threading", "queue", __name__})
_draw: Final = random.Random().random  # noqa: S311 (sampling, not secrets)
_now: Final = time.perf_counter_ns


class _RawLock(Protocol):
    def acquire(self, blocking: bool = ..., timeout: float = ...) -> bool: ...
    def release(self) -> None: ...


class _Counters:
    __slots__ = ("dropped", "folded", "recorded", "seen")

    def __init__(self) -> None:
        self.seen = self.recorded = self.folded = self.dropped = 0


_fraction = 0
_switch = _thread.allocate_lock()
"""Serialises :func:`set_fraction` (a raw lock: never wrapped)."""
_data_lock = _thread.allocate_lock()
"""Guards the aggregate; raw, so recording never enters a wrapped lock."""
_samples: dict[_Key, list[int]] = {}
_counters = _Counters()
_ASYNC_SITES: weakref.WeakKeyDictionary[object, Frame] = weakref.WeakKeyDictionary()


_pending: collections.deque[tuple[_Key | None, int, int] | None] = collections.deque()
"""Contentions not yet added to the aggregate: ``None`` for one seen but not sampled."""
_PENDING_MAX: Final = 100_000
_recording = _thread._local()
"""``busy`` is set while this thread holds :data:`_data_lock`."""


def _after_fork_in_child() -> None:
    """A thread of the parent may have held our locks at the fork: the child gets new ones."""
    global _switch, _data_lock, _recording
    _switch, _data_lock = _thread.allocate_lock(), _thread.allocate_lock()
    _recording = _thread._local()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# --- recording -----------------------------------------------------------------------------
#
# Recording never waits for :data:`_data_lock`. A thread records *after* it got the lock it
# waited for, so it holds an application lock; the thread holding ``_data_lock`` (a snapshot)
# may meanwhile run a signal handler or a ``__del__`` that wants that application lock. Waiting
# there would deadlock both. So a contention is appended to :data:`_pending` (atomic in
# CPython) and folded into the aggregate by whoever gets ``_data_lock`` without waiting, and by
# every snapshot.


def _hold(wait: bool = True) -> bool:
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


def _release() -> None:
    _data_lock.release()
    _recording.busy = False


def _record(item: tuple[_Key | None, int, int] | None) -> None:
    """Queue one contention (``None``: seen, not sampled) and fold the queue in if free."""
    if len(_pending) < _PENDING_MAX:
        _pending.append(item)
    else:
        _counters.dropped += 1  # approximate: only while nobody could fold for a long time
    if _hold(wait=False):
        try:
            _fold_pending()
        finally:
            _release()


def _fold_pending() -> None:
    """Add the queued contentions to the aggregate; :data:`_data_lock` is held."""
    pop = _pending.popleft
    while True:
        try:
            item = pop()
        except IndexError:
            return
        _counters.seen += 1
        if item is not None:
            _add_held(*item)


def _should_record() -> int:
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
    request = CURRENT_REQUEST.get()
    if request is None or not request.live:
        return ""
    return route_of(request.scope)


def _capture(caller: FrameType | None, leaf: Frame, site: Frame | None) -> _Key | None:
    """The waiter's stack (from the first frame outside this module) and labels; never raises."""
    try:
        while caller is not None and caller.f_globals is _OWN_GLOBALS:
            caller = caller.f_back
        stack = (leaf, *frame_stack(caller, MAX_RECORDED_DEPTH))
        return stack, site, _thread_name(), _task_name(), _route()
    except Exception:
        return None


def _add(key: _Key | None, delay_ns: int, fraction: int) -> None:
    """Count one sampled contention, scaled by ``fraction``."""
    _record((key, delay_ns, fraction))


def _add_held(key: _Key | None, delay_ns: int, fraction: int) -> None:
    if key is None:
        return
    entry = _samples.get(key)
    if entry is None:
        if len(_samples) >= MAX_KEYS:
            key = ((key[0][0], TRUNCATED), None, "", "", "")
            _counters.folded += 1
            entry = _samples.get(key)
        if entry is None:
            entry = _samples[key] = [0, 0]
    entry[0] += fraction
    entry[1] += delay_ns * fraction
    _counters.recorded += 1


def _creation_site(caller: FrameType | None) -> Frame | None:
    """The first frame outside threading, queue, asyncio and this module; never raises."""
    try:
        while caller is not None:
            module = caller.f_globals.get("__name__")
            if not (
                module in _SITE_SKIP
                or (isinstance(module, str) and module.partition(".")[0] == "asyncio")
            ):
                return to_frame(caller)
            caller = caller.f_back
    except Exception:
        return None
    return None


# --- threading --------------------------------------------------------------------------------

_lock_factory: Callable[..., Any] = threading.Lock
"""What ``threading.Lock`` was when profiling was switched on: makes the raw inner locks."""
_rlock_factory: Callable[..., Any] = threading.RLock


class _Profiled:
    """What a profiled Lock and RLock share. ``release`` is the raw lock's bound method."""

    __slots__ = ("__weakref__", "_inner", "_site", "release")
    _LEAF: ClassVar[Frame]
    _inner: _RawLock
    _site: Frame | None
    release: Callable[[], None]

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if blocking is True and timeout == -1:
            if self._inner.acquire(False):
                return True
            return self._wait(-1)
        return self._acquire_with(blocking, timeout)

    def __enter__(self) -> bool:
        if self._inner.acquire(False):
            return True
        return self._wait(-1)

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def _acquire_with(self, blocking: bool, timeout: float) -> bool:
        """``acquire`` with explicit arguments: validated by the raw lock itself."""
        inner = self._inner
        if not blocking:
            return inner.acquire(blocking, timeout)
        _thread.allocate_lock().acquire(blocking, timeout)  # a free lock: raises as the raw one
        seconds = float(timeout)
        if inner.acquire(False):
            return True
        if seconds == 0:
            return inner.acquire(True, 0)
        return self._wait(seconds)

    def _wait(self, timeout: float) -> bool:
        """The raw lock is taken: block, timing the wait when it is sampled."""
        fraction = _should_record()
        if not fraction:
            return self._inner.acquire(True, timeout)
        key = _capture(sys._getframe(1), self._LEAF, self._site)
        start = _now()
        acquired = self._inner.acquire(True, timeout)
        _add(key, _now() - start, fraction)
        return acquired

    def __reduce_ex__(self, protocol: SupportsIndex) -> str | tuple[Any, ...]:
        """The raw lock's: pickle and copy then fail exactly as for the raw lock."""
        return self._inner.__reduce_ex__(protocol)

    def __repr__(self) -> str:
        return f"{repr(self._inner)[:-1]} (profiled by pyprof_http)>"


class _LockMeta(type):
    """Metaclass of :class:`ProfiledLock`: raw ``_thread.lock`` objects are instances too, so
    ``isinstance(x, threading.Lock)`` (meaningful on 3.13) holds for every lock while on."""

    def __instancecheck__(cls, instance: Any) -> bool:
        return type.__instancecheck__(cls, instance) or isinstance(instance, _thread.LockType)

    def __subclasscheck__(cls, subclass: type) -> bool:
        return type.__subclasscheck__(cls, subclass) or issubclass(subclass, _thread.LockType)


class ProfiledLock(_Profiled, metaclass=_LockMeta):
    """``threading.Lock`` while lock profiling is on."""

    __slots__ = ("locked",)
    _LEAF = LEAF_LOCK
    locked: Callable[[], bool]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        inner = _lock_factory(*args, **kwargs)
        self._inner = inner
        self.release = inner.release
        self.locked = inner.locked
        self._site = _creation_site(sys._getframe(1))


class ProfiledRLock(_Profiled):
    """``threading.RLock`` while lock profiling is on."""

    __slots__ = ()
    _LEAF = LEAF_RLOCK

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        inner = _rlock_factory(*args, **kwargs)
        self._inner = inner
        self.release = inner.release
        self._site = _creation_site(sys._getframe(1))

    def _acquire_restore(self, state: Any) -> None:
        """How ``Condition.wait`` takes the lock back; profiled when it has to wait."""
        inner: Any = self._inner
        if _fraction:
            if inner.acquire(False):
                inner.release()  # free: give it back, then restore the saved owner and count
            else:
                fraction = _should_record()
                if fraction:
                    key = _capture(sys._getframe(1), self._LEAF, self._site)
                    start = _now()
                    inner._acquire_restore(state)
                    _add(key, _now() - start, fraction)
                    return
        inner._acquire_restore(state)


def _delegate(name: str) -> property:
    """The raw lock's attribute ``name`` (a bound method: callers that keep it pay nothing)."""
    return property(lambda self: getattr(self._inner, name), doc=f"The raw lock's ``{name}``.")


def _add_delegates(cls: type, raw_type: type, names: tuple[str, ...]) -> None:
    """Give ``cls`` each of ``names`` that the raw lock type has, and only those. Not
    ``__getattr__``: a class with one gets a slow attribute lookup for every access (measured:
    x1.6 on the fast path)."""
    for name in names:
        if hasattr(raw_type, name) and name not in cls.__dict__:
            setattr(cls, name, _delegate(name))


_add_delegates(ProfiledLock, _thread.LockType, ("_at_fork_reinit", "release_lock", "locked_lock"))
_add_delegates(ProfiledRLock, _thread.RLock, (
    "_at_fork_reinit", "_is_owned", "_release_save", "_recursion_count", "locked"))
if hasattr(_thread.LockType, "acquire_lock"):
    ProfiledLock.acquire_lock = _Profiled.acquire  # type: ignore[attr-defined]


# --- asyncio ---------------------------------------------------------------------------------

_async_lock_acquire: Callable[..., Any] = asyncio.Lock.acquire
"""The originals, as found when profiling was switched on."""
_async_semaphore_acquire: Callable[..., Any] = asyncio.Semaphore.acquire
_async_lock_init: Callable[..., None] = asyncio.Lock.__init__
_async_semaphore_init: Callable[..., None] = asyncio.Semaphore.__init__


async def _timed(waiting: Awaitable[bool], key: _Key | None, fraction: int) -> bool:
    start = _now()
    acquired = await waiting
    _add(key, _now() - start, fraction)
    return acquired


def _async_contended(
    waiting: Coroutine[Any, Any, bool], lock: object, leaf: Frame
) -> Coroutine[Any, Any, bool]:
    fraction = _should_record()
    if not fraction:
        return waiting
    try:
        site = _ASYNC_SITES.get(lock)
    except TypeError:  # unhashable subclass
        site = None
    return _timed(waiting, _capture(sys._getframe(1), leaf, site), fraction)


def _mark_coroutine_function(func: Callable[..., Any]) -> None:
    """So ``inspect``/``asyncio.iscoroutinefunction`` still say yes where they can."""
    mark = getattr(inspect, "markcoroutinefunction", None)
    if mark is not None:
        mark(func)  # 3.12+
    else:
        func._is_coroutine = asyncio.coroutines._is_coroutine  # type: ignore[attr-defined]


@functools.wraps(asyncio.Lock.acquire)
def _lock_acquire(self: asyncio.Lock) -> Coroutine[Any, Any, bool]:
    waiting: Coroutine[Any, Any, bool] = _async_lock_acquire(self)
    locked, waiters = self._locked, self._waiters  # type: ignore[attr-defined]
    if not locked and (not waiters or all(w.cancelled() for w in waiters)):
        return waiting
    return _async_contended(waiting, self, LEAF_ASYNC_LOCK)


@functools.wraps(asyncio.Semaphore.acquire)
def _semaphore_acquire(self: asyncio.Semaphore) -> Coroutine[Any, Any, bool]:
    waiting: Coroutine[Any, Any, bool] = _async_semaphore_acquire(self)
    if (self._value > 0 and not self._waiters) or not self.locked():
        return waiting
    return _async_contended(waiting, self, LEAF_ASYNC_SEMAPHORE)


def _remember_site(lock: object, caller: FrameType) -> None:
    site = _creation_site(caller)
    if site is not None:
        with contextlib.suppress(TypeError):  # unhashable subclass
            _ASYNC_SITES[lock] = site


@functools.wraps(asyncio.Lock.__init__)
def _lock_init(self: asyncio.Lock, *args: Any, **kwargs: Any) -> None:
    _async_lock_init(self, *args, **kwargs)
    _remember_site(self, sys._getframe(1))


@functools.wraps(asyncio.Semaphore.__init__)
def _semaphore_init(self: asyncio.Semaphore, *args: Any, **kwargs: Any) -> None:
    _async_semaphore_init(self, *args, **kwargs)
    _remember_site(self, sys._getframe(1))


_mark_coroutine_function(_lock_acquire)
_mark_coroutine_function(_semaphore_acquire)


class _ConditionAcquire:
    """``asyncio.Condition.acquire`` while on. ``Condition.__init__`` stores ``lock.acquire`` in
    the instance; this data descriptor wins over it and rebinds the original to the patched one,
    so Conditions made before switching on count too. Removed on switching off."""

    def __get__(self, cond: object, owner: type | None = None) -> Any:
        if cond is None:
            raise AttributeError("acquire")
        try:
            bound = vars(cond)["acquire"]
        except KeyError:
            raise AttributeError("acquire") from None
        if getattr(bound, "__func__", None) is _async_lock_acquire:
            return types.MethodType(_lock_acquire, bound.__self__)
        return bound

    def __set__(self, cond: object, value: Any) -> None:
        vars(cond)["acquire"] = value

    def __delete__(self, cond: object) -> None:
        del vars(cond)["acquire"]


# --- switching -------------------------------------------------------------------------------

_MISSING: Final = object()
_patched: list[tuple[object, str, object, object]] = []
"""(owner, name, what was there or _MISSING, what we put) for each patched attribute."""


def _own_attribute(owner: object, name: str) -> object:
    if isinstance(owner, type):
        return owner.__dict__.get(name, _MISSING)
    return getattr(owner, name, _MISSING)


_ORIGINALS: dict[tuple[object, str], Any] = {}
"""What each patched attribute was the first time we patched it (or since changed by others)."""
_LEFT: dict[tuple[object, str], object] = {}
"""What each attribute was when we last switched off: ours replaced by the original, or a
wrapper someone put over ours, left in place (it may call ours)."""


def _original(owner: object, name: str) -> Any:
    """The attribute our replacement must call. Not simply the current one: a wrapper another
    library put over ours (left in place when we switched off) calls ours, and taking it as the
    original would make ours call itself. Changed by someone else since: theirs is the new one."""
    key = (owner, name)
    current = _own_attribute(owner, name)
    if key not in _ORIGINALS or _LEFT.get(key, _MISSING) is not current:
        _ORIGINALS[key] = current
    return _ORIGINALS[key]


def _patch() -> None:
    global _lock_factory, _rlock_factory, _async_lock_acquire, _async_semaphore_acquire
    global _async_lock_init, _async_semaphore_init
    code_name(sys._getframe())  # warm its name table now (3.10 imports modules on first use)
    _lock_factory, _rlock_factory = _original(threading, "Lock"), _original(threading, "RLock")
    _async_lock_acquire = _original(asyncio.Lock, "acquire")
    _async_semaphore_acquire = _original(asyncio.Semaphore, "acquire")
    _async_lock_init = _original(asyncio.Lock, "__init__")
    _async_semaphore_init = _original(asyncio.Semaphore, "__init__")
    replacements: tuple[tuple[object, str, object], ...] = (
        (threading, "Lock", ProfiledLock),
        (threading, "RLock", ProfiledRLock),
        (asyncio.Lock, "acquire", _lock_acquire),
        (asyncio.Lock, "__init__", _lock_init),
        (asyncio.Semaphore, "acquire", _semaphore_acquire),
        (asyncio.Semaphore, "__init__", _semaphore_init),
        (asyncio.Condition, "acquire", _ConditionAcquire()),
    )
    for owner, name, new in replacements:
        _patched.append((owner, name, _own_attribute(owner, name), new))
        setattr(owner, name, new)


def _unpatch() -> None:
    """Put back what was there, unless someone else has replaced our attribute since."""
    while _patched:
        owner, name, old, new = _patched.pop()
        if _own_attribute(owner, name) is new:
            if old is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, old)
        _LEFT[(owner, name)] = _own_attribute(owner, name)


def set_fraction(n: int) -> int:
    """Record 1 in ``n`` contended acquisitions (0: off, nothing patched); return the previous
    value, as Go's ``runtime.SetMutexProfileFraction``."""
    global _fraction
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"lock profile fraction must be an int, not {type(n).__name__}")
    if n < 0:
        raise ValueError(f"lock profile fraction must be >= 0, got {n}")
    with _switch:
        previous = _fraction
        if n and not previous:
            try:
                _patch()
            except BaseException:
                _unpatch()  # all or nothing
                raise
        _fraction = n
        if previous and not n:
            _unpatch()
        return previous


def fraction() -> int:
    """The current sampling fraction (0: off)."""
    return _fraction


def is_enabled() -> bool:
    return _fraction > 0


def contentions() -> int:
    """Contended acquisitions seen so far (sampled or not), for the index's count column."""
    return _counters.seen + len(_pending)


def reset() -> None:
    """Forget everything recorded (for tests)."""
    if _hold():
        try:
            _pending.clear()
            _samples.clear()
            _counters.seen = _counters.recorded = _counters.folded = _counters.dropped = 0
        finally:
            _release()


# --- the profile -----------------------------------------------------------------------------


def _site_text(site: Frame | None) -> str:
    return "unknown" if site is None else f"{site.function} {site.filename}:{site.line}"


def _labels(key: _Key) -> dict[str, LabelValue]:
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
    items: list[tuple[_Key, int, int]] = []
    seen = recorded = folded = dropped = 0
    if _hold():  # (not held: called from a handler that interrupted recording: empty)
        try:
            _fold_pending()
            items = [(key, entry[0], entry[1]) for key, entry in _samples.items()]
            seen, recorded, folded = _counters.seen, _counters.recorded, _counters.folded
            dropped = _counters.dropped
        finally:
            _release()
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
        f"sampling period={_fraction}",
        f"{seen} contended acquisitions seen, {recorded} recorded; values are scaled by the "
        "sampling period in force when each was recorded",
        "threading locks created before lock profiling was switched on are not seen",
    ]
    if folded:
        comments.append(
            f"{folded} recorded contentions had a new stack past {MAX_KEYS} distinct stacks "
            "and were folded into [truncated] samples without labels"
        )
    if dropped:
        comments.append(f"{dropped} contentions were dropped: more than {_PENDING_MAX} waited "
                        "to be added while the profile was busy")
    return tuple(comments)
