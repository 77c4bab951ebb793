"""Every pprof this library serves or pushes passes Pyroscope's ingestion checks
(tests/pyroscope_rules.py), hostile names included: lone surrogates, HTML, U+2028, escapes."""

from __future__ import annotations

import asyncio
import gzip
import threading
import time
import types

import httpx
import pytest
from starlette.applications import Starlette

import pyroscope_rules
from pyprof_http import install
from pyprof_http.captures import objects as objects_capture
from pyprof_http.captures import stacks as stacks_capture
from pyprof_http.captures import tracing as tracing_capture
from pyprof_http.collectors import cpu, heap, threads
from pyprof_http.collectors.locks import recording
from pyprof_http.config import Settings
from pyprof_http.model import Frame, Profile, Sample, ValueType
from pyprof_http.pprof.encode import encode
from pyprof_http.pprof.wire import Writer

HOSTILE = "evil\udcff<b>\u2028\x1b[31m-é"


def _hostile_function() -> types.FunctionType:
    """A function whose name and file name hold a lone surrogate, HTML and escapes."""
    source = "def spin(stop):\n    while not stop.is_set():\n        sum(range(500))\n"
    module = compile(source, f"/app/{HOSTILE}.py", "exec")
    code = next(c for c in module.co_consts if isinstance(c, types.CodeType))
    renamed = {"co_name": f"spin_{HOSTILE}"}
    if hasattr(code, "co_qualname"):
        renamed["co_qualname"] = f"spin_{HOSTILE}"
    return types.FunctionType(code.replace(**renamed), {"sum": sum, "range": range})


PATHS = ["/goroutine", "/profile?seconds=1", "/threadcreate", "/objects", "/block",
         "/heap?seconds=1", "/goroutine?seconds=1"]


@pytest.fixture(scope="module")
def bodies() -> dict[str, bytes]:
    app = install(Starlette(), Settings())
    stop = threading.Event()
    worker = threading.Thread(target=_hostile_function(), args=(stop,), name=HOSTILE)
    worker.start()

    async def fetch_all() -> dict[str, bytes]:
        async def hostile_task() -> None:
            await asyncio.sleep(30)

        task = asyncio.get_running_loop().create_task(hostile_task(), name=HOSTILE)
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport,
                                         base_url="http://127.0.0.1") as client:
                out = {}
                for path in PATHS:
                    response = await client.get("/debug/pprof" + path)
                    assert response.status_code == 200, (path, response.text)
                    out[path] = response.content
                return out
        finally:
            task.cancel()

    try:
        return asyncio.run(fetch_all())
    finally:
        stop.set()
        worker.join()


@pytest.mark.parametrize("path", PATHS)
def test_served_profiles_pass_pyroscope_validation(bodies: dict[str, bytes], path: str) -> None:
    raw = gzip.decompress(bodies[path])
    assert pyroscope_rules.violations(raw) == []
    if path in ("/goroutine", "/profile?seconds=1"):  # the hostile names made it in, escaped
        assert b"evil\\udcff" in raw


@pytest.mark.parametrize("value_type", [
    cpu.SAMPLES, *cpu.TIME_TYPES.values(), heap.INUSE_OBJECTS, heap.INUSE_SPACE, heap.SPACE,
    recording.CONTENTIONS, recording.DELAY, threads.COUNT, stacks_capture.COUNT,
    objects_capture.COUNT, objects_capture.SPACE, tracing_capture.CALLS,
], ids=lambda vt: f"{vt.type}/{vt.unit}")
def test_every_sample_type_is_a_valid_pyroscope_name(value_type: ValueType) -> None:
    profile = Profile((value_type,), (Sample((Frame(HOSTILE, HOSTILE, 3),), (1,),
                                             {"thread": HOSTILE}),),
                      value_type, 1, time.time_ns(), 0, (HOSTILE,), value_type.type)
    assert pyroscope_rules.violations(encode(profile)) == []


def _raw(strings: list[bytes], sample_type: tuple[int, int] = (1, 2), values: int = 1,
         time_ns: int | None = None, location_id: int = 1) -> bytes:
    out, vt, sample, location, line, function = (Writer() for _ in range(6))
    vt.int64(1, sample_type[0])
    vt.int64(2, sample_type[1])
    out.message(1, vt)
    sample.uint64s(1, [location_id])
    sample.int64s(2, [5] * values)
    out.message(2, sample)
    line.uint64(1, 1)
    location.uint64(1, location_id)
    location.message(4, line)
    out.message(4, location)
    function.uint64(1, 1)
    out.message(5, function)
    for text in strings:
        out.delimited(6, text)
    out.int64(9, time.time_ns() if time_ns is None else time_ns)
    return out.getvalue()


def test_the_rules_catch_what_pyroscope_refuses() -> None:
    # the checker itself: each broken rule is reported (so the tests above can fail)
    good = [b"", b"cpu", b"nanoseconds"]
    assert pyroscope_rules.violations(_raw(good)) == []
    assert "string_table[0]" in pyroscope_rules.violations(_raw([b"x", *good[1:]]))[0]
    assert "metric name" in pyroscope_rules.violations(_raw([b"", b"alloc-space", b"b"]))[0]
    assert "2 values" in pyroscope_rules.violations(_raw(good, values=2))[0]
    assert "UTF-8" in pyroscope_rules.violations(
        _raw([b"", "\udcff".encode("utf-8", "surrogatepass"), b"b"]))[0]
    assert "ingestion window" in pyroscope_rules.violations(
        _raw(good, time_ns=time.time_ns() - 2 * 3600 * 10**9))[0]
    assert "id 0" in " ".join(pyroscope_rules.violations(_raw(good, location_id=0)))
