"""What makes the CPU sampler tick: an interval-timer signal, a loop callback, or a thread.

See ``cpu.py`` for why the choice matters. Whatever the driver, every tick goes through one
``TickGate``, which enforces the two rules that keep the profiler from starving the app:

- **never nested**: a tick that comes while another one runs is dropped and counted. CPython
  runs a Python signal handler again if its signal arrives while the handler runs, so without
  this a tick slower than the interval nests until the recursion limit and the main thread
  runs nothing else;
- **bounded cost**: after a tick that used ``c`` seconds of its thread's CPU, no tick starts for
  ``c * (1 / MAX_TICK_SHARE - 1)`` seconds, so ticks take at most ``MAX_TICK_SHARE`` of the
  ticking thread's time (1,000 threads with deep stacks: a 12 ms tick is followed by a 36 ms
  pause, ~20 ticks/s instead of back to back). The cost is the thread's own CPU clock, not the
  wall clock: a tick that waits for the GIL while other threads run costs the app nothing, and
  timing it on the wall clock cut the rate for no reason.

Every driver puts back exactly what it changed: the signal driver restores the previous handler,
timer and wakeup fd and joins its helper thread; the others leave nothing scheduled or running
once ``stop()`` returns; no tick starts after that.
"""

from __future__ import annotations

import _thread
import asyncio
import atexit
import contextlib
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any, Protocol

Tick = Callable[[FrameType | None], None]
MAX_TICK_SHARE = 0.25
"""Ticks may use at most this share of the time of the thread that runs them."""
_RETIME_FACTOR = 1.25
"""The signal timer is re-armed only when the allowed spacing moved by more than this factor."""
_HELPER_NAME = "pyprof_http-sampler"


@dataclass(frozen=True)
class TickStats:
    """What happened to the ticks the driver asked for."""

    ran: int
    dropped: int
    """Came while a tick was running (a nested signal handler, or the other ticker): not run."""
    throttled: int
    """Came during the pause owed by the previous tick's cost: not run."""
    cost_seconds: float
    """CPU of the ticking thread(s) spent in ticks."""
    max_running: int
    """The most ticks ever running at once: 1 (0 if none ran); never more."""

    def describe(self) -> str:
        return (f"{self.ran} ticks ran, {self.dropped} dropped while a tick ran (never nested), "
                f"{self.throttled} held back by the {MAX_TICK_SHARE:.0%} tick-cost limit, "
                f"{self.cost_seconds * 1000:.0f} ms of CPU in ticks")


class TickGate:
    """Runs ``tick`` at most once at a time and no more often than its cost allows.

    Called by every driver for every tick it wants; safe to call from a signal handler (it only
    tries a lock, never waits for one) and from two threads at once (the signal handler on the
    main thread and the signal driver's helper thread).
    """

    def __init__(self, tick: Tick, interval: float, *, share: float = MAX_TICK_SHARE,
                 clock: Callable[[], float] = time.monotonic,
                 cpu_clock: Callable[[], float] = time.thread_time) -> None:
        self.interval = interval
        self._tick, self._share, self._clock, self._cpu_clock = tick, share, clock, cpu_clock
        # the C lock itself: never a wrapper that lock profiling may have put on threading.Lock
        self._lock = _thread.allocate_lock()
        self._not_before = -math.inf
        self._last_cost = 0.0
        self._closed = False
        self._running = 0
        self.ran = self.dropped = self.throttled = self.max_running = 0
        self.cost_seconds = 0.0

    def __call__(self, frame: FrameType | None = None) -> bool:
        """Run one tick unless one is running, the pause is not over, or the gate is closed."""
        if not self._lock.acquire(False):
            self.dropped += 1
            return False
        try:
            if self._closed:
                return False
            if self._clock() < self._not_before:
                self.throttled += 1
                return False
            self._running += 1
            self.max_running = max(self.max_running, self._running)
            started = self._cpu_clock()
            try:
                self._tick(frame)
            finally:
                self._running -= 1
                cost = max(0.0, self._cpu_clock() - started)
                self.ran += 1
                self.cost_seconds += cost
                self._last_cost = cost
                self._not_before = self._clock() + cost * (1 / self._share - 1)
            return True
        finally:
            self._lock.release()

    def pause(self) -> float:
        """Seconds from now before the next tick may start."""
        return max(0.0, self._not_before - self._clock())

    def spacing(self) -> float:
        """The interval ticks can keep at the last tick's cost: the requested one or longer."""
        return max(self.interval, self._last_cost / self._share)

    def wait_idle(self) -> None:
        """Return once no tick runs (one running has finished); never called from a tick."""
        with self._lock:
            pass

    def close(self) -> None:
        """No tick starts after this returns (one already running has finished)."""
        with self._lock:  # waits for a running tick: never called from a tick
            self._closed = True

    def stats(self) -> TickStats:
        return TickStats(self.ran, self.dropped, self.throttled, self.cost_seconds,
                         self.max_running)


