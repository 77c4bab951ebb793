"""Name what a thread is doing from its top frames, the way Go's dump says ``[chan receive]``.

Called off the event loop: recognising a state by its source line reads the file
(``linecache``), which must never hold the loop.

Python only shows Python frames, so a thread blocked in C (``time.sleep``, ``lock.acquire``,
``sock.recv``) is recognised by the stdlib function it is in, or else by the call on its
current source line. Anything unrecognised is ``runnable``: it is running Python code or waiting
for the GIL to do so.
"""

from __future__ import annotations

import linecache
import re
from collections.abc import Sequence
from types import CodeType, FrameType

from ..bounded import CodeTable


def _codes() -> CodeTable[str]:
    """Code objects of the stdlib functions threads block in; identity is exact on every version."""
    import concurrent.futures.thread
    import queue
    import selectors
    import socket
    import threading

    known: dict[object, str] = {
        threading.Condition.wait: "waiting on condition",
        threading.Condition.wait_for: "waiting on condition",
        threading.Event.wait: "waiting on event",
        threading.Semaphore.acquire: "waiting on semaphore",
        threading.Barrier.wait: "waiting on barrier",
        threading.Thread.join: "waiting on thread join",
        queue.Queue.get: "waiting on queue",
        queue.Queue.put: "waiting on queue",
        concurrent.futures.thread._worker: "idle in thread pool",
        socket.socket.accept: "IO wait",
        socket.SocketIO.readinto: "IO wait",
    }
    for name in ("SelectSelector", "PollSelector", "EpollSelector", "KqueueSelector"):
        selector = getattr(selectors, name, None)
        if selector is not None:
            known[selector.select] = "IO wait"
    table: CodeTable[str] = CodeTable()  # fixed size: built once
    for fn, state in known.items():
        table.put(fn.__code__, state)  # type: ignore[attr-defined]
    return table


# Checked on the top few frames, outermost match wins, so Queue.get beats the Condition.wait
# it is built on.
_KNOWN_CODES = _codes()
TOP_FRAMES_CHECKED = 3

_CALL_ON_LINE: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bsleep\s*\("), "sleeping"),
    (re.compile(r"\.(acquire)\s*\(|^\s*with\s+[\w.]*lock\b", re.IGNORECASE), "waiting on lock"),
    (re.compile(r"\.(recv\w*|accept|read\w*|select|poll|epoll|wait)\s*\("), "IO wait"),
    (re.compile(r"\b(select|poll)\s*\("), "IO wait"),
)


def thread_state(top: FrameType) -> str:
    """Best guess of a (non-current) thread's state from its innermost frames."""
    codes: list[CodeType] = []
    f: FrameType | None = top
    while f is not None and len(codes) < TOP_FRAMES_CHECKED:
        codes.append(f.f_code)
        f = f.f_back
    return state_of(codes, top.f_code.co_filename, top.f_lineno or 0)


def state_of(codes: Sequence[CodeType], filename: str, line: int) -> str:
    """The state from the codes of the innermost frames (innermost first, the first
    :data:`TOP_FRAMES_CHECKED` are looked at) and the innermost frame's file and line."""
    state: str | None = None
    for code in codes[:TOP_FRAMES_CHECKED]:
        state = _KNOWN_CODES.get(code) or state
    if state is not None:
        return state
    text = linecache.getline(filename, line)
    for pattern, name in _CALL_ON_LINE:
        if pattern.search(text):
            return name
    return "runnable"
