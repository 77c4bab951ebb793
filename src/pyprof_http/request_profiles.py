"""Per-request profiles: every slow, hash-sampled or explicitly asked-for request keeps its own.

The lifecycle middleware times each request. When one ends, it is kept if it was slower than
``slow_request_ms``, if its id's hash falls in ``request_sample_rate``, or if an authorized
client asked with ``X-Pprof-Profile: 1``; its samples are then cut from the flight recorder by
their ``request_id`` label (the recorder labels samples in thread-pool code too). An asked-for
request is sampled at the full rate: while one runs, a second 100 Hz recorder shares the
sampling driver (:data:`FULL_RATE`), and its samples are cut from that one. A bounded ring
keeps the last ``request_profiles_kept``; nothing else is held per request id.

The hash is ``blake2b`` of the id's UTF-8 bytes, its first 8 bytes as a fraction of 2**64: not
Python's ``hash()``, which is salted per process, so every process and every service that sees
the same id makes the same choice.

Cutting runs off the event loop (a long request spans many recorder intervals).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import threading
import time
from typing import Any

from .captures.requests import RequestRecord, RequestsCapture
from .collectors.cpu import aggregate_profile
from .collectors.recorder import RECORDER, RingRecorder
from .model import Profile

FULL_RATE_HZ = 100
PENDING_WAIT_S = 5.0
"""How long ``/requests/<id>`` waits for a profile still being cut (a long request's cut)."""
FULL_RATE_SECONDS = 120
"""How much of an asked-for request the full-rate recorder keeps (its last seconds)."""
_EMPTY = aggregate_profile("cpu", [], FULL_RATE_HZ, 0, 0, ())


def sampled(request_id: str, rate: float) -> bool:
    """Whether ``request_id`` falls in ``rate`` (deterministic, the same in every process)."""
    if rate <= 0.0:
        return False
    digest = hashlib.blake2b(request_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < rate


class FullRate:
    """The 100 Hz recorder that runs while at least one asked-for request does."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self.recorder: RingRecorder | None = None

    def begin(self, max_depth: int) -> RingRecorder:
        with self._lock:
            if self.recorder is None:
                recorder = RingRecorder(FULL_RATE_HZ, FULL_RATE_SECONDS, max_depth)
                recorder.start()
                self.recorder = recorder
            self._running += 1
            return self.recorder

    def end(self) -> None:
        with self._lock:
            self._running -= 1
            if self._running > 0 or self.recorder is None:
                return
            recorder, self.recorder = self.recorder, None
        recorder.stop()


FULL_RATE = FullRate()


class RequestProfiles:
    """The last profiled requests (a bounded ring), by id."""

    def __init__(self, kept: int = 100) -> None:
        self._lock = threading.Lock()
        self._ring: collections.OrderedDict[str, RequestRecord] = collections.OrderedDict()
        self.kept = kept
        self._pending: collections.Counter[str] = collections.Counter()
        """Ids whose profile is being cut (off the loop) right after their request ended."""

    def __len__(self) -> int:
        return len(self._ring)

    def add(self, record: RequestRecord, kept: int) -> None:
        with self._lock:
            self.kept = kept
            self._ring.pop(record.request_id, None)  # a repeated id: the latest wins
            self._ring[record.request_id] = record
            while len(self._ring) > kept:
                self._ring.popitem(last=False)

    def get(self, request_id: str) -> RequestRecord | None:
        with self._lock:
            return self._ring.get(request_id)

    def begin(self, request_id: str) -> None:
        with self._lock:
            self._pending[request_id] += 1

    def done(self, request_id: str) -> None:
        with self._lock:
            self._pending[request_id] -= 1
            if self._pending[request_id] <= 0:
                del self._pending[request_id]

    async def wait_for(self, request_id: str,
                       timeout: float = PENDING_WAIT_S) -> RequestRecord | None:
        """The record of ``request_id``, waiting (on the loop, never blocking it) while its
        cut is still running: the asked-for request's response points to its profile, and a
        client following that link at once arrived before the cut had finished (a 404, about
        one time in ten on loopback)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                record = self._ring.get(request_id)
                pending = request_id in self._pending
            if record is not None or not pending or time.monotonic() >= deadline:
                return record
            await asyncio.sleep(0.005)

    def capture(self) -> RequestsCapture:
        with self._lock:
            records = tuple(reversed(self._ring.values()))
        return RequestsCapture(records, _EMPTY)

    def clear(self) -> None:
        with self._lock:
            self._ring.clear()


REQUESTS = RequestProfiles()


def cut(recorder: RingRecorder, request_id: str, start_ns: int, end_ns: int,
        meta: dict[str, Any], reason: str) -> RequestRecord:
    """The request's samples from ``recorder`` as its record."""
    items = recorder.window(start_ns, end_ns, request_id)
    duration = end_ns - start_ns
    profile: Profile = aggregate_profile(
        "cpu", items, recorder.hz, meta["started_ns"], duration,
        (f"pyprof_http request {request_id!r} ({reason}), sampled at {recorder.hz} Hz",))
    return RequestRecord(
        request_id=request_id, route=meta["route"], method=meta["method"],
        status=meta["status"], started=meta["started_ns"] / 1e9,
        duration_ms=duration / 1e6, samples=sum(values[0] for _key, values in items),
        reason=reason, profile=profile)


def finish(request_id: str, start_ns: int, end_ns: int, meta: dict[str, Any],
           reason: str, recorder: RingRecorder | None, kept: int) -> None:
    """Cut and keep a request's profile; on a worker thread (see :func:`keep`)."""
    try:
        if recorder is not None:
            REQUESTS.add(cut(recorder, request_id, start_ns, end_ns, meta, reason), kept)
    finally:
        REQUESTS.done(request_id)


def keep(request_id: str, start_ns: int, meta: dict[str, Any], reason: str,
         recorder: RingRecorder | None, kept: int) -> asyncio.Future[None] | None:
    """Cut the request's samples off the loop; returns the pending work (tests await it)."""
    if recorder is None:
        return None
    end_ns = time.monotonic_ns()
    loop = asyncio.get_running_loop()
    REQUESTS.begin(request_id)  # done() when the cut has finished, or failed
    try:
        return loop.run_in_executor(None, finish, request_id, start_ns, end_ns, meta, reason,
                                    recorder, kept)
    except BaseException:
        REQUESTS.done(request_id)
        raise


def reason_for(request_id: str, duration_ns: int, asked: bool, slow_ms: int,
               rate: float) -> str | None:
    """Why the request is kept, or None."""
    if asked:
        return "asked"
    if slow_ms and duration_ns >= slow_ms * 1_000_000:
        return "slow"
    if sampled(request_id, rate):
        return "sampled"
    return None


def recorder_for(asked: bool) -> RingRecorder | None:
    """Where a kept request's samples are: the full-rate recorder for an asked one."""
    return FULL_RATE.recorder if asked else RECORDER.current
