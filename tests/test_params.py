"""Query parameters: every invalid input is a BadRequest with one exact line."""

from __future__ import annotations

import pytest
from starlette.datastructures import QueryParams

from pyprof_http.config import Settings
from pyprof_http.errors import BadRequest
from pyprof_http.params import ProfileQuery, parse_query
from pyprof_http.registry import BY_NAME, Format, ProfileCapture, ProfileSpec

GOROUTINE = BY_NAME["goroutine"]
CMDLINE = BY_NAME["cmdline"]
SETTINGS = Settings()
GOROUTINE_FORMATS = "dump, flamegraph, folded, json, pprof, speedscope, text"


async def _never(settings: Settings) -> ProfileCapture:  # pragma: no cover - never called
    raise AssertionError


NO_DELTA = ProfileSpec(
    name="snapshot",
    description="a profile without delta support",
    collect=_never,
    formats={"pprof": Format(lambda c, n: None), "text": Format(lambda c, n: None)},  # type: ignore[arg-type,return-value]
)


def _parse(query: str, spec: ProfileSpec = GOROUTINE, settings: Settings = SETTINGS):
    return parse_query(QueryParams(query), spec, settings)


def _reason(query: str, spec: ProfileSpec = GOROUTINE, settings: Settings = SETTINGS) -> str:
    with pytest.raises(BadRequest) as info:
        _parse(query, spec, settings)
    assert info.value.status_code == 400
    reason = info.value.reason
    assert "\n" not in reason
    return reason


# --- valid values ---------------------------------------------------------------------------


@pytest.mark.parametrize(("query", "fmt"), [
    ("", "pprof"),
    ("debug=0", "pprof"),
    ("debug=1", "text"),
    ("debug=2", "dump"),
    ("debug=00", "pprof"),
    *((f"format={f}", f) for f in GOROUTINE.formats),
])
def test_valid_formats(query: str, fmt: str) -> None:
    assert _parse(query).resolved_format(GOROUTINE) == fmt


@pytest.mark.parametrize(("debug", "fmt"), [("0", "text"), ("1", "flamegraph"), ("2", "pprof")])
def test_format_wins_over_debug(debug: str, fmt: str) -> None:
    parsed = _parse(f"debug={debug}&format={fmt}")
    assert parsed.debug == int(debug)
    assert parsed.format == fmt
    assert parsed.resolved_format(GOROUTINE) == fmt


@pytest.mark.parametrize("seconds", ["1", "30", "60", "007"])
def test_valid_seconds(seconds: str) -> None:
    parsed = _parse(f"seconds={seconds}")
    assert parsed.seconds == int(seconds)
    assert parsed.resolved_format(GOROUTINE) == "pprof"


@pytest.mark.parametrize("fmt", ["pprof", "text", "flamegraph", "folded", "speedscope", "json"])
def test_seconds_with_delta_formats(fmt: str) -> None:
    assert _parse(f"seconds=2&format={fmt}").seconds == 2


def test_seconds_range_follows_settings() -> None:
    settings = Settings(max_profile_seconds=5)
    assert _parse("seconds=5", settings=settings).seconds == 5
    assert _reason("seconds=6", settings=settings) == (
        'invalid value for "seconds": must be a whole number of seconds from 1 to 5'
    )
    assert _parse("seconds=600", settings=Settings(max_profile_seconds=600)).seconds == 600


def test_parsed_query_is_immutable() -> None:
    parsed = _parse("debug=1")
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen error
        parsed.debug = 2  # type: ignore[misc]


def test_defaults_are_none() -> None:
    parsed = _parse("")
    assert (parsed.debug, parsed.format, parsed.seconds) == (None, None, None)
    assert isinstance(parsed, ProfileQuery)


# --- invalid values: exact reasons ----------------------------------------------------------

DEBUG_REASON = 'invalid value for "debug": must be one of 0 (pprof), 1 (text), 2 (dump)'
SECONDS_REASON = 'invalid value for "seconds": must be a whole number of seconds from 1 to 60'
FORMAT_REASON = f'invalid value for "format": goroutine offers {GOROUTINE_FORMATS}'


@pytest.mark.parametrize("value", ["3", "7", "-1", "", "x", "1.0", " 1", "+1", "\u0661", "1e0"])
def test_invalid_debug(value: str) -> None:
    assert _reason(f"debug={value}") == DEBUG_REASON


@pytest.mark.parametrize("value", ["0", "61", "abc", "", "-5", "1.5", "+3", "\u0663", "1e1",
                                   "99999999999999999999"])
def test_invalid_seconds(value: str) -> None:
    assert _reason(f"seconds={value}") == SECONDS_REASON


@pytest.mark.parametrize("value", ["", "PPROF", "html", "pstats", "callgrind", "pyinstrument",
                                   "text "])
def test_invalid_format(value: str) -> None:
    assert _reason(f"format={value}") == FORMAT_REASON


