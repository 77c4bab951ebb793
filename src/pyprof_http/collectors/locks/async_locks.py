"""The asyncio half of lock profiling: ``asyncio.Lock``/``Semaphore``/``Condition`` are timed.


**asyncio.** The classes are patched, so locks that already exist count too:
``Lock.acquire`` and ``Semaphore.acquire`` (``BoundedSemaphore`` inherits it) become plain
functions that, when the lock is free (the original's own test: not locked and no live waiter;
``Semaphore.locked()``), return the original coroutine itself, so the uncontended cost is one
Python call and no extra frame. When it would wait, the draw is made and a sampled wait is
awaited inside a timing coroutine. ``asyncio.Condition.__init__`` copies ``lock.acquire`` into
the instance: a data descriptor on the class wins over that instance attribute and hands
out the patched acquire, so existing Conditions count too (their cost: ``benchmarks/locks.py``,
quoted in the README). The patched
``acquire`` is marked so ``asyncio.iscoroutinefunction`` still says yes (``inspect`` too on
3.12+). Creation sites are recorded for
asyncio locks made while on (patched ``__init__``, kept in a ``WeakKeyDictionary`` so instances
are untouched); older ones show ``lock=unknown``. A wait ended by an exception (cancellation,
a timeout around it, ``KeyboardInterrupt`` in a thread) records nothing and the exception passes
through unchanged; a threading wait that times out is recorded (that time was spent waiting).

**Reloads.** The originals are read through the marks :mod:`pyprof_http._patching` leaves on
our replacements (after a reload while on, ``asyncio.Lock.acquire`` is our own function: calling
it as "the original" would recurse until ``RecursionError``). A reload while on adopts the
patches with this generation's functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import sys
import types
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from types import FrameType
from typing import Any

from ... import _patching
from ...model import Frame
from .recording import (
    LEAF_ASYNC_LOCK,
    LEAF_ASYNC_SEMAPHORE,
    Key,
    add,
    capture,
    creation,
    now,
    should_record,
)

_SITES: weakref.WeakKeyDictionary[object, Frame] = (
    globals().get("_SITES") or weakref.WeakKeyDictionary())
"""Creation sites of asyncio locks made while on (instances are left untouched)."""


def _original(owner: type, name: str) -> Any:
    found = _patching.original_of(owner, name)
    return found[0] if found else None


_async_lock_acquire: Callable[..., Any] = _original(asyncio.Lock, "acquire")
"""The originals (as found when profiling was switched on)."""
_async_semaphore_acquire: Callable[..., Any] = _original(asyncio.Semaphore, "acquire")
_async_lock_init: Callable[..., None] = _original(asyncio.Lock, "__init__")
_async_semaphore_init: Callable[..., None] = _original(asyncio.Semaphore, "__init__")


async def _timed(waiting: Awaitable[bool], key: Key | None, fraction: int) -> bool:
    start = now()
    acquired = await waiting
    add(key, now() - start, fraction)
    return acquired


def _contended(
    waiting: Coroutine[Any, Any, bool], lock: object, leaf: Frame
) -> Coroutine[Any, Any, bool]:
    fraction = should_record()
    if not fraction:
        return waiting
    try:
        site = _SITES.get(lock)
    except TypeError:  # unhashable subclass
        site = None
    return _timed(waiting, capture(sys._getframe(1), leaf, site), fraction)


def _mark_coroutine_function(func: Callable[..., Any]) -> None:
    """So ``inspect``/``asyncio.iscoroutinefunction`` still say yes where they can."""
    mark = getattr(inspect, "markcoroutinefunction", None)
    if mark is not None:
        mark(func)  # 3.12+
    else:
        func._is_coroutine = asyncio.coroutines._is_coroutine  # type: ignore[attr-defined]


def _like(original: Callable[..., Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``functools.wraps`` without copying ``__dict__`` (it would carry an old generation's
    patch marks when the original is looked up while ours is in place)."""
    return functools.wraps(original, updated=())


@_like(_async_lock_acquire)
def _lock_acquire(self: asyncio.Lock) -> Coroutine[Any, Any, bool]:
    waiting: Coroutine[Any, Any, bool] = _async_lock_acquire(self)
    locked, waiters = self._locked, self._waiters  # type: ignore[attr-defined]
    if not locked and (not waiters or all(w.cancelled() for w in waiters)):
        return waiting
    return _contended(waiting, self, LEAF_ASYNC_LOCK)


@_like(_async_semaphore_acquire)
def _semaphore_acquire(self: asyncio.Semaphore) -> Coroutine[Any, Any, bool]:
    waiting: Coroutine[Any, Any, bool] = _async_semaphore_acquire(self)
    if (self._value > 0 and not self._waiters) or not self.locked():
        return waiting
    return _contended(waiting, self, LEAF_ASYNC_SEMAPHORE)


def _remember_site(lock: object, caller: FrameType) -> None:
    site = creation(caller)[0]
    if site is not None:
        with contextlib.suppress(TypeError):  # unhashable subclass
            _SITES[lock] = site


@_like(_async_lock_init)
def _lock_init(self: asyncio.Lock, *args: Any, **kwargs: Any) -> None:
    _async_lock_init(self, *args, **kwargs)
    _remember_site(self, sys._getframe(1))


@_like(_async_semaphore_init)
def _semaphore_init(self: asyncio.Semaphore, *args: Any, **kwargs: Any) -> None:
    _async_semaphore_init(self, *args, **kwargs)
    _remember_site(self, sys._getframe(1))


_mark_coroutine_function(_lock_acquire)
_mark_coroutine_function(_semaphore_acquire)


class ConditionAcquire:
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


_PATCHED: tuple[tuple[type, str], ...] = (
    (asyncio.Condition, "acquire"), (asyncio.Semaphore, "__init__"),
    (asyncio.Semaphore, "acquire"), (asyncio.Lock, "__init__"), (asyncio.Lock, "acquire"))
"""What :func:`patch` replaces, in the order :func:`unpatch` puts it back."""


def _replacements() -> tuple[tuple[type, str, object], ...]:
    return (
        (asyncio.Lock, "acquire", _lock_acquire),
        (asyncio.Lock, "__init__", _lock_init),
        (asyncio.Semaphore, "acquire", _semaphore_acquire),
        (asyncio.Semaphore, "__init__", _semaphore_init),
        (asyncio.Condition, "acquire", ConditionAcquire()),
    )


def patch() -> None:
    """Patch the classes (each replacement over the true original)."""
    global _async_lock_acquire, _async_semaphore_acquire, _async_lock_init, _async_semaphore_init
    _async_lock_acquire = _original(asyncio.Lock, "acquire")
    _async_semaphore_acquire = _original(asyncio.Semaphore, "acquire")
    _async_lock_init = _original(asyncio.Lock, "__init__")
    _async_semaphore_init = _original(asyncio.Semaphore, "__init__")
    for owner, name, new in _replacements():
        _patching.apply(owner, name, new, _patching.original_of(owner, name))


def unpatch() -> None:
    """Put back what was there, unless someone else has replaced ours since."""
    for owner, name in _PATCHED:
        _patching.restore(owner, name)


if _patching.is_ours(_patching.own_attribute(asyncio.Lock, "acquire")):
    patch()  # reloaded while on: adopt (this generation's functions over the true originals)
