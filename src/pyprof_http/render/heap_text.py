"""Go's ``heap?debug=1`` text for a tracemalloc capture, so "what holds memory?" needs only curl.

Go writes ``heap profile: INUSE_OBJS: INUSE_BYTES [ALLOC_OBJS: ALLOC_BYTES] @ heap/RATE``, then
one record per stack sorted by in-use bytes, then ``# runtime.MemStats`` as ``# Key = value``.
tracemalloc only knows blocks that are still live, so the allocation pair is written ``[0: 0]``
(a comment says why: the shape stays the one Go readers and parsers know) and the rate is 1,
because every block is traced rather than sampled. Frames are innermost first, with the same
stable frame ids as the other text views; the footer gives tracemalloc's own figures, since
tracing itself costs memory. Counts stay exact integers where Go has them; a ``#`` line after the
header and after each record, and the footer, also say the sizes as pprof does (``3.40MB``).
Only the heaviest records are written: a heap of a million blocks
may have a hundred thousand distinct tracebacks, and nobody reads past the first screens.
"""

from __future__ import annotations

import heapq
from typing import Final

from ..captures.heap import HeapCapture, SampledHeapCapture
from ..model import Frame
from ..sanitize import printable
from . import Rendered, utf8
from .text import TEXT_PLAIN, frame_id, frame_lines
from .top import percentage, scaled

MAX_RECORDS: Final = 1000


def render_heap_text(capture: HeapCapture, name: str) -> Rendered:
    """The capture as Go's heap debug=1 text, the top :data:`MAX_RECORDS` records by bytes."""
    profile = capture.profile
    objects_at = profile.value_index("inuse_objects")
    bytes_at = profile.value_index("inuse_space")
    groups: dict[tuple[Frame, ...], list[int]] = {}
    for sample in profile.samples:
        group = groups.setdefault(sample.stack, [0, 0])
        group[0] += sample.values[objects_at]
        group[1] += sample.values[bytes_at]
    total_objects = sum(g[0] for g in groups.values())
    total_bytes = sum(g[1] for g in groups.values())
    top = heapq.nsmallest(
        MAX_RECORDS, groups.items(),
        key=lambda item: (-item[1][1], -item[1][0], [tuple(f) for f in item[0]]),
    )
    out = [
        f"{name} profile: {total_objects}: {total_bytes} [0: 0] @ heap/1",
        f"# in use: {_bytes(total_bytes)} in {total_objects} objects",
        "# tracemalloc sees only live blocks: counts are in-use objects and bytes; allocation "
        "totals ([0: 0]) are not known. Every block is traced (rate 1).",
        *(f"# {printable(comment)}" for comment in profile.comments),
    ]
    for stack, (objects, size) in top:
        out.append(f"{objects}: {size} [0: 0] @ {' '.join(frame_id(f) for f in stack)}")
        out.append(f"# {_bytes(size)} in {objects} objects "
                   f"({percentage(size, total_bytes).strip()} of bytes)")
        out.extend(frame_lines(stack))
        out.append("")
    left_out = len(groups) - len(top)
    if left_out:
        shown_objects = sum(g[0] for _, g in top)
        shown_bytes = sum(g[1] for _, g in top)
        out.append(
            f"# {left_out} more records not shown ({total_objects - shown_objects} objects, "
            f"{_bytes(total_bytes - shown_bytes)}): only the top {MAX_RECORDS} by bytes are "
            "written; format=pprof has them all"
        )
        out.append("")
    state = capture.state
    out += [
        "# tracemalloc",
        f"# Mode = {capture.mode}",
        *((f"# WindowSeconds = {profile.duration_ns / 1e9:.2f}",)
          if capture.mode == "window" else ()),
        f"# TracebackLimit = {state.frames_limit}",
        f"# TracedMemory = {state.traced_current} ({_bytes(state.traced_current)})",
        f"# TracedPeak = {state.traced_peak} ({_bytes(state.traced_peak)})",
        f"# TracemallocMemory = {state.tracemalloc_memory} ({_bytes(state.tracemalloc_memory)})",
    ]
    return Rendered(utf8("\n".join(out) + "\n"), TEXT_PLAIN)


def _bytes(size: int) -> str:
    return scaled(size, "bytes")


def render_sampled_heap_text(capture: SampledHeapCapture, name: str) -> Rendered:
    """A sampler capture as Go's heap debug=1 text: ``inuse: bytes [allocs: bytes]`` per stack,
    sorted by in-use bytes (``allocs``: by allocated bytes, its default sample type). The values
    are already scaled estimates, so the rate is written as 1 (a parser must not scale them
    again); a comment gives the real sampling rate."""
    profile = capture.profile
    at = [profile.value_index(t) for t in
          ("inuse_objects", "inuse_space", "alloc_objects", "alloc_space")]
    groups: dict[tuple[Frame, ...], list[int]] = {}
    for sample in profile.samples:
        group = groups.setdefault(sample.stack, [0, 0, 0, 0])
        for i, index in enumerate(at):
            group[i] += sample.values[index]
    totals = [sum(g[i] for g in groups.values()) for i in range(4)]
    by = 3 if profile.default_sample_type == "alloc_space" else 1
    top = heapq.nsmallest(MAX_RECORDS, groups.items(), key=lambda item: (
        -item[1][by], -item[1][by - 1], [tuple(f) for f in item[0]]))
    state = capture.state
    out = [
        f"{name} profile: {totals[0]}: {totals[1]} [{totals[2]}: {totals[3]}] @ heap/1",
        f"# in use: {_bytes(totals[1])} in {totals[0]} objects; allocated: "
        f"{_bytes(totals[3])} in {totals[2]} objects (estimates)",
        f"# sampled about one allocation per {state.rate} bytes; every value is already "
        "scaled to an estimate (Go's scaleHeapSample), so the rate above is 1",
        *(f"# {printable(comment)}" for comment in profile.comments),
    ]
    for stack, (inuse_objects, inuse, alloc_objects, alloc) in top:
        out.append(f"{inuse_objects}: {inuse} [{alloc_objects}: {alloc}] @ "
                   f"{' '.join(frame_id(f) for f in stack)}")
        out.append(f"# {_bytes(inuse)} in use ({percentage(inuse, totals[1]).strip()}), "
                   f"{_bytes(alloc)} allocated ({percentage(alloc, totals[3]).strip()})")
        out.extend(frame_lines(stack))
        out.append("")
    left_out = len(groups) - len(top)
    if left_out:
        out += [f"# {left_out} more records not shown: only the top {MAX_RECORDS} are written; "
                "format=pprof has them all", ""]
    out += [
        "# heap sampler",
        f"# Mode = {'window' if capture.window_seconds else 'now'}",
        *((f"# WindowSeconds = {capture.window_seconds:g}",) if capture.window_seconds else ()),
        f"# SampleRate = {state.rate}",
        f"# Stacks = {state.stacks}",
        f"# LiveSamples = {state.live_samples}",
        f"# SamplesTotal = {state.samples_total}",
        f"# OverflowedSamples = {state.overflowed}",
        f"# SamplerMemory = {state.memory_bytes} ({_bytes(state.memory_bytes)})",
    ]
    return Rendered(utf8("\n".join(out) + "\n"), TEXT_PLAIN)


def render_any_heap_text(capture: HeapCapture | SampledHeapCapture, name: str) -> Rendered:
    """The text of whichever source answered (tracemalloc or the sampler)."""
    if isinstance(capture, SampledHeapCapture):
        return render_sampled_heap_text(capture, name)
    return render_heap_text(capture, name)
