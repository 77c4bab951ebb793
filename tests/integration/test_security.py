"""The security model against a real uvicorn: a credential matrix built from the registry.

The server allows only 127.0.0.1/32 and requires a token. "Outside" clients are made on this
machine by binding the client socket to 127.0.0.2, which is loopback but not in allow_clients.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from live_server import Server, run_server

from pyprof_http.registry import PROFILES

TOKEN = "integration-token-7f3a9c2e5b1d"
ROUTES = {"": 301, "/": 200, "/no-such-profile": 404}
# a duration profile records for real: one second of wall time keeps the matrix fast
ROUTES.update({f"/{spec.name}" + ("?seconds=1&mode=wall" if spec.duration else ""): 200
               for spec in PROFILES if spec.name != "heap"})
ROUTES["/heap?seconds=1"] = 200  # tracing is off in the test service: a window, not a 412
ROUTES["/mutex"] = 412  # lock profiling is off in the test service


def _basic(password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"pprof:{password}".encode()).decode()}


CREDENTIALS: dict[str, tuple[str, dict[str, str]]] = {
    "none": ("127.0.0.1", {}),
    "wrong bearer": ("127.0.0.1", {"Authorization": "Bearer not-the-token-at-all"}),
    "right bearer": ("127.0.0.1", {"Authorization": f"Bearer {TOKEN}"}),
    "right basic": ("127.0.0.1", _basic(TOKEN)),
    "wrong basic": ("127.0.0.1", _basic("not-the-token-at-all")),
    "outside client, right bearer": ("127.0.0.2", {"Authorization": f"Bearer {TOKEN}"}),
}


def expected(route_status: int, credential: str) -> int:
    if credential.startswith("outside"):
        return 403  # the address is checked first: nothing else is revealed
    if credential in ("none", "wrong bearer", "wrong basic"):
        return 401  # even for unknown profiles: no probing of what exists
    return route_status


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"PYPROF_TOKEN": TOKEN, "PYPROF_ALLOW_CLIENTS": "127.0.0.1/32"}
    with run_server("/debug/pprof", tmp_path_factory.mktemp("guarded"), env) as running:
        yield running


@pytest.mark.parametrize("credential", list(CREDENTIALS))
@pytest.mark.parametrize("route", list(ROUTES))
def test_credential_matrix(guarded: Server, route: str, credential: str) -> None:
    source, headers = CREDENTIALS[credential]
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=10, follow_redirects=False) as client:
        response = client.get(guarded.url(route), headers=headers)
    assert response.status_code == expected(ROUTES[route], credential), response.text
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
    if response.status_code == 401:
        assert response.headers["WWW-Authenticate"] == 'Basic realm="pprof", Bearer realm="pprof"'
    if response.status_code in (401, 403):
        assert response.headers["X-Go-Pprof"] == "1"
        assert response.text.count("\n") == 1
        assert TOKEN not in response.text


def test_go_tool_pprof_reads_with_token_in_url(guarded: Server, go_binary: str,
                                                tmp_path) -> None:
    url = f"http://:{TOKEN}@127.0.0.1:{guarded.port}/debug/pprof/goroutine"
    env = {**os.environ, "PPROF_TMPDIR": str(tmp_path), "HOME": str(tmp_path)}
    done = subprocess.run([go_binary, "tool", "pprof", "-top", url], capture_output=True,
                          text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert "integration_nested_helper" in done.stdout


def test_go_tool_pprof_shows_why_without_token(guarded: Server, go_binary: str,
                                               tmp_path) -> None:
    url = f"http://127.0.0.1:{guarded.port}/debug/pprof/goroutine"
    env = {**os.environ, "PPROF_TMPDIR": str(tmp_path), "HOME": str(tmp_path)}
    done = subprocess.run([go_binary, "tool", "pprof", "-top", url], capture_output=True,
                          text=True, timeout=60, env=env)
    assert done.returncode != 0
    assert "401" in done.stderr and "credentials required" in done.stderr


def test_insecure_settings_refuse_to_start(tmp_path) -> None:
    env = {**os.environ, "PYPROF_ALLOW_CLIENTS": "0.0.0.0/0"}
    done = subprocess.run(
        [sys.executable, "-c", "import pyprof_http; pyprof_http.PprofApp()"],
        capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path,
    )
    assert done.returncode != 0
    assert "ConfigError" in done.stderr and "token" in done.stderr
