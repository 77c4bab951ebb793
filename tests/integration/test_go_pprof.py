"""The real client: ``go tool pprof`` reading the sample service over HTTP."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest
from live_server import Server
from sample_service import HOSTILE_TASK_NAME, WORKER_THREAD_NAME

GO_TIMEOUT_S = 60


def go_pprof(go: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``go tool pprof ARGS`` with a private HOME and PPROF_TMPDIR; never through a proxy."""
    env = {
        **os.environ,
        "HOME": str(home),
        "PPROF_TMPDIR": str(home / "saved"),
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    env.pop("PPROF_BINARY_PATH", None)
    return subprocess.run([go, "tool", "pprof", *args], capture_output=True, text=True, env=env,
                          timeout=GO_TIMEOUT_S, check=False)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (
        f"go tool pprof exited {result.returncode}\nstdout:\n{result.stdout}\n"
        f"stderr:\n{result.stderr}"
    )
    return result.stdout


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path


def test_raw_shows_sample_type_labels_and_functions(go_binary: str, home: Path,
                                                    server: Server) -> None:
    out = ok(go_pprof(go_binary, home, "-raw", server.url("/goroutine")))
    assert "PeriodType: goroutine count" in out
    assert "\ngoroutine/count\n" in out
    for name in ("integration_nested_helper", "integration_waiter_coroutine",
                 "integration_worker_thread"):
        assert f" {name} " in out, name
    assert "kind:[task]" in out and "kind:[thread]" in out
    assert "task:[integration-waiter]" in out
    assert f"task:[{HOSTILE_TASK_NAME}]" in out
    assert f"thread:[{WORKER_THREAD_NAME}]" in out
    saved = list((home / "saved").glob("pprof.*goroutine*.pb.gz"))
    assert saved, "go tool pprof saved no copy in PPROF_TMPDIR"


def test_top_lists_our_functions(go_binary: str, home: Path, server: Server) -> None:
    out = ok(go_pprof(go_binary, home, "-top", server.url("/goroutine")))
    assert "Type: goroutine" in out
    assert "Showing nodes accounting for" in out
    lines = out.splitlines()
    for name in ("integration_nested_helper", "integration_worker_thread"):
        assert any(line.split()[-1:] == [name] for line in lines), f"{name} not in:\n{out}"


def test_tagfocus_slices_by_thread_label(go_binary: str, home: Path, server: Server) -> None:
    out = ok(go_pprof(go_binary, home, "-traces", f"-tagfocus=thread={WORKER_THREAD_NAME}",
                      server.url("/goroutine")))
    assert "integration_worker_thread" in out
    assert "integration_nested_helper" not in out  # tasks run on MainThread: filtered out


def test_non_default_prefix(go_binary: str, home: Path, ops_server: Server) -> None:
    out = ok(go_pprof(go_binary, home, "-top", ops_server.url("/goroutine")))
    assert "integration_nested_helper" in out


def test_delta_with_seconds(go_binary: str, home: Path, server: Server) -> None:
    result = go_pprof(go_binary, home, "-raw", "-seconds=1", server.url("/goroutine"))
    out = ok(result)
    assert "goroutine/count" in out
    assert "Duration: 1" in out
    assert "goroutine?seconds=1" in result.stderr  # go tool pprof added the parameter


@pytest.mark.parametrize(("path", "status"), [
    ("/goroutine?debug=7", "400 Bad Request"),
    ("/goroutine?seconds=abc", "400 Bad Request"),
    ("/nosuch", "404 Not Found"),
])
def test_error_reason_is_shown(go_binary: str, home: Path, server: Server, path: str,
                               status: str) -> None:
    reason = httpx.get(server.url(path), trust_env=False, timeout=10).text.strip()
    assert reason and "\n" not in reason
    result = go_pprof(go_binary, home, "-raw", server.url(path))
    assert result.returncode != 0
    assert f"server response: {status} - {reason}" in result.stderr, result.stderr


def test_unknown_profile_reason_text(go_binary: str, home: Path, server: Server) -> None:
    result = go_pprof(go_binary, home, "-top", server.url("/nosuch"))
    assert result.returncode != 0
    assert "server response: 404 Not Found - Unknown profile" in result.stderr, result.stderr


def test_module_frames_keep_their_name(go_binary: str, home: Path, server: Server) -> None:
    out = ok(go_pprof(go_binary, home, "-top", server.url("/goroutine")))
    assert "<unknown>" not in out
    assert any(line.split()[-1:] == ["<module>"] for line in out.splitlines()), out


def test_heap_window_and_objects_read_by_pprof(go_binary: str, home: Path,
                                               server: Server) -> None:
    # a window traces what the service allocates while it runs; /heap/... stays off after it
    out = ok(go_pprof(go_binary, home, "-top", "-sample_index=inuse_space",
                      server.url("/heap?seconds=1&source=tracemalloc")))
    assert "Type: inuse_space" in out
    assert "pyprof_http heap window" in out  # our comment, printed first by pprof
    objects = ok(go_pprof(go_binary, home, "-top", "-sample_index=space",
                          server.url("/objects")))
    assert "Type: space" in objects
    assert "dict" in objects  # every Python heap has dicts
    not_tracing = go_pprof(go_binary, home, "-top", server.url("/heap?source=tracemalloc"))
    assert not_tracing.returncode != 0
    assert "412" in not_tracing.stderr and "seconds=N" in not_tracing.stderr


def test_raw_reads_created_by_labels(go_binary: str, home: Path, server: Server) -> None:
    """debug=0 carries where each task's chain of spawns began (created_by); go tool pprof
    reads it as a label and can slice by it (-tagfocus)."""
    out = ok(go_pprof(go_binary, home, "-raw", server.url("/goroutine?debug=0")))
    child = [line for line in out.splitlines() if "task:[integration-child]" in line]
    # the child was spawned by integration-parent, which the lifespan made: the chain's start
    assert child and "created_by:[lifespan " in child[0], out
    assert "sample_service.py:" in child[0].split("created_by:[", 1)[1].split("]", 1)[0]
    focused = ok(go_pprof(go_binary, home, "-raw", "-tagfocus=created_by=lifespan",
                          server.url("/goroutine?debug=0")))
    assert "task:[integration-child]" in focused
    assert "kind:[thread]" not in focused  # threads have no created_by: focused away
