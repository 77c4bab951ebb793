"""The background pusher (push/pusher.py) against a capture server on loopback.

Push intervals are short here; assertions are on what arrived and on lower bounds of the
spacing between attempts (a wait never ends early, however loaded the machine), never on how
fast anything ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator

import pytest

import pprof_schema
import proto_schema
import pyroscope_rules
from capture_server import CaptureServer, Recorded
from pyprof_http.collectors.recorder import RECORDER
from pyprof_http.config import Settings
from pyprof_http.push import pusher as push
from pyprof_http.push.client import CONNECT_PATH
from pyprof_http.push.recorded import RecordedCpu
from pyprof_http.switches import Claims

SECRET = "s3cret-password-value"


def _series(request: Recorded) -> dict[str, tuple[dict[str, str], bytes]]:
    message = proto_schema.push_request(request.payload())
    return {dict((p.name, p.value) for p in s.labels)["__name__"]:
            (dict((p.name, p.value) for p in s.labels), s.samples[0].raw_profile)
            for s in message.series}


def _no_push_threads() -> bool:
    return not [t for t in threading.enumerate()
                if t.name in ("pyprof_http-pusher", "pyprof_http-push-sampler")]


@contextlib.contextmanager
def running(settings: Settings, loop: asyncio.AbstractEventLoop | None = None,
            kind: type[push.Pusher] = push.Pusher) -> Iterator[push.Pusher]:
    pusher = kind(settings, loop)
    pusher.start()
    try:
        yield pusher
    finally:
        pusher.stop()
    assert not pusher._thread.is_alive()


@contextlib.contextmanager
def serving_loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-serving-loop", daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def _burn(stop: threading.Event) -> None:
    while not stop.is_set():
        sum(i * i for i in range(2000))


def test_pushes_arrive_with_series_labels_and_valid_profiles() -> None:
    stop = threading.Event()
    worker = threading.Thread(target=_burn, args=(stop,), name="burner")
    worker.start()
    started_tracing = not tracemalloc.is_tracing()
    if started_tracing:
        tracemalloc.start(1)
    try:
        with CaptureServer() as server, serving_loop() as loop:
            settings = Settings(push_url=server.url, push_interval=0.3, push_service_name="shop",
                                push_version="1.2.3", push_labels={"env": "test"})
            with running(settings, loop):
                requests = server.wait_for(3)
    finally:
        stop.set()
        worker.join()
        if started_tracing:
            tracemalloc.stop()
    assert all(r.path == CONNECT_PATH for r in requests)
    kinds: set[str] = set()
    for request in requests:
        for name, (labels, raw) in _series(request).items():
            kinds.add(name)
            assert labels == {"__name__": name, "service_name": "shop", "version": "1.2.3",
                              "pid": str(os.getpid()), "host": socket.gethostname(),
                              "env": "test"}
            assert pyroscope_rules.violations(raw) == [], name
    assert {"process_cpu", "goroutines", "memory"} <= kinds
    cpu = [_series(r)["process_cpu"][1] for r in requests if "process_cpu" in _series(r)]
    threads = {label for raw in cpu for _, _, label in _thread_labels(raw)}
    assert "burner" in threads  # the busy thread was sampled, with its thread label


def _thread_labels(raw: bytes) -> list[tuple[int, int, str]]:
    message = pprof_schema.decode(raw)
    strings = message.string_table
    return [(len(s.location_id), s.value[1], strings[label.str])
            for s in message.sample for label in s.label if strings[label.key] == "thread"]


class _AttemptsRecorded(push.Pusher):
    """Keeps when each send attempt began and the backoff it chose, on the pusher's own clock:
    the server's arrival times would add the machine's scheduling jitter to every gap."""

    attempts: list[tuple[float, float]]

    def _send_queue(self, timeout: float | None) -> float:
        began = time.monotonic()
        delay = super()._send_queue(timeout)
        self.attempts = [*getattr(self, "attempts", []), (began, delay)]
        return delay


def test_failures_back_off_and_are_logged_once_per_streak(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pyprof_http.push")
    interval = 0.1
    with CaptureServer("fail") as server:
        settings = Settings(push_url=server.url, push_interval=interval,
                            push_basic_auth_user="user", push_basic_auth_password=SECRET)
        with running(settings, kind=_AttemptsRecorded) as pusher:
            server.wait_for(5)
            server.mode = "ok"
            deadline = time.monotonic() + 60
            while pusher.pushes == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            status = pusher.status()
    attempts = pusher.attempts  # type: ignore[attr-defined]
    failed = [(at, delay) for at, delay in attempts if delay > 0]
    assert len(failed) >= 5
    expected = [min(interval * 2 ** n, push.MAX_BACKOFF_S) for n in range(len(failed))]
    assert [delay for _, delay in failed] == pytest.approx(expected)  # doubling per failure
    for (at, delay), (next_at, _) in itertools.pairwise(attempts):
        assert next_at >= at + delay - 0.005, attempts  # a backoff never ends early
    assert status.pushes >= 1 and status.failures >= 5 and status.streak == 0
    failures = [r for r in caplog.records
                if r.name.startswith("pyprof_http.push") and "failed" in r.getMessage()]
    recoveries = [r for r in caplog.records
                  if r.name.startswith("pyprof_http.push") and "recovered" in r.getMessage()]
    assert len(failures) == 1 and len(recoveries) == 1
    assert SECRET not in caplog.text and "Authorization" not in caplog.text


def test_a_refusing_server_fills_the_queue_and_the_oldest_is_dropped(
        caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = Settings(push_url=f"http://127.0.0.1:{port}", push_interval=0.05,
                        push_queue_size=2, push_token="bearer-" + SECRET)
    with running(settings) as pusher:
        deadline = time.monotonic() + 60
        while pusher.dropped < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        status = pusher.status()
    assert status.dropped >= 3 and status.queued <= 2
    assert "batches dropped" in status.describe() and "failing" in status.describe()
    drops = [r for r in caplog.records if "dropping the oldest" in r.getMessage()]
    assert len(drops) == 1
    assert SECRET not in caplog.text


def test_a_server_without_connect_gets_ingest() -> None:
    with (CaptureServer("no_connect") as server,
          running(Settings(push_url=server.url, push_interval=0.2)) as pusher):
        requests = server.wait_for(3)
        api = pusher.api
    assert requests[0].path == CONNECT_PATH
    assert all(r.path.startswith("/ingest?") for r in requests[1:])
    assert api == "ingest"


def test_stop_sends_a_last_batch_and_leaves_no_thread() -> None:
    with CaptureServer() as server:
        pusher = push.Pusher(Settings(push_url=server.url, push_interval=3600), None)
        pusher.start()
        assert pusher._thread.daemon and pusher._thread.name == "pyprof_http-pusher"
        time.sleep(0.2)
        pusher.stop()
        (request,) = server.wait_for(1)
    assert "process_cpu" in _series(request)
    assert _no_push_threads()


def test_claims_start_the_pusher_only_when_asked_and_stop_it_with_the_last() -> None:
    with CaptureServer() as server:
        settings = Settings(push_url=server.url, push_interval=3600)
        quiet = Claims()
        quiet.push(Settings(), None)  # no push_url: nothing starts
        assert push.current() is None and _no_push_threads()
        first, second = Claims(), Claims()
        first.push(settings, None)
        second.push(settings, None)
        running_one = push.current()
        assert running_one is not None and running_one.alive()
        first.release_all()
        assert push.current() is running_one  # the other app still holds it
        second.release_all()
        assert push.current() is None and _no_push_threads()
        server.wait_for(1)  # its last flush
        quiet.release_all()


def _burner_recorded(since_ns: int) -> bool:
    recorder = RECORDER.current
    return recorder is not None and any(
        frame.function.endswith("_burn")
        for (stack, _labels), _values in recorder.window(since_ns) for frame in stack)


def _functions_and_comments(raw: bytes) -> tuple[set[str], list[str]]:
    message = pprof_schema.decode(raw)
    strings = message.string_table
    return ({strings[f.name] for f in message.function}, [strings[c] for c in message.comment])


def test_with_the_flight_recorder_on_cpu_comes_from_it_to_the_last_flush() -> None:
    """As an app starts and stops them: the recorder's claim first, the pusher's after; at
    shutdown the recorder stops before the pusher's last flush, which still holds its rest."""
    stop = threading.Event()
    worker = threading.Thread(target=_burn, args=(stop,), name="burner")
    claims = Claims()
    with CaptureServer() as server:
        settings = Settings(push_url=server.url, push_interval=0.5, recorder_hz=19)
        claims.record(settings)
        try:
            assert RECORDER.current is not None
            claims.push(settings, None)
            pusher = push.current()
            assert pusher is not None
            source = pusher.collector.cpu
            assert isinstance(source, RecordedCpu)
            since = time.monotonic_ns()
            worker.start()
            deadline = time.monotonic() + 60  # a bound against hanging, not a timing
            while time.monotonic() < deadline and not (
                    len(server.requests) >= 2 and _burner_recorded(since)):
                assert [t for t in threading.enumerate()
                        if t.name == "pyprof_http-push-sampler"] == []
                time.sleep(0.05)
            assert len(server.requests) >= 2 and _burner_recorded(since)
            assert source.using == "recorder"
        finally:
            stop.set()
            if worker.is_alive():
                worker.join()
            claims.release_all()  # the recorder stops, then the pusher sends its last batch
        assert RECORDER.current is None and _no_push_threads()
        requests = list(server.requests)
    cpu = [_functions_and_comments(_series(r)["process_cpu"][1])
           for r in requests if "process_cpu" in _series(r)]
    assert len(cpu) == len(requests) >= 3  # the pushes seen above and the last flush
    assert all(any("intervals of the flight recorder" in c for c in comments)
               for _, comments in cpu)  # never from a push sampler, the last flush neither
    assert any(name.endswith("_burn") for functions, _ in cpu for name in functions)


