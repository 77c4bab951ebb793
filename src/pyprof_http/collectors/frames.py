"""Live frames to model frames, cached, for every collector that reads stacks.

Collectors convert tens of thousands of frames per request (stacks) or per second (the CPU
sampler). A frame's function, file and line are fixed by its code object and the instruction
it is at, so the conversion is cached on the code and ``f_lasti`` (cheaper to read than
``f_lineno``, which must search the line table). The pair can be read in one place (on the
event loop, while the frame stands still) and converted later on another thread:
:func:`frame_at` computes the line from the pair alone.

Tables about code objects go through :class:`~pyprof_http.bounded.CodeTable`, keyed by the
code's id and safe by identity.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from functools import partial
from itertools import accumulate, chain, islice, repeat, starmap, takewhile, tee
from operator import is_not
from threading import get_ident
from types import CodeType, FrameType
from typing import Any

from ..bounded import CodeTable
from ..loops import code_name_of
from ..model import Frame, frame

FRAMES: CodeTable[Frame] = CodeTable(max_entries=100_000)
"""(code, f_lasti) -> the interned model frame."""


def to_frame(f: FrameType) -> Frame:
    """The interned model frame for a live frame."""
    code = f.f_code
    lasti = f.f_lasti
    found = FRAMES.get(code, lasti)
    if found is not None:
        return found
    return FRAMES.put(code, frame(code_name_of(code), code.co_filename, f.f_lineno or 0), lasti)


def frame_at(code: CodeType, lasti: int) -> Frame:
    """The model frame of ``code`` stopped at instruction offset ``lasti`` (a frame's
    ``f_lasti``), with no frame needed: the line comes from the code's line table, as
    ``f_lineno`` would give it."""
    found = FRAMES.get(code, lasti)
    if found is not None:
        return found
    return FRAMES.put(code, frame(code_name_of(code), code.co_filename, line_at(code, lasti)),
                      lasti)


def line_at(code: CodeType, lasti: int) -> int:
    """``f_lineno`` for a frame of ``code`` at ``lasti``: CPython's ``PyCode_Addr2Line``
    (a frame that has not started is at its first line; no line is 0)."""
    if lasti < 0:
        return code.co_firstlineno
    for start, end, line in code.co_lines():
        if start <= lasti < end:
            return line or 0
    return 0


def frame_stack(top: FrameType | None, max_depth: int) -> tuple[Frame, ...]:
    """The stack from ``top`` outwards, innermost first, at most ``max_depth`` frames."""
    return tuple([to_frame(f) for f in back_chain(top, max_depth)])


def back_chain(top: FrameType | None, limit: int) -> tuple[FrameType, ...]:
    """``top`` and its callers, innermost first, at most ``limit``, walked in ONE C-level call
    (no bytecode between two ``f_back``, so the GIL cannot pass mid-walk; see
    :func:`thread_frames` for the CPython 3.11 crash this avoids on other threads' frames)."""
    if top is None or limit <= 0:
        return ()
    return tuple(islice(takewhile(_NOT_NONE, accumulate(chain((top,), _F_BACK), _GETATTR)),
                        limit))


_F_BACK = repeat("f_back")
_NOT_NONE = partial(is_not, None)
_GETATTR: Callable[[Any, Any], Any] = getattr


_HEAD_LOCK_DEADLOCK = sys.version_info < (3, 12)


def gc_off_for_frames() -> bool:
    """Switch the cyclic collector off around a ``sys._current_frames()`` call on CPython
    3.10/3.11; True if it was on (the caller turns it back on). Why: there the call holds the
    runtime's HEAD_LOCK while it makes frame objects, and a collection set off by one of those
    allocations can free a ``threading.local``, whose cleanup takes HEAD_LOCK again: the whole
    process hangs (CPython #106883, fixed in 3.12 only). With the collector off for the call, no
    collection can start inside it. An application that disabled the collector keeps it off;
    no lock is taken, so this is safe in a signal handler."""
    if _HEAD_LOCK_DEADLOCK and gc.isenabled():
        gc.disable()
        return True
    return False


def current_frames() -> dict[int, FrameType]:
    """``sys._current_frames()``, without the CPython 3.10/3.11 deadlock (see
    :func:`gc_off_for_frames`)."""
    if not gc_off_for_frames():
        return sys._current_frames()
    try:
        return sys._current_frames()
    finally:
        gc.enable()


def thread_frames(max_depth: int) -> list[tuple[int, tuple[FrameType, ...]]]:
    """Every thread's ident and frames, innermost first (at most ``max_depth``), read in ONE
    C-level call: ``sys._current_frames()`` and every ``f_back`` after it run inside the final
    ``list()`` with no bytecode between them, so the GIL cannot pass to another thread mid-walk.

    Why: on CPython 3.11 a frame whose callers are all incomplete (a finalizer run by a GC
    that a new thread's first frame triggered before its RESUME) keeps a dangling
    ``previous`` pointer once it returns (``take_ownership`` clears it only when it finds a
    complete caller). A Python ``while f: f = f.f_back`` loop can lose the GIL between two
    steps, that thread can return and exit (its frame stack is freed), and the next
    ``f.f_back`` reads freed memory: SIGSEGV (same class as CPython #99110, sentry-python
    #2386). Walking in one C call leaves no such gap. The frames returned are still safe to
    read (``f_code``, ``f_lasti``, ``f_lineno``); only ``f_back`` on a stale one is not."""
    d1, d2 = tee(starmap(sys._current_frames, ((),)))  # lazy: nothing runs until list()
    idents = chain.from_iterable(map(dict.keys, d1))
    tops = chain.from_iterable(map(dict.values, d2))
    chains = map(tuple, map(islice, map(takewhile, repeat(_NOT_NONE), map(
        accumulate, map(chain, zip(tops), repeat(_F_BACK)), repeat(getattr))),
        repeat(max_depth)))
    collector_was_on = gc_off_for_frames()  # 3.10/3.11: CPython #106883, see there
    try:
        out = list(zip(idents, chains, strict=True))
    finally:
        if collector_was_on:
            gc.enable()
    me = get_ident()  # the caller's thread starts at the caller, as with sys._current_frames()
    return [(ident, frames[1:] if ident == me else frames) for ident, frames in out]