def test_debug_choices_follow_the_profile() -> None:
    assert _reason("debug=2", spec=NO_DELTA) == (
        'invalid value for "debug": must be one of 0 (pprof), 1 (text)'
    )
    assert _reason("format=dump", spec=NO_DELTA) == (
        'invalid value for "format": snapshot offers pprof, text'
    )


def test_repeated_parameter() -> None:
    assert _reason("debug=1&debug=1") == 'parameter "debug" given more than once'
    assert _reason("seconds=1&format=text&seconds=2") == 'parameter "seconds" given more than once'


def test_repeated_unknown_parameter_is_reported_as_repeated() -> None:
    assert _reason("x=1&x=2") == 'parameter "x" given more than once'


@pytest.mark.parametrize("name", ["foo", "Debug", "GC", "seconds "])
def test_unknown_parameter(name: str) -> None:
    assert _reason(f"{name}=1") == (
        f'unknown parameter "{name}"; allowed: debug, format, min_age, seconds'
    )


@pytest.mark.parametrize("name", ["gc", "mode", "hz", "clock"])
def test_parameter_of_another_profile(name: str) -> None:
    # known to some profile (heap, profile), but not offered by this one: say which are
    assert _reason(f"{name}=1") == (
        f'parameter "{name}" is not supported by goroutine; allowed: debug, format, min_age, '
        "seconds"
    )


def test_seconds_on_a_profile_without_delta() -> None:
    assert _reason("seconds=5", spec=NO_DELTA) == (
        'invalid value for "seconds": not supported by snapshot'
    )


@pytest.mark.parametrize("query", ["seconds=5&format=dump", "seconds=5&debug=2",
                                   "debug=2&seconds=1"])
def test_seconds_with_dump_rejected(query: str) -> None:
    assert _reason(query) == (
        '"seconds" cannot be combined with format dump: a delta has no per-task detail; '
        "use the pprof, text or flamegraph format"
    )


def test_format_wins_over_debug_for_the_seconds_check() -> None:
    assert _parse("seconds=5&debug=2&format=text").seconds == 5


def test_invalid_debug_is_rejected_even_with_format() -> None:
    assert _reason("debug=9&format=text") == DEBUG_REASON


@pytest.mark.parametrize("query", ["seconds=1", "debug=1", "x=1", "format=pprof", "debug="])
def test_raw_profiles_take_no_parameters(query: str) -> None:
    name = query.split("=")[0]
    assert _reason(query, spec=CMDLINE) == f"cmdline takes no parameters (got {name})"


def test_raw_profile_lists_all_given_parameters_sorted() -> None:
    assert _reason("z=1&debug=1", spec=CMDLINE) == "cmdline takes no parameters (got debug, z)"


def test_raw_profile_without_parameters_is_fine() -> None:
    assert _parse("", spec=CMDLINE).debug is None


# --- granularity: a parameter of the flame graph format -------------------------------------


@pytest.mark.parametrize("value", ["functions", "lines"])
def test_granularity_for_the_flame_graph(value: str) -> None:
    assert _parse(f"format=flamegraph&granularity={value}").granularity == value
    assert _parse("format=flamegraph").granularity is None  # the format's default: functions
    assert _parse(f"format=flamegraph&granularity={value}", BY_NAME["heap"]).granularity == value


@pytest.mark.parametrize("value", ["line", "Functions", "", "1"])
def test_invalid_granularity(value: str) -> None:
    assert _reason(f"format=flamegraph&granularity={value}") == (
        'invalid value for "granularity": must be one of functions, lines'
    )


@pytest.mark.parametrize(("query", "fmt"), [
    ("granularity=lines", "pprof"),
    ("debug=1&granularity=functions", "text"),
    ("format=folded&granularity=lines", "folded"),
])
def test_granularity_needs_a_format_that_draws_frames(query: str, fmt: str) -> None:
    assert _reason(query) == f'"granularity" applies to format=flamegraph only, not format {fmt}'


@pytest.mark.parametrize("value", ["0", "300", "0.5", "12.25"])
def test_min_age_accepts_non_negative_seconds(value: str) -> None:
    assert _parse(f"min_age={value}").min_age == float(value)


@pytest.mark.parametrize("value", ["-1", "abc", "", "1e3", "nan", "inf", " 5", "1.", ".5",
                                   "5_0", "\u0665", "1000000001"])
def test_min_age_rejects_anything_else(value: str) -> None:
    assert _reason(f"min_age={value}") == (
        'invalid value for "min_age": must be a number of seconds from 0 to 1000000000, '
        "e.g. 300 or 0.5")


def test_min_age_is_goroutine_only() -> None:
    assert _reason("min_age=1", spec=BY_NAME["goroutineleak"]) == (
        'parameter "min_age" is not supported by goroutineleak; allowed: debug, format, gc, '
        "seconds")


@pytest.mark.parametrize("name", ["debug", "seconds"])
def test_a_number_of_thousands_of_digits_gets_the_parameters_own_reason(name: str) -> None:
    reason = _reason(f"{name}={'9' * 5000}")
    assert f'invalid value for "{name}"' in reason and "set_int_max_str_digits" not in reason
