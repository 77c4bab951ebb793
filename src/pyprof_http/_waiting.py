"""Waiting and off-loop work for handlers: honour disconnects and shutdown, never the app's pool.

A profile request waits for seconds; it must end as soon as the client goes away (Go waits on
the request context too) or the app shuts down. Rendering a big profile is CPU work that must
not hold the event loop, and must not queue behind the app's own threadpool either: a FastAPI
service whose 40 threadpool workers are all stuck is exactly when a stack dump is wanted.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from starlette.requests import Request

from .collectors.session import SESSIONS

_T = TypeVar("_T")
_STOP_POLL_S = 0.1
"""How often a wait checks for shutdown (a threading.Event, as shutdown may come from any loop)."""
_RENDERS = threading.BoundedSemaphore(4)
"""Renders at once; more wait their turn (each is bounded work)."""


WakeHook = Callable[[bool], None]
"""Called with whether the client went away."""
_BEFORE_WAKE: contextvars.ContextVar[WakeHook | None] = contextvars.ContextVar(
    "pyprof_http_before_wake", default=None)


@contextlib.contextmanager
def before_wake(hook: WakeHook) -> Iterator[None]:
    """Run ``hook(client_gone)`` (on the loop, from a callback) just before a wait in this
    block wakes its request: a profiler stops there, before the request's code runs again."""
    token = _BEFORE_WAKE.set(hook)
    try:
        yield
    finally:
        _BEFORE_WAKE.reset(token)


class ClientDisconnected(Exception):
    """The client went away; the work stops and nothing is sent."""


async def sleep_unless_disconnected(
    request: Request, seconds: float, stop: threading.Event | None = None
) -> None:
    """Wait ``seconds``; raise :class:`ClientDisconnected` as soon as the client goes away.

    ``stop`` (set at app shutdown) ends the wait early; the profile then covers what elapsed.

    The request's coroutines stay parked on one future for the whole wait, and the checks run
    as plain timer callbacks: a profiler that is on meanwhile sees the request suspend once and
    resume once, and nothing new is allocated per check. That matters for yappi 1.7.6, which
    keeps a reference to a coroutine each time it sees one suspend or return (upstream #217),
    and for CPython's tracemalloc before 3.12.5, which never frees a traceback it recorded
    (gh-121390). A :func:`before_wake` hook runs before the request is woken.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    done: asyncio.Future[None] = loop.create_future()

    async def disconnected() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watcher = loop.create_task(disconnected(), name="pyprof_http-disconnect-watch")
    timer: asyncio.TimerHandle | None = None
    hook = _BEFORE_WAKE.get()

    def wake(_: object = None) -> None:
        if done.done():
            return
        try:
            if hook is not None:
                hook(_client_gone(watcher))
        finally:  # a failing hook is the loop's to log; the request must still wake
            done.set_result(None)

    def check() -> None:
        nonlocal timer
        left = deadline - loop.time()
        if left <= 0 or (stop is not None and stop.is_set()) or SESSIONS.shutting_down:
            wake()
        elif not done.done():
            timer = loop.call_at(loop.time() + min(left, _STOP_POLL_S), check)

    watcher.add_done_callback(wake)
    check()
    try:
        await done
    finally:
        if timer is not None:
            timer.cancel()
        watcher.remove_done_callback(wake)
        watcher.cancel()
    if _client_gone(watcher):
        raise ClientDisconnected


def _client_gone(watcher: asyncio.Task[None]) -> bool:
    return watcher.done() and not watcher.cancelled() and watcher.exception() is None


class Standby(Generic[_T]):
    """A ``pyprof_http-render`` thread started now that runs ``fn`` once :meth:`run` is awaited.

    For work that must happen while something process-wide is switched on but must not see
    the thread being started: a heap window starts it before tracemalloc, which never frees a
    traceback it recorded before CPython 3.12.5 (gh-121390), and a thread start is dozens.
    """

    def __init__(self, fn: Callable[[], _T]) -> None:
        self._loop = asyncio.get_running_loop()
        self._future: asyncio.Future[_T] = self._loop.create_future()
        self._fn = fn
        self._go = threading.Event()
        self._cancelled = False
        threading.Thread(target=self._main, name="pyprof_http-render", daemon=True).start()

    def start(self) -> None:
        """Set ``fn`` going now (from a callback); :meth:`run` then only waits for it."""
        self._go.set()

    async def run(self) -> _T:
        """Run ``fn`` on the thread (unless started) and return its result or raise its error."""
        self._go.set()
        return await self._future

    def cancel(self) -> None:
        """Let the thread end without running ``fn``. Idempotent; too late once ``run``."""
        if not self._go.is_set():
            self._cancelled = True
            self._go.set()

    def _deliver(self, ok: bool, value: object) -> None:
        if self._future.done():  # the request was cancelled meanwhile
            return
        if ok:
            self._future.set_result(value)  # type: ignore[arg-type]
        else:
            self._future.set_exception(value)  # type: ignore[arg-type]

    def _main(self) -> None:
        self._go.wait()
        if self._cancelled:
            return
        with _RENDERS:
            fn, self._fn = self._fn, _ran
            try:
                result: tuple[bool, object] = (True, fn())
            except BaseException as exc:  # handed to the waiting request
                result = (False, exc)
            # what ``fn`` was given (a loop capture's tasks and frames) must not outlive the
            # call: the request resumes before this thread ends, and a collection it runs
            # then (goroutineleak) must find those tasks unreachable
            del fn
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
            self._loop.call_soon_threadsafe(self._deliver, *result)


def _ran() -> Any:
    raise RuntimeError("already ran")


async def render_in_thread(fn: Callable[..., _T], *args: object) -> _T:
    """Run ``fn(*args)`` on a fresh daemon thread named ``pyprof_http-render``."""
    return await Standby(lambda: fn(*args)).run()
