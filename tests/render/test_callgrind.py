import shutil
import subprocess
import sys

import pytest

from pyprof_http.captures.tracing import CallStats, FunctionStats, TracingCapture
from pyprof_http.collectors.tracing import Tracer
from pyprof_http.model import frame
from pyprof_http.render.callgrind import render_callgrind

MAIN = frame("main", "/app/main.py", 3)
HANDLE = frame("Server.handle", "/app/server.py", 41)
QUERY = frame("query", "/app/db.py", 7)
LAMBDA_A = frame("<lambda>", "/app/db.py", 20)
LAMBDA_B = frame("<lambda>", "/app/server.py", 60)


def _capture() -> TracingCapture:
    return TracingCapture(
        clock="wall",
        functions=(
            FunctionStats(MAIN, 1, 1, 100, 10_100, ()),
            FunctionStats(HANDLE, 2, 2, 1_000, 10_000, ((MAIN, CallStats(2, 2, 1_000, 10_000)),)),
            FunctionStats(QUERY, 4, 4, 9_000, 9_000, ((HANDLE, CallStats(4, 4, 9_000, 9_000)),)),
            FunctionStats(LAMBDA_A, 1, 1, 5, 5, ()),
            FunctionStats(LAMBDA_B, 1, 1, 6, 6, ()),
        ),
        time_ns=1,
        duration_ns=2,
    )


Calls = dict[tuple[str, str], tuple[int, int]]


def _parse(text: str) -> tuple[dict[str, str], dict[str, int], Calls]:
    """A small callgrind reader: header, self cost per function, calls per (caller, callee)."""
    header: dict[str, str] = {}
    names: dict[tuple[str, str], str] = {}
    self_cost: dict[str, int] = {}
    calls: Calls = {}
    fn = cfn = ""
    pending: int | None = None

    def resolve(kind: str, value: str) -> str:
        if value.startswith("("):
            ident, _, name = value.partition(")")
            if name.strip():
                names[(kind, ident)] = name.strip()
            return names[(kind, ident)]
        return value

    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if sep and key in ("fl", "cfl"):
            resolve("fl", value)
        elif sep and key == "fn":
            fn = resolve("fn", value)
        elif sep and key == "cfn":
            cfn = resolve("fn", value)
        elif sep and key == "calls":
            pending = int(value.split()[0])
        elif line[0].isdigit():
            _, cost = line.split()
            if pending is None:
                self_cost[fn] = self_cost.get(fn, 0) + int(cost)
            else:
                calls[(fn, cfn)] = (pending, int(cost))
                pending = None
        else:
            name, _, value = line.partition(":")
            header[name] = value.strip()
    return header, self_cost, calls


def test_media_type_filename_and_header() -> None:
    rendered = render_callgrind(_capture(), "profile")
    assert rendered.media_type == "application/octet-stream"
    assert rendered.filename == "callgrind.out.profile"
    header, _, _ = _parse(rendered.body.decode())
    assert header["version"] == "1"
    assert header["events"] == "Wall_ns"
    assert header["positions"] == "line"
    assert header["summary"] == str(100 + 1_000 + 9_000 + 5 + 6)


def test_self_costs_and_inclusive_call_edges() -> None:
    _, self_cost, calls = _parse(render_callgrind(_capture(), "x").body.decode())
    assert self_cost["main"] == 100
    assert self_cost["Server.handle"] == 1_000
    assert self_cost["query"] == 9_000
    assert calls == {("main", "Server.handle"): (2, 10_000), ("Server.handle", "query"): (4, 9_000)}


def test_names_are_compressed_and_only_ambiguous_ones_get_a_location() -> None:
    text = render_callgrind(_capture(), "x").body.decode()
    _, self_cost, _ = _parse(text)
    assert self_cost["<lambda> /app/db.py:20"] == 5
    assert self_cost["<lambda> /app/server.py:60"] == 6
    assert text.count("/app/db.py\n") == 1  # each file spelled out once, then by number
    assert text.count("Server.handle") == 1


def _real_capture() -> TracingCapture:
    def tracing_leaf() -> int:
        return sum(range(1000))

    def tracing_root() -> None:  # entered while tracing, so it is seen as the caller
        for _ in range(5):
            tracing_leaf()

    tracer = Tracer("cpu")
    tracer.start()
    tracing_root()
    return tracer.stop()


def test_a_real_trace_parses() -> None:
    _, self_cost, calls = _parse(render_callgrind(_real_capture(), "x").body.decode())
    leaf = [value for key, value in calls.items()
            if key[0].endswith("tracing_root") and key[1].endswith("tracing_leaf")]
    assert len(leaf) == 1 and leaf[0][0] == 5
    assert any(name.endswith("tracing_leaf") for name in self_cost)


@pytest.mark.skipif(shutil.which("callgrind_annotate") is None, reason="valgrind not installed")
def test_callgrind_annotate_reads_it(tmp_path) -> None:
    path = tmp_path / "callgrind.out.x"
    path.write_bytes(render_callgrind(_capture(), "x").body)
    out = subprocess.run(["callgrind_annotate", str(path)], capture_output=True, text=True,
                         check=True).stdout
    assert "10,111" in out  # program totals
    assert "/app/db.py:query" in out


def test_gprof2dot_reads_it(tmp_path) -> None:
    path = tmp_path / "callgrind.out.x"
    path.write_bytes(render_callgrind(_capture(), "x").body)
    out = subprocess.run([sys.executable, "-m", "gprof2dot", "-f", "callgrind", str(path)],
                         capture_output=True, text=True, check=True).stdout
    assert '"Server.handle" -> query' in out
