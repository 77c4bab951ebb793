"""The three sampler drivers: each ticks at about the requested rate and puts back what it changed.

pytest-timeout runs in thread mode here (pyproject), so SIGALRM and SIGPROF are free in tests.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import pytest

from pyprof_http.collectors import drivers
from pyprof_http.collectors.drivers import (
    LoopDriver,
    SignalDriver,
    ThreadDriver,
    _LoopWakeup,
    choose_driver,
)

SIGNALS = {
    "cpu": (signal.SIGPROF, signal.ITIMER_PROF),
    "wall": (signal.SIGALRM, signal.ITIMER_REAL),
}


def dummy_handler(signum: int, frame: FrameType | None) -> None:
    """Someone else's handler; never meant to run (its timers are far in the future)."""


@pytest.fixture(autouse=True)
def signals_clean() -> Iterator[None]:
    """Each test starts and ends with no handler and no timer on SIGPROF / SIGALRM."""
    for signum, which in SIGNALS.values():
        assert signal.getsignal(signum) == signal.SIG_DFL
        assert signal.getitimer(which) == (0.0, 0.0)
    yield
    problems = []
    for signum, which in SIGNALS.values():
        if signal.getitimer(which) != (0.0, 0.0):
            problems.append(f"timer {which} left {signal.getitimer(which)}")
            signal.setitimer(which, 0)
        if signal.getsignal(signum) != signal.SIG_DFL:
            problems.append(f"handler on {signum!r} left: {signal.getsignal(signum)}")
            signal.signal(signum, signal.SIG_DFL)
    assert signal.set_wakeup_fd(-1) == -1, "a wakeup fd was left behind"
    assert not problems, problems


def counter() -> tuple[list[FrameType | None], Callable[[FrameType | None], None]]:
    ticks: list[FrameType | None] = []
    return ticks, ticks.append


def burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        sum(range(1000))


