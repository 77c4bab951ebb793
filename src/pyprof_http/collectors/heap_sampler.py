"""The always-on heap profile, as Go's: the sampling allocator hook of ``_heapsample``.

The C extension chains a hook onto CPython's object and mem allocators: about one allocation
per ``heap_sample_bytes`` allocated bytes is sampled (Poisson by bytes), with its Python stack,
and remembered until freed. So ``/heap`` and ``/allocs`` answer at any moment with Go's four
sample types, each sample scaled to an unbiased estimate as Go's ``scaleHeapSample`` does.

It is started by :mod:`pyprof_http.switches` (an app's claim, from its construction/startup),
never by a request, and stopped when no app holds it. Where the extension could not be built,
or tracemalloc was already tracing when it would start (tracemalloc's ``stop()`` puts back the
allocators it saw, which would silently unhook ours), it stays off with a reason, and ``/heap``
falls back to tracemalloc as before.
"""

from __future__ import annotations

import gc
import importlib
import os
import time
import tracemalloc
from types import CodeType, ModuleType
from typing import Any, Final

from ..captures.heap import SampledHeapCapture, SamplerState
from ..loops import code_name_of
from ..model import Frame, Profile, Sample, ValueType, frame, subtract
from .errors import NeedsSwitch


def _load() -> tuple[ModuleType | None, str]:
    if os.environ.get("PYPROF_HEAP_SAMPLER_DISABLE") == "1":  # the pure path, on purpose
        return None, "disabled by PYPROF_HEAP_SAMPLER_DISABLE=1"
    try:
        return importlib.import_module("pyprof_http._heapsample"), ""
    except ImportError as error:  # not built here (no compiler), or hidden
        return None, str(error)


ext, _IMPORT_ERROR = _load()

ALLOC_OBJECTS: Final = ValueType("alloc_objects", "count")
ALLOC_SPACE: Final = ValueType("alloc_space", "bytes")
INUSE_OBJECTS: Final = ValueType("inuse_objects", "count")
INUSE_SPACE: Final = ValueType("inuse_space", "bytes")
SAMPLE_TYPES: Final = (ALLOC_OBJECTS, ALLOC_SPACE, INUSE_OBJECTS, INUSE_SPACE)
SPACE: Final = ValueType("space", "bytes")
OVERFLOW: Final = frame("(sampler stack table full)", "<pyprof_http>", 0)
NO_FRAMES: Final = frame("(no Python frame)", "<pyprof_http>", 0)

_state: dict[str, Any] = globals().get("_state") or {"reason": None}
"""Why the sampler is not running (None: it is, or nobody asked yet). Kept across reloads."""


def available() -> bool:
    """Whether the extension was built and imported."""
    return ext is not None


def running() -> bool:
    return ext is not None and bool(ext.stats()["active"])


def why_not_running() -> str:
    """For a 412 and the index: why ``/heap`` cannot answer from the sampler."""
    if ext is None:
        return ("the heap sampler extension is not available here (" + _IMPORT_ERROR +
                "; a C compiler is needed at install): /heap uses tracemalloc windows")
    reason = _state["reason"]
    return str(reason) if reason else (
        "the heap sampler is off (PYPROF_HEAP_SAMPLE_BYTES=0, or no app holds it)")


def start(rate: int, max_depth: int) -> bool:
    """Sample about one allocation per ``rate`` bytes from now on (or at the new rate, when
    running already: samples taken at the old rate keep their own scale)."""
    if ext is None:
        return False
    if not ext.stats()["installed"] and tracemalloc.is_tracing():
        _state["reason"] = ("the heap sampler was not started: tracemalloc was already tracing "
                            "(its stop() would unhook a sampler installed after it); /heap "
                            "answers from tracemalloc")
        return False
    try:
        ext.start(rate, max_depth)
    except (RuntimeError, MemoryError) as error:  # a free-threaded build; no memory
        _state["reason"] = f"the heap sampler could not start: {error}"
        return False
    _state["reason"] = None
    return True


def stop() -> None:
    """Unhook (or only pass through, when another hook chained onto ours) and drop samples."""
    if ext is not None:
        ext.stop()
    _state["reason"] = None


def state() -> SamplerState:
    if ext is None:
        return SamplerState(False, 0, 0, 0, 0, 0, 0, 0)
    s = ext.stats()
    return SamplerState(bool(s["active"]), int(s["rate"]), int(s["stacks"]),
                        int(s["live_samples"]), int(s["memory_bytes"]),
                        int(s["samples_total"]), int(s["inuse_bytes"]), int(s["overflowed"]))


def profile_now(default_sample_type: str, gc_first: bool = False) -> Profile:
    """Everything the sampler holds now as Go's heap profile, scaled estimates."""
    if ext is None or not running():
        raise NeedsSwitch(why_not_running())
    if gc_first:
        gc.collect()
    stamp = time.time_ns()
    rate, rows = ext.snapshot()
    frames: dict[tuple[CodeType, int], Frame] = {}
    merged: dict[tuple[Frame, ...], list[int]] = {}
    for stack_id, stack, *values in rows:
        model: list[Frame] = []
        for code, line in stack:
            found = frames.get((code, line))
            if found is None:
                found = frames[code, line] = frame(code_name_of(code), code.co_filename, line)
            model.append(found)
        if not model:
            model.append(OVERFLOW if stack_id == 0 else NO_FRAMES)
        # the sampler keys stacks by instruction: instructions of one line merge here
        sums = merged.setdefault(tuple(model), [0, 0, 0, 0])
        for i in range(4):
            sums[i] += values[i]
    samples = [Sample(stack, tuple(values)) for stack, values in merged.items()]
    samples.sort(key=lambda s: -s.values[3])
    comments = (
        f"pyprof_http heap sampler: about one allocation per {rate} bytes sampled (Poisson by "
        "bytes, as Go's MemProfileRate); values are estimates scaled as Go's scaleHeapSample",
        "sees allocations through CPython's object and mem allocators, not C libraries "
        "calling malloc directly",
    )
    return Profile(SAMPLE_TYPES, tuple(samples), SPACE, rate, stamp, 0, comments,
                   default_sample_type=default_sample_type)


def capture_now(default_sample_type: str, gc_first: bool = False) -> SampledHeapCapture:
    """The sampler's profile now (sync, quick: a C copy of its tables, then Python objects)."""
    return SampledHeapCapture(profile_now(default_sample_type, gc_first), state(), 0.0)


def window(before: Profile, after: Profile, seconds: float) -> SampledHeapCapture:
    """Growth over a window: allocated during it, and the change of what is in use."""
    delta = subtract(after, before)
    comments = (*after.comments, f"window of {seconds:g} s: alloc_* are allocations during "
                "the window, inuse_* the growth of what is in use (negative: freed)")
    return SampledHeapCapture(
        Profile(delta.sample_types, delta.samples, delta.period_type, delta.period,
                delta.time_ns, delta.duration_ns, comments, after.default_sample_type),
        state(), seconds)