class Driver(Protocol):
    name: str
    note: str
    """Said in the profile's comment: why this driver, and what it cannot see."""

    def start(self, gate: TickGate) -> None: ...
    def retime(self) -> None: ...
    def stop(self) -> None: ...
    def skipped_threads(self) -> set[int]: ...


class SignalDriver:
    """``setitimer`` + a handler on the main thread: ITIMER_PROF (CPU) or ITIMER_REAL (wall),
    with a helper thread that ticks when the main thread cannot.

    The Python handler only runs when the main thread executes bytecode, while ITIMER_PROF's
    signal goes to whichever thread is burning CPU: with the CPU burnt in worker threads and the
    main thread blocked (a join, a lock, an idle event loop), handler-only ticks fell to 1-3/s.
    CPython writes every signal's number to the wakeup fd from its C handler, on the thread that
    got the signal; the helper thread blocks on the other end and ticks as soon as it gets the
    GIL, unless the handler ticked since the helper last waited. The handler in turn skips the
    signals the helper took since it last ran: one tick per signal, whoever runs first, with no
    system call in the handler. When someone else owns the wakeup fd (uvloop and trio always,
    an asyncio loop once it has signal handlers), there is no helper and ticks happen when the
    main thread runs Python; an idle loop wakes for the timer's byte on its fd and runs it.
    """

    name = "signal"

    def __init__(self, mode: str) -> None:
        cpu = mode == "cpu"
        self.signum = signal.SIGPROF if cpu else signal.SIGALRM
        self.which = signal.ITIMER_PROF if cpu else signal.ITIMER_REAL
        self.note = ""
        self._previous: Any = None
        self._armed = 0.0
        self._previous_timer = (0.0, 0.0)
        self._helper: _WakeupTicker | None = None
        self._gate: TickGate | None = None
        self._handler: Callable[[int, FrameType | None], None] | None = None

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

    def start(self, gate: TickGate) -> None:
        which, signum = self.which, self.signum
        self._armed = gate.interval
        self._gate = gate

        def tick(frame: FrameType | None) -> None:
            if gate(frame):
                # re-arm the timer at the spacing the tick's cost allows (slower, or back to the
                # requested rate), so that fewer signals are raised only to be held back
                spacing, armed = gate.spacing(), self._armed
                if ((spacing > armed * _RETIME_FACTOR or spacing * _RETIME_FACTOR < armed)
                        and not self._replaced_by_the_application()):
                    self._armed = spacing
                    signal.setitimer(which, spacing, spacing)

        _RUNNING.add(self)  # before anything a forked child would have to put back
        helper = self._helper = _WakeupTicker.install(tick, signum)
        if helper is None:
            self.note = " (the wakeup fd is in use: ticks only while the main thread runs Python)"

        def handler(_signum: int, frame: FrameType | None) -> None:
            # no system call here: it would hand the GIL to another thread at every signal
            if helper is not None:
                if helper.ticked != helper.ticked_seen:
                    helper.ticked_seen = helper.ticked
                    return  # the helper thread took the signals since the handler last ran
                helper.handler_ticks += 1
            tick(frame)

        self._handler = handler
        try:
            self._previous = signal.signal(signum, handler)
            signal.siginterrupt(signum, False)  # restart what syscalls can be restarted
            self._previous_timer = signal.setitimer(which, gate.interval, gate.interval)
            if helper is not None:
                helper.start()
        except BaseException:
            self.stop()  # the caller only stops a driver that started
            raise

    def retime(self) -> None:
        """Re-arm the timer at the gate's interval now (the shared sampler changed its rate);
        ``setitimer`` works from any thread. Not once the application has put its own handler
        on the signal: the timer is then theirs (a profiler of their own, at their rate), and
        re-arming it at ours would change how often their handler runs, for good."""
        if (self._gate is not None and self in _RUNNING
                and not self._replaced_by_the_application()):
            self._armed = self._gate.interval
            signal.setitimer(self.which, self._armed, self._armed)

    def pause(self) -> None:
        """Stop the timer (from any thread), leaving the rest for :meth:`stop` or a
        :meth:`retime` that arms it again; not a timer the application has taken over."""
        if self in _RUNNING and not self._replaced_by_the_application():
            signal.setitimer(self.which, 0.0, 0.0)

    def stop(self) -> None:
        """Undo every step, each even if another fails, and drop a signal still in flight.

        The helper goes first: once it is joined nothing can re-arm the timer (it re-arms after
        a tick), so the timer stopped next stays stopped before the default action comes back.
        Closing the gate waits for a running tick, and signal handlers run during that wait: one
        that raises (SIGINT) must not leave the timer firing into this handler.
        """
        _RUNNING.discard(self)
        try:
            if self._gate is not None:
                self._gate.close()
        finally:
            self._undo()

    def _forget_in_child(self) -> None:
        """In a child forked during the profile: put back the handler and the wakeup fd (the
        timer and the helper thread are not inherited; the helper's sockets are the parent's)."""
        if self._helper is not None:
            self._helper.forget_in_child()
        if self._previous is not None:
            signal.signal(self.signum, self._previous)

    def _undo(self) -> None:
        try:
            if self._helper is not None:
                self._helper.remove()
        finally:
            if not self._replaced_by_the_application():
                try:
                    signal.setitimer(self.which, 0.0, 0.0)
                    # a tick generated just before the timer stopped but delivered after the
                    # default action came back would kill the process ("Profiling timer
                    # expired"): ignore it
                    signal.signal(self.signum, signal.SIG_IGN)
                finally:
                    if self._previous is not None:  # None: not installed, or a C handler
                        signal.signal(self.signum, self._previous)
                    if self._previous_timer != (0.0, 0.0):
                        signal.setitimer(self.which, *self._previous_timer)

    def _replaced_by_the_application(self) -> bool:
        """Whether the application installed its own handler (and likely its timer) during the
        profile: both are theirs now, and putting ours back would undo their work."""
        current = signal.getsignal(self.signum)
        return (self._handler is not None and current is not self._handler
                and current not in (signal.SIG_DFL, signal.SIG_IGN))

    def skipped_threads(self) -> set[int]:
        ident = self._helper.ident() if self._helper is not None else None
        return {ident} if ident is not None else set()


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

    def start(self, gate: TickGate) -> None:
        deadline = self._loop.time()

        def run() -> None:
            nonlocal deadline
            gate()
            now = self._loop.time()
            # never back to back: the pause the tick's cost owes lets the loop run its callbacks
            # (the interval is read each time: the shared sampler may change it)
            deadline = max(deadline + gate.interval, now + gate.pause(), now)
            self._handle = self._loop.call_at(deadline, run)

        self._handle = self._loop.call_at(deadline + gate.interval, run)

    def retime(self) -> None:
        """Nothing to do: the next tick reads the gate's interval."""

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

    def start(self, gate: TickGate) -> None:
        def run() -> None:
            next_tick = time.monotonic() + gate.interval
            while not self._stop.wait(max(0.0, next_tick - time.monotonic())):
                gate()
                now = time.monotonic()
                next_tick = max(next_tick + gate.interval, now + gate.pause(), now)

        self._thread = threading.Thread(target=run, name=_HELPER_NAME, daemon=True)
        self._thread.start()

    def retime(self) -> None:
        """Nothing to do: the next wait reads the gate's interval."""

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def skipped_threads(self) -> set[int]:
        return {self._thread.ident} if self._thread is not None and self._thread.ident else set()


