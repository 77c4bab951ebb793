"""Deterministic tracing with yappi (``/profile?mode=tracing``): exact call counts and times.

yappi rather than cProfile: it sees every thread and is coroutine-aware (with the wall clock a
coroutine's time includes its suspensions, one call per coroutine, not per resume), so handlers
are measured as users feel them. It slows call-heavy code several times over (the README gives
the figures), so a trace is a short window, never left on.
yappi is process-global, so: never start over a yappi someone else runs (or their leftover stats,
or another ``setprofile`` profiler); on every exit path leave yappi stopped, cleared, its clock
type as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any

import yappi  # type: ignore[import-untyped]

from .._gc import paused_gc
from .._waiting import before_wake, render_in_thread
from ..captures.tracing import CallStats, Clock, FunctionStats, TracingCapture
from ..model import Frame, frame
from .errors import Busy

_OWN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_LOCK = threading.Lock()
_active: Tracer | None = None


class Tracer:
    """One yappi session: ``start()``, ``halt()`` then ``read()`` for the capture (``stop()`` does
    both), or ``cancel()`` for none.

    ``halt`` is one quick C call and belongs on the event loop, where the profile was waited for;
    ``read`` converts yappi's tables (1.3 s for 20,000 functions) and belongs on a worker thread
    (:func:`trace` does that). yappi stays claimed by this tracer until ``read`` or ``cancel``
    has cleared it, and the loop never waits for the module lock: a start that finds it held is
    refused at once, as any other concurrent start is.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock: Clock = clock
        self._previous_clock = "cpu"
        self._descriptor_keys: frozenset[str] = frozenset()
        self._time_ns = self._started_ns = self._duration_ns = 0
        self._halted = self._reading = False

    def start(self) -> None:
        """Start tracing every thread; :class:`Busy` (touching nothing) if that is unsafe."""
        self.claim()
        self.begin()

    def claim(self) -> None:
        """Take yappi for this tracer without starting it; :class:`Busy` if that is unsafe."""
        global _active
        with _claim_lock("a tracing profile is running or being read"):
            if _active is not None:
                raise Busy("a tracing profile is already running")
            if yappi.is_running():
                raise Busy("yappi is already running (started outside pyprof_http)")
            if sys.getprofile() is not None or threading.getprofile() is not None:
                raise Busy("another profiler is installed (sys.setprofile); "
                               "tracing would replace it")
            if yappi.get_thread_stats():
                raise Busy("yappi holds stats from a run outside pyprof_http; "
                               "call yappi.clear_stats() first")
            self._previous_clock = yappi.get_clock_type()
            self._descriptor_keys = frozenset(_descriptors())
            _active = self

    def begin(self) -> None:
        """Start recording, unless this tracer was halted or cancelled meanwhile."""
        with _LOCK:
            if _active is not self or self._halted or self._started_ns:
                return
            try:
                yappi.set_clock_type(self.clock)
                self._time_ns, self._started_ns = time.time_ns(), time.monotonic_ns()
                yappi.start(builtins=False, profile_threads=True, profile_greenlets=False)
            except BaseException:
                self._reset()
                raise

    def halt(self) -> None:
        """Stop recording (cheap, for the loop); the stats wait for :meth:`read`. Idempotent."""
        with _LOCK:
            if _active is not self:
                raise RuntimeError("this tracer is not running")
            if self._halted:
                return
            self._halted = True
            try:
                yappi.stop()
            finally:
                if self._started_ns:
                    self._duration_ns = time.monotonic_ns() - self._started_ns

    def read(self) -> TracingCapture:
        """What a halted tracer measured (slow: run it off the loop). yappi is left clean even
        if reading fails."""
        with _LOCK:
            if _active is not self or not self._halted:
                raise RuntimeError("this tracer is not halted")
            self._reading = True
            try:
                # Hundreds of thousands of small objects, no cycles: with the collector on they
                # set off full collections, which hold the GIL (the loop stalled 250-470 ms of a
                # 20,000-function read; 50 ms with it paused).
                with paused_gc():
                    functions = _convert(yappi.get_func_stats(), _descriptors())
                return TracingCapture(self.clock, functions, self._time_ns, self._duration_ns)
            finally:
                self._reset()

    def stop(self) -> TracingCapture:
        """:meth:`halt` and :meth:`read` on this thread."""
        self.halt()
        return self.read()

    def cancel(self) -> None:
        """Stop without reading anything (client gone, app shutdown). Idempotent; a tracer
        being read is left to :meth:`read`, which clears yappi."""
        if _active is not self or self._reading:  # the read holds the lock, and clears yappi
            return
        with _LOCK:
            if _active is self:
                self._reset()

    def _reset(self) -> None:
        """Leave yappi as we found it: stopped, no stats, its clock, no code objects kept."""
        global _active
        _active = None
        try:
            if yappi.is_running():
                yappi.stop()
            yappi.clear_stats()
        finally:
            yappi.set_clock_type(self._previous_clock)
            descriptors = _descriptors()
            for key in set(descriptors) - self._descriptor_keys:
                descriptors.pop(key, None)


