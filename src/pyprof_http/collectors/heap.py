"""Live heap by allocation traceback, from tracemalloc: the ``heap`` endpoint.

tracemalloc is the stdlib's only source of allocation sites and slows allocation-heavy code several
times over while on (benchmarks/heap.py; figures in the README), so it is never left on behind
anyone's back: either it already traces (the app started it, or ``PYPROF_HEAP_TRACE_AT_START``) and
a request takes a snapshot, or a request traces a window of N seconds and stops. Tracing someone
else started is never stopped, reset or cleared. tracemalloc is process-global, so any thread may
call it; ``take_snapshot`` is one C call holding the GIL (~0.5 s per million blocks: the loop
stalls that long wherever it runs); grouping yields the GIL: run it off the loop
(:func:`trace_window` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import functools
import gc
import importlib.util
import marshal
import os
import threading
import time
import tokenize
import tracemalloc
from collections.abc import Awaitable, Callable
from inspect import CO_OPTIMIZED
from types import CodeType
from typing import Final, Literal

from .._waiting import Standby, before_wake, render_in_thread
from ..bounded import BoundedCache
from ..captures.heap import HeapCapture, Mode, TraceState
from ..model import Frame, Profile, Sample, ValueType, frame
from .errors import NeedsSwitch

RawTraceback = tuple[tuple[str, int], ...]
"""tracemalloc's raw traceback: (filename, line) pairs, innermost (most recent call) first."""
Sites = dict[RawTraceback, tuple[int, int]]
"""Live blocks grouped by traceback: (bytes, count)."""

NOT_TRACING_REASON: Final = ("heap tracing is off: ask for a window with ?seconds=N (tracemalloc "
                              "slows allocation-heavy code x3-x7 with 1 frame, x18-x33 with 32, "
                              "while on), or start it at startup with PYPROF_HEAP_TRACE_AT_START=1")
COST_NOTE: Final = "tracing slows allocation-heavy code x3-x7 with 1 frame, x18-x33 with 32 frames"
INUSE_OBJECTS: Final = ValueType("inuse_objects", "count")
INUSE_SPACE: Final = ValueType("inuse_space", "bytes")
SPACE: Final = ValueType("space", "bytes")
_PACKAGE: Final = os.path.dirname(os.path.dirname(__file__))
FILTERS: Final = (tracemalloc.Filter(False, tracemalloc.__file__),
                  tracemalloc.Filter(False, os.path.join(_PACKAGE, "*")))
"""Blocks that tracemalloc (its snapshots) or this library allocated are not the app's. Only the
innermost frame is matched: the app's handlers run under our middleware, so hold our frames."""


def is_tracing() -> bool:
    """Whether ``/heap`` without ``seconds`` can answer (else 412)."""
    return tracemalloc.is_tracing()


def start_at_startup(frames: int) -> None:
    """``PYPROF_HEAP_TRACE_AT_START``: trace from now on. Tracing that is on is left as it is."""
    if not tracemalloc.is_tracing():
        tracemalloc.start(frames)


def read_state() -> TraceState:
    """tracemalloc's own figures now (its memory use is shown with every heap profile)."""
    current, peak = tracemalloc.get_traced_memory()
    return TraceState(tracemalloc.get_traceback_limit(), current, peak,
                      tracemalloc.get_tracemalloc_memory())


def take_snapshot(gc_first: bool = False) -> tuple[tracemalloc.Snapshot, TraceState]:
    """Live traced blocks (after ``gc.collect()`` when asked) and tracemalloc's figures, read
    first so the snapshot's own memory is not in them."""
    if not tracemalloc.is_tracing():
        raise NeedsSwitch(NOT_TRACING_REASON)
    if gc_first:
        gc.collect()
    state = read_state()
    try:
        return tracemalloc.take_snapshot(), state
    except RuntimeError as error:  # stopped by the app meanwhile
        raise NeedsSwitch("heap tracing was stopped while the profile was taken") from error


def group_sites(snapshot: tracemalloc.Snapshot) -> Sites:
    """Bytes and blocks per traceback, less :data:`FILTERS`' blocks. ``statistics()`` takes 3 s
    per million blocks and ``filter_traces`` 5 s, allocating while traced; this appends sizes to
    lists (no object per block), sums in C, and filters distinct tracebacks, not blocks."""
    raw = getattr(snapshot.traces, "_traces", None) or [  # else public, oldest frame first
        (0, t.size, tuple((f.filename, f.lineno) for f in reversed(t.traceback)))
        for t in snapshot.traces]
    groups: dict[RawTraceback, list[int]] = {}
    get = groups.get
    for trace in raw:
        stack = trace[2]
        sizes = get(stack)
        if sizes is None:
            groups[stack] = sizes = []
        sizes.append(trace[1])
    return {stack: (sum(sizes), len(sizes)) for stack, sizes in groups.items()
            if not stack or not _excluded(stack[0][0])}


