"""The background pusher: one daemon thread per process, ``pyprof_http-pusher``.

Every ``push_interval`` it builds a batch (``sources.Collector``) and queues it; it sends the
queue oldest first. It never touches the event loop's time (the goroutine capture waits on the
loop for at most a second, from this thread), and the application never waits for it. The
queue is bounded: when the server is unreachable, the oldest batch is dropped and counted.
Failures back off exponentially (``push_interval`` * 2^n, at most :data:`MAX_BACKOFF_S`); a
streak of failures is logged once when it starts and once when it ends, never per failure.
Connect is tried first; a server without it (404/405/415/501) gets ``/ingest`` from then on.
At shutdown one last batch is built and the queue is sent once, each request bounded by
:data:`FINAL_TIMEOUT_S`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Final

from ..config import Settings
from .client import FALLBACK_STATUSES, PushFailed, Target, push_connect, push_ingest
from .labels import base_labels
from .request import Series
from .sources import Collector

_LOG = logging.getLogger("pyprof_http.push")
MAX_BACKOFF_S: Final = 300.0
FINAL_TIMEOUT_S: Final = 2.0


@dataclass(frozen=True)
class PushStatus:
    """What the index shows."""

    url: str
    api: str
    pushes: int
    failures: int
    streak: int
    dropped: int
    queued: int
    last_push_wall: float | None
    last_error: str | None
    skipped: tuple[str, ...]

    def describe(self) -> str:
        last = ("never" if self.last_push_wall is None else
                time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.last_push_wall)))
        text = (f"pushing to {self.url} ({self.api}): last push {last}, {self.pushes} pushes, "
                f"{self.failures} failures, {self.dropped} batches dropped, "
                f"{self.queued} queued")
        if self.streak:
            text += f"; failing ({self.streak} in a row): {self.last_error}"
        if self.skipped:
            text += f"; left out: {', '.join(self.skipped)}"
        return text


class Pusher:
    """Push ``settings``' profiles from a daemon thread until :meth:`stop`."""

    def __init__(self, settings: Settings, loop: asyncio.AbstractEventLoop | None) -> None:
        self.settings = settings
        self.target = Target.from_settings(settings)
        self.interval = settings.push_interval
        self.collector = Collector(settings.max_stack_depth, loop,
                                   lambda: base_labels(settings), settings.allows)
        self.api = "connect"
        self.queue: collections.deque[list[Series]] = collections.deque()
        self.pushes = self.failures = self.streak = self.dropped = 0
        self._streak_dropped = 0
        self.last_push_wall: float | None = None
        self.last_error: str | None = None
        self.pid = os.getpid()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pyprof_http-pusher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive() and self.pid == os.getpid()

    def status(self) -> PushStatus:
        return PushStatus(self.target.url, self.api, self.pushes, self.failures, self.streak,
                          self.dropped, len(self.queue), self.last_push_wall, self.last_error,
                          tuple(sorted(self.collector.errors)))

    def stop(self, timeout: float = FINAL_TIMEOUT_S * 2 + 1) -> None:
        """Ask for the last flush and wait for it, at most ``timeout`` seconds."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    # --- the thread -------------------------------------------------------------------------

    def _run(self) -> None:
        self.collector.cpu.start()
        try:
            self._loop()
        finally:
            self.collector.cpu.stop()

    def _loop(self) -> None:
        next_batch = time.monotonic() + self.interval
        next_send = 0.0
        while True:
            now = time.monotonic()
            wake = max(0.0, min(next_batch, next_send if self.queue else next_batch) - now)
            if self._stop.wait(wake):
                break
            now = time.monotonic()
            if now >= next_batch:
                self._enqueue(self.collector.batch())
                next_batch = max(next_batch + self.interval, now + self.interval / 2)
            if self.queue and now >= next_send:
                next_send = now + self._send_queue(None)
        self._final_flush()

    def _enqueue(self, batch: list[Series]) -> None:
        if not batch:
            return
        if len(self.queue) >= self.settings.push_queue_size:
            self.queue.popleft()
            self.dropped += 1
            self._streak_dropped += 1
            if self._streak_dropped == 1:
                _LOG.warning("pyprof_http push queue full (%d batches): dropping the oldest "
                             "until %s answers again", self.settings.push_queue_size,
                             self.target.url)
        self.queue.append(batch)

    def _send_queue(self, timeout: float | None) -> float:
        """Send queued batches oldest first; the delay before the next attempt (0: drained)."""
        while self.queue:
            try:
                self._send(self.queue[0], timeout)
            except PushFailed as exc:
                self._failed(str(exc))
                # the exponent is capped: 2 ** 1024 times a float overflows, which after a long
                # outage (days of failures at MAX_BACKOFF_S) would kill the pusher's thread
                doublings = min(self.streak - 1, 64)
                return float(min(self.interval * 2 ** doublings, MAX_BACKOFF_S))
            self.queue.popleft()
            self._succeeded()
        return 0.0

    def _send(self, batch: list[Series], timeout: float | None) -> None:
        if self.api == "connect":
            try:
                push_connect(self.target, batch, timeout)
                return
            except PushFailed as exc:
                if exc.status not in FALLBACK_STATUSES:
                    raise
                _LOG.info("pyprof_http: %s has no Connect push API (HTTP %s); using /ingest",
                          self.target.url, exc.status)
                self.api = "ingest"
        base = base_labels(self.settings)
        while batch:  # one request per series: one that arrived is not sent again on a retry
            push_ingest(self.target, batch[:1], base, timeout)
            del batch[0]

    def _failed(self, reason: str) -> None:
        self.failures += 1
        self.streak += 1
        self.last_error = reason
        if self.streak == 1:
            _LOG.warning("pyprof_http push to %s failed (%s); retrying with backoff, "
                         "logged again when it recovers", self.target.url, reason)

    def _succeeded(self) -> None:
        if self.streak:
            _LOG.warning("pyprof_http push to %s recovered after %d failures (%d batches "
                         "dropped meanwhile)", self.target.url, self.streak, self._streak_dropped)
        self.pushes += 1
        self.streak = self._streak_dropped = 0
        self.last_error = None
        self.last_push_wall = time.time()

    def _final_flush(self) -> None:
        try:
            self._enqueue(self.collector.batch(final=True))
            self._send_queue(FINAL_TIMEOUT_S)  # once: a failure returns at once
        except Exception:  # shutdown must go on
            _LOG.exception("pyprof_http: the last push failed")


_lock = threading.Lock()
_current: dict[str, Pusher] = {}


def start(settings: Settings, loop: asyncio.AbstractEventLoop | None) -> Pusher:
    """The process's pusher, started with ``settings`` if none runs in this process (a
    forked child's copy of its parent's is dead: a new one starts, with the child's pid)."""
    with _lock:
        running = _current.get("pusher")
        if running is not None and running.alive():
            return running
        pusher = _current["pusher"] = Pusher(settings, loop)
        pusher.start()
        return pusher


def stop() -> None:
    """Stop the process's pusher (last flush first)."""
    with _lock:
        pusher = _current.pop("pusher", None)
    if pusher is not None and pusher.pid == os.getpid():
        pusher.stop()


def current() -> Pusher | None:
    pusher = _current.get("pusher")
    return pusher if pusher is not None and pusher.pid == os.getpid() else None


def status() -> PushStatus | None:
    """The running pusher's status (None: not pushing from this process)."""
    pusher = current()
    return pusher.status() if pusher is not None else None


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()
    _current.clear()  # the parent's thread did not come along


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
