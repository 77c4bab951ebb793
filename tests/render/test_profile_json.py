import json
from typing import Any

from pyprof_http.model import Profile, Sample, ValueType, frame
from pyprof_http.render.profile_json import render_json

MAIN = frame("main", "/app/main.py", 3)
HANDLE = frame("handle", "/app/server.py", 41)


def _profile() -> Profile:
    return Profile(
        sample_types=(ValueType("samples", "count"), ValueType("cpu", "nanoseconds")),
        samples=(
            Sample((HANDLE, MAIN), (2, 20), {"thread": "MainThread", "pid": 42}),
            Sample((MAIN,), (1, 10)),
            Sample((), (0, 5)),
        ),
        period_type=ValueType("cpu", "nanoseconds"),
        period=10_000_000,
        time_ns=1_700_000_000_000_000_000,
        duration_ns=30_000_000_000,
        comments=("driver=signal", "rate=99.9/s"),
        default_sample_type="cpu",
    )


def _from_document(doc: dict[str, Any]) -> Profile:
    """The inverse mapping, as a user script would write it."""
    return Profile(
        sample_types=tuple(ValueType(t["type"], t["unit"]) for t in doc["sample_types"]),
        samples=tuple(
            Sample(
                tuple(frame(f["function"], f["filename"], f["line"]) for f in s["stack"]),
                tuple(s["values"]),
                s["labels"],
            )
            for s in doc["samples"]
        ),
        period_type=ValueType(**doc["period_type"]) if doc["period_type"] else None,
        period=doc["period"],
        time_ns=doc["time_ns"],
        duration_ns=doc["duration_ns"],
        comments=tuple(doc["comments"]),
        default_sample_type=doc["default_sample_type"],
    )


def test_media_type() -> None:
    rendered = render_json(_profile(), "profile")
    assert rendered.media_type == "application/json"
    assert rendered.content_security_policy is None


def test_document_shape() -> None:
    doc = json.loads(render_json(_profile(), "profile").body)
    assert list(doc) == [
        "name",
        "sample_types",
        "default_sample_type",
        "period_type",
        "period",
        "time_ns",
        "duration_ns",
        "comments",
        "samples",
    ]
    assert doc["name"] == "profile"
    assert doc["sample_types"] == [
        {"type": "samples", "unit": "count"},
        {"type": "cpu", "unit": "nanoseconds"},
    ]
    assert doc["default_sample_type"] == "cpu"
    assert doc["period_type"] == {"type": "cpu", "unit": "nanoseconds"}
    assert doc["samples"][0] == {
        "stack": [  # innermost first, as in the model
            {"function": "handle", "filename": "/app/server.py", "line": 41},
            {"function": "main", "filename": "/app/main.py", "line": 3},
        ],
        "values": [2, 20],
        "labels": {"thread": "MainThread", "pid": 42},
    }
    assert doc["samples"][2] == {"stack": [], "values": [0, 5], "labels": {}}


def test_round_trip() -> None:
    profile = _profile()
    assert _from_document(json.loads(render_json(profile, "p").body)) == profile


def test_default_sample_type_is_resolved_and_period_type_may_be_null() -> None:
    profile = Profile((ValueType("a", "count"), ValueType("b", "bytes")), ())
    doc = json.loads(render_json(profile, "x").body)
    assert doc["default_sample_type"] == "b"  # pprof's rule: the last one
    assert doc["period_type"] is None
    assert doc["samples"] == []
    empty = json.loads(render_json(Profile((), ()), "x").body)
    assert empty["default_sample_type"] is None


def test_hostile_strings_round_trip() -> None:
    evil = frame('</script>\u2028"\\\udcff', "/\n.py", 1)
    samples = (Sample((evil,), (1,), {"k": "<v>"}),)
    profile = Profile((ValueType("n", "count"),), samples, default_sample_type="n")
    body = render_json(profile, "p").body
    body.decode("ascii")
    assert _from_document(json.loads(body)) == profile
