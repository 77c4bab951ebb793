import io
import pstats

from pyprof_http.captures.tracing import CallStats, FunctionStats, TracingCapture
from pyprof_http.collectors.tracing import Tracer
from pyprof_http.model import frame
from pyprof_http.render.pstats_out import render_pstats

MAIN = frame("main", "/app/main.py", 3)
HANDLE = frame("Server.handle", "/app/server.py", 41)
FIB = frame("fib", "/app/math.py", 7)


def _capture() -> TracingCapture:
    return TracingCapture(
        clock="cpu",
        functions=(
            FunctionStats(MAIN, 1, 1, 100_000_000, 3_000_000_000, ()),
            FunctionStats(HANDLE, 2, 2, 400_000_000, 2_900_000_000,
                          ((MAIN, CallStats(2, 2, 400_000_000, 2_900_000_000)),)),
            FunctionStats(FIB, 9, 3, 2_500_000_000, 2_500_000_000, (
                (HANDLE, CallStats(3, 3, 1_000_000_000, 2_500_000_000)),
                (FIB, CallStats(6, 0, 1_500_000_000, 1_500_000_000)),
            )),
        ),
        time_ns=1,
        duration_ns=2,
    )


def _load(tmp_path, capture: TracingCapture) -> pstats.Stats:
    rendered = render_pstats(capture, "profile")
    path = tmp_path / rendered.filename
    path.write_bytes(rendered.body)
    return pstats.Stats(str(path), stream=io.StringIO())


def test_media_type_and_filename() -> None:
    rendered = render_pstats(_capture(), "profile")
    assert rendered.media_type == "application/octet-stream"
    assert rendered.filename == "profile.pstats"


def test_loads_as_cprofile_would_have_written_it(tmp_path) -> None:
    stats = _load(tmp_path, _capture())
    handle, fib = ("/app/server.py", 41, "Server.handle"), ("/app/math.py", 7, "fib")
    assert stats.stats[fib] == (3, 9, 2.5, 2.5, {handle: (3, 3, 1.0, 2.5), fib: (6, 0, 1.5, 1.5)})
    assert stats.stats[handle][:4] == (2, 2, 0.4, 2.9)
    assert stats.total_calls == 12
    assert stats.prim_calls == 6
    assert abs(stats.total_tt - 3.0) < 1e-9


def test_print_stats_sorted_by_tottime_shows_the_functions(tmp_path) -> None:
    stats = _load(tmp_path, _capture())
    stats.sort_stats("tottime").print_stats()
    out = stats.stream.getvalue()
    assert "9/3" in out  # recursive calls shown as total/primitive, as for cProfile
    lines = [line for line in out.splitlines() if "/app/" in line]
    assert [line.rsplit("(", 1)[1] for line in lines] == ["fib)", "Server.handle)", "main)"]
    stats.print_callers("fib")
    assert "/app/server.py:41(Server.handle)" in stats.stream.getvalue()


def test_a_real_trace_loads(tmp_path) -> None:
    def tracing_leaf() -> int:
        return sum(range(1000))

    def tracing_root() -> None:  # entered while tracing, so it is seen as the caller
        for _ in range(4):
            tracing_leaf()

    tracer = Tracer("wall")
    tracer.start()
    tracing_root()
    stats = _load(tmp_path, tracer.stop())
    found = [(key, value) for key, value in stats.stats.items() if key[2].endswith("tracing_leaf")]
    assert len(found) == 1
    _, (cc, nc, tt, ct, callers) = found[0]
    assert cc == nc == 4
    assert 0 < tt <= ct
    assert [edge[0] for key, edge in callers.items() if key[2].endswith("tracing_root")] == [4]
    stats.sort_stats("tottime").print_stats()
    assert "tracing_leaf" in stats.stream.getvalue()
