"""threadcreate: the stack that started each live thread, or its target when started earlier."""

from __future__ import annotations

import _thread
import functools
import threading
from collections.abc import Iterator

import pytest

import pprof_schema
from lifespan import alone
from pyprof_http.collectors.threads import (
    COUNT,
    FOREIGN_THREAD,
    MAIN_THREAD,
    ThreadOrigins,
    collect,
)
from pyprof_http.pprof.encode import render_pprof
from pyprof_http.render.text import render_text


@pytest.fixture
def origins() -> Iterator[ThreadOrigins]:
    """A fresh ThreadOrigins over the true Thread.start: the hook that apps of other test
    modules hold (test_app's module-level app) is set aside, or these tests saw it as the
    original and failed when run after them."""
    with alone():
        hooked = ThreadOrigins()
        original = threading.Thread.start
        yield hooked
        hooked.uninstall()
        threading.Thread.start = original  # type: ignore[method-assign]


def _parked(stop: threading.Event) -> None:
    stop.wait(10)


def _spawn_worker_thread(stop: threading.Event, name: str) -> threading.Thread:
    thread = threading.Thread(target=_parked, args=(stop,), name=name, daemon=True)
    thread.start()
    return thread


def _sample_of(origins: ThreadOrigins, name: str):  # type: ignore[no-untyped-def]
    profile = collect(origins)
    found = [s for s in profile.samples if s.labels.get("thread") == name]
    assert len(found) == 1, [s.labels for s in profile.samples]
    return found[0]


def test_a_thread_started_after_install_shows_the_stack_that_started_it(
    origins: ThreadOrigins,
) -> None:
    origins.install(max_depth=64)
    stop = threading.Event()
    thread = _spawn_worker_thread(stop, "tc-after")
    try:
        sample = _sample_of(origins, "tc-after")
        functions = [f.function for f in sample.stack]
        assert functions[0] == "_spawn_worker_thread"  # innermost: the caller of start()
        assert "test_a_thread_started_after_install_shows_the_stack_that_started_it" in functions
        assert "Thread.start" not in functions
        assert sample.labels["origin"] == "start"
        assert sample.values == (1,)
    finally:
        stop.set()
        thread.join()


def test_a_thread_started_before_install_shows_its_target(origins: ThreadOrigins) -> None:
    stop = threading.Event()
    thread = _spawn_worker_thread(stop, "tc-before")
    origins.install(max_depth=64)
    try:
        sample = _sample_of(origins, "tc-before")
        assert [f.function for f in sample.stack] == ["_parked"]
        assert sample.stack[0].filename == __file__
        assert sample.labels["origin"] == "target"
    finally:
        stop.set()
        thread.join()


def test_a_subclass_shows_its_run_method_and_its_own_start_is_skipped(
    origins: ThreadOrigins,
) -> None:
    stop = threading.Event()

    class Worker(threading.Thread):
        def start(self) -> None:  # a subclass that wraps start, as some libraries do
            super().start()

        def run(self) -> None:
            stop.wait(10)

    early = Worker(name="tc-subclass-early", daemon=True)
    early.start()
    origins.install(max_depth=64)
    late = Worker(name="tc-subclass-late", daemon=True)
    late.start()
    try:
        assert [f.function for f in _sample_of(origins, "tc-subclass-early").stack] == [
            "test_a_subclass_shows_its_run_method_and_its_own_start_is_skipped.<locals>"
            ".Worker.run"
        ]
        late_stack = _sample_of(origins, "tc-subclass-late").stack
        assert late_stack[0].function.endswith(
            "test_a_subclass_shows_its_run_method_and_its_own_start_is_skipped")
    finally:
        stop.set()
        early.join()
        late.join()