def test_a_days_long_outage_keeps_backing_off_at_the_cap() -> None:
    """After ~1,024 failures (3.5 days at the 300 s cap) ``interval * 2 ** streak`` overflowed
    a float: OverflowError killed the pusher's thread for good."""
    pusher = push.Pusher(Settings(push_url="http://127.0.0.1:9", push_interval=15), None)

    def refused(batch: object, timeout: object) -> None:
        raise push.PushFailed("refused")

    pusher._send = refused  # type: ignore[method-assign]
    pusher.queue.append([])
    pusher.streak = 5000
    assert pusher._send_queue(None) == push.MAX_BACKOFF_S
    assert pusher.streak == 5001 and len(pusher.queue) == 1


def test_an_ingest_batch_that_fails_half_way_resends_only_what_did_not_arrive(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``/ingest`` takes one series per request: when the second of three failed, the retry
    sent the whole batch again and Pyroscope counted the first series twice."""
    from pyprof_http.push.request import Series

    sent: list[str] = []
    fail = iter([False, True, False, False, False])

    def ingest(target: object, batch: list[Series], base: object, timeout: object) -> None:
        if next(fail):
            raise push.PushFailed("HTTP 503", 503)
        sent.extend(item.name for item in batch)

    monkeypatch.setattr(push, "push_ingest", ingest)
    pusher = push.Pusher(Settings(push_url="http://127.0.0.1:9", push_interval=15), None)
    pusher.api = "ingest"
    pusher.queue.append([Series((("__name__", name),), b"", 1, 2, 0).with_id()
                         for name in ("process_cpu", "goroutines", "memory")])
    assert pusher._send_queue(None) > 0  # the second failed: back off
    assert pusher._send_queue(None) == 0  # the retry
    assert sent == ["process_cpu", "goroutines", "memory"] and not pusher.queue
