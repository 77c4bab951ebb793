"""Live frames to model frames, cached, for every collector that reads stacks.

Collectors convert tens of thousands of frames per request (stacks) or per second (the CPU
sampler). A frame's function, file and line are fixed by its code object and the instruction
it is at, so the conversion is cached on ``(f_code, f_lasti)``: reading ``f_lasti`` is cheaper
than ``f_lineno``, which must search the line table.
"""

from __future__ import annotations

from types import CodeType, FrameType

from ..loops import code_name
from ..model import Frame, frame

FRAME_CACHE: dict[tuple[CodeType, int], Frame] = {}
_FRAME_CACHE_MAX = 100_000


def to_frame(f: FrameType) -> Frame:
    """The interned model frame for a live frame."""
    key = (f.f_code, f.f_lasti)
    found = FRAME_CACHE.get(key)
    if found is None:
        if len(FRAME_CACHE) >= _FRAME_CACHE_MAX:  # bound it in a long-lived process
            FRAME_CACHE.clear()
        found = FRAME_CACHE[key] = frame(code_name(f), f.f_code.co_filename, f.f_lineno or 0)
    return found


def frame_stack(top: FrameType | None, max_depth: int) -> tuple[Frame, ...]:
    """The stack from ``top`` outwards, innermost first, at most ``max_depth`` frames."""
    cached = FRAME_CACHE.get
    frames: list[Frame] = []
    f = top
    while f is not None and len(frames) < max_depth:
        frames.append(cached((f.f_code, f.f_lasti)) or to_frame(f))
        f = f.f_back
    return tuple(frames)
