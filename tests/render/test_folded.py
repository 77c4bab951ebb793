from pyprof_http.model import Profile, Sample, ValueType, frame
from pyprof_http.render.folded import frame_text, render_folded

MAIN = frame("main", "/app/main.py", 3)
SERVE = frame("serve", "/app/server.py", 20)
HANDLE = frame("handle", "/app/server.py", 41)
QUERY = frame("query", "/app/db.py", 7)


def _profile() -> Profile:
    # stacks are innermost first in the model
    return Profile(
        sample_types=(ValueType("samples", "count"), ValueType("cpu", "nanoseconds")),
        samples=(
            Sample((HANDLE, SERVE, MAIN), (2, 20), {"thread": "a"}),
            Sample((QUERY, HANDLE, SERVE, MAIN), (1, 10)),
            Sample((HANDLE, SERVE, MAIN), (3, 30), {"thread": "b"}),  # same stack, other labels
            Sample((MAIN,), (0, 0)),  # zero: skipped
            Sample((SERVE, MAIN), (4, 0)),  # zero for cpu only
        ),
        default_sample_type="cpu",
    )


def test_exact_lines_root_first_aggregated_sorted() -> None:
    rendered = render_folded(_profile())
    assert rendered.media_type == "text/plain; charset=utf-8"
    assert rendered.filename is None
    assert rendered.body.decode() == (
        "main (/app/main.py:3);serve (/app/server.py:20);handle (/app/server.py:41) 50\n"
        "main (/app/main.py:3);serve (/app/server.py:20);handle (/app/server.py:41);"
        "query (/app/db.py:7) 10\n"
    )


def test_other_sample_type() -> None:
    body = render_folded(_profile(), "samples").body.decode()
    assert body.splitlines() == [
        "main (/app/main.py:3);serve (/app/server.py:20) 4",
        "main (/app/main.py:3);serve (/app/server.py:20);handle (/app/server.py:41) 5",
        "main (/app/main.py:3);serve (/app/server.py:20);handle (/app/server.py:41);"
        "query (/app/db.py:7) 1",
    ]


def test_default_without_default_sample_type_is_last() -> None:
    profile = Profile(
        sample_types=(ValueType("samples", "count"), ValueType("cpu", "nanoseconds")),
        samples=(Sample((MAIN,), (1, 7)),),
    )
    assert render_folded(profile).body == b"main (/app/main.py:3) 7\n"


def test_unknown_sample_type_raises() -> None:
    try:
        render_folded(_profile(), "nope")
    except KeyError:
        pass
    else:
        raise AssertionError("expected KeyError")


def test_separators_and_newlines_in_names_do_not_break_the_format() -> None:
    evil = frame("a;b\nc\r\nd\u2028e", "/x;y\n.py", 1)
    shown = "a:b\\nc\\r\\nd\\u2028e (/x:y\\n.py:1)"
    assert frame_text(evil) == shown
    profile = Profile((ValueType("samples", "count"),), (Sample((evil, MAIN), (2,)),))
    lines = render_folded(profile).body.decode().split("\n")
    assert lines == [f"main (/app/main.py:3);{shown} 2", ""]
    stack, value = lines[0].rsplit(" ", 1)
    assert stack.split(";") == ["main (/app/main.py:3)", shown]
    assert value == "2"


def test_empty_profile_and_empty_stack() -> None:
    types = (ValueType("goroutine", "count"),)
    assert render_folded(Profile(types, ())).body == b""
    assert render_folded(Profile(types, (Sample((), (3,)),))).body == b"[unknown] 3\n"


def test_a_delta_shows_growth_only_never_a_negative_count() -> None:
    """flamegraph.pl drops a negative line and other readers reject the file: a folded delta is
    the stacks that grew, by their net growth (summed over labels before the sign is judged)."""
    types = (ValueType("goroutine", "count"),)
    profile = Profile(
        types,
        (
            Sample((MAIN,), (2,), {"t": 1}),
            Sample((MAIN,), (-2,), {"t": 2}),  # cancels: dropped
            Sample((SERVE,), (-1,)),  # shrank: left out
            Sample((SERVE, MAIN), (5,), {"t": 1}),
            Sample((SERVE, MAIN), (-3,), {"t": 2}),  # net growth 2
        ),
    )
    assert render_folded(profile).body == (
        b"main (/app/main.py:3);serve (/app/server.py:20) 2\n"
    )


def test_lone_surrogate_in_filename_is_encodable() -> None:
    odd = frame("f", "/app/\udcff.py", 1)
    body = render_folded(Profile((ValueType("n", "count"),), (Sample((odd,), (1,)),))).body
    assert body == b"f (/app/\\udcff.py:1) 1\n"
