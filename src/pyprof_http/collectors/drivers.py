"""What makes the CPU sampler tick: an interval-timer signal, a loop callback, or a thread.

See ``cpu.py`` for why the choice matters. Every driver puts back exactly what it changed: the
signal driver restores the previous handler and timer, the others leave nothing scheduled or
running once ``stop()`` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol

Tick = Callable[[FrameType | None], None]
_MAX_TICK_SHARE = 0.25
"""A tick may take at most this share of the interval before the signal driver slows down."""


class Driver(Protocol):
    name: str
    note: str
    """Said in the profile's comment: why this driver, and what it cannot see."""

    def start(self, tick: Tick, interval: float) -> None: ...
    def stop(self) -> None: ...
    def skipped_threads(self) -> set[int]: ...


class SignalDriver:
    """``setitimer`` + a handler on the main thread: ITIMER_PROF (CPU) or ITIMER_REAL (wall)."""

    name = "signal"
    note = ""

    def __init__(self, mode: str) -> None:
        cpu = mode == "cpu"
        self.signum = signal.SIGPROF if cpu else signal.SIGALRM
        self.which = signal.ITIMER_PROF if cpu else signal.ITIMER_REAL
        self._previous: Any = None
        self._previous_timer = (0.0, 0.0)
        self._wakeup: _LoopWakeup | None = None
        self._stopped: Callable[[], None] = lambda: None

    @staticmethod
    def unavailable(mode: str) -> str | None:
        """Why the signal driver cannot be used here, or None if it can."""
        if not hasattr(signal, "setitimer"):
            return "no setitimer on this platform"
        if threading.current_thread() is not threading.main_thread():
            return "not on the main thread"
        driver = SignalDriver(mode)
        if signal.getsignal(driver.signum) is not signal.SIG_DFL:  # None: a C-level handler
            return f"{driver.signum.name} already has a handler"
        if signal.getitimer(driver.which) != (0.0, 0.0):
            return "the interval timer is in use"
        return None

    def start(self, tick: Tick, interval: float) -> None:
        # If a tick costs more than a quarter of the interval (thousands of threads, deep
        # stacks, hz=250), the timer is slowed so ticks never take over the main thread: a
        # periodic timer faster than its handler would leave the app, and the loop that must
        # stop us, no time at all.
        running = True
        which = self.which
        current = interval

        def handler(signum: int, frame: FrameType | None) -> None:
            nonlocal current
            started = time.perf_counter()
            tick(frame)
            cost = time.perf_counter() - started
            if running and cost > current * _MAX_TICK_SHARE:
                current = cost / _MAX_TICK_SHARE
                signal.setitimer(which, current, current)

        def stopped() -> None:
            nonlocal running
            running = False

        self._stopped = stopped
        self._wakeup = _LoopWakeup.install()
        self._previous = signal.signal(self.signum, handler)
        signal.siginterrupt(self.signum, False)  # restart what syscalls can be restarted
        self._previous_timer = signal.setitimer(self.which, interval, interval)

    def stop(self) -> None:
        """Undo every step, each even if another fails, and drop a signal still in flight."""
        self._stopped()
        try:
            signal.setitimer(self.which, 0.0, 0.0)
            # a tick generated just before the timer stopped but delivered after the default
            # action came back would kill the process ("Profiling timer expired"): ignore it
            signal.signal(self.signum, signal.SIG_IGN)
        finally:
            try:
                signal.signal(self.signum, self._previous)
                if self._previous_timer != (0.0, 0.0):
                    signal.setitimer(self.which, *self._previous_timer)
            finally:
                if self._wakeup is not None:
                    self._wakeup.remove()
                    self._wakeup = None


    def skipped_threads(self) -> set[int]:
        return set()


class LoopDriver:
    """``loop.call_at`` on the running loop: punctual, but its own thread is only ever seen
    running the tick, so that thread is left out."""

    name = "loop"

    def __init__(self, loop: asyncio.AbstractEventLoop, why: str) -> None:
        self._loop = loop
        self._thread = threading.get_ident()
        self._handle: asyncio.TimerHandle | None = None
        thread = threading.current_thread().name
        self.note = f" (signal driver unavailable: {why}; thread {thread!r} not sampled)"

    def start(self, tick: Tick, interval: float) -> None:
        deadline = self._loop.time()

        def run() -> None:
            nonlocal deadline
            tick(None)
            deadline = max(deadline + interval, self._loop.time())
            self._handle = self._loop.call_at(deadline, run)

        self._handle = self._loop.call_at(deadline + interval, run)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def skipped_threads(self) -> set[int]:
        return {self._thread}


class ThreadDriver:
    """A ``pyprof_http-sampler`` thread: the last resort (starved by a busy loop)."""

    name = "thread"

    def __init__(self, why: str) -> None:
        self.note = f" (signal driver unavailable: {why})"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, tick: Tick, interval: float) -> None:
        def run() -> None:
            next_tick = time.monotonic() + interval
            while not self._stop.wait(max(0.0, next_tick - time.monotonic())):
                tick(None)
                next_tick = max(next_tick + interval, time.monotonic())

        self._thread = threading.Thread(target=run, name="pyprof_http-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def skipped_threads(self) -> set[int]:
        return {self._thread.ident} if self._thread is not None and self._thread.ident else set()


class _LoopWakeup:
    """Wake the main thread's idle event loop when a signal lands on another thread.

    A process-wide timer signal is often delivered to whichever thread is burning CPU; Python
    runs the handler on the main thread only when that thread next executes bytecode, and an
    idle loop sits in epoll_wait for up to its next timer. CPython writes each signal to the
    "wakeup fd"; pointing it at a socket the loop watches makes the loop (and so the handler)
    run at once. If the loop already owns the wakeup fd (asyncio does when it has signal
    handlers), it already wakes, and nothing is changed.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, reader: socket.socket,
                 writer: socket.socket) -> None:
        self.loop, self.reader, self.writer = loop, reader, writer

    @classmethod
    def install(cls) -> _LoopWakeup | None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        if previous != -1:  # someone else's: put it back and rely on it
            signal.set_wakeup_fd(previous)
            reader.close()
            writer.close()
            return None
        loop.add_reader(reader.fileno(), cls._drain, reader)
        return cls(loop, reader, writer)

    @staticmethod
    def _drain(reader: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while reader.recv(4096):
                pass

    def remove(self) -> None:
        current = signal.set_wakeup_fd(-1)
        if current != self.writer.fileno():  # someone (asyncio) took it over meanwhile: theirs
            signal.set_wakeup_fd(current, warn_on_full_buffer=False)
        self.loop.remove_reader(self.reader.fileno())
        self.reader.close()
        self.writer.close()

def choose_driver(mode: str) -> Driver:
    """The best driver available where this is called (see the module docstring of cpu.py)."""
    why = SignalDriver.unavailable(mode)
    if why is None:
        return SignalDriver(mode)
    try:
        return LoopDriver(asyncio.get_running_loop(), why)
    except RuntimeError:
        return ThreadDriver(why)
