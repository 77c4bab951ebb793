"""The stalls text view: worst first, labels quoted, bounded, and an empty capture says so."""

from __future__ import annotations

from pyprof_http.captures.stalls import Stall, StallCapture
from pyprof_http.collectors.loop import CONTENTIONS, DELAY
from pyprof_http.model import Profile, Sample, frame
from pyprof_http.render import stalls_text
from pyprof_http.render.stalls_text import MAX_STALLS_SHOWN, render_stalls_text
from pyprof_http.render.text import TEXT_PLAIN, frame_id

HELD = frame("parse", "/app/parse.py", 30)  # 5 characters
HANDLER = frame("Checkout.post", "/app/web.py", 12)  # 13
OTHER = frame("json.loads", "/usr/lib/json.py", 7)
MS = 1_000_000
NOW = 100_000 * MS
WALL_2026 = 1_795_000_000 * 1_000_000_000  # 2026-11-18T10:26:40Z


def stall(duration_ms: int, end_ms: int, **kw: str) -> Stall:
    stack = (HELD, HANDLER)
    start = (end_ms - duration_ms) * MS
    return Stall(start_ns=start, start_wall_ns=WALL_2026 + start, duration_ns=duration_ms * MS,
                 stack=stack, stacks=((stack, 4), ((OTHER, HANDLER), 1)),
                 task=kw.get("task", "Task-7"), route=kw.get("route", ""),
                 request_id=kw.get("request_id", ""), thread="MainThread")


def capture(stalls: tuple[Stall, ...], comments: tuple[str, ...] = ("a comment",)) -> StallCapture:
    samples = tuple(Sample(s.stack, (1, s.duration_ns), {"thread": s.thread}) for s in stalls)
    profile = Profile(sample_types=(CONTENTIONS, DELAY), samples=samples,
                      period_type=CONTENTIONS, period=1, comments=comments,
                      default_sample_type="delay")
    return StallCapture(profile, stalls, threshold_ms=100, taken_ns=NOW, seen=len(stalls),
                        dropped=0)


def test_exact_record() -> None:
    one = stall(250, end_ms=99_000, route="/checkout", request_id="r-1")
    rendered = render_stalls_text(capture((one,)), "block")
    assert rendered.media_type == TEXT_PLAIN
    ids = f"{frame_id(HELD)} {frame_id(HANDLER)}"
    assert rendered.body.decode() == (
        "block profile: 1 stalls, total 250.0 ms, threshold 100 ms\n"
        "# a comment\n"
        "# worst first: 1 of the 1 stalls kept\n"
        "\n"
        'stall 1: 250.0 ms, 1.0 s ago (began 2026-11-18T11:08:18.750Z), thread "MainThread", '
        f'task "Task-7", route "/checkout", request_id "r-1", 5 samples @ {ids}\n'
        f"#\t{frame_id(HELD)}\tparse\t\t/app/parse.py:30\n"
        f"#\t{frame_id(HANDLER)}\tCheckout.post\t/app/web.py:12\n"
        "# also sampled 1 of 5: json.loads /usr/lib/json.py:7\n"
        "\n"
    )


def test_worst_first() -> None:
    stalls = (stall(120, 1_000), stall(900, 5_000), stall(300, 9_000))
    text = render_stalls_text(capture(stalls), "block").body.decode()
    heads = [line for line in text.splitlines() if line.startswith("stall ")]
    assert [h.split(",")[0] for h in heads] == [
        "stall 1: 900.0 ms", "stall 2: 300.0 ms", "stall 3: 120.0 ms"]
    assert text.startswith("block profile: 3 stalls, total 1320.0 ms, threshold 100 ms\n")
    assert "95.0 s ago" in heads[0]  # ended at 5 s, captured at 100 s


def test_bounded_with_a_summary_line() -> None:
    stalls = tuple(stall(100 + i, 1_000 + i) for i in range(MAX_STALLS_SHOWN + 5))
    text = render_stalls_text(capture(stalls), "block").body.decode()
    assert text.count("\nstall ") == MAX_STALLS_SHOWN
    assert f"stall {MAX_STALLS_SHOWN}: 105.0 ms" in text  # the five shortest are left out
    assert "# 5 shorter stalls not shown (510.0 ms in all)" in text


def test_empty() -> None:
    text = render_stalls_text(capture(()), "block").body.decode()
    assert text == ("block profile: 0 stalls, total 0.0 ms, threshold 100 ms\n"
                    "# a comment\n"
                    "# no stalls: no watched event loop stayed away for 100 ms or more in this "
                    "window\n")


def test_application_names_cannot_forge_lines() -> None:
    evil = stall(200, 1_000, task='x"\nstall 9: 1 ms', route="/a\r\n#\tfake")
    text = render_stalls_text(capture((evil,), comments=("bad\ncomment",)), "block")
    lines = text.body.decode().splitlines()
    assert not any(line.startswith("stall 9") or line.startswith("#\tfake") for line in lines)
    assert '"x\\"\\nstall 9: 1 ms"' in text.body.decode()
    assert "# bad\\ncomment" in lines


def test_age_units() -> None:
    assert stalls_text._age(30 * 10**9) == "30.0 s"
    assert stalls_text._age(600 * 10**9) == "10.0 min"
    assert stalls_text._age(3 * 3600 * 10**9) == "3.0 h"


def test_measured_cpu_and_wait_are_shown_not_guessed() -> None:
    """What the loop thread's counters measured is printed; nothing is claimed without them."""
    measured = Stall(start_ns=0, start_wall_ns=WALL_2026, duration_ns=300 * MS, stack=(HELD,),
                     stacks=(((HELD,), 2),), task="", route="", request_id="",
                     thread="MainThread", cpu_ns=280 * MS, waited_ns=15 * MS)
    text = render_stalls_text(capture((measured,)), "block").body.decode()
    assert "loop thread on a CPU 280.0 ms, waiting for a CPU 15.0 ms" in text
    unmeasured = stall(250, end_ms=99_000)
    assert "on a CPU" not in render_stalls_text(capture((unmeasured,)), "block").body.decode()
