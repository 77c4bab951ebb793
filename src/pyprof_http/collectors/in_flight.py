"""One computation per key at a time, shared by every caller that arrives while it runs.

A burst of identical requests (200 concurrent goroutine dumps) must cost one snapshot and one
rendering, not one each: the first caller computes, later callers await its result. Callers
may be on different event loops (the app's and a side server's), so the result travels in a
``concurrent.futures.Future``. A caller that is cancelled while computing hands the work over:
the callers waiting on it start again, and one of them computes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

_T = TypeVar("_T")


class _Abandoned(Exception):
    """The caller computing the value was cancelled: a waiter takes over."""


class InFlight(Generic[_T]):
    """Share computations by key. ``keep``: keep each finished result (a memo for the life of
    this object) instead of computing afresh for callers that come after it finished."""

    def __init__(self, keep: bool = False) -> None:
        self._pending: dict[Hashable, concurrent.futures.Future[_T]] = {}
        self._lock = threading.Lock()
        self._keep = keep

    def __len__(self) -> int:
        """Computations running or kept."""
        return len(self._pending)

    async def run(self, key: Hashable, compute: Callable[[], Awaitable[_T]]) -> _T:
        while True:
            with self._lock:
                pending = self._pending.get(key)
                leader = pending is None
                if pending is None:
                    pending = self._pending[key] = concurrent.futures.Future()
            if not leader:
                try:
                    if pending.done():
                        return pending.result()
                    # shield: a waiter that goes away must not cancel the others' result
                    return await asyncio.shield(asyncio.wrap_future(pending))
                except _Abandoned:
                    continue
            try:
                value = await compute()
            except BaseException as exc:
                self._forget(key)
                pending.set_exception(_Abandoned() if isinstance(exc, asyncio.CancelledError)
                                      else exc)
                raise
            if not self._keep:
                self._forget(key)
            pending.set_result(value)
            return value

    def _forget(self, key: Hashable) -> None:
        with self._lock:
            del self._pending[key]
