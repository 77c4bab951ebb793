"""The ``/trace`` collector: what every event loop ran, and when, for a window of N seconds.

:func:`record` puts the hooks of :mod:`.trace_hooks` in place for the window and takes them out
again however it ends (the window's time, a client that hangs up, the app's shutdown); the
raw :class:`~.trace_hooks.Recording` is turned into a capture by :mod:`.trace_build`, off the
loop. uvloop runs its callbacks in C: nothing of them can be seen from Python, and the trace
says so (requests, markers, thread-pool work, GC and stalls are still recorded). Stalls come
from the ``block`` watchdog's history after the window. Costs: ``benchmarks/trace.py``.
"""

from __future__ import annotations

import asyncio
import asyncio.base_events as base_events
import concurrent.futures.thread as cf_thread
import gc
import sys
import threading
import time
from asyncio import events
from collections.abc import Awaitable, Callable
from time import monotonic_ns
from typing import Final

from .. import _patching, markers
from ..loops import LOOPS
from .loop import WATCHDOGS
from .trace_hooks import Hooks, Recording

MAX_EVENTS: Final = 200_000
"""Events kept per trace (~150 bytes each while recording): past it they are counted."""


def blind_loops() -> list[str]:
    """Running loops whose callbacks are not run by ``Handle._run`` (uvloop's are C)."""
    return sorted({f"{type(info.loop).__module__}.{type(info.loop).__qualname__}"
                   for info in LOOPS.running()
                   if not isinstance(info.loop, asyncio.BaseEventLoop)})


async def record(seconds: float, wait: Callable[[float], Awaitable[None]],
                 max_depth: int = 64, max_events: int = MAX_EVENTS) -> Recording:
    """Record for ``seconds`` (``wait`` ends early on a disconnect or shutdown, raising or
    returning); everything hooked is put back before this returns or raises."""
    recording = Recording(markers.TraceBuffer(max_events), monotonic_ns(), time.time_ns())
    recording.blind_loops = blind_loops()
    recording.watchdog = bool(WATCHDOGS.watching())
    hooks = Hooks(recording, max_depth)
    try:
        hooks.install()
        await wait(seconds)
    finally:
        hooks.remove()
        recording.ended_ns = monotonic_ns()
        recording.thread_names = {t.ident: t.name for t in threading.enumerate()
                                  if t.ident is not None}
    return recording


def is_hooked() -> bool:
    """Whether anything of a trace is in place now (tests: nothing may stay patched)."""
    return (markers.ACTIVE is not None
            or _patching.applied(events.Handle, "_run")
            or _patching.applied(base_events.BaseEventLoop, "_call_soon")
            or _patching.applied(cf_thread._WorkItem, "run")
            or any(type(getattr(cb, "__self__", None)).__name__ == "Hooks" for cb in gc.callbacks)
            or ("anyio.to_thread" in sys.modules
                and _patching.applied(sys.modules["anyio.to_thread"], "run_sync")))
