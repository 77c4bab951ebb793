"""Run ``sample_service`` under a real uvicorn in a subprocess, on a free loopback port.

Used by ``conftest.py``; a module of its own so tests can import :class:`Server` by name.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
STARTUP_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Server:
    """A running sample service."""

    base_url: str
    """``http://127.0.0.1:PORT`` (no trailing slash)."""
    prefix: str
    """Where pyprof_http is mounted, e.g. ``/debug/pprof`` (no trailing slash)."""
    host: str
    port: int
    log: Path

    def url(self, path: str = "") -> str:
        """URL of ``path`` below the prefix: ``url("/goroutine")``."""
        return f"{self.base_url}{self.prefix}{path}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT_S)


@contextlib.contextmanager
def run_server(
    prefix: str, workdir: Path, extra_env: dict[str, str] | None = None,
    app: str = "sample_service:app",
) -> Iterator[Server]:
    """Start ``app`` (default ``sample_service:app``) with pyprof_http at ``prefix``; yield once
    it answers ``/healthz``.

    ``extra_env`` passes settings (``PYPROF_TOKEN``, ``PYPROF_ALLOW_CLIENTS``, ...) to the server.
    """
    env = {**os.environ, "PYPROF_IT_PREFIX": prefix, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    for _attempt in range(3):  # the free port can be taken between probe and bind: retry
        port = _free_port()
        log = workdir / f"uvicorn-{port}.log"
        command = [
            sys.executable, "-m", "uvicorn", app,
            "--app-dir", str(HERE), "--host", "127.0.0.1", "--port", str(port),
            "--lifespan", "on", "--loop", "asyncio", "--no-access-log", "--log-level", "warning",
            "--timeout-graceful-shutdown", "2",
        ]
        with log.open("wb") as log_file:
            proc = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                                    cwd=workdir)
        try:
            server = Server(f"http://127.0.0.1:{port}", prefix.rstrip("/"), "127.0.0.1", port, log)
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            while proc.poll() is None and time.monotonic() < deadline:
                if _answers(server.base_url + "/healthz"):
                    break
                time.sleep(0.05)
            if proc.poll() is None and _answers(server.base_url + "/healthz"):
                yield server
                return
            if proc.poll() is None:
                raise AssertionError(f"uvicorn did not answer within {STARTUP_TIMEOUT_S}s:\n"
                                     f"{server.log_text()}")
            if "address already in use" not in server.log_text().lower():
                raise AssertionError(f"uvicorn exited with {proc.returncode}:\n"
                                     f"{server.log_text()}")
        finally:
            _stop(proc)
    raise AssertionError("could not bind a free loopback port in 3 attempts")
