import json
from typing import Any

from pyprof_http.model import Profile, Sample, ValueType, frame
from pyprof_http.render.speedscope import render_speedscope, speedscope_unit

MAIN = frame("main", "/app/main.py", 3)
SERVE = frame("serve", "/app/server.py", 20)
HANDLE = frame("handle", "/app/server.py", 41)
QUERY = frame("query", "/app/db.py", 7)


def _profile() -> Profile:
    return Profile(
        sample_types=(ValueType("samples", "count"), ValueType("cpu", "nanoseconds")),
        samples=(
            Sample((HANDLE, SERVE, MAIN), (2, 20), {"thread": "a"}),
            Sample((QUERY, HANDLE, SERVE, MAIN), (1, 0)),
            Sample((HANDLE, SERVE, MAIN), (3, 30), {"thread": "b"}),
            Sample((SERVE, MAIN), (-1, 5)),
        ),
        default_sample_type="cpu",
    )


def _doc(profile: Profile, name: str = "cpu") -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(render_speedscope(profile, name).body)
    return doc


def test_rendered_metadata() -> None:
    rendered = render_speedscope(_profile(), "cpu")
    assert rendered.media_type == "application/json"
    assert rendered.filename == "cpu.speedscope.json"
    assert rendered.content_security_policy is None


def test_document_structure_indices_and_weights() -> None:
    doc = _doc(_profile())
    assert doc["$schema"] == "https://www.speedscope.app/file-format-schema.json"
    assert doc["exporter"] == "pyprof_http"
    assert doc["name"] == "cpu"
    frames = doc["shared"]["frames"]
    assert frames == [
        {"name": "main", "file": "/app/main.py", "line": 3},
        {"name": "serve", "file": "/app/server.py", "line": 20},
        {"name": "handle", "file": "/app/server.py", "line": 41},
        {"name": "query", "file": "/app/db.py", "line": 7},
    ]
    samples_profile, cpu_profile = doc["profiles"]
    assert doc["activeProfileIndex"] == 1  # the default sample type
    assert samples_profile == {
        "type": "sampled",
        "name": "cpu (samples)",
        "unit": "none",
        "startValue": 0,
        "endValue": 6,
        "samples": [[0, 1, 2], [0, 1, 2, 3]],  # equal stacks merged; -1 skipped
        "weights": [5, 1],
    }
    assert cpu_profile["unit"] == "nanoseconds"
    assert cpu_profile["name"] == "cpu (cpu)"
    assert cpu_profile["samples"] == [[0, 1, 2], [0, 1]]  # zero skipped
    assert cpu_profile["weights"] == [50, 5]
    assert cpu_profile["endValue"] == 55
    for profile in doc["profiles"]:
        assert len(profile["samples"]) == len(profile["weights"])
        assert all(w > 0 for w in profile["weights"])
        for stack in profile["samples"]:
            assert all(0 <= i < len(frames) for i in stack)
            # root first: the first frame is the outermost one
            assert frames[stack[0]]["name"] == "main"


def test_single_sample_type_uses_the_name_alone() -> None:
    profile = Profile((ValueType("inuse_space", "bytes"),), (Sample((MAIN,), (4096,)),))
    doc = _doc(profile, "heap")
    assert [p["name"] for p in doc["profiles"]] == ["heap"]
    assert doc["profiles"][0]["unit"] == "bytes"
    assert doc["activeProfileIndex"] == 0


def test_units() -> None:
    assert speedscope_unit("nanoseconds") == "nanoseconds"
    assert speedscope_unit("bytes") == "bytes"
    assert speedscope_unit("count") == "none"
    assert speedscope_unit("furlongs") == "none"


def test_empty_profile_still_has_one_profile_per_type() -> None:
    profile = Profile((ValueType("goroutine", "count"),), ())
    doc = _doc(profile, "goroutine")
    assert doc["shared"]["frames"] == []
    assert doc["profiles"] == [
        {
            "type": "sampled",
            "name": "goroutine",
            "unit": "none",
            "startValue": 0,
            "endValue": 0,
            "samples": [],
            "weights": [],
        }
    ]


def test_hostile_names_survive_as_data() -> None:
    evil = frame('"}]</script>\u2028\udcff', "/x.py", 1)
    body = render_speedscope(
        Profile((ValueType("n", "count"),), (Sample((evil,), (1,)),)), "x"
    ).body
    body.decode("ascii")  # ASCII-only JSON: no encoding surprises
    assert json.loads(body)["shared"]["frames"][0]["name"] == evil.function
