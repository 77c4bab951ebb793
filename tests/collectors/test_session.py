"""One profiler of a kind at a time; shutdown stops them; the slot is always given back."""

from __future__ import annotations

import threading

import pytest

from pyprof_http.collectors.errors import Busy
from pyprof_http.collectors.session import SESSIONS, ProfilerSessions
from pyprof_http.errors import from_collector


def test_second_claim_is_a_409_naming_the_running_profile() -> None:
    sessions = ProfilerSessions()
    with sessions.claim("cpu", "wall", 30) as stop:
        assert isinstance(stop, threading.Event) and not stop.is_set()
        assert sessions.running() == ["cpu"]
        with pytest.raises(Busy) as caught, sessions.claim("cpu", "tracing (cpu clock)", 5):
            pytest.fail("a second claim must not enter its block")
        mapped = from_collector(caught.value)  # what the app answers with
        assert mapped.status_code == 409
        reason = mapped.reason
        assert reason == str(caught.value)
        assert reason.startswith("a wall profile is already running"), reason
        assert "s ago" in reason and "30 s left" in reason and "one at a time" in reason
        assert "\n" not in reason
        assert sessions.running() == ["cpu"], "the failed claim must not free the running one"
    assert sessions.running() == []


def test_kinds_are_independent() -> None:
    sessions = ProfilerSessions()
    with sessions.claim("cpu", "cpu", 1), sessions.claim("heap", "heap", 1):
        assert sessions.running() == ["cpu", "heap"]
    assert sessions.running() == []


def test_stop_all_sets_every_running_event() -> None:
    sessions = ProfilerSessions()
    with sessions.claim("cpu", "cpu", 30) as cpu_stop, sessions.claim("heap", "h", 30) as heap_stop:
        assert not cpu_stop.is_set() and not heap_stop.is_set()
        sessions.stop_all()
        assert cpu_stop.is_set() and heap_stop.is_set()
    sessions.stop_all()  # nothing running: a no-op
    with sessions.claim("cpu", "cpu", 30) as fresh:
        assert not fresh.is_set(), "a new session starts with a fresh event"


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt(), GeneratorExit()])
def test_slot_is_freed_after_an_exception(error: BaseException) -> None:
    sessions = ProfilerSessions()
    with pytest.raises(type(error)), sessions.claim("cpu", "cpu", 30):
        raise error
    assert sessions.running() == []
    with sessions.claim("cpu", "cpu", 30):
        assert sessions.running() == ["cpu"]


def test_concurrent_claims_from_threads_admit_exactly_one() -> None:
    sessions = ProfilerSessions()
    barrier = threading.Barrier(8)
    release = threading.Event()
    results: list[str] = []

    def contender() -> None:
        barrier.wait()
        try:
            with sessions.claim("cpu", "cpu", 1):
                results.append("won")
                release.wait(5)
        except Busy:
            results.append("409")

    threads = [threading.Thread(target=contender) for _ in range(8)]
    for t in threads:
        t.start()
    while len(results) < 8 and any(t.is_alive() for t in threads):
        if results.count("409") == 7:
            release.set()
        threading.Event().wait(0.01)
    release.set()
    for t in threads:
        t.join(5)
    assert sorted(results) == ["409"] * 7 + ["won"]
    assert sessions.running() == []


def test_the_process_wide_sessions_are_idle_between_tests() -> None:
    assert SESSIONS.running() == []
