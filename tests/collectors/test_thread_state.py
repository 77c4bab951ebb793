"""Naming a thread's state from its top frames: known stdlib functions, then the source line."""

from __future__ import annotations

import concurrent.futures.thread
import queue
import selectors
import socket
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from pyprof_http.collectors.thread_state import thread_state


def _fake_frame(code, lineno: int = 1, back=None) -> SimpleNamespace:
    """What thread_state reads of a frame: f_code, f_lineno, f_back."""
    return SimpleNamespace(f_code=code, f_lineno=lineno, f_back=back)


def _chain(*codes) -> SimpleNamespace:
    """Frames innermost first from code objects."""
    back = None
    for code in reversed(codes):
        back = _fake_frame(code, 1, back)
    return back


@pytest.fixture
def source(tmp_path: Path):
    """Write one line of source to a file; return a frame whose current line is that line."""
    counter = iter(range(10_000))

    def make(line: str) -> SimpleNamespace:
        path = tmp_path / f"src_{next(counter)}.py"
        path.write_text("# first line\n" + line + "\n")
        code = compile("pass", str(path), "exec")
        return _fake_frame(code, 2)

    return make


# --- known stdlib functions -----------------------------------------------------------------

KNOWN = [
    (threading.Condition.wait, "waiting on condition"),
    (threading.Condition.wait_for, "waiting on condition"),
    (threading.Event.wait, "waiting on event"),
    (threading.Semaphore.acquire, "waiting on semaphore"),
    (threading.Barrier.wait, "waiting on barrier"),
    (threading.Thread.join, "waiting on thread join"),
    (queue.Queue.get, "waiting on queue"),
    (queue.Queue.put, "waiting on queue"),
    (concurrent.futures.thread._worker, "idle in thread pool"),
    (socket.socket.accept, "IO wait"),
    (socket.SocketIO.readinto, "IO wait"),
    (selectors.DefaultSelector.select, "IO wait"),
]


@pytest.mark.parametrize(("function", "state"), KNOWN,
                         ids=[f.__qualname__ for f, _ in KNOWN])
def test_known_function_as_top_frame(function, state: str) -> None:
    assert thread_state(_chain(function.__code__)) == state


def test_outermost_known_function_in_the_top_frames_wins() -> None:
    # Queue.get is built on Condition.wait: the thread waits on a queue
    frames = _chain(threading.Condition.wait.__code__, queue.Queue.get.__code__,
                    test_outermost_known_function_in_the_top_frames_wins.__code__)
    assert thread_state(frames) == "waiting on queue"
    # a pool worker idling in its queue is idle, not waiting on a queue
    frames = _chain(threading.Condition.wait.__code__, queue.Queue.get.__code__,
                    concurrent.futures.thread._worker.__code__)
    assert thread_state(frames) == "idle in thread pool"


def test_known_function_deeper_than_three_frames_is_ignored(source) -> None:
    top = source("x = 1")
    user = top.f_code
    deep = _fake_frame(user, 2, _fake_frame(user, 2, _fake_frame(
        user, 2, _fake_frame(threading.Event.wait.__code__))))
    assert thread_state(deep) == "runnable"
    third = _fake_frame(user, 2, _fake_frame(user, 2, _fake_frame(threading.Event.wait.__code__)))
    assert thread_state(third) == "waiting on event"


def test_known_function_beats_the_source_line(source) -> None:
    frame = source("time.sleep(1)")
    frame.f_back = _fake_frame(threading.Event.wait.__code__)
    assert thread_state(frame) == "waiting on event"


# --- source line heuristics -----------------------------------------------------------------

