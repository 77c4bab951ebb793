"""Real servers for the integration tests: ``sample_service`` under uvicorn, in a subprocess.

``server`` mounts pyprof_http at the default ``/debug/pprof``; ``ops_server`` at the non-default
``/ops/profiling``. Each runs on a free loopback port for the whole session and is stopped at
teardown (terminate, wait, kill): no process outlives the tests.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from live_server import Server, run_server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The sample service with pyprof_http at the default ``/debug/pprof``."""
    with run_server("/debug/pprof", tmp_path_factory.mktemp("server-default")) as running:
        yield running


@pytest.fixture(scope="session")
def ops_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The sample service with pyprof_http at the non-default ``/ops/profiling``."""
    with run_server("/ops/profiling", tmp_path_factory.mktemp("server-ops")) as running:
        yield running


@pytest.fixture(scope="session")
def go_binary() -> str:
    """``go`` is a declared system dependency (``make system-deps``): missing is a failure."""
    go = shutil.which("go") or ("/usr/bin/go" if Path("/usr/bin/go").exists() else None)
    assert go is not None, (
        "the `go` command is required by the integration tests (go tool pprof); "
        "install it with `make system-deps` (Debian package golang-go)"
    )
    return go
