"""Pushing from a real uvicorn (the sample service with ``PYPROF_PUSH_URL``).

A server that hangs holds only the pusher thread: the app answers while the push is stuck (a
relative check: the capture server still holds that request when the app's answer arrives).
Under ``uvicorn --workers 2`` each worker pushes its own series, told apart by ``pid``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from live_server import HERE, _answers, _free_port, run_server

import proto_schema
from capture_server import CaptureServer

SECRET = "pusher-password-1234567890"


def _pids(server: CaptureServer) -> set[str]:
    pids = set()
    for request in list(server.requests):
        if not request.path.startswith("/push.v1"):
            continue
        for series in proto_schema.push_request(request.payload()).series:
            pids.add(dict((p.name, p.value) for p in series.labels)["pid"])
    return pids


def test_a_hanging_server_never_delays_the_app(tmp_path: Path) -> None:
    with CaptureServer("hang") as capture:
        env = {"PYPROF_PUSH_URL": capture.url, "PYPROF_PUSH_INTERVAL": "0.2",
               "PYPROF_PUSH_TIMEOUT": "60", "PYPROF_PUSH_BASIC_AUTH_USER": "u",
               "PYPROF_PUSH_BASIC_AUTH_PASSWORD": SECRET, "PYPROF_PUSH_SERVICE_NAME": "sample"}
        with run_server("/debug/pprof", tmp_path, env) as server:
            (stuck,) = capture.wait_for(1)  # the pusher is now blocked in this request
            for path in ("/healthz", "/debug/pprof/goroutine?debug=1", "/debug/pprof/"):
                with urllib.request.urlopen(server.base_url + path, timeout=60) as response:
                    body = response.read()
                    assert response.status == 200
            assert len(capture.requests) == 1 and not capture.release.is_set()
            assert b"pushing to " + capture.url.encode() in body  # the index's status line
            labels = {p.name: p.value
                      for s in proto_schema.push_request(stuck.payload()).series
                      for p in s.labels}
            assert labels["service_name"] == "sample" and labels["pid"] != str(os.getpid())
            capture.mode = "ok"
            capture.release.set()  # the stuck push ends; the next ones go through
            capture.wait_for(2)
            log = server.log_text()
        assert SECRET not in log


@contextlib.contextmanager
def _workers(env: dict[str, str], workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    port = _free_port()
    command = [sys.executable, "-m", "uvicorn", "sample_service:app", "--app-dir", str(HERE),
               "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
               "--lifespan", "on", "--no-access-log", "--log-level", "warning"]
    with (workdir / "workers.log").open("wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **env}, cwd=workdir)
    try:
        deadline = time.monotonic() + 60
        while not _answers(f"http://127.0.0.1:{port}/healthz"):
            assert proc.poll() is None and time.monotonic() < deadline, (
                (workdir / "workers.log").read_text())
            time.sleep(0.1)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="uvicorn workers need a POSIX system")
def test_each_worker_pushes_its_own_series(tmp_path: Path) -> None:
    with CaptureServer() as capture:
        env = {"PYPROF_PUSH_URL": capture.url, "PYPROF_PUSH_INTERVAL": "0.3"}
        with _workers(env, tmp_path) as proc:
            deadline = time.monotonic() + 60
            while len(_pids(capture)) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            pids = _pids(capture)
        assert len(pids) == 2, pids
        assert str(proc.pid) not in pids and str(os.getpid()) not in pids
