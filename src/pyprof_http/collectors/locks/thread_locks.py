"""The threading half of lock profiling: ``threading.Lock``/``RLock`` made while on are wrappers.

**threading.** ``threading.Lock`` and ``threading.RLock`` (module attributes) are replaced by
:class:`ProfiledLock` and :class:`ProfiledRLock`, so locks created *afterwards* are wrappers,
including those made inside ``Condition()``, ``Semaphore``, ``Event``, ``Barrier``,
``queue.Queue``, ``concurrent.futures`` and ``logging`` handlers, which look ``Lock``/``RLock``
up at call time. Locks created before are raw C locks and stay unseen: a lock cannot be swapped
under the code that holds it, nor can ``from threading import Lock`` done earlier be changed
(and one done while on keeps making wrappers after switching off: they work, at a wrapper's
fast-path cost). threading's private ``_allocate_lock`` (Condition waiters, thread state locks) is
left alone: waiting on a Condition is not lock contention. Each wrapper is a ``__slots__``
object around the raw lock; ``release`` and ``locked`` are the raw lock's own bound methods
stored in slots (no Python frame at all); ``acquire``/``__enter__`` first try the raw
``acquire(False)`` and return at once when it succeeds, so an uncontended acquisition costs one
Python call, whether profiling is on or off. Only when that try fails and the caller wanted to
block is the 1-in-N draw made (``random.random() * N < 1``: unbiased whatever the pattern) and,
if drawn, the blocking acquire timed with ``perf_counter_ns``. The waiter's stack is taken
*before* blocking (time it would spend waiting anyway); the aggregate is updated once the lock
is held. A lock made while off is the raw lock itself. What the wrapper costs, uncontended and
contended, is measured by ``benchmarks/locks.py`` and quoted in the README. No
``__getattr__``: a class with one gets a slow attribute lookup on every access.

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

**Code that needs the C lock gets it.** trio builds its signal-safe entry queue with
``threading.RLock`` read at import and asserts that the lock's class lives in ``_thread``; a
wrapper there breaks every ``trio.run`` for the life of the process (and trio keeps the class it
read, so switching off would not help). Locks made by code in a package named in
:data:`RAW_LOCK_PACKAGES` (``trio`` by default; add to it for others) are the raw C lock,
whether profiling is on or off: the creating module is already found for the ``lock`` label, so
this costs nothing extra. Not a ``__module__`` disguise: such code relies on the C lock's
signal safety, not on its name.

**Reloads.** The raw factories are the true originals found through the marks
:mod:`pyprof_http._patching` leaves on our replacements, never "whatever ``threading.Lock`` is
now" (after a reload while on, that is our own class: every lock would recurse into itself).
A reload while on adopts the patches: this generation's classes replace the old ones, which
keep working for the locks they made.
"""

from __future__ import annotations

import _thread
import sys
import threading
from collections.abc import Callable
from typing import Any, ClassVar, Protocol, SupportsIndex

from ... import _patching
from ...model import Frame
from .recording import (
    LEAF_LOCK,
    LEAF_RLOCK,
    add,
    capture,
    creation,
    now,
    should_record,
)
from .recording import (
    fraction as current_fraction,
)

RAW_LOCK_PACKAGES: set[str] = globals().get("RAW_LOCK_PACKAGES") or {"trio"}
"""Top-level packages whose code gets raw C locks: they rely on the C lock's type or its
signal safety. Mutable: add a package name to exclude it."""


class _RawLock(Protocol):
    def acquire(self, blocking: bool = ..., timeout: float = ...) -> bool: ...
    def release(self) -> None: ...


def _raw_factory(name: str) -> Callable[..., Any]:
    found = _patching.original_of(threading, name)
    if found:
        return found[0]  # type: ignore[no-any-return]
    return _thread.allocate_lock if name == "Lock" else _thread.RLock


