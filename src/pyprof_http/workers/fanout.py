"""``workers=all``: ask every worker at once, then one answer for the whole server.

Profile formats (pprof, json, speedscope, flamegraph, folded) are merged: each worker is asked
for its profile as JSON (every sample already carries that worker's ``pid`` label), the
profiles are summed with :func:`~pyprof_http.model.merge`, and the result is rendered in the
format asked for, so ``go tool pprof -tagfocus=pid=N`` / ``-tagroot=pid`` and the flame graph's
"group by pid" slice it again. Text and dumps are one section per worker, headed by its pid.
A worker that does not answer, or answers with an error, is named (comments, a section, the
``X-Pyprof-Workers-Missing`` header): never silently dropped.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import unquote_to_bytes

from ..model import Profile, Sample, ValueType, frame, merge
from ..sanitize import printable
from .hop import Answer, NoAnswer

MERGED_FORMATS = frozenset({"pprof", "json", "speedscope", "flamegraph", "folded"})
SECTION_FORMATS = frozenset({"text", "dump"})
_FORMAT_KEYS = (b"format", b"debug", b"granularity")

Ask = Callable[[int, bytes], Awaitable[Answer]]
"""Ask worker ``pid`` for ``query`` (its own process is asked in-process)."""


def json_query(rest: bytes) -> bytes:
    """The query with its format replaced by ``format=json`` (the mergeable form)."""
    kept = [part for part in rest.split(b"&") if part and unquote_to_bytes(
        part.partition(b"=")[0].replace(b"+", b" ")) not in _FORMAT_KEYS]
    return b"&".join([*kept, b"format=json"])


async def ask_all(pids: Sequence[int], query: bytes,
                  ask: Ask) -> tuple[list[Answer], list[tuple[int, str]]]:
    """Every worker's answer (status 200), and the workers that gave none, with why."""
    results = await asyncio.gather(*(ask(pid, query) for pid in pids), return_exceptions=True)
    answers: list[Answer] = []
    missing: list[tuple[int, str]] = []
    for pid, result in zip(pids, results, strict=True):
        if isinstance(result, NoAnswer):
            missing.append((pid, result.why))
        elif isinstance(result, BaseException):
            raise result
        elif result.status != 200:
            reason = result.body.decode("utf-8", "replace").strip().splitlines()
            missing.append((pid, f"answered {result.status}: {reason[0] if reason else ''}"))
        else:
            answers.append(result)
    return answers, missing


def missing_header(missing: Sequence[tuple[int, str]]) -> str:
    """One line of ASCII (a header carries nothing else safely), every worker named."""
    line = printable("; ".join(f"{pid} {why}" for pid, why in missing), backslash=False)
    return line.encode("ascii", "backslashreplace").decode("ascii")


def profile_from_json(document: dict[str, Any], pid: int) -> Profile:
    """The profile of a ``format=json`` answer, each sample labelled with ``pid``."""
    types = tuple(ValueType(t["type"], t["unit"]) for t in document["sample_types"])
    period_type = document.get("period_type")
    samples = tuple(
        Sample(
            tuple(frame(f["function"], f["filename"], int(f["line"])) for f in s["stack"]),
            tuple(int(v) for v in s["values"]),
            {**s["labels"], "pid": pid},
        )
        for s in document["samples"]
    )
    return Profile(
        sample_types=types,
        samples=samples,
        period_type=ValueType(period_type["type"], period_type["unit"]) if period_type else None,
        period=int(document.get("period") or 0),
        time_ns=int(document.get("time_ns") or 0),
        duration_ns=int(document.get("duration_ns") or 0),
        comments=tuple(str(c) for c in document.get("comments", ())),
        default_sample_type=document.get("default_sample_type"),
    )


def merged_profile(answers: Sequence[Answer], missing: Sequence[tuple[int, str]]) -> Profile:
    """One profile of every answer; its comments say who answered and who did not."""
    profiles = [profile_from_json(json.loads(a.body), a.pid) for a in answers]
    combined = merge(profiles)
    notes = [f"workers=all: {len(answers)} answered (pid "
             f"{', '.join(str(a.pid) for a in answers)})"]
    notes.extend(f"worker {pid} did not answer: {why}" for pid, why in missing)
    return replace(combined, comments=(*notes, *combined.comments))


def sections(answers: Sequence[Answer], missing: Sequence[tuple[int, str]],
             places: dict[int, str]) -> bytes:
    """Text answers one after another, each headed by its worker; missing workers named."""
    out: list[bytes] = []
    total = len(answers) + len(missing)
    for n, answer in enumerate(sorted(answers, key=lambda a: a.pid), 1):
        out.append(f"==== {places.get(answer.pid, f'pid {answer.pid}')} "
                   f"({n} of {total}) ====\n".encode())
        out.append(answer.body if answer.body.endswith(b"\n") else answer.body + b"\n")
        out.append(b"\n")
    for pid, why in missing:
        out.append(f"==== pid {pid}: did not answer: {printable(why)} ====\n\n".encode())
    return b"".join(out)