class _WakeupTicker:
    """The signal driver's helper: a thread that ticks when a timer signal lands.

    Owns the process's wakeup fd (a socket pair) while the profile runs; the byte CPython writes
    for each signal wakes the thread, which ticks if one of the bytes it read is the timer's
    signal and the main thread's handler has not ticked since it started waiting.
    """

    def __init__(self, tick: Tick, signum: int, reader: socket.socket,
                 writer: socket.socket) -> None:
        self._tick, self._signum = tick, signum
        self._reader, self._writer = reader, writer
        self._thread = threading.Thread(target=self._run, name=_HELPER_NAME, daemon=True)
        self.ticked = 0
        """Signals this thread took (written by it only)."""
        self.ticked_seen = 0
        """``ticked`` as the handler last saw it (written by the handler only)."""
        self.handler_ticks = 0
        """Signals the handler took (written by the handler only)."""

    @classmethod
    def install(cls, tick: Tick, signum: int) -> _WakeupTicker | None:
        reader, writer = socket.socketpair()
        writer.setblocking(False)
        previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        if previous != -1:  # someone else's: put it back and rely on it
            _give_back_wakeup_fd(previous)
            reader.close()
            writer.close()
            return None
        return cls(tick, signum, reader, writer)

    def start(self) -> None:
        self._thread.start()

    def ident(self) -> int | None:
        return self._thread.ident

    def _run(self) -> None:
        while True:
            handled = self.handler_ticks
            try:
                data = self._reader.recv(4096)
            except OSError:
                return
            if not data:  # shut down by remove()
                return
            if self._signum in data and self.handler_ticks == handled:
                self.ticked += 1
                self._tick(None)

    def forget_in_child(self) -> None:
        """Give the wakeup fd back and close this process's copies of the sockets, without
        shutting them down (that would stop the parent's helper)."""
        current = signal.set_wakeup_fd(-1)
        if current != self._writer.fileno():
            _give_back_wakeup_fd(current)
        self._reader.close()
        self._writer.close()

    def remove(self) -> None:
        """Give the wakeup fd back (so no signal writes to a closed socket), stop the thread
        and close the sockets."""
        current = signal.set_wakeup_fd(-1)
        if current != self._writer.fileno():  # someone (asyncio) took it over meanwhile: theirs
            _give_back_wakeup_fd(current)
        with contextlib.suppress(OSError):
            self._reader.shutdown(socket.SHUT_RDWR)  # wakes the blocked recv()
        if self._thread.ident is not None:
            self._thread.join(timeout=5)
        self._reader.close()
        self._writer.close()


