"""One CPU sampling driver for the whole process, shared by every CPU sampler that runs.

The flight recorder samples all the time (19 Hz); an on-demand ``/profile?mode=cpu`` samples at
100 Hz meanwhile; an explicitly profiled request wants the full rate while it runs. They cannot
each have a driver: there is one ``ITIMER_PROF`` timer, one SIGPROF handler and one wakeup fd
per process. So one driver ticks at the fastest rate any subscriber asks for, and each tick
calls the subscribers whose own interval has come (a 19 Hz subscriber is not ticked 100 times
a second). Each subscriber is a :class:`~pyprof_http.collectors.cpu.Sampler` with its own
per-thread CPU clocks, so its CPU weights stay exact whatever the others do: a sample weighs
the CPU its thread used since *that sampler's* previous tick. Its sample counts are its own
ticks, at its own rate.

The driver starts with the first subscriber and stops when the last leaves; the rate follows
subscribers as they come and go (the signal timer is re-armed at once). Wall mode keeps drivers
of its own (``ITIMER_REAL``; ``cpu.record``): its ticks must come while the process is idle.
"""

from __future__ import annotations

import _thread
import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

from ..loops import LOOPS
from .drivers import Driver, SignalDriver, TickGate, TickStats, choose_driver

_DUE_SLACK = 0.2
"""A subscriber is ticked when at most this share of its interval is left (a 100 Hz driver
ticks a 19 Hz subscriber every 5th or 6th tick, not every 6th or 7th)."""


@dataclass(eq=False)
class Subscriber:
    """A sampler ticked at ``hz``; ``after`` (if any) runs after each of its ticks, in the tick."""

    tick: Callable[[FrameType | None], None]
    hz: int
    before: Callable[[int], None] | None = None
    """Runs before each of its ticks with the monotonic time (ns): the recorder starts a new
    interval there, so a tick's samples land in the interval of its time."""
    due: float = field(default=0.0)

    @property
    def interval(self) -> float:
        return 1.0 / self.hz


class SamplingHub:
    """The process's shared CPU sampling driver and its subscribers."""

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()  # raw: never a profiled lock
        self._subscribers: tuple[Subscriber, ...] = ()
        self._driver: Driver | None = None
        self._gate: TickGate | None = None
        self._owner: int | None = None
        """The thread that started the driver (a signal driver stops on the main thread)."""
        self._parked = False
        """The last subscriber left off the main thread while a signal driver ran: its timer
        is off, the rest waits for the main thread (see :meth:`unsubscribe`)."""

    @property
    def driver(self) -> Driver | None:
        return self._driver

    def running(self) -> bool:
        return self._driver is not None and not self._parked

    def hz(self) -> int:
        return max((s.hz for s in self._subscribers), default=0)

    def stats(self) -> TickStats | None:
        return self._gate.stats() if self._gate is not None else None

    def skipped_threads(self) -> set[int]:
        driver = self._driver
        return driver.skipped_threads() if driver is not None else set()

    def subscribe(self, subscriber: Subscriber) -> None:
        """Tick ``subscriber`` from now on; starts the driver (on this thread: a signal driver
        only on the main thread) or speeds it up."""
        with self._lock:
            subscriber.due = time.monotonic() + subscriber.interval
            self._subscribers = (*self._subscribers, subscriber)
            if self._driver is None:
                driver = choose_driver("cpu")
                gate = TickGate(self._tick, 1.0 / self.hz())
                self._driver, self._gate, self._owner = driver, gate, threading.get_ident()
                try:
                    driver.start(gate)
                except BaseException:
                    self._driver = self._gate = None
                    self._subscribers = ()
                    raise
            else:
                if self._parked:  # its timer is off: arm it again whatever the rate
                    self._parked = False
                    if self._gate is not None:
                        self._gate.interval = 0.0
                self._retime()

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Stop ticking ``subscriber`` (no tick of it runs after this returns); the last one
        stops the driver, others slow it down to what is still asked."""
        with self._lock:
            self._subscribers = tuple(s for s in self._subscribers if s is not subscriber)
            if self._subscribers:
                self._retime()
                gate = self._gate
                if gate is not None:  # a tick of it may be running: wait for it
                    gate.wait_idle()
                return
            driver = self._driver
            if (isinstance(driver, SignalDriver)
                    and threading.current_thread() is not threading.main_thread()):
                self._park(driver)
                return
            self._driver, self._gate, self._parked = None, None, False
        if driver is not None:
            # a signal driver let go of off the main thread: its timer is stopped, its
            # handler (inert: gate closed) stays until the next start
            with contextlib.suppress(ValueError):
                driver.stop()

    def _park(self, driver: SignalDriver) -> None:
        """The last subscriber left off the main thread (an app served from another thread
        shut down last): a signal driver's handler and wakeup fd can only be put back on the
        main thread, and stopped here it left its helper thread running for good and its
        handler installed, so every later profile fell back to a weaker driver. Its timer is
        stopped now (from any thread) and the rest is handed to the main thread's event loop
        if it runs one; else it waits, parked, for the next subscriber (which re-arms it) or
        the interpreter's exit (``drivers`` stops it then). ``_lock`` held."""
        self._parked = True
        with contextlib.suppress(ValueError, OSError):
            driver.pause()
        main = threading.main_thread().ident
        for info in LOOPS.running():
            if info.thread_ident == main:
                with contextlib.suppress(RuntimeError):  # closed meanwhile: stays parked
                    info.loop.call_soon_threadsafe(self._stop_parked)
                break

    def _stop_parked(self) -> None:
        """On the main thread: stop a parked driver, unless a subscriber came meanwhile."""
        with self._lock:
            if not self._parked or self._subscribers:
                return
            driver, self._driver, self._gate, self._parked = self._driver, None, None, False
        if driver is not None:
            driver.stop()

    def _retime(self) -> None:
        if self._gate is None or self._driver is None:
            return
        interval = 1.0 / self.hz()
        if interval != self._gate.interval:
            self._gate.interval = interval
            with contextlib.suppress(ValueError, OSError):  # else the next tick re-arms it
                self._driver.retime()

    def _tick(self, frame: FrameType | None) -> None:
        now = time.monotonic()
        fastest = self.hz()
        for subscriber in self._subscribers:
            interval = subscriber.interval
            # the driver's own rate is every tick it gets (ITIMER_PROF comes per CPU time, at
            # the kernel's tick granularity: judged on the wall clock, some would be skipped)
            if subscriber.hz < fastest and now < subscriber.due - interval * _DUE_SLACK:
                continue
            subscriber.due = max(subscriber.due + interval, now)
            if subscriber.before is not None:
                subscriber.before(time.monotonic_ns())
            subscriber.tick(frame)

    def _after_fork_in_child(self) -> None:
        """A forked child inherits none of the ticking (the timer and helper thread are the
        parent's; drivers.py puts the handler back): it starts afresh."""
        self._lock = _thread.allocate_lock()
        self._subscribers, self._driver, self._gate, self._owner = (), None, None, None
        self._parked = False


HUB: SamplingHub = globals().get("HUB") or SamplingHub()
"""Kept across a reload of this module: a second hub would start a second driver beside the
running one's handler, and every later profile fell back to a weaker driver."""

if hasattr(os, "register_at_fork") and "_fork_hook_registered" not in globals():
    os.register_at_fork(after_in_child=lambda: HUB._after_fork_in_child())
    _fork_hook_registered = True
