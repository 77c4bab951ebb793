"""One batch of pushed profiles (push/sources.py): mutex pushed as the change since the last
push, stalls since the last push, CPU from the push sampler with its labels."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pprof_schema
from pyprof_http.collectors import locks
from pyprof_http.config import Settings
from pyprof_http.push.labels import series
from pyprof_http.push.sources import Collector
from pyprof_http.switches import Claims, set_lock_profile_fraction


def _by_name(collector: Collector) -> dict[str, object]:
    return {s.name: pprof_schema.decode(s.pprof) for s in collector.batch(final=True)}


def _contend(lock: threading.Lock) -> None:
    held = threading.Event()

    def holder() -> None:
        with lock:
            held.set()
            time.sleep(0.05)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(30)
    with lock:  # waits for the holder: one contention
        pass
    thread.join(30)


def _contentions(profile: object) -> int:
    return sum(sample.value[0] for sample in profile.sample)  # type: ignore[attr-defined]


def test_mutex_is_pushed_as_the_change_since_the_last_push() -> None:
    previous = set_lock_profile_fraction(1)
    try:
        assert locks.is_enabled()
        lock = threading.Lock()
        collector = Collector(64, None, lambda: {"service_name": "t"})
        _contend(lock)
        first = _by_name(collector)
        assert _contentions(first["mutex"]) >= 1
        _contend(lock)
        _contend(lock)
        second = _by_name(collector)
        assert _contentions(second["mutex"]) == 2  # not the cumulative 3
        assert "mutex" not in _by_name(collector)  # nothing new: no empty series
        collector.cpu.stop()
    finally:
        set_lock_profile_fraction(previous)


async def _on_loop(call: Any, *args: Any) -> None:
    call(*args)  # the watchdog learns its loop's thread from the thread that starts it


def test_stalls_since_the_last_push_are_pushed_as_block() -> None:
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    claims = Claims()
    try:
        asyncio.run_coroutine_threadsafe(_on_loop(claims.watch, loop, 20, 64), loop).result(30)
        collector = Collector(64, loop, lambda: {"service_name": "t"})
        assert "block" not in _by_name(collector)
        loop.call_soon_threadsafe(time.sleep, 0.3)  # the loop is blocked for 300 ms
        deadline = time.monotonic() + 20
        while True:
            pushed = _by_name(collector)
            if "block" in pushed or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert "block" in pushed
        assert "block" not in _by_name(collector)  # already pushed: not again
        collector.cpu.stop()
    finally:
        claims.release_all()
        loop.call_soon_threadsafe(loop.stop)
        runner.join(10)
        loop.close()


def test_each_series_is_labelled_with_its_profile_type() -> None:
    collector = Collector(64, None, lambda: {"service_name": "svc", "pid": "9"})
    collector.cpu.start()
    try:
        time.sleep(0.2)
        batch = collector.batch(final=True)
    finally:
        collector.cpu.stop()
    cpu = [s for s in batch if s.name == "process_cpu"]
    assert len(cpu) == 1
    assert cpu[0].labels == series("process_cpu", {"service_name": "svc", "pid": "9"})
    assert cpu[0].start_ns < cpu[0].end_ns and cpu[0].sample_rate == 19


def test_only_what_the_allowlist_serves_is_pushed() -> None:
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    try:
        everything = Collector(64, loop, lambda: {"service_name": "t"})
        only_cpu = Collector(64, loop, lambda: {"service_name": "t"},
                             Settings(profiles="profile").allows)
        assert {"process_cpu", "goroutines"} <= {s.name for s in everything.batch()}
        assert {s.name for s in only_cpu.batch()} == {"process_cpu"}
        everything.cpu.stop()
        only_cpu.cpu.stop()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(10)
        loop.close()
