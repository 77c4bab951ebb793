"""One batch of profiles to push: CPU, goroutines, heap (when tracing), mutex and stalls.

CPU comes from :func:`cpu_source`, the one place that decides where pushed CPU samples come
from: the flight recorder's closed intervals while it runs (push/recorded.py: each second
pushed once, no second sampler), else a low-rate sampler of its own (the ``profile`` endpoint's
:class:`Sampler` ticked from a daemon thread at :data:`PUSH_HZ`, weighted by each thread's CPU
clock, so a starved tick rate loses resolution, not CPU), decided again at every push. Neither
takes a ``/profile`` session, so scrapes and ``/profile`` requests run beside it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Final

from ..collectors import heap, locks, stacks
from ..collectors.blocked import syscall_states
from ..collectors.cpu import Sampler
from ..collectors.loop import WATCHDOGS, stall_samples
from ..collectors.recorder import RECORDER
from ..model import Profile, subtract
from ..pprof.encode import encode
from .labels import pushable, series
from .recorded import CpuSource, RecordedCpu
from .request import Series

PUSH_HZ: Final = 19
"""Ticks per second of the push sampler (when no flight recorder runs): low (each tick walks
every thread's stack) and prime, so it does not beat in step with periodic work."""
STALL_LAG_NS: Final = 5 * 10**9
"""How far back each stalls capture reaches before the previous one: a stall is recorded when
the watchdog sees the loop back (within ms, longer on a starved machine), after its end."""
ENDPOINTS: Final = {"process_cpu": "profile", "goroutines": "goroutine", "memory": "heap",
                    "mutex": "mutex", "block": "block"}
"""Pushed profile type -> the endpoint whose place on the allowlist decides whether it goes."""
GOROUTINE_WAIT_S: Final = 1.0
"""How long a goroutine capture may wait for the serving loop (a blocked loop: skipped)."""


class SamplerThread:
    """The profile endpoint's CPU sampler, ticked at ``hz`` by a daemon thread of its own: the
    pusher's CPU when no flight recorder runs."""

    def __init__(self, max_depth: int, hz: int = PUSH_HZ) -> None:
        self.hz, self.max_depth = hz, max_depth
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._own: set[int] = set()
        self._sampler = self._new()
        self._since_mono, self._since_wall = time.monotonic_ns(), time.time_ns()
        self._thread = threading.Thread(target=self._run, name="pyprof_http-push-sampler",
                                        daemon=True)

    def _new(self) -> Sampler:
        sampler = Sampler("cpu", self.max_depth, lambda: self._own, syscall_states())
        sampler.baseline()
        return sampler

    def start(self) -> None:
        self._own.add(threading.get_ident())  # the pusher thread starts us
        self._thread.start()

    def _run(self) -> None:
        self._own.add(threading.get_ident())
        interval = 1.0 / self.hz
        while not self._stop.wait(interval):
            with self._lock:
                self._sampler.tick()

    def take(self, final: bool = False) -> Profile | None:
        fresh = self._new()
        now_mono, now_wall = time.monotonic_ns(), time.time_ns()
        with self._lock:
            old, self._sampler = self._sampler, fresh
        start_wall, start_mono = self._since_wall, self._since_mono
        self._since_mono, self._since_wall = now_mono, now_wall
        achieved = old.ticks / max(1e-9, (now_mono - start_mono) / 1e9)
        return old.profile(self.hz, start_wall, now_mono - start_mono, (
            f"pyprof_http push sampler: thread driver, requested {self.hz} Hz, "
            f"achieved {achieved:.1f} Hz",))

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)


def cpu_source(max_depth: int) -> CpuSource:
    """Where pushed CPU profiles come from: the process's flight recorder while it runs, else
    a :class:`SamplerThread` (started only when needed)."""
    return RecordedCpu(RECORDER, lambda: SamplerThread(max_depth))


class Collector:
    """Builds one batch per push interval; keeps what deltas need (mutex, stalls)."""

    def __init__(self, max_depth: int, loop: asyncio.AbstractEventLoop | None,
                 labels: Callable[[], dict[str, str]],
                 allows: Callable[[str], bool] = lambda name: True) -> None:
        self.max_depth, self.loop, self.labels = max_depth, loop, labels
        self.allows = allows
        """The settings' allowlist: a profile the app does not serve is not pushed either."""
        self.cpu = cpu_source(max_depth)
        self._mutex: Profile | None = None
        self._stalls_since = time.monotonic_ns()
        self._stalls_pushed: frozenset[int] = frozenset()
        """Start times of the stalls the previous capture held (pushed then: not again)."""
        self.errors: dict[str, str] = {}
        """Profile type -> why it was left out of the last batch (for the index)."""

    def batch(self, final: bool = False) -> list[Series]:
        """Every profile available now, each as a series. ``final``: at shutdown, skip what
        needs the (stopping) event loop."""
        base = self.labels()
        out: list[Series] = []
        takers: list[tuple[str, Callable[[], Profile | None]]] = [
            ("process_cpu", lambda: self.cpu.take(final)), ("mutex", self._mutex_delta),
            ("block", self._stalls), ("memory", self._heap)]
        if not final:
            takers.insert(1, ("goroutines", self._goroutines))
        takers = [(name, take) for name, take in takers if self.allows(ENDPOINTS[name])]
        now = time.time_ns()
        for name, take in takers:
            try:
                profile = take()
            except Exception as exc:  # one failing source must not cost the others
                self.errors[name] = f"{type(exc).__name__}: {exc}"
                continue
            self.errors.pop(name, None)
            if profile is None or (not profile.samples and name != "process_cpu"):
                continue
            start = profile.time_ns or now
            out.append(Series(series(name, base), encode(pushable(profile)), start,
                              max(start + profile.duration_ns, start + 1),
                              _rate(profile) if name == "process_cpu" else 0).with_id())
        return out

    def _goroutines(self) -> Profile | None:
        loop = self.loop
        if loop is None or loop.is_closed() or not loop.is_running():
            return None
        future = asyncio.run_coroutine_threadsafe(stacks.collect(self.max_depth), loop)
        try:
            return future.result(GOROUTINE_WAIT_S).profile
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError("the event loop did not answer within "
                               f"{GOROUTINE_WAIT_S} s") from None

    def _mutex_delta(self) -> Profile | None:
        if not locks.is_enabled():
            return None
        now = locks.snapshot(self.max_depth)
        before, self._mutex = self._mutex, now
        return now if before is None else subtract(now, before)

    def _stalls(self) -> Profile | None:
        """Stalls not pushed yet: those that ended since the previous capture, reaching
        :data:`STALL_LAG_NS` further back for ones recorded late, minus those already pushed."""
        since, self._stalls_since = self._stalls_since, time.monotonic_ns()
        capture = WATCHDOGS.capture(since - STALL_LAG_NS, self.max_depth)
        fresh = [s for s in capture.stalls if s.start_ns not in self._stalls_pushed]
        self._stalls_pushed = frozenset(s.start_ns for s in capture.stalls)
        return replace(capture.profile, samples=stall_samples(fresh, self.max_depth))

    def _heap(self) -> Profile | None:
        if not heap.is_tracing():
            return None
        return heap.snapshot_profile("", False).profile


def _rate(profile: Profile) -> int:
    """Ticks per second of a CPU profile (the recorder's rate may not be :data:`PUSH_HZ`)."""
    return round(1e9 / profile.period) if profile.period else PUSH_HZ