def in_thread(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on a fresh (non-main) thread and return its result."""
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(fn()), name="test-driver-other")
    thread.start()
    thread.join(10)
    assert out, "the thread raised or hung"
    return out[0]


# --------------------------------------------------------------------------------------------
# Signal driver
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["cpu", "wall"])
def test_signal_driver_ticks_and_restores_default_state(mode: str) -> None:
    signum, which = SIGNALS[mode]
    ticks, tick = counter()
    driver = SignalDriver(mode)
    assert (driver.signum, driver.which) == (signum, which)
    driver.start(tick, 0.01)
    try:
        assert signal.getsignal(signum) not in (signal.SIG_DFL, None)
        assert signal.getitimer(which)[1] == pytest.approx(0.01)
        burn(0.3)  # the CPU timer only runs while the process burns CPU
    finally:
        driver.stop()
    assert len(ticks) >= 15, len(ticks)  # 30 expected at 100 Hz over 0.3 s of CPU
    assert all(frame is not None for frame in ticks), "the handler passes the interrupted frame"
    assert signal.getsignal(signum) == signal.SIG_DFL
    assert signal.getitimer(which) == (0.0, 0.0)
    assert driver.skipped_threads() == set()
    count = len(ticks)
    burn(0.05)
    assert len(ticks) == count, "ticked after stop()"


@pytest.mark.parametrize("mode", ["cpu", "wall"])
def test_signal_driver_restores_a_previous_handler_and_timer_exactly(mode: str) -> None:
    """unavailable() refuses in this state; the driver itself must still put things back."""
    signum, which = SIGNALS[mode]
    signal.signal(signum, dummy_handler)
    signal.setitimer(which, 1000.0, 500.0)
    try:
        ticks, tick = counter()
        driver = SignalDriver(mode)
        driver.start(tick, 0.01)
        try:
            assert signal.getsignal(signum) is not dummy_handler
            burn(0.1)
        finally:
            driver.stop()
        assert ticks
        assert signal.getsignal(signum) is dummy_handler
        value, interval = signal.getitimer(which)
        assert interval == 500.0
        assert 998.0 < value <= 1000.1  # what was left, to the timer's granularity
    finally:
        signal.setitimer(which, 0)
        signal.signal(signum, signal.SIG_DFL)


@pytest.mark.parametrize("mode", ["cpu", "wall"])
def test_signal_driver_unavailable_reasons(mode: str) -> None:
    signum, which = SIGNALS[mode]
    assert SignalDriver.unavailable(mode) is None
    for handler in (dummy_handler, signal.SIG_IGN):
        signal.signal(signum, handler)
        try:
            assert SignalDriver.unavailable(mode) == f"{signum.name} already has a handler"
            assert isinstance(choose_driver(mode), ThreadDriver)
        finally:
            signal.signal(signum, signal.SIG_DFL)
    signal.setitimer(which, 1000.0)  # far away: the default action never happens
    try:
        assert SignalDriver.unavailable(mode) == "the interval timer is in use"
    finally:
        signal.setitimer(which, 0)
    assert in_thread(lambda: SignalDriver.unavailable(mode)) == "not on the main thread"


def test_signal_driver_ticks_while_the_main_loop_idles_and_another_thread_burns() -> None:
    """The timer signal lands on the burning thread; the wakeup fd makes the idle loop run the
    handler at once instead of at its next timer."""
    ticks, tick = counter()
    stop = threading.Event()

    def burner() -> None:
        while not stop.is_set():
            sum(range(1000))

    async def main() -> None:
        driver = choose_driver("cpu")
        assert isinstance(driver, SignalDriver)
        worker = threading.Thread(target=burner, name="test-burner")
        worker.start()
        driver.start(tick, 0.01)
        try:
            await asyncio.sleep(1.0)  # the loop sleeps in epoll for the whole second
        finally:
            driver.stop()
            stop.set()
            worker.join()

    asyncio.run(main())
    assert len(ticks) >= 60, f"{len(ticks)} ticks in 1 s at 100 Hz with a busy thread"


# --------------------------------------------------------------------------------------------
# Loop and thread drivers
# --------------------------------------------------------------------------------------------


def _driver_handles(loop: asyncio.AbstractEventLoop) -> list[asyncio.TimerHandle]:
    scheduled: list[asyncio.TimerHandle] = loop._scheduled  # type: ignore[attr-defined]
    return [h for h in scheduled if not h.cancelled()
            and "LoopDriver" in getattr(h._callback, "__qualname__", "")]  # type: ignore[attr-defined]


def test_loop_driver_ticks_at_the_rate_and_leaves_nothing_scheduled() -> None:
    async def main() -> tuple[int, int, set[int]]:
        loop = asyncio.get_running_loop()
        ticks, tick = counter()
        driver = LoopDriver(loop, "testing")
        assert "testing" in driver.note and "not sampled" in driver.note
        driver.start(tick, 0.01)
        await asyncio.sleep(1.0)
        assert _driver_handles(loop), "the driver keeps one handle scheduled while it runs"
        driver.stop()
        during = len(ticks)
        await asyncio.sleep(0.1)
        assert _driver_handles(loop) == []
        return during, len(ticks), driver.skipped_threads()

    during, after, skipped = asyncio.run(main())
    assert 80 <= during <= 105, during
    assert after == during, "ticked after stop()"
    assert skipped == {threading.get_ident()}, "the loop's own thread is left out"


def test_thread_driver_ticks_at_the_rate_and_its_thread_ends() -> None:
    ticks, tick = counter()
    driver = ThreadDriver("testing")
    assert driver.name == "thread" and "testing" in driver.note
    before = set(threading.enumerate())
    driver.start(tick, 0.01)
    try:
        samplers = [t for t in threading.enumerate() if t.name == "pyprof_http-sampler"]
        assert len(samplers) == 1 and samplers[0].daemon
        assert driver.skipped_threads() == {samplers[0].ident}
        time.sleep(1.0)
    finally:
        driver.stop()
    during = len(ticks)
    assert 80 <= during <= 105, during
    time.sleep(0.05)
    assert len(ticks) == during, "ticked after stop()"
    assert set(threading.enumerate()) <= before, "no thread left behind"
    assert not samplers[0].is_alive()


# --------------------------------------------------------------------------------------------
# choose_driver
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["cpu", "wall"])
def test_choose_driver_signal_on_the_main_thread(mode: str) -> None:
    assert isinstance(choose_driver(mode), SignalDriver)

    async def in_loop() -> drivers.Driver:
        return choose_driver(mode)

    chosen = asyncio.run(in_loop())
    assert isinstance(chosen, SignalDriver) and chosen.name == "signal"


def test_choose_driver_loop_on_a_non_main_thread_loop() -> None:
    async def in_loop() -> tuple[drivers.Driver, int]:
        return choose_driver("cpu"), threading.get_ident()

    chosen, ident = in_thread(lambda: asyncio.run(in_loop()))
    assert isinstance(chosen, LoopDriver) and chosen.name == "loop"
    assert "not on the main thread" in chosen.note and "test-driver-other" in chosen.note
    assert chosen.skipped_threads() == {ident}


def test_choose_driver_loop_on_the_main_thread_when_the_signal_is_taken() -> None:
    async def in_loop() -> drivers.Driver:
        return choose_driver("cpu")

    signal.signal(signal.SIGPROF, dummy_handler)
    try:
        chosen = asyncio.run(in_loop())
    finally:
        signal.signal(signal.SIGPROF, signal.SIG_DFL)
    assert isinstance(chosen, LoopDriver)
    assert "SIGPROF already has a handler" in chosen.note


def test_choose_driver_thread_when_there_is_no_loop() -> None:
    chosen = in_thread(lambda: choose_driver("wall"))
    assert isinstance(chosen, ThreadDriver) and chosen.name == "thread"
    assert "not on the main thread" in chosen.note


# --------------------------------------------------------------------------------------------
# The wakeup-fd helper
# --------------------------------------------------------------------------------------------


def _readers(loop: asyncio.AbstractEventLoop) -> set[int]:
    return set(loop._selector.get_map())  # type: ignore[attr-defined]


def test_wakeup_restores_the_previous_wakeup_fd_and_removes_its_reader() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        before = _readers(loop)
        wakeup = _LoopWakeup.install()
        assert wakeup is not None
        fd = wakeup.reader.fileno()
        assert _readers(loop) == before | {fd}
        wakeup.remove()
        assert _readers(loop) == before
        assert wakeup.reader.fileno() == -1 and wakeup.writer.fileno() == -1  # closed
        assert signal.set_wakeup_fd(-1) == -1, "the previous wakeup fd (none) is restored"

    asyncio.run(main())


def test_wakeup_leaves_a_loop_owned_wakeup_fd_alone() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, lambda: None)  # the loop now owns the wakeup fd
        try:
            before = _readers(loop)
            owned = signal.set_wakeup_fd(-1)
            signal.set_wakeup_fd(owned)
            assert owned != -1
            assert _LoopWakeup.install() is None
            assert _readers(loop) == before
            current = signal.set_wakeup_fd(-1)
            signal.set_wakeup_fd(current)
            assert current == owned
        finally:
            loop.remove_signal_handler(signal.SIGUSR1)

    asyncio.run(main())


def test_wakeup_without_a_running_loop_is_none() -> None:
    assert _LoopWakeup.install() is None
