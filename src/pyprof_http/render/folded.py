"""Brendan Gregg's collapsed-stack format: one ``root;...;leaf VALUE`` line per distinct stack.

Read by ``flamegraph.pl``, speedscope, Pyroscope, inferno and most flame-graph tools. Stacks are
written root first (our model keeps them innermost first), labels are ignored, equal stacks are
summed, an empty stack is written ``[unknown]`` (as perf does) and lines are sorted so the output
is stable.

Only positive sums are written. A profile is never negative, but a delta (``seconds=N``: the
second snapshot minus the first) is, wherever something shrank, and these tools cannot draw a
negative count (``flamegraph.pl`` silently drops the line, others reject the file). So a folded
delta means **growth only**: the stacks that gained over the window, each by how much; what
shrank is left out (``format=pprof`` and ``debug=1`` show both signs).
"""

from __future__ import annotations

from collections import defaultdict

from pyprof_http.model import Frame, Profile
from pyprof_http.render import Rendered
from pyprof_http.sanitize import printable


def frame_text(frame: Frame) -> str:
    """``function (filename:line)`` with what would break the format replaced.

    ``;`` separates frames, so it becomes ``:``; line breaks and every other control character
    are escaped by the package's one sanitiser. The value is the last space-separated field, so
    spaces inside names are harmless.
    """
    return printable(f"{frame.function} ({frame.filename}:{frame.line})").replace(";", ":")


def render_folded(profile: Profile, sample_type: str | None = None) -> Rendered:
    """Collapsed stacks of ``sample_type`` (default: the profile's default value), positive sums
    only (see the module docstring: a delta is shown as its growth)."""
    index = profile.value_index(sample_type)
    totals: defaultdict[str, int] = defaultdict(int)
    for sample in profile.samples:
        value = sample.values[index]
        if not value:
            continue
        stack = ";".join(frame_text(f) for f in reversed(sample.stack)) or "[unknown]"
        totals[stack] += value
    lines = [f"{stack} {value}\n" for stack, value in sorted(totals.items()) if value > 0]
    body = "".join(lines).encode("utf-8", "backslashreplace")  # lone surrogates from paths
    return Rendered(body, "text/plain; charset=utf-8")