def growth(after: Sites, before: Sites) -> Sites:
    """Per traceback, what ``after`` holds beyond ``before`` (net: blocks freed and allocated
    again at one site cancel out); sites that did not grow are left out."""
    old = {stack: before.get(stack, (0, 0)) for stack in after}
    return {stack: (size - old[stack][0], max(0, count - old[stack][1]))
            for stack, (size, count) in after.items() if size > old[stack][0]}


def build_profile(sites: Sites, state: TraceState, *, mode: Mode, note: str,
                  time_ns: int, duration_ns: int = 0) -> Profile:
    """Sites as a pprof heap profile, stacks innermost first (pypprof writes tracemalloc's
    oldest-first order, so ``go tool pprof`` blames ``_bootstrap`` for everything)."""
    frames: dict[tuple[str, int], Frame] = {}
    samples = []
    for stack, (size, count) in sites.items():
        model: list[Frame] = []
        for i, site in enumerate(stack):
            if i and site == stack[i - 1]:  # 3.11's comprehension frame: its function's line
                continue
            found = frames.get(site)
            if found is None:
                found = frames[site] = frame(function_at(*site), *site)
            model.append(found)
        samples.append(Sample(tuple(model), (count, size)))
    samples.sort(key=lambda s: -s.values[1])
    comments = (f"pyprof_http heap {mode}: live blocks by allocation traceback, "
                f"{state.frames_limit} frames deep; {note}", COST_NOTE,
                f"tracemalloc's own memory: {state.tracemalloc_memory} bytes; traced now "
                f"{state.traced_current} bytes, peak {state.traced_peak} bytes")
    return Profile((INUSE_OBJECTS, INUSE_SPACE), tuple(samples), SPACE, 1, time_ns, duration_ns,
                   comments, default_sample_type=INUSE_SPACE.type)


def snapshot_profile(frames_note: str, gc_first: bool) -> HeapCapture:
    """Everything live now, while tracing is on (else 412). Sync: run it off the event loop."""
    stamp = time.time_ns()
    snapshot, state = take_snapshot(gc_first)
    sites = group_sites(snapshot)
    del snapshot  # a million traces are ~100 MB: free them before building the profile
    profile = build_profile(sites, state, mode="snapshot", note=frames_note, time_ns=stamp)
    return HeapCapture(profile, "snapshot", state)


async def trace_window(seconds: float, frames: int, wait: Callable[[float], Awaitable[None]],
                       gc_first: bool = False) -> HeapCapture:
    """What was allocated during ``seconds`` and is still live at the end. Tracing off: trace
    with ``frames`` frames for the window only, stopping whatever ends it (disconnect, shutdown,
    cancellation). Tracing on: leave it be; report growth between snapshots at both ends.

    Before CPython 3.12.5 (gh-121390) ``tracemalloc.stop()`` frees the traces but never the
    tracebacks they pointed to: every distinct traceback recorded in a window stays allocated
    for the life of the process (the README says how much per window). So a window
    we trace records as little of our own as it can: the thread that takes the snapshot is
    started before tracing starts and stops tracing right after the snapshot, the wait
    allocates nothing new per check, and a cut-off window stops tracing first.
    """
    started_here = not tracemalloc.is_tracing()
    stamp, started = time.time_ns(), time.monotonic_ns()
    note = f"window of {seconds:g} s: " + (
        f"tracing started for it with {frames} frames and stopped" if started_here
        else "tracing was already on and is left untouched; net growth per traceback")
    if started_here:
        snapshot, state = await _own_window(seconds, frames, wait, gc_first)
        before: Sites | None = None
    else:
        before = await render_in_thread(lambda: group_sites(take_snapshot()[0]))
        await wait(seconds)
        snapshot, state = await render_in_thread(take_snapshot, gc_first)
    duration = time.monotonic_ns() - started
    profile = await render_in_thread(lambda: build_profile(
        group_sites(snapshot) if before is None else growth(group_sites(snapshot), before),
        state, mode="window", note=note, time_ns=stamp, duration_ns=duration))
    return HeapCapture(profile, "window", state)


