"""worker= / workers= on a single-process server (and the headers every response carries)."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from pyprof_http.app import PprofApp
from pyprof_http.config import Settings

TOKEN = "routing-test-token-0123456789ab"


@pytest.fixture(scope="module")
def client() -> TestClient:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return TestClient(PprofApp(Settings(profiles={"goroutine", "profile", "cmdline"})),
                          client=("127.0.0.1", 50000), base_url="http://127.0.0.1")


def test_every_response_names_the_process(client: TestClient) -> None:
    for path in ("/", "/goroutine?debug=1", "/goroutine?debug=7", "/nope"):
        assert client.get(path).headers["X-Pyprof-Worker"] == str(os.getpid())
    assert f"Served by pid {os.getpid()}." in client.get("/").text


def test_own_pid_is_served_and_any_other_is_404_listing_the_live_ones(client: TestClient) -> None:
    mine = client.get(f"/goroutine?debug=1&worker={os.getpid()}")
    assert mine.status_code == 200 and mine.text.startswith("goroutine profile: total")
    other = client.get("/goroutine?debug=1&worker=1")
    assert other.status_code == 404
    assert other.text == f"no live worker with pid 1; live workers: {os.getpid()}\n"
    assert client.get("/heap?worker=1").status_code == 404  # not allowed: before any routing
    assert "Unknown profile" in client.get("/heap?worker=1").text


def test_workers_all_in_one_process(client: TestClient) -> None:
    text = client.get("/goroutine?workers=all&debug=1")
    assert text.status_code == 200 and text.headers["X-Pyprof-Workers"] == str(os.getpid())
    assert text.text.startswith(f"==== pid {os.getpid()} (1 of 1) ====\ngoroutine profile:")
    merged = client.get("/goroutine?workers=all&format=json")
    assert merged.status_code == 200
    document = json.loads(merged.text)
    assert {s["labels"]["pid"] for s in document["samples"]} == {os.getpid()}
    assert document["comments"][0] == f"workers=all: 1 answered (pid {os.getpid()})"
    assert client.get("/cmdline?workers=all").text.startswith(f"==== pid {os.getpid()} (")


@pytest.mark.parametrize("path, reason", [
    ("/goroutine?workers=all&debug=7", 'invalid value for "debug"'),
    ("/profile?workers=all&mode=tracing&format=pstats", "cannot be combined across workers"),
    ("/?workers=all", "the index lists every worker"),
    ("/goroutine?worker=x", 'invalid value for "worker"'),
    ("/goroutine?worker=1&workers=all", "not both"),
])
def test_bad_worker_requests_are_400(client: TestClient, path: str, reason: str) -> None:
    response = client.get(path)
    assert response.status_code == 400 and reason in response.text


def test_the_token_applies_to_worker_and_workers() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        guarded = TestClient(PprofApp(Settings(token=TOKEN)), client=("127.0.0.1", 50000),
                             base_url="http://127.0.0.1")
    for query in ("", f"&worker={os.getpid()}", "&worker=1", "&workers=all"):
        assert guarded.get(f"/goroutine?debug=1{query}").status_code == 401
        ok = guarded.get(f"/goroutine?debug=1{query}", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == (404 if query == "&worker=1" else 200)


def test_the_audit_line_says_which_worker_was_asked(client: TestClient,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="pyprof_http.audit"):
        client.get("/goroutine?debug=1&worker=1")
        client.get("/goroutine?debug=1&workers=all")
    lines = [r.getMessage() for r in caplog.records if r.name == "pyprof_http.audit"]
    assert '"worker": "1"' in lines[0] and "status=404" in lines[0]
    assert '"workers": "all"' in lines[1] and "status=200" in lines[1]


def test_a_request_id_that_is_no_valid_http_target_is_forwarded_quoted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``/requests/<id>`` is routed by its decoded path: an id with a space or a non-ASCII
    character was put in the hop's request line as is, h11 refused it and the client got the
    host's bare 500. Now the sibling gets the path percent-encoded, and decodes the same id."""
    import socket
    import threading

    from pyprof_http.workers.rendezvous import directory_for

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    app = PprofApp(Settings(workers_rendezvous="on"))
    app.claims.join_workers()
    sibling = os.getppid()  # alive, so its socket is not pruned as dead
    seen: list[bytes] = []
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(directory_for(os.getppid(), tmp_path) / f"{sibling}.sock"))
    listener.listen()

    def answer() -> None:
        conn, _ = listener.accept()
        with conn:
            seen.append(conn.recv(65536).split(b"\r\n", 1)[0])
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            client = TestClient(app, client=("127.0.0.1", 50000), base_url="http://127.0.0.1")
        response = client.get(f"/requests/a%20b%C3%A9%3F?worker={sibling}")
        thread.join(30)
    finally:
        listener.close()
        app.claims.release_all()
    assert response.status_code == 200 and response.text == "ok"
    assert seen == [b"GET /requests/a%20b%C3%A9%3F HTTP/1.1"]
