"""workers=all: profiles merged with a pid label per sample; text as sections; misses named."""

from __future__ import annotations

import asyncio
import json

from pyprof_http.model import Profile, Sample, ValueType, frame
from pyprof_http.render.flamegraph import group_keys
from pyprof_http.render.profile_json import profile_document
from pyprof_http.workers.fanout import (
    ask_all,
    json_query,
    merged_profile,
    missing_header,
    sections,
)
from pyprof_http.workers.hop import Answer, NoAnswer


def _answer(pid: int, count: int) -> Answer:
    profile = Profile((ValueType("goroutine", "count"),),
                      (Sample((frame("f", "a.py", 1),), (count,), {"thread": "Main"}),),
                      comments=(f"pid {pid}",))
    body = json.dumps(profile_document(profile, "goroutine")).encode()
    return Answer(pid, 200, [], body)


def test_merged_samples_keep_their_pid_and_comments_name_who_did_not_answer() -> None:
    merged = merged_profile([_answer(11, 2), _answer(12, 3)], [(13, "did not answer within 10 s")])
    by_pid = {s.labels["pid"]: s.values[0] for s in merged.samples}
    assert by_pid == {11: 2, 12: 3}  # a number: -tagfocus=pid=N is a numeric match
    assert all(s.labels["thread"] == "Main" for s in merged.samples)
    assert merged.comments[0] == "workers=all: 2 answered (pid 11, 12)"
    assert "worker 13 did not answer: did not answer within 10 s" in merged.comments
    assert "pid 11" in merged.comments and "pid 12" in merged.comments
    assert "pid" in group_keys(merged)  # the flame graph offers grouping by worker


def test_sections_head_each_worker_and_name_the_missing() -> None:
    text = sections([Answer(12, 200, [], b"b\n"), Answer(11, 200, [], b"a")],
                    [(13, "is gone")], {11: "pid 11"}).decode()
    assert text.index("==== pid 11 (1 of 3) ====\na\n") < text.index("==== pid 12")
    assert "==== pid 13: did not answer: is gone ====" in text


def test_ask_all_sorts_answers_from_errors_and_misses() -> None:
    async def ask(pid: int, query: bytes) -> Answer:
        assert query == b"format=json"
        if pid == 2:
            raise NoAnswer(2, "did not answer within 3 s")
        if pid == 3:
            return Answer(3, 409, [], b"a cpu profile is already running\n")
        return Answer(pid, 200, [], b"{}")

    answers, missing = asyncio.run(ask_all([1, 2, 3], b"format=json", ask))
    assert [a.pid for a in answers] == [1]
    assert missing == [(2, "did not answer within 3 s"),
                       (3, "answered 409: a cpu profile is already running")]
    assert missing_header([(2, "x\u2028\x1b[31m")]) == "2 x\\u2028\\x1b[31m"
    assert missing_header([(2, "é\n")]) == "2 \\xe9\\n"  # ASCII: a header carries it


def test_json_query_replaces_the_format_only() -> None:
    assert json_query(b"debug=0&seconds=2&granularity=lines&format=pprof&mode=wall") == (
        b"seconds=2&mode=wall&format=json")