def test_the_main_thread_and_foreign_threads_get_a_frame_saying_so(
    origins: ThreadOrigins,
) -> None:
    """Not an empty stack: go tool pprof drops samples without a location."""
    sample = _sample_of(origins, threading.main_thread().name)
    assert sample.stack == (MAIN_THREAD,)
    assert sample.labels["origin"] == "unknown"
    started, release = threading.Event(), threading.Event()
    seen: list[str] = []

    def foreign() -> None:  # started with _thread: threading sees a _DummyThread
        seen.append(threading.current_thread().name)
        started.set()
        release.wait(10)

    _thread.start_new_thread(foreign, ())
    try:
        assert started.wait(10)
        assert _sample_of(origins, seen[0]).stack == (FOREIGN_THREAD,)
    finally:
        release.set()


def test_every_live_thread_is_counted_once_and_dead_ones_drop_out(
    origins: ThreadOrigins,
) -> None:
    origins.install(max_depth=64)
    stop = threading.Event()
    workers = [_spawn_worker_thread(stop, f"tc-count-{i}") for i in range(3)]
    profile = collect(origins)
    assert profile.sample_types == (COUNT,)
    assert profile.totals() == (threading.active_count(),)
    stop.set()
    for worker in workers:
        worker.join()
    names = {s.labels["thread"] for s in collect(origins).samples}
    assert not any(name.startswith("tc-count-") for name in names)


def test_uninstall_restores_start_and_leaves_a_later_wrapper_alone(
    origins: ThreadOrigins,
) -> None:
    original = threading.Thread.start
    origins.install(max_depth=8)
    assert threading.Thread.start is not original
    origins.uninstall()
    assert threading.Thread.start is original

    origins.install(max_depth=8)
    ours = threading.Thread.start

    def someone_elses(self: threading.Thread) -> None:
        ours(self)

    threading.Thread.start = someone_elses  # type: ignore[method-assign]
    origins.uninstall()
    assert threading.Thread.start is someone_elses


def test_install_twice_wraps_once(origins: ThreadOrigins) -> None:
    origins.install(max_depth=8)
    first = threading.Thread.start
    origins.install(max_depth=16)
    assert threading.Thread.start is first
    assert origins.max_depth == 16


def test_text_and_pprof_render(origins: ThreadOrigins) -> None:
    origins.install(max_depth=64)
    stop = threading.Event()
    thread = _spawn_worker_thread(stop, "tc-render")
    try:
        profile = collect(origins)
        text = render_text(profile, "threadcreate").body.decode()
        assert text.startswith(f"threadcreate profile: total {len(profile.samples)}\n")
        assert "_spawn_worker_thread" in text
        decoded = pprof_schema.decode(render_pprof(profile, "threadcreate").body)
        assert [(decoded.string_table[t.type], decoded.string_table[t.unit])
                for t in decoded.sample_type] == [("threadcreate", "count")]
    finally:
        stop.set()
        thread.join()


def test_uninstall_leaves_a_later_functools_wraps_wrapper_alone(origins: ThreadOrigins) -> None:
    """functools.wraps copies attributes: only identity tells our hook from a wrapper over it
    (Sentry's threading integration wraps Thread.start so)."""
    origins.install(max_depth=8)
    ours = threading.Thread.start

    @functools.wraps(ours)
    def someone_elses(self: threading.Thread) -> None:
        ours(self)

    threading.Thread.start = someone_elses  # type: ignore[method-assign]
    origins.uninstall()
    assert threading.Thread.start is someone_elses


def _start_here(thread: threading.Thread) -> None:
    thread.start()


def _start_again_elsewhere(thread: threading.Thread) -> None:
    thread.start()


def test_a_failed_second_start_keeps_the_real_start_stack(origins: ThreadOrigins) -> None:
    origins.install(max_depth=8)
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, args=(10,), name="tc-twice", daemon=True)
    try:
        _start_here(thread)
        with pytest.raises(RuntimeError):
            _start_again_elsewhere(thread)
        assert _sample_of(origins, "tc-twice").stack[0].function == "_start_here"
    finally:
        stop.set()
        thread.join(5)
