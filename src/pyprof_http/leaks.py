"""Leak checks for test suites: fail when tasks or threads outlive the code that made them.

Go's ``goleak`` in Python terms, with the goroutine dump's detail::

    from pyprof_http import leaks

    def test_client():
        with leaks.check():             # threads (and tasks) that exist now are not leaks
            run_client()
                                        # -> LeakError: what is left, where it was created

    async def test_server():
        async with leaks.check():       # retries yield to the loop instead of sleeping it
            await serve_once()

``verify_none()`` / ``find()`` compare with nothing (every thread but the runner's, every
pending task but the caller), like ``goleak.VerifyNone``. The message is the ``debug=2`` dump
of each leaked task and thread: state, await chain, ``created by ... at file:line in task
"..."`` and age; for a thread, where ``Thread.start`` was called and why it counts.

Before failing, the check retries as goleak does (:data:`RETRIES` attempts, sleeping 1 µs
doubling up to :data:`MAX_SLEEP`, ~0.43 s in all): well-behaved tasks and threads take a few
loop iterations to finish. A passing check costs a set difference; stacks are read only while
something is left over. Inside a running loop only the ``async`` forms may be used (a sync
retry would sleep the loop and stop the very tasks it waits for).

While a ``check()`` is open, tasks made on its loop and threads started anywhere record where
they came from (the task factory and the ``Thread.start`` hook, claimed through
:mod:`pyprof_http.switches` and released at exit), and a pending task that the garbage
collector destroys on its loop ("Task was destroyed but it is pending!") is a leak too.
The pytest plugin (:mod:`pyprof_http.pytest_plugin`) runs one ``check()`` per test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, Final

from ._leak_report import Leak, destroyed_leak, leaks_of
from ._leak_scan import Baseline, Finding, Ignore, candidates, examine, take_baseline

__all__ = ["MAX_SLEEP", "RETRIES", "Check", "Ignore", "Leak", "LeakError", "afind",
           "averify_none", "check", "find", "ignore_any_function", "ignore_created_by",
           "ignore_name", "ignore_top_function", "verify_none"]

RETRIES: Final = 20
"""Attempts after the first before a leak is reported (goleak's default)."""
MAX_SLEEP: Final = 0.1
"""Longest sleep between two attempts, in seconds; sleeps start at 1 µs and double."""
MAX_SHOWN: Final = 100
"""Leaks shown in a :class:`LeakError`'s message (a test leaking 10,000 tasks says so once)."""


def ignore_top_function(pattern: str) -> Ignore:
    """Ignore what is stopped in a function matching ``pattern`` (its innermost frame)."""
    return Ignore("top_function", pattern)


def ignore_any_function(pattern: str) -> Ignore:
    """Ignore what has a function matching ``pattern`` anywhere on its stack."""
    return Ignore("any_function", pattern)


def ignore_created_by(pattern: str) -> Ignore:
    """Ignore tasks created by, and threads started by, a function matching ``pattern``."""
    return Ignore("created_by", pattern)


def ignore_name(pattern: str) -> Ignore:
    """Ignore threads and tasks whose name matches ``pattern`` (``fnmatch``: ``"db-pool-*"``)."""
    return Ignore("name", pattern)


class LeakError(AssertionError):
    """Tasks or threads were left behind; ``leaks`` has each, the message shows them all.
    An ``AssertionError``: test runners report it as the test's failure."""

    def __init__(self, leaks: list[Leak], waited_s: float) -> None:
        self.leaks = leaks
        kinds = {kind: sum(1 for leak in leaks if leak.kind == kind)
                 for kind in ("task", "thread", "destroyed task")}
        counts = ", ".join(f"{n} {kind}{'s' if n > 1 else ''}" for kind, n in kinds.items() if n)
        head = (f"found {len(leaks)} leak{'s' if len(leaks) > 1 else ''} ({counts}) still there "
                f"after retrying for {waited_s:.2f} s (frames innermost first):")
        shown = [leak.text for leak in leaks[:MAX_SHOWN]]
        if len(leaks) > MAX_SHOWN:
            shown.append(f"... and {len(leaks) - MAX_SHOWN} more (all of them in .leaks)")
        super().__init__("\n\n".join([head, *shown]))


def _delays(retries: int, max_sleep: float) -> Iterator[float]:
    for i in range(retries):
        yield min(1e-6 * (1 << min(i, 40)), max_sleep)


def _no_loop_here(what: str) -> None:
    if asyncio._get_running_loop() is not None:
        raise RuntimeError(f"{what} would sleep this thread's running event loop between "
                           f"attempts; inside a coroutine use the async form")


def find(*, ignore: tuple[Ignore, ...] | list[Ignore] = (), retries: int = RETRIES,
         max_sleep: float = MAX_SLEEP, baseline: Baseline | None = None) -> list[Leak]:
    """Leaked threads (none but the runner's are expected), after retrying; [] when none."""
    _no_loop_here("find()")
    rules = tuple(ignore)
    for delay in _delays(retries, max_sleep):
        if not _attempt(baseline, None, rules):
            return []
        time.sleep(delay)
    return leaks_of(_attempt(baseline, None, rules))  # the last attempt, after the last sleep


async def afind(*, ignore: tuple[Ignore, ...] | list[Ignore] = (), retries: int = RETRIES,
                max_sleep: float = MAX_SLEEP, baseline: Baseline | None = None) -> list[Leak]:
    """:func:`find` from a coroutine: this loop's pending tasks too (all but the caller), and
    the waits between attempts let the loop run."""
    loop = asyncio.get_running_loop()
    rules = tuple(ignore)
    for delay in _delays(retries, max_sleep):
        if not _attempt(baseline, loop, rules):
            return []
        await asyncio.sleep(delay)
    return leaks_of(_attempt(baseline, loop, rules))


def verify_none(**options: Any) -> None:
    """:func:`find`, raising :class:`LeakError` when anything leaked."""
    started = time.monotonic()
    found = find(**options)
    if found:
        raise LeakError(found, time.monotonic() - started)


async def averify_none(**options: Any) -> None:
    """:func:`afind`, raising :class:`LeakError` when anything leaked."""
    started = time.monotonic()
    found = await afind(**options)
    if found:
        raise LeakError(found, time.monotonic() - started)


def _attempt(baseline: Baseline | None, loop: asyncio.AbstractEventLoop | None,
             rules: tuple[Ignore, ...]) -> list[Finding]:
    threads, tasks = candidates(baseline, loop)
    if not threads and not tasks:
        return []
    return examine(threads, tasks, loop, rules)


def _watch_destroyed(loop: asyncio.AbstractEventLoop | None,
                     claims: Any) -> Callable[[], list[Leak]]:
    """Start noticing pending tasks destroyed by the garbage collector; the returned function
    stops and gives what was seen. The ``goroutineleak`` recorder does the noticing (chained in
    front of the loop's exception handler, which is still called, so the usual log line stays):
    a leak report then says what ``/goroutineleak`` says of the same task."""
    if loop is None:
        return list
    from .collectors.gc_leaks import GC_LEAKS
    from .loops import ORIGINS
    from .switches import Claims

    own = claims is None
    held = Claims() if own else claims
    start = time.monotonic_ns()
    held.record_leaks(loop)
    # Only this loop's tasks that were not pending already (goleak's IgnoreCurrent): a task
    # of the baseline (an earlier test's on a session-scoped loop, a fixture's) that the
    # collector happens to destroy during this check is not this block's leak, and neither is
    # another watched loop's. Numbered now: its finalizer finds the number by address.
    loop_id = id(loop)
    before = frozenset(ORIGINS.task_id(task) for task in asyncio.all_tasks(loop))

    def stop() -> list[Leak]:
        seen = [destroyed_leak(record) for record in GC_LEAKS.records_since(start)
                if record.loop_id == loop_id and record.task_id not in before]
        if own:
            held.release_all()
        return seen

    return stop


class Check:
    """``with check():`` / ``async with check():`` — fail if the block leaves tasks or threads
    behind that were not there when it began. A block that raises is not checked: its own
    exception is the report (and a failed test leaves state behind anyway).

    ``begin()``/``end()``/``aend()``/``abandon()`` are the same steps for callers that cannot
    use a ``with`` block (a test framework's setUp and tearDown)."""

    def __init__(self, *, ignore: tuple[Ignore, ...] | list[Ignore] = (),
                 retries: int = RETRIES, max_sleep: float = MAX_SLEEP,
                 creation_sites: bool = True) -> None:
        self.ignore = tuple(ignore)
        self.retries = retries
        self.max_sleep = max_sleep
        self.creation_sites = creation_sites
        self._loop: asyncio.AbstractEventLoop | None = None
        self._baseline: Baseline | None = None
        self._claims: Any = None
        self._stop_watch: Callable[[], list[Leak]] = list

    def begin(self) -> None:
        """Remember what exists now; record creation sites until :meth:`end`."""
        self._loop = asyncio._get_running_loop()
        if self.creation_sites:
            from .switches import Claims  # only here: a plain find() patches nothing

            self._claims = Claims()
            self._claims.hook_thread_start(_START_DEPTH)
            if self._loop is not None:
                self._claims.task_factory(self._loop)
        self._stop_watch = _watch_destroyed(self._loop, self._claims)
        self._baseline = take_baseline(self._loop)

    def abandon(self) -> None:
        """Stop without checking (the block failed); switches go back as they were."""
        self._stop_watch()
        self._stop_watch = list
        if self._claims is not None:
            self._claims.release_all()
            self._claims = None

    def end(self) -> None:
        """Check, retrying with sleeps; raises :class:`LeakError`. Not on a loop thread."""
        __tracebackhide__ = True  # pytest: the report is the message, not these frames
        started = time.monotonic()
        try:
            found = find(ignore=self.ignore, retries=self.retries, max_sleep=self.max_sleep,
                         baseline=self._baseline)
        finally:
            destroyed = self._stop_watch()
            self.abandon()
        if found or destroyed:
            raise LeakError(destroyed + found, time.monotonic() - started)

    async def aend(self) -> None:
        """Check this loop's tasks and every thread, yielding to the loop between attempts."""
        __tracebackhide__ = True  # pytest: the report is the message, not these frames
        started = time.monotonic()
        try:
            if asyncio._get_running_loop() is None:  # another framework's loop (trio)
                found = await _threads_without_asyncio(self)
            else:
                found = await afind(ignore=self.ignore, retries=self.retries,
                                    max_sleep=self.max_sleep, baseline=self._baseline)
        finally:
            destroyed = self._stop_watch()
            self.abandon()
        if found or destroyed:
            raise LeakError(destroyed + found, time.monotonic() - started)

    def __enter__(self) -> Check:
        _no_loop_here("`with check()`")
        self.begin()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        __tracebackhide__ = True
        if kind is None:
            self.end()
        else:
            self.abandon()

    async def __aenter__(self) -> Check:
        self.begin()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        __tracebackhide__ = True
        if kind is None:
            await self.aend()
        else:
            self.abandon()


def check(*, ignore: tuple[Ignore, ...] | list[Ignore] = (), retries: int = RETRIES,
          max_sleep: float = MAX_SLEEP, creation_sites: bool = True) -> Check:
    """A :class:`Check` against what exists now (goleak's ``IgnoreCurrent``); ``with`` or
    ``async with``. ``creation_sites=False`` leaves the task factory and the ``Thread.start``
    hook alone (the report then shows creation sites only where they were already recorded)."""
    return Check(ignore=ignore, retries=retries, max_sleep=max_sleep,
                 creation_sites=creation_sites)


_START_DEPTH: Final = 16
"""Frames kept per ``Thread.start`` while a check records where threads come from."""


async def _threads_without_asyncio(check: Check) -> list[Leak]:
    """Threads only, from a coroutine of another async library (trio), sleeping with its own
    sleep so its loop runs meanwhile."""
    import trio  # the only other loop a coroutine here can be running on

    for delay in _delays(check.retries, check.max_sleep):
        if not _attempt(check._baseline, None, check.ignore):
            return []
        await trio.sleep(delay)
    return leaks_of(_attempt(check._baseline, None, check.ignore))
