"""encode(): decoded back with the real protobuf package, rule by rule of profile.proto."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pprof_schema
from pyprof_http.model import Frame, Profile, Sample, ValueType
from pyprof_http.pprof.encode import MEDIA_TYPE, encode, encode_gzip, program_name, render_pprof
from pyprof_http.sanitize import printable

MAIN = Frame("main", "/app/main.py", 10)
WORK = Frame("work", "/app/work.py", 20)
WORK_OTHER_LINE = Frame("work", "/app/work.py", 25)
LEAF = Frame("leaf", "/app/work.py", 30)

CPU = (ValueType("samples", "count"), ValueType("cpu", "nanoseconds"))


def cpu_profile() -> Profile:
    return Profile(
        sample_types=CPU,
        samples=(
            Sample((LEAF, WORK, MAIN), (3, 30_000_000), {"task": "worker-1", "bytes": 4096}),
            Sample((WORK_OTHER_LINE, MAIN), (1, 10_000_000)),
            Sample((LEAF, WORK, MAIN), (-2, -20_000_000), {"task": "worker-2"}),
            Sample((), (5, 0)),
        ),
        period_type=ValueType("cpu", "nanoseconds"),
        period=10_000_000,
        time_ns=1_795_748_931_782_715_989,
        duration_ns=2_115_637_069,
        comments=("first comment", "second", "third"),
        default_sample_type="cpu",
    )


def test_round_trip_resolves_every_sample():
    decoded = pprof_schema.decode(encode(cpu_profile()))
    deep = [
        ("leaf", "/app/work.py", 30),
        ("work", "/app/work.py", 20),
        ("main", "/app/main.py", 10),
    ]
    assert pprof_schema.resolved_samples(decoded) == [
        (
            deep,
            [3, 30_000_000],
            {"task": "worker-1", "bytes": 4096},
        ),
        ([("work", "/app/work.py", 25), ("main", "/app/main.py", 10)], [1, 10_000_000], {}),
        (
            deep,
            [-2, -20_000_000],
            {"task": "worker-2"},
        ),
        ([], [5, 0], {}),
    ]


def test_string_table_starts_empty_and_is_deduplicated():
    strings = list(pprof_schema.decode(encode(cpu_profile())).string_table)
    assert strings[0] == ""
    assert len(strings) == len(set(strings))
    assert strings.count("cpu") == 1  # sample type, period type and default share it


def test_locations_and_functions_are_deduplicated_with_nonzero_unique_ids():
    decoded = pprof_schema.decode(encode(cpu_profile()))
    location_ids = [location.id for location in decoded.location]
    function_ids = [function.id for function in decoded.function]
    assert sorted(location_ids) == [1, 2, 3, 4]  # one per distinct Frame
    assert sorted(function_ids) == [1, 2, 3]  # one per (name, file): work's two lines share
    strings = decoded.string_table
    for location in decoded.location:
        assert (location.address, location.mapping_id, len(location.line)) == (0, 1, 1)
    for function in decoded.function:
        assert function.system_name == 0  # left out: pprof would demangle "<module>" as C++
        assert function.start_line == 0
    names = {strings[f.name] for f in decoded.function}
    assert names == {"main", "work", "leaf"}
    assert len(decoded.mapping) == 1
    first, _, third, _ = decoded.sample
    assert list(first.location_id) == list(third.location_id)


def test_labels_are_str_or_num_never_both():
    decoded = pprof_schema.decode(encode(cpu_profile()))
    strings = decoded.string_table
    labels = {strings[label.key]: label for label in decoded.sample[0].label}
    assert strings[labels["task"].str] == "worker-1"
    assert labels["task"].num == 0
    assert labels["bytes"].num == 4096
    assert labels["bytes"].str == 0


def test_bool_label_is_written_as_string():
    profile = Profile((ValueType("x", "count"),), (Sample((MAIN,), (1,), {"ok": True}),))
    [(_, _, labels)] = pprof_schema.resolved_samples(pprof_schema.decode(encode(profile)))
    assert labels == {"ok": "True"}


def test_bool_and_int_labels_stay_distinct():
    samples = (Sample((MAIN,), (1,), {"k": True}), Sample((MAIN,), (2,), {"k": 1}))
    profile = Profile((ValueType("x", "count"),), samples)
    resolved = pprof_schema.resolved_samples(pprof_schema.decode(encode(profile)))
    assert [labels for _, _, labels in resolved] == [{"k": "True"}, {"k": 1}]


def test_equal_frames_share_a_location_even_when_not_interned():
    twin = Frame(MAIN.function, MAIN.filename, MAIN.line)
    assert twin is not MAIN
    profile = Profile((ValueType("x", "count"),), (Sample((MAIN,), (1,)), Sample((twin,), (2,))))
    decoded = pprof_schema.decode(encode(profile))
    assert len(decoded.location) == 1
    assert [list(s.location_id) for s in decoded.sample] == [[1], [1]]


def test_other_label_values_are_rejected():
    profile = Profile((ValueType("x", "count"),), (Sample((MAIN,), (1,), {"f": 1.5}),))  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="float"):
        encode(profile)


def test_header_fields():
    decoded = pprof_schema.decode(encode(cpu_profile()))
    strings = decoded.string_table
    assert [(strings[t.type], strings[t.unit]) for t in decoded.sample_type] == [
        ("samples", "count"),
        ("cpu", "nanoseconds"),
    ]
    assert (strings[decoded.period_type.type], strings[decoded.period_type.unit]) == (
        "cpu",
        "nanoseconds",
    )
    assert decoded.period == 10_000_000
    assert decoded.time_nanos == 1_795_748_931_782_715_989
    assert decoded.duration_nanos == 2_115_637_069
    assert [strings[i] for i in decoded.comment] == ["first comment", "second", "third"]
    assert strings[decoded.default_sample_type] == "cpu"


def test_optional_header_fields_are_omitted():
    profile = Profile((ValueType("goroutine", "count"),), ())
    decoded = pprof_schema.decode(encode(profile))
    assert not decoded.HasField("period_type")
    assert (decoded.period, decoded.time_nanos, decoded.duration_nanos) == (0, 0, 0)
    assert decoded.default_sample_type == 0
    assert list(decoded.comment) == []


def test_empty_profile():
    profile = Profile(
        (ValueType("goroutine", "count"),), (), ValueType("goroutine", "count"), period=1
    )
    data = encode(profile, program="svc")
    decoded = pprof_schema.decode(data)
    assert list(decoded.string_table) == ["", "goroutine", "count", "svc"]
    assert len(decoded.sample) == len(decoded.location) == len(decoded.function) == 0
    assert decoded.period == 1


def test_every_sample_has_one_value_per_type_even_zeros():
    profile = Profile(CPU, (Sample((MAIN,), (0, 0)),))
    [sample] = pprof_schema.decode(encode(profile)).sample
    assert list(sample.value) == [0, 0]


def test_unicode_names():
    here = Frame("créer_λ", "/srv/日本/модуль.py", 7)
    profile = Profile((ValueType("x", "count"),), (Sample((here,), (1,), {"клиент": "東京"}),))
    [(stack, _, labels)] = pprof_schema.resolved_samples(pprof_schema.decode(encode(profile)))
    assert stack == [("créer_λ", "/srv/日本/модуль.py", 7)]
    assert labels == {"клиент": "東京"}


def test_encoding_is_deterministic():
    assert encode(cpu_profile()) == encode(cpu_profile())
    assert encode_gzip(cpu_profile()) == encode_gzip(cpu_profile())


def test_gzip_is_fast_level_and_decodes():
    data = encode_gzip(cpu_profile())
    assert data[:2] == b"\x1f\x8b"
    assert data[3:8] == b"\x00\x00\x00\x00\x00"  # no flags, mtime 0
    assert gzip.decompress(data) == encode(cpu_profile())


def test_render_pprof():
    rendered = render_pprof(cpu_profile(), "profile")
    assert rendered.media_type == MEDIA_TYPE == "application/octet-stream"
    assert rendered.filename == "profile.pb.gz"
    assert rendered.body == encode_gzip(cpu_profile())


def test_many_samples():
    frames = [Frame(f"f{i}", f"/m{i % 10}.py", i) for i in range(500)]
    samples = tuple(
        Sample(tuple(frames[(i + k) % 500] for k in range(20)), (i, -i)) for i in range(20_000)
    )
    decoded = pprof_schema.decode(encode(Profile(CPU, samples)))
    assert len(decoded.sample) == 20_000
    assert len(decoded.location) == 500
    assert len(decoded.function) == 500
    assert list(decoded.sample[-1].value) == [19_999, -19_999]


names = st.text(max_size=12)
frames = st.builds(Frame, names, names, st.integers(0, 2**31))
int64s = st.integers(-(2**63), 2**63 - 1)
# "" and 0 are indistinguishable from an unset label on the wire, so pprof drops them.
label_values = st.one_of(st.text(min_size=1, max_size=8), int64s.filter(bool))


@st.composite
def profiles(draw):
    width = draw(st.integers(1, 3))
    types = tuple(ValueType(f"t{i}", draw(names)) for i in range(width))
    pool = draw(st.lists(frames, min_size=1, max_size=6))
    samples = draw(
        st.lists(
            st.builds(
                Sample,
                st.lists(st.sampled_from(pool), max_size=6).map(tuple),
                st.lists(int64s, min_size=width, max_size=width).map(tuple),
                st.dictionaries(names, label_values, max_size=3),
            ),
            max_size=8,
        )
    )
    return Profile(types, tuple(samples), time_ns=draw(int64s), duration_ns=draw(int64s))


@settings(max_examples=200, deadline=None)
@given(profiles())
def test_property_round_trip(profile):
    decoded = pprof_schema.decode(encode_gzip(profile))
    def shown(value):  # string labels arrive with control characters escaped
        return printable(value, backslash=False) if isinstance(value, str) else value

    expected = [
        ([(f.function, f.filename, f.line) for f in s.stack], list(s.values),
         {k: shown(v) for k, v in s.labels.items()})
        for s in profile.samples
    ]
    assert pprof_schema.resolved_samples(decoded) == expected
    assert (decoded.time_nanos, decoded.duration_nanos) == (profile.time_ns, profile.duration_ns)
    assert decoded.string_table[0] == ""


def test_one_mapping_names_the_service_and_says_it_is_symbolized():
    """Without a mapping, go tool pprof -http titles the profile "unknown"."""
    decoded = pprof_schema.decode(encode(cpu_profile(), program="checkout-api"))
    (mapping,) = decoded.mapping
    assert mapping.id == 1
    assert decoded.string_table[mapping.filename] == "checkout-api"
    assert (mapping.has_functions, mapping.has_filenames, mapping.has_line_numbers) == (
        True, True, True)  # so pprof never tries to symbolize addresses that do not exist
    assert (mapping.memory_start, mapping.memory_limit, mapping.build_id) == (0, 0, 0)
    assert {location.mapping_id for location in decoded.location} == {1}


@pytest.mark.parametrize(("argv", "name"), [
    (["/srv/venv/bin/uvicorn", "app:app"], "uvicorn"),
    (["/srv/venv/lib/python3.12/site-packages/gunicorn/__main__.py"], "gunicorn"),
    (["app.py", "--port", "8000"], "app.py"),
    (["-c"], "python"),
    ([""], "python"),
    ([], "python"),
])
def test_program_name(argv: list[str], name: str) -> None:
    assert program_name(argv) == name


@pytest.mark.skipif(shutil.which("go") is None, reason="go is not installed (make system-deps)")
def test_go_tool_pprof_names_the_program(tmp_path: Path) -> None:
    path = tmp_path / "profile.pb.gz"
    path.write_bytes(encode_gzip(cpu_profile(), program="checkout-api"))
    done = subprocess.run(["go", "tool", "pprof", "-top", str(path)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "File: checkout-api" in done.stdout.splitlines()
    assert "symbolize" not in done.stderr.lower(), done.stderr


def test_label_values_carry_no_control_character_to_a_terminal() -> None:
    """A route label is the client's raw path when no template matched: ESC, BEL and U+2028
    in it must not reach whoever runs ``go tool pprof -tags``."""
    hostile = "/x\x1b[2J\x07\u2028y\\z"
    profile = Profile(
        sample_types=(ValueType("samples", "count"),),
        samples=(Sample((Frame("f", "a.py", 1),), (1,), {"route": hostile}),),
    )
    decoded = pprof_schema.decode(encode(profile))
    strings = list(decoded.string_table)
    (label,) = decoded.sample[0].label
    value = strings[label.str]
    assert value == "/x\\x1b[2J\\x07\\u2028y\\z"
    assert not any(c in value for c in "\x1b\x07\u2028")