_RUNNING: set[SignalDriver] = globals().get("_RUNNING", set())
"""Signal drivers between start() and stop(); kept across a reload of this module (the exit
and fork hooks, registered once, read the newest module's: a fresh set would lose a driver
started before the reload, and the process would again die of its timer at exit)."""


def _after_fork_in_child() -> None:
    """A child forked during a profile kept its handler and wakeup fd: every later profile in
    it fell back to a weaker driver, and its signals went to the parent's helper."""
    for driver in list(_RUNNING):
        driver._forget_in_child()
    _RUNNING.clear()


if hasattr(os, "register_at_fork") and "_fork_hook_registered" not in globals():
    os.register_at_fork(after_in_child=lambda: _after_fork_in_child())  # late-bound: reloads
    _fork_hook_registered = True


def _stop_at_exit() -> None:
    """Stop the signal drivers still running when the interpreter exits normally.

    The flight recorder's driver runs for the life of the app and stops at the lifespan's
    shutdown, which does not always come: uvicorn skips it on a forced quit (a second Ctrl-C
    while a request hangs), a script may never send it. The interpreter's own finalization
    then puts SIGPROF back to its default action while ITIMER_PROF still runs, and the next
    timer signal killed the process ("Profiling timer expired", exit status 155) instead of
    letting it exit with its own status. atexit runs before that, on the main thread.
    """
    for driver in list(_RUNNING):
        with contextlib.suppress(Exception):  # off the main thread: the timer still stops
            driver.stop()


if "_exit_hook_registered" not in globals():
    atexit.register(lambda: _stop_at_exit())  # late-bound: reloads
    _exit_hook_registered = True


def _give_back_wakeup_fd(fd: int) -> None:
    """Give the wakeup fd back to its owner with the flag that owner set.

    Python cannot read ``warn_on_full_buffer`` back. asyncio's own loops keep the default
    (True); trio and uvloop set False, and trio's socket holds 6 bytes: given back with the
    default, every timer signal that found it full printed a traceback on stderr.
    """
    warn = False
    with contextlib.suppress(RuntimeError):  # no asyncio loop running: not asyncio's
        own = getattr(asyncio.get_running_loop(), "_csock", None)  # uvloop's is not visible
        warn = own is not None and own.fileno() == fd
    signal.set_wakeup_fd(fd, warn_on_full_buffer=warn)


def outside_the_handler(top: FrameType | None) -> FrameType | None:
    """The frame the main thread was at before the signal handler, when it is in the handler.

    Seen from the helper thread, the main thread may be inside the handler (the GIL can switch
    there): its stack then starts with this module's frames, which are the profiler's, not the
    application's.
    """
    while top is not None and top.f_code.co_filename == __file__:
        top = top.f_back
    return top


def choose_driver(mode: str) -> Driver:
    """The best driver available where this is called (see the module docstring of cpu.py)."""
    why = SignalDriver.unavailable(mode)
    if why is None:
        return SignalDriver(mode)
    try:
        return LoopDriver(asyncio.get_running_loop(), why)
    except RuntimeError:
        return ThreadDriver(why)
