"""Pause the cyclic garbage collector around bursts of small allocations.

Walking 10,000 tasks or building a profile of them makes tens of thousands of tuples; with the
collector on, that triggers dozens of collections, and sometimes a full one over the whole
application heap, in the middle of a request that holds the event loop. None of these objects
form cycles, so the collector has nothing to find in them: pause it, and restore it exactly as
it was (an application that disabled it keeps it disabled).
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_depth = 0
_was_enabled = False


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Nested and cross-thread safe: the collector comes back when the last user leaves."""
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()