_lock_factory: Callable[..., Any] = _raw_factory("Lock")
"""The true ``threading.Lock``: makes the raw inner locks."""
_rlock_factory: Callable[..., Any] = _raw_factory("RLock")


def _site_or_raw(caller: Any) -> tuple[Frame | None, bool]:
    """The creation site, and whether the creating code must get the raw lock."""
    site, module = creation(caller)
    return site, module.partition(".")[0] in RAW_LOCK_PACKAGES


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
        fraction = should_record()
        if not fraction:
            return self._inner.acquire(True, timeout)
        key = capture(sys._getframe(1), self._LEAF, self._site)
        start = now()
        acquired = self._inner.acquire(True, timeout)
        add(key, now() - start, fraction)
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

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        inner = _lock_factory(*args, **kwargs)
        site, raw = _site_or_raw(sys._getframe(1))
        if raw:
            return inner
        self = object.__new__(cls)
        self._inner = inner
        self.release = inner.release
        self.locked = inner.locked
        self._site = site
        return self


class ProfiledRLock(_Profiled):
    """``threading.RLock`` while lock profiling is on."""

    __slots__ = ()
    _LEAF = LEAF_RLOCK

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        inner = _rlock_factory(*args, **kwargs)
        site, raw = _site_or_raw(sys._getframe(1))
        if raw:
            return inner
        self = object.__new__(cls)
        self._inner = inner
        self.release = inner.release
        self._site = site
        return self

    def _acquire_restore(self, state: Any) -> None:
        """How ``Condition.wait`` takes the lock back; profiled when it has to wait."""
        inner: Any = self._inner
        if current_fraction():
            if inner.acquire(False):
                inner.release()  # free: give it back, then restore the saved owner and count
            else:
                fraction = should_record()
                if fraction:
                    key = capture(sys._getframe(1), self._LEAF, self._site)
                    start = now()
                    inner._acquire_restore(state)
                    add(key, now() - start, fraction)
                    return
        inner._acquire_restore(state)


def _delegate(name: str) -> property:
    """The raw lock's attribute ``name`` (a bound method: callers that keep it pay nothing)."""
    return property(lambda self: getattr(self._inner, name), doc=f"The raw lock's ``{name}``.")


def _add_delegates(cls: type, raw_type: type, names: tuple[str, ...]) -> None:
    """Give ``cls`` each of ``names`` that the raw lock type has, and only those. Not
    ``__getattr__``: a class with one gets a slow attribute lookup for every access."""
    for name in names:
        if hasattr(raw_type, name) and name not in cls.__dict__:
            setattr(cls, name, _delegate(name))


_add_delegates(ProfiledLock, _thread.LockType, ("_at_fork_reinit", "release_lock", "locked_lock"))
_add_delegates(ProfiledRLock, _thread.RLock, (
    "_at_fork_reinit", "_is_owned", "_release_save", "_recursion_count", "locked"))
if hasattr(_thread.LockType, "acquire_lock"):
    ProfiledLock.acquire_lock = _Profiled.acquire  # type: ignore[attr-defined]



def patch() -> None:
    """Replace ``threading.Lock``/``RLock`` by the wrappers (over the true originals)."""
    global _lock_factory, _rlock_factory
    lock = _patching.original_of(threading, "Lock")
    rlock = _patching.original_of(threading, "RLock")
    _lock_factory = lock[0] if lock else _thread.allocate_lock
    _rlock_factory = rlock[0] if rlock else _thread.RLock
    _patching.apply(threading, "Lock", ProfiledLock, lock)
    _patching.apply(threading, "RLock", ProfiledRLock, rlock)


def unpatch() -> None:
    """Put the originals back, unless someone replaced ours since (then leave theirs)."""
    for name in ("RLock", "Lock"):
        _patching.restore(threading, name)


if _patching.is_ours(_patching.own_attribute(threading, "Lock")):
    patch()  # reloaded while on: adopt (this generation's classes over the true originals)
