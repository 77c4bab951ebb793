"""One table of hostile names through the one sanitiser, every text format and the audit log.

Each name ends in ``FORGED`` right after its hostile part, so a line break that survived (``\\n``,
NEL, U+2028...) would start a line with ``FORGED``; and no character that a terminal acts on may
reach the output raw. Each check also asserts that the escaped name is there, so a view that
dropped the name could not pass by saying nothing.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import types
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpx
import pytest

from pyprof_http import PprofApp, Settings
from pyprof_http.captures.heap import HeapCapture, TraceState
from pyprof_http.captures.objects import ObjectsCapture
from pyprof_http.captures.stalls import Stall, StallCapture
from pyprof_http.captures.tracing import CallStats, FunctionStats, TracingCapture
from pyprof_http.model import Profile, Sample, ValueType, frame
from pyprof_http.render.callgrind import render_callgrind
from pyprof_http.render.heap_text import render_heap_text
from pyprof_http.render.objects_text import render_objects_text
from pyprof_http.render.stalls_text import render_stalls_text
from pyprof_http.render.top import render_top
from pyprof_http.sanitize import printable, quoted

HOSTILE: dict[str, str] = {
    "html": "<img src=x onerror=alert(1)>",
    "clear screen": "\x1b[2J\x1b[H",
    "bell": "\x07",
    "vertical tab and form feed": "\x0b\x0c",
    "newline": "\r\n",
    "NEL": "\x85",
    "line separator": "\u2028",
    "paragraph separator": "\u2029",
    "NUL": "\x00",
    "DEL and a C1 control": "\x7f\x9b",
    "lone surrogate": "\udcff",
    "RTL override": "\u202e",
    "a forged escape": "\\x1b",
}
CONTENTIONS, DELAY = ValueType("contentions", "count"), ValueType("delay", "nanoseconds")
INUSE_OBJECTS, INUSE_SPACE = ValueType("inuse_objects", "count"), ValueType("inuse_space", "bytes")
NAMES = {key: f"evil-{key.replace(' ', '-')}{value}FORGED" for key, value in HOSTILE.items()}


def assert_inert(text: str, names: Iterable[str]) -> None:
    """Only printable characters, newlines and tabs; no forged line; every name present."""
    raw = sorted({c for c in text if not (c.isprintable() or c in "\n\t")})
    assert not raw, f"raw control characters in the output: {raw!r}"
    forged = [line for line in text.splitlines() if line.lstrip("\t #").startswith("FORGED")]
    assert not forged
    for name in names:
        assert printable(name) in text, f"{name!r} is missing (escaped: {printable(name)!r})"


# --- the sanitiser itself -------------------------------------------------------------------

_ESCAPE = re.compile(r"\\(\\|n|r|t|x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8})")


def _unescape(text: str) -> str:
    named = {"\\": "\\", "n": "\n", "r": "\r", "t": "\t"}
    return _ESCAPE.sub(lambda m: named.get(m[1]) or chr(int(m[1][1:], 16)), text)


@pytest.mark.parametrize("name", NAMES.values(), ids=NAMES.keys())
def test_printable_output_is_inert_and_means_exactly_the_input(name: str) -> None:
    shown = printable(name)
    assert_inert(shown, [])
    assert "\\" not in _ESCAPE.sub("", shown)  # every backslash starts a real escape
    assert _unescape(shown) == name  # so no two names look alike: nothing can be forged


def test_common_names_are_untouched_and_quoted_escapes_quotes() -> None:
    for name in ("handler", "Checkout.post", "/app/wéb.py", "Task-7 (\u00e9t\u00e9)", "<module>"):
        assert printable(name) is name
    assert quoted('say "hi"\n') == '"say \\"hi\\"\\n"'
    assert printable("\\x1b") != printable("\x1b")


# --- every text format ----------------------------------------------------------------------


def _renamed(function: Callable[..., Any], name: str) -> Callable[..., Any]:
    """``function`` with ``name`` as its code's name, qualified name and file name."""
    changes: dict[str, Any] = {"co_name": name, "co_filename": name}
    if hasattr(function.__code__, "co_qualname"):
        changes["co_qualname"] = name
    code = function.__code__.replace(**changes)
    return types.FunctionType(code, function.__globals__, name, function.__defaults__,
                              function.__closure__)


def _park(stop: threading.Event) -> None:
    stop.wait(30)


def _start(thread: threading.Thread) -> None:
    thread.start()


async def _sleep_forever() -> None:
    await asyncio.sleep(30)


@pytest.fixture(scope="module")
def hostile_threads() -> Iterator[None]:
    """One thread per hostile name, started by and running functions of that name."""
    stop = threading.Event()
    threads = [threading.Thread(target=_renamed(_park, name), args=(stop,), name=name,
                                daemon=True) for name in NAMES.values()]
    for thread, name in zip(threads, NAMES.values(), strict=True):
        _renamed(_start, name)(thread)
    yield
    stop.set()
    for thread in threads:
        thread.join(5)


def _get(path: str) -> str:
    """GET from a PprofApp in-process while one task per hostile name is pending on its loop."""

    async def go() -> str:
        tasks = [asyncio.create_task(_renamed(_sleep_forever, name)(), name=name)
                 for name in NAMES.values()]
        await asyncio.sleep(0)  # let each task reach its await
        try:
            transport = httpx.ASGITransport(app=PprofApp(Settings()))
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
                response = await c.get(path)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        assert response.status_code == 200, response.text
        return response.content.decode("utf-8")

    return asyncio.run(go())


