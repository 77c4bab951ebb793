"""The model as plain JSON, for scripts and notebooks (``format=json``).

Shape (stable; every key always present)::

    {
      "name": "profile",
      "sample_types": [{"type": "samples", "unit": "count"},
                       {"type": "cpu", "unit": "nanoseconds"}],
      "default_sample_type": "cpu",          # the type shown by default (pprof's rule resolved)
      "period_type": {"type": "cpu", "unit": "nanoseconds"} | null,
      "period": 10000000,
      "time_ns": 1700000000000000000,        # start, Unix epoch nanoseconds
      "duration_ns": 30000000000,
      "comments": ["driver=signal rate=99.8/s"],
      "samples": [
        {"stack": [{"function": "leaf", "filename": "/app/x.py", "line": 12},  # innermost first
                   ...],
         "values": [3, 30000000],            # aligned with sample_types
         "labels": {"thread": "MainThread", "route": "/items"}}
      ]
    }
"""

from __future__ import annotations

import json
from typing import Any

from pyprof_http.model import Profile, ValueType
from pyprof_http.render import Rendered


def _value_type(value_type: ValueType) -> dict[str, str]:
    return {"type": value_type.type, "unit": value_type.unit}


def profile_document(profile: Profile, name: str) -> dict[str, Any]:
    """The profile as a JSON-ready dict (see the module docstring for the shape)."""
    default = None
    if profile.sample_types:
        default = profile.sample_types[profile.value_index()].type
    return {
        "name": name,
        "sample_types": [_value_type(t) for t in profile.sample_types],
        "default_sample_type": default,
        "period_type": _value_type(profile.period_type) if profile.period_type else None,
        "period": profile.period,
        "time_ns": profile.time_ns,
        "duration_ns": profile.duration_ns,
        "comments": list(profile.comments),
        "samples": [
            {
                "stack": [
                    {"function": f.function, "filename": f.filename, "line": f.line}
                    for f in sample.stack
                ],
                "values": list(sample.values),
                "labels": dict(sample.labels),
            }
            for sample in profile.samples
        ],
    }


def render_json(profile: Profile, name: str) -> Rendered:
    """``application/json`` of :func:`profile_document`."""
    body = json.dumps(profile_document(profile, name), separators=(",", ":"))
    return Rendered(body.encode("ascii"), "application/json")
