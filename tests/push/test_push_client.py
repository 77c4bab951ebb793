"""Sending one batch (push/client.py): headers, credentials, redirects, failures."""

from __future__ import annotations

import base64
import socket

import pytest

from capture_server import CaptureServer
from pyprof_http.config import Settings
from pyprof_http.push.client import (
    CONNECT_PATH,
    PushFailed,
    Target,
    push_connect,
    push_ingest,
)
from pyprof_http.push.request import Series

BATCH = [Series((("__name__", "process_cpu"), ("service_name", "svc")), b"\x0a\x00",
                1_700_000_000_000_000_000, 1_700_000_015_000_000_000, 19).with_id()]


def test_basic_auth_tenant_and_extra_headers() -> None:
    with CaptureServer() as server:
        settings = Settings(push_url=server.url, push_basic_auth_user="123456",
                            push_basic_auth_password="glc_secret_password",
                            push_tenant_id="team-a", push_headers={"X-Extra": "1"})
        push_connect(Target.from_settings(settings), BATCH)
        (request,) = server.wait_for(1)
    assert request.path == CONNECT_PATH
    headers = request.headers
    assert headers["content-type"] == "application/proto"
    assert headers["content-encoding"] == "gzip"
    assert headers["authorization"] == "Basic " + base64.b64encode(
        b"123456:glc_secret_password").decode()
    assert headers["x-scope-orgid"] == "team-a"
    assert headers["x-extra"] == "1"


def test_bearer_token_and_a_base_path() -> None:
    with CaptureServer() as server:
        settings = Settings(push_url=server.url + "/pyroscope", push_token="tok-" + "x" * 20)
        push_connect(Target.from_settings(settings), BATCH)
        (request,) = server.wait_for(1)
    assert request.path == "/pyroscope" + CONNECT_PATH
    assert request.headers["authorization"] == "Bearer tok-" + "x" * 20
    assert "x-scope-orgid" not in request.headers


def test_the_target_never_shows_its_secrets() -> None:
    settings = Settings(push_url="http://h:1", push_token="very-secret-token",
                        push_headers={"X-Key": "header-secret"})
    target = Target.from_settings(settings)
    assert "secret" not in repr(target) and "secret" not in str(target)


def test_a_redirect_is_not_followed_so_credentials_stay_with_push_url() -> None:
    with CaptureServer("redirect") as server:
        target = Target.from_settings(Settings(push_url=server.url, push_token="t" * 20))
        with pytest.raises(PushFailed, match="redirects are not followed") as failed:
            push_connect(target, BATCH)
        assert failed.value.status == 307
        assert len(server.requests) == 1  # nothing else was asked, anywhere


def test_server_errors_and_refused_connections_are_push_failures() -> None:
    with CaptureServer("fail") as server:
        with pytest.raises(PushFailed, match="HTTP 500") as failed:
            push_connect(Target.from_settings(Settings(push_url=server.url)), BATCH)
        assert failed.value.status == 500
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(PushFailed, match="Connection"):
        push_connect(Target.from_settings(Settings(push_url=f"http://127.0.0.1:{port}")), BATCH)


def test_a_hanging_server_costs_at_most_the_timeout() -> None:
    with CaptureServer("hang") as server:
        target = Target.from_settings(Settings(push_url=server.url, push_timeout=0.3))
        with pytest.raises(PushFailed, match=r"timed out|TimeoutError"):
            push_connect(target, BATCH)


def test_ingest_sends_the_legacy_form() -> None:
    from urllib.parse import parse_qs, urlsplit

    with CaptureServer() as server:
        target = Target.from_settings(Settings(push_url=server.url))
        push_ingest(target, BATCH, {"service_name": "svc", "pid": "42"})
        (request,) = server.wait_for(1)
    parts = urlsplit(request.path)
    assert parts.path == "/ingest"
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert query == {"name": "svc{pid=42}", "from": "1700000000", "until": "1700000015",
                     "spyName": "pyprof_http", "sampleRate": "19", "format": "pprof"}
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")


def test_what_a_hostile_server_says_is_escaped_before_it_is_logged() -> None:
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def answer() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"\x1b[31mEVIL\xe2\x80\xa8" + b"x" * 500 + b"\r\n\r\n")

    thread = threading.Thread(target=answer)
    thread.start()
    port = listener.getsockname()[1]
    try:
        with pytest.raises(PushFailed) as failed:
            push_connect(Target.from_settings(Settings(push_url=f"http://127.0.0.1:{port}")),
                         BATCH)
    finally:
        thread.join(30)
        listener.close()
    message = str(failed.value)
    assert "EVIL" in message and message.isprintable() and len(message) <= 200


@pytest.mark.parametrize("field, value", [
    ("push_token", "s3cr3t\r\nX-Injected: 1"),
    ("push_token", "s3cr3t\u4e2d"),
    ("push_tenant_id", "team\nX-Injected: 1"),
    ("push_headers", {"X-Key": "v\r\nX-Injected: 1"}),
    ("push_headers", {"X Key": "v"}),
    ("push_url", "http://h:99999"),
])
def test_header_values_http_cannot_send_are_refused_at_startup(field: str, value: object
                                                                ) -> None:
    """Before, these passed validation and every push then died in http.client with a
    ValueError (not a PushFailed: the pusher's thread ended, its message quoting the secret)."""
    with pytest.raises(ValueError) as caught:
        Settings(**{"push_url": "http://h:1", field: value})  # type: ignore[arg-type]
    assert "X-Injected" not in str(caught.value) and "s3cr3t" not in str(caught.value)


def test_a_header_http_client_refuses_is_a_failed_push_that_names_no_secret() -> None:
    target = Target("http", "127.0.0.1", 9, "", 1.0,
                    (("Authorization", "Bearer secret\r\nX-Injected: 1"),))
    with pytest.raises(PushFailed) as caught:
        push_connect(target, BATCH)
    assert "secret" not in str(caught.value)
