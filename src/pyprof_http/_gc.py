"""Pause the cyclic garbage collector around bursts of small allocations.

Building the records of 10,000 tasks makes tens of thousands of tuples; with the collector on,
that triggers dozens of collections, and these promote records that are about to be thrown
away, bringing on full collections of the whole application heap, which hold the GIL and so
every thread, the event loop's too. None of these objects form cycles, so the collector has
nothing to find in them: pause it, and restore it exactly as it was (an application that
disabled it keeps it disabled).
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
