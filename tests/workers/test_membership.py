"""Joining, serving siblings over the channel, leaving, fork; single processes start nothing."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import stat
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyprof_http.app import PprofApp
from pyprof_http.config import Settings
from pyprof_http.workers.channel import Channel, PeerCheckedProtocol
from pyprof_http.workers.hop import fetch
from pyprof_http.workers.membership import WORKERS
from pyprof_http.workers.rendezvous import directory_for

TOKEN = "membership-test-token-0123456789"
CHANNEL_THREAD = "pyprof_http-worker-channel"


def _channel_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == CHANNEL_THREAD]


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def joined(runtime: Path) -> Iterator[PprofApp]:
    app = PprofApp(Settings(workers_rendezvous="on", token=TOKEN))
    app.claims.join_workers()
    try:
        yield app
    finally:
        app.claims.release_all()


def _socket(runtime: Path) -> str:
    return str(directory_for(os.getppid(), runtime) / f"{os.getpid()}.sock")


def test_a_single_process_server_starts_nothing(runtime: Path) -> None:
    before = set(threading.enumerate())
    app = PprofApp(Settings())  # auto: pytest is no server worker
    app.claims.join_workers()
    try:
        assert not WORKERS.joined and WORKERS.channel is None
        assert set(threading.enumerate()) == before
        assert list(runtime.iterdir()) == []
    finally:
        app.claims.release_all()


def test_a_worker_serves_siblings_without_auth_only_over_the_channel(
        joined: PprofApp, runtime: Path) -> None:
    path = _socket(runtime)
    assert WORKERS.joined and len(_channel_threads()) == 1
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
    answer = asyncio.run(fetch(path, os.getpid(), b"/goroutine?debug=1", 30))
    assert answer.status == 200, answer.body
    assert answer.header(b"x-pyprof-worker") == str(os.getpid())
    assert f"# pid {os.getpid()} (worker 1 of 1)".encode() in answer.body.splitlines()[1]
    # the same request through the app's own entry still needs the token
    from starlette.testclient import TestClient

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        client = TestClient(joined, client=("127.0.0.1", 50000))
    assert client.get("/goroutine?debug=1").status_code == 401
    assert client.get("/goroutine?debug=1", headers={"Authorization": f"Bearer {TOKEN}"}
                      ).status_code == 200


def test_leaving_stops_the_channel_and_removes_socket_and_directory(runtime: Path) -> None:
    app = PprofApp(Settings(workers_rendezvous="on"))
    app.claims.join_workers()
    path = Path(_socket(runtime))
    assert path.exists()
    app.claims.release_all()
    assert not WORKERS.joined and not _channel_threads()
    assert not path.exists() and not path.parent.exists()


def test_a_forked_child_forgets_the_parents_membership(joined: PprofApp, runtime: Path) -> None:
    path = _socket(runtime)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        child = os.fork()
    if child == 0:
        code = 10
        try:
            if not WORKERS.joined and WORKERS.channel is None and os.path.exists(path):
                code = 0
        finally:
            os._exit(code)  # no atexit, no cleanup of the parent's socket either way
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert os.path.exists(path)  # the child's exit did not take the parent's socket
    answer = asyncio.run(fetch(path, os.getpid(), b"/cmdline", 30))
    assert answer.status == 200  # and the parent still answers on it


@pytest.mark.skipif(os.getuid() != 0, reason="connecting as another uid needs root")
def test_the_channel_closes_a_connection_from_another_uid() -> None:
    """The second line behind the 0700 directory: SO_PEERCRED on every connection."""
    tmp_path = Path(tempfile.mkdtemp(dir="/tmp"))  # reachable by another uid, unlike pytest's
    tmp_path.chmod(0o777)
    path = str(tmp_path / "open.sock")
    served = []

    async def app(scope, receive, send) -> None:
        served.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    os.chmod(path, 0o777)  # as if the file modes had failed
    listener.listen()
    channel = Channel(app, listener)
    channel.start()
    refused = PeerCheckedProtocol.refused
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            child = os.fork()
        if child == 0:
            code = 10
            try:
                os.setgid(65534)
                os.setuid(65534)
                with socket.socket(socket.AF_UNIX) as sock:
                    sock.settimeout(10)
                    sock.connect(path)
                    try:
                        sock.sendall(b"GET /x HTTP/1.1\r\nhost: a\r\n\r\n")
                        got = sock.recv(100)
                    except (BrokenPipeError, ConnectionResetError):  # closed before or unread
                        got = b""
                    code = 0 if got == b"" else 11
            finally:
                os._exit(code)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert served == [] and PeerCheckedProtocol.refused == refused + 1
        answer = asyncio.run(fetch(path, 1, b"/mine", 10))  # our own uid is served
        assert answer.status == 200 and served == ["/mine"]
    finally:
        channel.stop()
        shutil.rmtree(tmp_path, ignore_errors=True)


def test_the_channel_does_not_log_a_second_server_start(
        runtime: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="uvicorn.error"):
        app = PprofApp(Settings(workers_rendezvous="on"))
        app.claims.join_workers()
        app.claims.release_all()
    assert WORKERS.channel is None
    assert not [r for r in caplog.records if "server process" in r.getMessage()]


def test_a_workers_views_name_it(joined: PprofApp, runtime: Path) -> None:
    path, me = _socket(runtime), os.getpid()
    named = f"pid {me} (worker 1 of 1)"
    views = {
        b"/profile?seconds=1&mode=wall&format=pyinstrument": named.encode(),
        b"/profile?seconds=1&mode=wall&format=json": named.encode(),
        b"/threadcreate?debug=1": f"# {named}".encode(),
        b"/": f"Served by {named}.".encode(),
    }
    for target, wanted in views.items():
        answer = asyncio.run(fetch(path, me, target, 60))
        assert answer.status == 200 and wanted in answer.body, target
    document = asyncio.run(fetch(path, me, b"/goroutine?format=json", 60)).body
    import json

    assert {s["labels"]["pid"] for s in json.loads(document)["samples"]} == {me}


def test_a_sibling_that_does_not_answer_is_named_never_dropped(runtime: Path) -> None:
    """A sibling whose socket accepts but never answers (a stopped worker): workers=all still
    answers, with this worker's part, and names the silent one in the header, the merged
    profile's comments and its own text section."""
    from starlette.testclient import TestClient

    app = PprofApp(Settings(workers_rendezvous="on", worker_timeout_seconds=1))
    app.claims.join_workers()
    silent_pid = os.getppid()  # alive, so not pruned as dead
    silent = socket.socket(socket.AF_UNIX)
    silent.bind(str(directory_for(os.getppid(), runtime) / f"{silent_pid}.sock"))
    silent.listen()  # connections wait in the backlog: nobody ever reads them
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            client = TestClient(app, client=("127.0.0.1", 50000), base_url="http://127.0.0.1")
        text = client.get("/goroutine?workers=all&debug=1")
        assert text.status_code == 200
        assert text.headers["X-Pyprof-Workers"] == str(os.getpid())
        why = f"{silent_pid} did not answer within 1 s"
        assert text.headers["X-Pyprof-Workers-Missing"] == why
        assert f"==== pid {silent_pid}: did not answer: did not answer within 1 s" in text.text
        merged = client.get("/goroutine?workers=all&format=json").json()
        assert f"worker {silent_pid} did not answer: did not answer within 1 s" in merged[
            "comments"]
        gone = client.get(f"/goroutine?debug=1&worker={silent_pid}")
        assert gone.status_code == 504 and gone.text == f"worker {why}\n"
    finally:
        silent.close()
        app.claims.release_all()


def test_the_channel_keeps_its_rendezvous_fresh_for_tmp_cleaners(
        joined: PprofApp, runtime: Path) -> None:
    """systemd-tmpfiles deletes /tmp entries unused for 10 days: a server running longer lost
    its sockets (worker= gone for good). The channel's hourly callback marks the directory and
    its socket as used, keeping the modification time that orders the siblings."""
    from pyprof_http.workers import channel as channel_module

    path = _socket(runtime)
    old = 1_600_000_000 * 10**9  # 2020
    for entry in (path, os.path.dirname(path)):
        os.utime(entry, ns=(old, old), follow_symlinks=False)
    assert WORKERS.channel is not None
    config = WORKERS.channel._server.config
    assert config.timeout_notify == channel_module.REFRESH_S
    asyncio.run(config.callback_notify())
    for entry in (path, os.path.dirname(path)):
        info = os.lstat(entry)
        assert info.st_atime_ns > old and info.st_mtime_ns == old, entry
