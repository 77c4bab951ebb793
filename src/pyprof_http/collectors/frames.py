"""Live frames to model frames, cached, for every collector that reads stacks.

Collectors convert tens of thousands of frames per request (stacks) or per second (the CPU
sampler). A frame's function, file and line are fixed by its code object and the instruction
it is at, so the conversion is cached on the code and ``f_lasti`` (cheaper to read than
``f_lineno``, which must search the line table).

The key is the code object's *id*, not the code object: hashing a code object is not cached
and recurses into its constants (2.6 µs for a FastAPI handler's code, measured, against 0.25 µs
for an id). Each entry keeps its code object alive, so an id cannot be reused while cached, and
a hit is confirmed by identity.
"""

from __future__ import annotations

from types import CodeType, FrameType

from ..loops import code_name
from ..model import Frame, frame

FRAME_CACHE: dict[tuple[int, int], tuple[CodeType, Frame]] = {}
_FRAME_CACHE_MAX = 100_000


def to_frame(f: FrameType) -> Frame:
    """The interned model frame for a live frame."""
    code = f.f_code
    key = (id(code), f.f_lasti)
    found = FRAME_CACHE.get(key)
    if found is not None and found[0] is code:
        return found[1]
    if len(FRAME_CACHE) >= _FRAME_CACHE_MAX:  # bound it in a long-lived process
        FRAME_CACHE.clear()
    result = frame(code_name(f), code.co_filename, f.f_lineno or 0)
    FRAME_CACHE[key] = (code, result)
    return result


def frame_stack(top: FrameType | None, max_depth: int) -> tuple[Frame, ...]:
    """The stack from ``top`` outwards, innermost first, at most ``max_depth`` frames."""
    frames: list[Frame] = []
    f = top
    while f is not None and len(frames) < max_depth:
        frames.append(to_frame(f))
        f = f.f_back
    return tuple(frames)