async def trace(clock: Clock, seconds: float,
                wait: Callable[[float], Awaitable[None]]) -> TracingCapture:
    """Trace for ``seconds`` of ``wait``; a wait that raises (client gone, cancellation) stops
    tracing and reads nothing.

    yappi 1.7.6 keeps a reference to a coroutine each time it sees one suspend or return
    after it had seen it resume (upstream #217, fixed upstream after 1.7.6): a request whose
    coroutines it sees do that is never freed. So yappi is claimed at once (conflicts are
    answered before waiting), started from a loop callback two turns later, when this request's
    coroutines and its disconnect watcher are parked in ``wait``, and halted from the callback
    that wakes them (:func:`before_wake`), before any of them runs again. Only a client that
    disconnects mid-trace costs a few small finished coroutines: its watcher's, woken by the
    disconnect. The stats are converted on a worker thread, so the loop keeps serving while a
    large trace (1.3 s for 20,000 functions) is read.
    """
    tracer = Tracer(clock)
    tracer.claim()
    loop = asyncio.get_running_loop()
    failed: list[BaseException] = []

    def begin() -> None:
        try:
            tracer.begin()
        except Exception as error:  # yappi refused to start: reported when the wait ends
            failed.append(error)

    loop.call_soon(loop.call_soon, begin)
    try:
        with before_wake(lambda _: tracer.halt()):
            await wait(seconds)
        if failed:
            raise failed[0]
    except BaseException:
        tracer.cancel()
        raise
    tracer.halt()
    return await render_in_thread(tracer.read)


@contextlib.contextmanager
def _claim_lock(busy: str) -> Iterator[None]:
    """The module lock without waiting: it is held for seconds while a large trace is read,
    and the caller may be the event loop. ``busy``: the conflict to report."""
    if not _LOCK.acquire(blocking=False):
        raise Busy(busy)
    try:
        yield
    finally:
        _LOCK.release()


def _descriptors() -> dict[str, Any]:
    """yappi's full_name -> code object map (our source of qualified names). yappi adds to it
    on every read and never clears it, so ``_reset`` removes what our read added."""
    found = getattr(yappi, "_fn_descriptor_dict", None)
    return found if isinstance(found, dict) else {}


def _convert(stats: Iterable[Any], descriptors: Mapping[str, Any]) -> tuple[FunctionStats, ...]:
    """yappi's per-function stats (callees listed per caller) to per-callee caller edges.

    yappi merges a function's entries across threads, but a merged entry lists each callee
    once per thread, so edges are summed here. pyprof_http's own functions are left out. Names
    are qualified (``co_qualname``, 3.11+) as the sampling collectors give them.
    """
    stats = list(stats)
    keys = {s.full_name: frame(_name(s, descriptors), str(s.module), int(s.lineno))
            for s in stats if not str(s.module).startswith(_OWN_DIR)}
    totals: dict[Frame, list[int]] = {}
    edges: dict[Frame, dict[Frame, list[int]]] = {}
    for stat in stats:
        caller = keys.get(stat.full_name)
        if caller is None:
            continue
        _add(totals.setdefault(caller, [0, 0, 0, 0]), stat)
        for child in stat.children:
            callee = keys.get(child.full_name)
            if callee is not None:
                _add(edges.setdefault(callee, {}).setdefault(caller, [0, 0, 0, 0]), child)
    out: list[FunctionStats] = []
    for fn, (ncall, nactual, tsub, ttot) in totals.items():
        callers = tuple((c, CallStats(*edge)) for c, edge in edges.get(fn, {}).items())
        out.append(FunctionStats(fn, ncall, nactual, tsub, ttot, callers))
    return tuple(out)


def _name(stat: Any, descriptors: Mapping[str, Any]) -> str:
    return getattr(descriptors.get(stat.full_name), "co_qualname", None) or str(stat.name)


def _add(into: list[int], stat: Any) -> None:
    for i, value in enumerate((stat.ncall, stat.nactualcall, stat.tsub * 1e9, stat.ttot * 1e9)):
        into[i] += round(value)
