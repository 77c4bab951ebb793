"""Brendan Gregg's collapsed-stack format: one ``root;...;leaf VALUE`` line per distinct stack.

Read by ``flamegraph.pl``, speedscope, Pyroscope, inferno and most flame-graph tools. Stacks are
written root first (our model keeps them innermost first), labels are ignored, equal stacks are
summed, stacks whose sum is zero are dropped, an empty stack is written ``[unknown]`` (as perf
does) and lines are sorted so the output is stable.
"""

from __future__ import annotations

from collections import defaultdict

from pyprof_http.model import Frame, Profile
from pyprof_http.render import Rendered


def frame_text(frame: Frame) -> str:
    """``function (filename:line)`` with what would break the format replaced.

    ``;`` separates frames and a newline ends a line, so ``;`` becomes ``:`` and every line
    break (``\\n``, ``\\r``, U+2028, ... whatever ``str.splitlines`` splits on) is dropped.
    The value is the last space-separated field, so spaces inside names are harmless.
    """
    text = f"{frame.function} ({frame.filename}:{frame.line})"
    return "".join(text.replace(";", ":").splitlines())


def render_folded(profile: Profile, sample_type: str | None = None) -> Rendered:
    """Collapsed stacks of ``sample_type`` (default: the profile's default value)."""
    index = profile.value_index(sample_type)
    totals: defaultdict[str, int] = defaultdict(int)
    for sample in profile.samples:
        value = sample.values[index]
        if value == 0:
            continue
        stack = ";".join(frame_text(f) for f in reversed(sample.stack)) or "[unknown]"
        totals[stack] += value
    lines = [f"{stack} {value}\n" for stack, value in sorted(totals.items()) if value != 0]
    body = "".join(lines).encode("utf-8", "backslashreplace")  # lone surrogates from paths
    return Rendered(body, "text/plain; charset=utf-8")