LINES = [
    ("time.sleep(5)", "sleeping"),
    ("sleep (0.1)", "sleeping"),
    ("await asyncio.sleep(1)", "sleeping"),
    ("lock.acquire()", "waiting on lock"),
    ("ok = self._mutex.acquire(timeout=1)", "waiting on lock"),
    ("with lock:", "waiting on lock"),
    ("    with state_lock:", "waiting on lock"),
    ("with LOCK:", "waiting on lock"),
    ("data = sock.recv(1024)", "IO wait"),
    ("n = conn.recv_into(buf)", "IO wait"),
    ("conn, addr = server.accept()", "IO wait"),
    ("body = f.read()", "IO wait"),
    ("line = stream.readline()", "IO wait"),
    ("events = sel.select(timeout)", "IO wait"),
    ("p.poll(100)", "IO wait"),
    ("proc.wait()", "IO wait"),
    ("r, w, x = select(rl, [], [])", "IO wait"),
    ("poll(fds)", "IO wait"),
    ("x = compute(y) + 1", "runnable"),
    ("while not done.is_set():", "runnable"),
    ("sleeper = make()", "runnable"),  # no call of sleep
    ("unlock(x)", "runnable"),
    ("", "runnable"),
]


@pytest.mark.parametrize(("line", "state"), LINES, ids=[line or "<empty>" for line, _ in LINES])
def test_source_line_heuristics(source, line: str, state: str) -> None:
    assert thread_state(source(line)) == state


@pytest.mark.parametrize("line", ["with self._lock:", "    with self.state_lock:",
                                  "with app.db.lock:"])
def test_with_an_attribute_lock(source, line: str) -> None:
    assert thread_state(source(line)) == "waiting on lock"


def test_sleeping_is_checked_before_lock_and_io(source) -> None:
    assert thread_state(source("time.sleep(lock.acquire())")) == "sleeping"
    assert thread_state(source("lock.acquire(sock.recv(1))")) == "waiting on lock"


def test_only_the_top_frame_line_counts(source) -> None:
    top = source("x = 1")
    top.f_back = source("time.sleep(1)")
    assert thread_state(top) == "runnable"


def test_missing_source_is_runnable() -> None:
    code = compile("pass", "/nonexistent/pyprof_http_test_missing.py", "exec")
    assert thread_state(_fake_frame(code, 3)) == "runnable"


# --- real threads ---------------------------------------------------------------------------


def _state_of(thread: threading.Thread, expected: str, timeout: float = 30.0) -> str:
    """The thread's state once it is blocked (its top frame is no longer changing); returns as
    soon as it is ``expected`` (the timeout bounds a hang: 3 s was within a loaded box's reach)."""
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        frame = sys._current_frames().get(thread.ident)
        if frame is not None:
            state = thread_state(frame)
            if state == expected:
                return state
        time.sleep(0.002)
    return state


def test_real_thread_sleeping() -> None:
    stop = threading.Event()

    def sleeper() -> None:
        while not stop.is_set():
            time.sleep(0.01)

    thread = threading.Thread(target=sleeper, daemon=True)
    thread.start()
    try:
        assert _state_of(thread, "sleeping") == "sleeping"
    finally:
        stop.set()
        thread.join(5)


def test_real_thread_on_a_lock() -> None:
    lock = threading.Lock()
    lock.acquire()

    def locker() -> None:
        lock.acquire()
        lock.release()

    thread = threading.Thread(target=locker, daemon=True)
    thread.start()
    try:
        assert _state_of(thread, "waiting on lock") == "waiting on lock"
    finally:
        lock.release()
        thread.join(5)


def test_real_thread_on_a_socket() -> None:
    a, b = socket.socketpair()

    def reader() -> None:
        a.recv(1)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        assert _state_of(thread, "IO wait") == "IO wait"
    finally:
        b.send(b"x")
        thread.join(5)
        a.close()
        b.close()


def test_real_thread_waiting_on_event_and_join() -> None:
    event = threading.Event()
    waiter = threading.Thread(target=event.wait, daemon=True)
    waiter.start()
    joiner = threading.Thread(target=waiter.join, daemon=True)
    joiner.start()
    try:
        assert _state_of(waiter, "waiting on event") == "waiting on event"
        assert _state_of(joiner, "waiting on thread join") == "waiting on thread join"
    finally:
        event.set()
        waiter.join(5)
        joiner.join(5)


def test_real_idle_pool_worker() -> None:
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pool") as pool:
        pool.submit(lambda: None).result()
        worker = next(t for t in threading.enumerate() if t.name.startswith("pool"))
        assert _state_of(worker, "idle in thread pool") == "idle in thread pool"
