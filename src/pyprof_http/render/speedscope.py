"""speedscope's file format (https://www.speedscope.app/file-format-schema.json).

One ``"sampled"`` profile per sample type, all sharing one frame table, so a CPU profile opens
on its CPU time and the sample count is one click away. Equal stacks are merged (labels are
ignored) and samples whose value is zero or negative are left out: speedscope cannot draw them.
"""

from __future__ import annotations

import json
from typing import Any

from pyprof_http.model import Frame, Profile
from pyprof_http.render import Rendered

SCHEMA = "https://www.speedscope.app/file-format-schema.json"
_UNITS = frozenset({"nanoseconds", "microseconds", "milliseconds", "seconds", "bytes"})


def speedscope_unit(unit: str) -> str:
    """Our unit as speedscope's ``ValueUnit`` (``"none"`` for counts and anything unknown)."""
    return unit if unit in _UNITS else "none"


def speedscope_document(profile: Profile, name: str) -> dict[str, Any]:
    """The speedscope file as a JSON-ready dict."""
    frame_ids: dict[Frame, int] = {}
    stacks: dict[tuple[int, ...], list[int]] = {}
    for sample in profile.samples:
        ids = tuple(frame_ids.setdefault(f, len(frame_ids)) for f in reversed(sample.stack))
        seen = stacks.get(ids)
        if seen is None:
            stacks[ids] = list(sample.values)
        else:
            for i, value in enumerate(sample.values):
                seen[i] += value
    several = len(profile.sample_types) > 1
    profiles = []
    for i, value_type in enumerate(profile.sample_types):
        kept = [(list(ids), values[i]) for ids, values in stacks.items() if values[i] > 0]
        total = sum(weight for _, weight in kept)
        profiles.append(
            {
                "type": "sampled",
                "name": f"{name} ({value_type.type})" if several else name,
                "unit": speedscope_unit(value_type.unit),
                "startValue": 0,
                "endValue": total,
                "samples": [ids for ids, _ in kept],
                "weights": [weight for _, weight in kept],
            }
        )
    frames = [{"name": f.function, "file": f.filename, "line": f.line} for f in frame_ids]
    return {
        "$schema": SCHEMA,
        "shared": {"frames": frames},
        "profiles": profiles,
        "name": name,
        "activeProfileIndex": profile.value_index() if profiles else 0,
        "exporter": "pyprof_http",
    }


def render_speedscope(profile: Profile, name: str) -> Rendered:
    """``<name>.speedscope.json``: open it at https://www.speedscope.app or with ``speedscope``."""
    body = json.dumps(speedscope_document(profile, name), separators=(",", ":"))
    return Rendered(body.encode("ascii"), "application/json", filename=f"{name}.speedscope.json")