@pytest.mark.usefixtures("hostile_threads")
@pytest.mark.parametrize("path", [
    "/goroutine?debug=1", "/goroutine?debug=2", "/goroutine?format=folded",
    "/threadcreate?debug=1", "/threadcreate?format=folded",
])
def test_served_text_formats_keep_hostile_names_inert(path: str) -> None:
    text = _get(path)
    assert_inert(text, NAMES.values())
    if "debug=2" in path:  # thread and task names are quoted in the dump
        for name in NAMES.values():
            assert f"{quoted(name)} [" in text


def _frames() -> list[Any]:
    return [frame(name, name, 7) for name in NAMES.values()]


def test_top_table() -> None:
    cpu = (ValueType("samples", "count"), ValueType("cpu", "nanoseconds"))
    samples = tuple(Sample((f,), (1, 10_000_000), {"thread": f.function}) for f in _frames())
    profile = Profile(cpu, samples, comments=tuple(NAMES.values()))
    assert_inert(render_top(profile, "profile").body.decode(), NAMES.values())


def test_callgrind() -> None:
    frames = _frames()
    functions = tuple(
        FunctionStats(f, 1, 1, 10, 20, ((frames[0], CallStats(1, 1, 10, 20)),) if i else ())
        for i, f in enumerate(frames)
    )
    capture = TracingCapture(clock="wall", functions=functions, time_ns=1, duration_ns=2)
    assert_inert(render_callgrind(capture, "profile").body.decode(), NAMES.values())


def test_heap_text() -> None:
    profile = Profile((INUSE_OBJECTS, INUSE_SPACE),
                      tuple(Sample((f,), (1, 64)) for f in _frames()),
                      period_type=INUSE_SPACE, period=1, comments=tuple(NAMES.values()))
    capture = HeapCapture(profile, "snapshot", TraceState(1, 2, 3, 4))
    assert_inert(render_heap_text(capture, "heap").body.decode(), NAMES.values())


def test_objects_text() -> None:
    capture = ObjectsCapture(counts={name: 1 for name in NAMES.values()},
                             sizes={name: 56 for name in NAMES.values()},
                             total_objects=len(NAMES), time_ns=1)
    assert_inert(render_objects_text(capture, "objects").body.decode(), NAMES.values())


def test_stalls_text() -> None:
    stalls = tuple(
        Stall(start_ns=0, start_wall_ns=1, duration_ns=200_000_000, stack=(f,),
              stacks=(((f,), 3), ((frame(f.function + "2", "/x.py", 1),), 1)), task=f.function,
              route=f.function, request_id=f.function, thread=f.function)
        for f in _frames()
    )
    profile = Profile((CONTENTIONS, DELAY), tuple(Sample(s.stack, (1, 1)) for s in stalls),
                      comments=tuple(NAMES.values()))
    capture = StallCapture(profile, stalls, threshold_ms=100, taken_ns=1, seen=len(stalls),
                           dropped=0)
    text = render_stalls_text(capture, "block").body.decode()
    assert_inert(text, NAMES.values())
    for name in NAMES.values():
        assert f"task {quoted(name)}" in text


# --- the audit log --------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES.values(), ids=NAMES.keys())
def test_a_refused_client_cannot_forge_or_colour_audit_lines(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The path arrives percent-decoded in the ASGI scope, so any character can be sent."""
    caplog.set_level(logging.INFO, logger="pyprof_http.audit")
    path = f"/goroutine{name} client=127.0.0.1 principal=token path=/ status=200"

    async def go() -> int:
        transport = httpx.ASGITransport(app=PprofApp(Settings()), client=("192.0.2.7", 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            request = c.build_request("GET", "/")
            request.url = request.url.copy_with(raw_path=_percent(path).encode("ascii"))
            return (await c.send(request)).status_code

    assert asyncio.run(go()) == 403
    (record,) = [r for r in caplog.records if r.name == "pyprof_http.audit"]
    message = record.getMessage()
    assert_inert(message, [])
    assert "\n" not in message and len(message.splitlines()) == 1
    assert message.startswith("client=192.0.2.7 principal=anonymous path=/goroutine")
    assert message.rsplit(" status=", 1)[1].startswith("403 ")
    assert "evil-" in message and "FORGED" in message


def _percent(text: str) -> str:
    data = text.encode("utf-8", "surrogatepass")
    return "".join(chr(b) if 0x21 <= b < 0x7f and b not in b"%?#" else f"%{b:02X}" for b in data)


def test_an_authorizers_principal_cannot_forge_audit_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pyprof_http.audit")
    principal = "alice\u2028client=10.0.0.1 principal=token\x1b[2J"
    app = PprofApp(Settings(authorize=lambda request: principal))

    async def go() -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            return (await c.get("/cmdline")).status_code

    assert asyncio.run(go()) == 200
    (record,) = [r for r in caplog.records if r.name == "pyprof_http.audit"]
    message = record.getMessage()
    assert_inert(message, [principal])
    assert f"principal={printable(principal)} path=" in message


def test_an_error_reason_that_echoes_input_carries_no_control_character() -> None:
    from pyprof_http.errors import BadRequest

    reason = BadRequest("unknown parameter '\x1b[2J\x07\u2028x'").reason
    assert "\x1b" not in reason and "\x07" not in reason and "\u2028" not in reason
    assert "\\x1b[2J" in reason
