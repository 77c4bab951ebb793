"""The security model against a real uvicorn: a credential matrix built from the registry.

The server allows only 127.0.0.1/32 and requires a token. "Outside" clients are made on this
machine by binding the client socket to 127.0.0.2, which is loopback but not in allow_clients.
Hostile header bytes go over a raw socket, exactly as written, since HTTP clients refuse them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import subprocess
import sys
import time
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
    with run_server("/debug/pprof", tmp_path_factory.mktemp("guarded"), env,
                    app="audited_service:app") as running:
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


def raw_get(port: int, path: str, headers: list[bytes], source: str = "127.0.0.1",
            version: bytes = b"HTTP/1.1") -> tuple[int, bytes]:
    """Send ``GET path`` with exactly these header lines; the status and the body (or 0 and
    b"" if the server closed without an answer)."""
    request = b"GET " + path.encode() + b" " + version + b"\r\n"
    request += b"".join(line + b"\r\n" for line in [*headers, b"Connection: close"]) + b"\r\n"
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=20,
                                  source_address=(source, 0)) as sock:
        try:  # a server refusing the request may answer and reset before reading it all
            sock.sendall(request)
            while chunk := sock.recv(65536):
                answer += chunk
        except (ConnectionResetError, BrokenPipeError):
            pass
    if not answer:
        return 0, b""
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def _host(server: Server) -> bytes:
    return f"Host: 127.0.0.1:{server.port}".encode()


TOKEN_BYTES = TOKEN.encode()


SERVER_REJECTS = 400
"""uvicorn (h11) itself refuses NUL in a header value before any app sees it; the ASGI
tests (tests/test_auth.py) hand those bytes to the app directly."""


@pytest.mark.parametrize(("value", "expected"), [
    (b"Basic \xc3\xa9", 401),                                 # was the host's 500 + traceback
    (b"Basic \xff\xfe\xfd", 401),
    (b"Basic " + base64.b64encode(b"pprof:\xff\xfe"), 401),    # non-UTF-8 password
    (b"Basic " + base64.b64encode(TOKEN_BYTES), 401),          # no colon
    (b"Basic !!!", 401),
    (b"Bearer \xe2\x80\xa8" + TOKEN_BYTES, 401),
    (b"Bearer " + b"x" * 8000, 401),
    (b"\xff " + TOKEN_BYTES, 401),
    (b"Bearer \x00" + TOKEN_BYTES, SERVER_REJECTS),
    (b"Bearer " + TOKEN_BYTES + b"\x7f", 401),
])
def test_malformed_authorization_bytes_are_a_401_from_a_real_server(
        guarded: Server, value: bytes, expected: int) -> None:
    status, body = raw_get(guarded.port, "/debug/pprof/cmdline",
                           [_host(guarded), b"Authorization: " + value])
    assert status == expected, body
    assert TOKEN_BYTES not in body
    if expected == 401:
        assert body.count(b"\n") == 1
    assert "Traceback" not in guarded.log_text()


def test_a_non_ascii_bearer_token_matches_over_a_real_server(tmp_path) -> None:
    token = "jeton-secret-ünïcødé-7f3a"
    env = {"PYPROF_TOKEN": token}
    with run_server("/debug/pprof", tmp_path, env) as server:
        for value in (b"Bearer " + token.encode(),
                      b"Basic " + base64.b64encode(b"u:" + token.encode())):
            status, body = raw_get(server.port, "/debug/pprof/cmdline",
                                   [_host(server), b"Authorization: " + value])
            assert status == 200, body


def test_a_huge_authorization_header_is_refused_not_a_500(guarded: Server) -> None:
    status, _ = raw_get(guarded.port, "/debug/pprof/cmdline",
                        [_host(guarded), b"Authorization: Bearer " + b"y" * 200_000])
    assert status in (0, 400, 401, 413, 431)  # the server's own limit may answer first
    assert raw_get(guarded.port, "/debug/pprof/cmdline", [_host(guarded)])[0] == 401


@pytest.mark.parametrize(("host", "status"), [
    (b"evil.example", 403),
    (b"localhost.evil.example", 403),
    (b"evil.example:{port}", 403),
    (b"127.0.0.1:{port}", 200),
    (b"[::1]:{port}", 200),
    (b"localhost", 200),
    (b"localhost:{port}", 200),
])
def test_host_without_a_token_on_a_real_server(server: Server, host: bytes, status: int) -> None:
    line = b"Host: " + host.replace(b"{port}", str(server.port).encode())
    answer, body = raw_get(server.port, "/debug/pprof/cmdline", [line])
    assert answer == status, body
    if status == 403:
        assert b"DNS rebinding" in body and b"PYPROF_ALLOWED_HOSTS" in body
        assert body.count(b"\n") == 1


def test_http_1_0_without_host_is_served(server: Server) -> None:
    status, body = raw_get(server.port, "/debug/pprof/cmdline", [], version=b"HTTP/1.0")
    assert status == 200, body


def test_host_is_not_restricted_with_a_token(guarded: Server) -> None:
    status, _ = raw_get(guarded.port, "/debug/pprof/cmdline",
                        [b"Host: profiler.internal", b"Authorization: Bearer " + TOKEN_BYTES])
    assert status == 200


def _proxied(tmp_path_factory: pytest.TempPathFactory, proxy: str,
             server_trusts: str) -> contextlib.AbstractContextManager[Server]:
    """A guarded server with ``trusted_proxies=proxy`` whose uvicorn rewrites the client from
    X-Forwarded-For for peers in ``server_trusts`` (FORWARDED_ALLOW_IPS; "" for none)."""
    env = {"PYPROF_TOKEN": TOKEN, "PYPROF_ALLOW_CLIENTS": "127.0.0.1/32",
           "PYPROF_TRUSTED_PROXIES": proxy, "FORWARDED_ALLOW_IPS": server_trusts}
    return run_server("/debug/pprof", tmp_path_factory.mktemp("proxied"), env)


@pytest.fixture(scope="module")
def trusting_everyone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """uvicorn told to believe X-Forwarded-For from anyone: it rewrites scope["client"]."""
    with _proxied(tmp_path_factory, "127.0.0.9/32", "*") as running:
        yield running


@pytest.mark.parametrize("claim", [b"127.0.0.1", b"127.0.0.1:4000", b"127.0.0.9, 127.0.0.1"])
def test_a_spoofed_loopback_client_is_refused_when_the_server_rewrote_it(
        trusting_everyone: Server, claim: bytes) -> None:
    status, body = raw_get(trusting_everyone.port, "/debug/pprof/cmdline",
                           [_host(trusting_everyone), b"X-Forwarded-For: " + claim,
                            b"Authorization: Bearer " + TOKEN_BYTES], source="127.0.0.2")
    assert status == 403, body
    assert b"--forwarded-allow-ips ''" in body


@pytest.fixture(scope="module")
def behind_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """uvicorn leaving the peer alone (--forwarded-allow-ips ''); 127.0.0.2 is the proxy."""
    with _proxied(tmp_path_factory, "127.0.0.2/32", "") as running:
        yield running


@pytest.mark.parametrize(("source", "status"), [("127.0.0.2", 200), ("127.0.0.3", 403)])
def test_forwarded_for_is_believed_only_from_the_trusted_peer(
        behind_proxy: Server, source: str, status: int) -> None:
    answer, body = raw_get(behind_proxy.port, "/debug/pprof/cmdline",
                           [_host(behind_proxy), b"X-Forwarded-For: 127.0.0.1",
                            b"Authorization: Bearer " + TOKEN_BYTES], source=source)
    assert answer == status, body
    if status == 403:
        assert b"127.0.0.3" in body and b"not a trusted proxy" in body


def test_200_concurrent_bad_credentials_all_get_a_401(guarded: Server) -> None:
    async def storm() -> list[int]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            answers = await asyncio.gather(*(
                client.get(guarded.url("/goroutine?debug=1"),
                           headers={"Authorization": f"Bearer wrong-{i:04d}-0123456789"})
                for i in range(200)))
        return [answer.status_code for answer in answers]

    assert asyncio.run(storm()) == [401] * 200
    assert raw_get(guarded.port, "/debug/pprof/cmdline",
                   [_host(guarded), b"Authorization: Bearer " + TOKEN_BYTES])[0] == 200


def test_the_server_log_never_holds_a_token_right_or_wrong(guarded: Server) -> None:
    wrong = "a-wrong-token-is-a-secret-too-5e1"
    for value in (f"Bearer {TOKEN}", f"Bearer {wrong}",
                  "Basic " + base64.b64encode(f"{TOKEN}:{wrong}".encode()).decode(),
                  "Basic " + base64.b64encode(f"{wrong}:{TOKEN}".encode()).decode()):
        raw_get(guarded.port, f"/debug/pprof/cmdline?seconds={TOKEN}",
                [_host(guarded), b"Authorization: " + value.encode()])
    deadline = time.monotonic() + 20
    while guarded.log_text().count("pyprof_http.audit") < 4 and time.monotonic() < deadline:
        time.sleep(0.1)  # the audit lines are written by the server process
    log = guarded.log_text()
    assert log.count("pyprof_http.audit") >= 4  # the audit line is captured at all
    assert TOKEN not in log and wrong not in log
