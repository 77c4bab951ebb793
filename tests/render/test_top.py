"""``go tool pprof -top`` text: exact tables for hand-built profiles."""

from __future__ import annotations

import pytest

from pyprof_http.model import Profile, Sample, ValueType, frame
from pyprof_http.render.top import COLUMNS, TEXT_PLAIN, percentage, render_top, scaled

SAMPLES = ValueType("samples", "count")
CPU = ValueType("cpu", "nanoseconds")
MS = 1_000_000

MAIN = frame("main", "/app/main.py", 3)
MAIN_LATER = frame("main", "/app/main.py", 9)  # same function, another line: one row
SERVE = frame("serve", "/app/server.py", 20)
HANDLE = frame("handle", "/app/server.py", 41)
PARSE = frame("parse", "/app/codec.py", 7)


def _profile(samples: tuple[Sample, ...], **kwargs: object) -> Profile:
    base: dict[str, object] = {
        "period_type": CPU,
        "period": 10 * MS,
        "time_ns": 1_700_000_000_000_000_000,
        "duration_ns": 2_000 * MS,
        "comments": ("driver=signal rate=99.5/s",),
        "default_sample_type": "cpu",
    }
    base.update(kwargs)
    return Profile((SAMPLES, CPU), samples, **base)  # type: ignore[arg-type]


def _cpu() -> Profile:
    return _profile(
        (
            Sample((HANDLE, SERVE, MAIN), (20, 200 * MS), {"thread": "MainThread"}),
            Sample((PARSE, SERVE, MAIN_LATER), (5, 50 * MS), {"thread": "worker"}),
            Sample((SERVE, MAIN), (3, 30 * MS), {"thread": "worker"}),
            # recursion: main appears twice, its cum counts this sample once
            Sample((MAIN, HANDLE, SERVE, MAIN), (7, 70 * MS), {"thread": "MainThread"}),
            Sample((PARSE, MAIN), (1, 0), {"thread": "idle"}),  # zero for cpu: not shown
        )
    )


def test_top_table_exact() -> None:
    rendered = render_top(_cpu(), "profile")
    assert rendered.media_type == TEXT_PLAIN
    assert rendered.body.decode() == (
        "Type: cpu\n"
        "Time: 2023-11-14 22:13:20 UTC\n"
        "Duration: 2s, Total samples = 350ms (17.50%)\n"
        "# driver=signal rate=99.5/s\n"
        "Showing nodes accounting for 350ms, 100% of 350ms total\n"
        "      flat  flat%   sum%        cum   cum%\n"
        "     200ms 57.14% 57.14%      270ms 77.14%  handle /app/server.py:41\n"
        "      70ms 20.00% 77.14%      350ms   100%  main /app/main.py:3\n"
        "      50ms 14.29% 91.43%       50ms 14.29%  parse /app/codec.py:7\n"
        "      30ms  8.57%   100%      350ms   100%  serve /app/server.py:20\n"
        "\n"
        "label thread: Total 350ms\n"
        "     270ms (77.14%): MainThread\n"
        "      80ms (22.86%): worker\n"
    )


def test_count_sample_type_is_plain() -> None:
    text = render_top(_cpu(), "profile", sample_type="samples").body.decode()
    lines = text.splitlines()
    assert lines[0] == "Type: samples"
    assert lines[2] == "Duration: 2s"  # "Total samples = " only for a time type, as pprof
    table = lines[lines.index(COLUMNS) + 1 :]
    assert table[:4] == [
        "        20 55.56% 55.56%         27 75.00%  handle /app/server.py:41",
        "         7 19.44% 75.00%         36   100%  main /app/main.py:3",
        "         6 16.67% 91.67%          6 16.67%  parse /app/codec.py:7",
        "         3  8.33%   100%         35 97.22%  serve /app/server.py:20",
    ]
    assert table[5:] == [
        "label thread: Total 36",
        "        27 (75.00%): MainThread",
        "         8 (22.22%): worker",
        "         1 ( 2.78%): idle",
    ]


def test_flat_ties_sort_by_cum_then_name() -> None:
    profile = _profile(
        (
            Sample((PARSE, SERVE), (1, 10 * MS)),
            Sample((HANDLE, SERVE, MAIN), (1, 10 * MS)),
        ),
        comments=(),
        time_ns=0,
        duration_ns=0,
    )
    assert render_top(profile, "profile").body.decode().splitlines() == [
        "Type: cpu",
        "Showing nodes accounting for 20ms, 100% of 20ms total",
        COLUMNS,
        "      10ms 50.00% 50.00%       10ms 50.00%  handle /app/server.py:41",
        "      10ms 50.00%   100%       10ms 50.00%  parse /app/codec.py:7",
        "         0     0%   100%       20ms   100%  serve /app/server.py:20",
        "         0     0%   100%       10ms 50.00%  main /app/main.py:3",
    ]


def test_zero_samples() -> None:
    profile = _profile((Sample((MAIN,), (0, 0)),), comments=("mode=cpu",))
    assert render_top(profile, "profile").body.decode() == (
        "Type: cpu\n"
        "Time: 2023-11-14 22:13:20 UTC\n"
        "Duration: 2s, Total samples = 0 (    0%)\n"
        "# mode=cpu\n"
        "no samples\n"
    )
    empty = Profile((), ())
    assert render_top(empty, "profile").body == b"Type: profile\nno samples\n"


def test_no_thread_labels_no_breakdown() -> None:
    profile = _profile((Sample((MAIN,), (1, 10 * MS)),))
    assert "label thread" not in render_top(profile, "profile").body.decode()


def test_names_cannot_forge_rows() -> None:
    evil = frame("f\nlabel thread: Total 1s", "/x\r.py", 1)
    profile = _profile((Sample((evil,), (1, 10 * MS), {"thread": "a\nb"}),))
    text = render_top(profile, "profile").body.decode()
    assert "f\\nlabel thread: Total 1s /x\\r.py:1" in text
    assert text.splitlines()[-1] == "      10ms (  100%): a\\nb"


def test_unknown_sample_type() -> None:
    with pytest.raises(KeyError):
        render_top(_cpu(), "profile", sample_type="alloc_space")


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (0, "nanoseconds", "0"),
        (999, "nanoseconds", "999ns"),
        (1_500, "nanoseconds", "1.50us"),
        (10 * MS, "nanoseconds", "10ms"),
        (1_234 * MS, "nanoseconds", "1.23s"),
        (90 * 60 * 1_000 * MS, "nanoseconds", "1.50hrs"),
        (-20 * MS, "nanoseconds", "-20ms"),
        (1_536, "bytes", "1.50kB"),
        (3 << 20, "bytes", "3MB"),
        (512, "bytes", "512B"),
        (7, "count", "7"),
    ],
)
def test_scaled(value: int, unit: str, expected: str) -> None:
    assert scaled(value, unit) == expected


@pytest.mark.parametrize(
    ("value", "total", "expected"),
    [(1, 1, "  100%"), (1, 3, "33.33%"), (1, 200, "  0.5%"), (1, 800, " 0.12%"), (0, 0, "    0%")],
)
def test_percentage(value: int, total: int, expected: str) -> None:
    assert percentage(value, total) == expected
