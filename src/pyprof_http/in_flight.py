"""One computation per key at a time, shared by every caller that arrives while it runs.

A burst of identical requests (200 concurrent goroutine dumps) must cost one snapshot and one
rendering, not one each: the first caller computes, later callers await its result. Callers
may be on different event loops (the app's and a side server's), so the result travels in a
``concurrent.futures.Future``. A caller that is cancelled while computing hands the work over:
the callers waiting on it start again, and one of them computes. A caller on another loop
waits at most ``other_loop_wait_s`` for it: the computing caller needs its own loop to run to
deliver, and that loop may be the blocked one a side server is asked to look at.
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

    def __init__(self, keep: bool = False, other_loop_wait_s: float | None = None) -> None:
        self._pending: dict[Hashable, tuple[concurrent.futures.Future[_T],
                                            asyncio.AbstractEventLoop]] = {}
        self._lock = threading.Lock()
        self._keep = keep
        self._other_loop_wait_s = other_loop_wait_s

    def __len__(self) -> int:
        """Computations running or kept."""
        return len(self._pending)

    async def run(self, key: Hashable, compute: Callable[[], Awaitable[_T]]) -> _T:
        here = asyncio.get_running_loop()
        while True:
            with self._lock:
                found = self._pending.get(key)
                if found is None:
                    pending: concurrent.futures.Future[_T] = concurrent.futures.Future()
                    self._pending[key] = (pending, here)
                    leader = True
                else:
                    (pending, leader_loop), leader = found, False
            if not leader:
                try:
                    if pending.done():
                        return pending.result()
                    # shield: a waiter that goes away must not cancel the others' result
                    waiting = asyncio.shield(asyncio.wrap_future(pending))
                    if leader_loop is here or self._other_loop_wait_s is None:
                        return await waiting
                    return await asyncio.wait_for(waiting, self._other_loop_wait_s)
                except _Abandoned:
                    continue
                except asyncio.TimeoutError:  # that loop does not come back: compute alone
                    return await compute()
            try:
                value = await compute()
            except BaseException as exc:
                self._forget(key)
                # cancelled, or closed (its loop dropped with it pending): a waiter takes over
                gone = isinstance(exc, (asyncio.CancelledError, GeneratorExit))
                pending.set_exception(_Abandoned() if gone else exc)
                raise
            if not self._keep:
                self._forget(key)
            pending.set_result(value)
            return value

    def _forget(self, key: Hashable) -> None:
        with self._lock:
            del self._pending[key]