async def _own_window(seconds: float, frames: int, wait: Callable[[float], Awaitable[None]],
                      gc_first: bool) -> tuple[tracemalloc.Snapshot, TraceState]:
    """Trace for ``seconds`` and stop. Tracing starts from a loop callback two turns later,
    when the request and its disconnect watcher are parked in ``wait`` (setting them up is not
    recorded), and ends in the callback that wakes the request: there the snapshot thread,
    started before tracing, is set going (it stops tracing right after the snapshot), or, if
    the client went away, tracing stops at once."""
    window = _Window(frames)

    def snapshot_and_stop() -> tuple[tracemalloc.Snapshot, TraceState]:
        try:
            if not window.began:  # ended (shutdown) before its first loop turns: nothing seen
                return tracemalloc.Snapshot((), frames), read_state()
            return take_snapshot(gc_first)
        finally:
            window.end()

    def woken(client_gone: bool) -> None:  # before the request runs again
        if client_gone:
            window.end()
            taker.cancel()
        else:
            window.seal()
            taker.start()

    taker = Standby(snapshot_and_stop)
    loop = asyncio.get_running_loop()
    loop.call_soon(loop.call_soon, window.begin)
    try:
        with before_wake(woken):
            await wait(seconds)
    except BaseException:
        window.end()
        taker.cancel()
        raise
    window.seal()  # the wait may end without a wake hook (a wait that never suspended)
    try:
        return await taker.run()
    finally:
        window.end()  # the taker ends it too; this covers a cancelled request


class _Window:
    """tracemalloc switched on for one window: started at most once, never after the window
    ended, and stopped only if this window started it (the app may start it meanwhile)."""

    def __init__(self, frames: int) -> None:
        self._frames = frames
        self._state: Literal["pending", "tracing", "ended"] = "pending"
        self._lock = threading.Lock()  # ended by the snapshot thread or the loop
        self.began = False

    def begin(self) -> None:
        with self._lock:
            if self._state == "pending" and not tracemalloc.is_tracing():
                tracemalloc.start(self._frames)
                self._state = "tracing"
                self.began = True

    def seal(self) -> None:
        """No start from now on (the window is over); tracing, if on, stays for the snapshot."""
        with self._lock:
            if self._state == "pending":
                self._state = "ended"

    def end(self) -> None:
        with self._lock:
            if self._state == "tracing":
                tracemalloc.stop()
            self._state = "ended"


_SCOPES: BoundedCache[str, dict[int, str] | None] = BoundedCache(max_entries=1024)


@functools.lru_cache(maxsize=4096)
def _excluded(filename: str) -> bool:
    return any(fnmatch.fnmatch(filename, f.filename_pattern) != f.inclusive for f in FILTERS)


def function_at(filename: str, line: int) -> str:
    """The function a line runs in, as ``co_qualname`` (``Cls.method``, ``f.<locals>.g``):
    tracemalloc keeps only file and line, and pprof needs functions. Read once per file from
    its code objects, so lines map exactly as Python's own frames do; lambdas and
    comprehensions count as their function. The file's name when there is no code."""
    if filename in _SCOPES:
        names = _SCOPES.get(filename)  # another render thread may clear it meanwhile
    else:
        code = _module_code(filename)
        names = _SCOPES.put(filename,
                            None if code is None else _line_names(code, "<module>", {}))
    return filename if names is None else names.get(line, "<module>")


def _line_names(code: CodeType, qualname: str, names: dict[int, str]) -> dict[int, str]:
    for _, _, line in code.co_lines():  # the enclosing code claims a line first (def lines)
        if line is not None:
            names.setdefault(line, qualname)
    inside = qualname + ("." if not code.co_flags & CO_OPTIMIZED else ".<locals>.")
    for const in code.co_consts:
        if isinstance(const, CodeType):
            anonymous = const.co_name.startswith("<")
            child = qualname if anonymous else getattr(const, "co_qualname", None) or (
                const.co_name if qualname == "<module>" else inside + const.co_name)
            _line_names(const, child, names)
    return names


def _module_code(filename: str) -> CodeType | None:
    """The file's code from its fresh ``.pyc``, else compiled: a snapshot runs while tracing is
    on, where compiling a file allocates ~20x more than loading its bytecode."""
    with contextlib.suppress(OSError, ValueError, EOFError, TypeError, NotImplementedError):
        stat = os.stat(filename)
        with open(importlib.util.cache_from_source(filename), "rb") as cached:
            data = cached.read()
        stamp = (int(stat.st_mtime) & 0xFFFFFFFF, stat.st_size & 0xFFFFFFFF)
        fresh = data[4:8] != b"\0\0\0\0" or stamp == (  # hash-based .pyc: trusted as import does
            int.from_bytes(data[8:12], "little"), int.from_bytes(data[12:16], "little"))
        if data[:4] == importlib.util.MAGIC_NUMBER and fresh:
            code = marshal.loads(data[16:])  # noqa: S302 -- the .pyc import itself trusts
            if isinstance(code, CodeType):
                return code
    try:
        with tokenize.open(filename) as source:
            return compile(source.read(), filename, "exec", dont_inherit=True)
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return None
