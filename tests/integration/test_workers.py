"""Multi-worker servers for real: ``uvicorn --workers 3`` and ``gunicorn -w 3 -k UvicornWorker``.

One server per kind for the whole module (token set, allowlist without ``heap``). Every test
first waits until three workers have joined the rendezvous (a worker killed by another test
is replaced), then asserts on what the servers answered: which pid served, which pids' samples
a merged profile holds (read back by ``go tool pprof``), who is listed.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
TOKEN = "workers-test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PREFIX = "/debug/pprof"
DEADLINE_S = 60.0
"""Generous: workers start (spawn + import) on a loaded 2-core box; only an upper bound."""


@dataclass(frozen=True)
class Served:
    kind: str
    base: str
    proc: subprocess.Popen[bytes]
    log: Path

    def url(self, path: str) -> str:
        return f"{self.base}{PREFIX}{path}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str, headers: dict[str, str] | None = None,
        timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=AUTH if headers is None else headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            headers = {k.lower(): v for k, v in response.headers.items()}
            return response.status, headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def live_pids(served: Served) -> list[int]:
    status, headers, body = get(served.url("/goroutine?workers=all&debug=1"))
    assert status == 200, body
    return sorted(int(p) for p in headers["x-pyprof-workers"].split(","))


def wait_for(served: Served, count: int, without: int | None = None) -> list[int]:
    deadline = time.monotonic() + DEADLINE_S
    pids: list[int] = []
    while time.monotonic() < deadline:
        assert served.proc.poll() is None, served.log.read_text(errors="replace")
        with contextlib.suppress(OSError, AssertionError, KeyError):
            pids = live_pids(served)
            if len(pids) == count and without not in pids:
                return pids
        time.sleep(0.2)
    raise AssertionError(f"{served.kind}: wanted {count} workers without {without}, last saw "
                         f"{pids}\n{served.log.read_text(errors='replace')[-3000:]}")


@pytest.fixture(scope="module", params=["uvicorn", "gunicorn"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Served]:
    kind = request.param
    port = _free_port()
    bind = ["--host", "127.0.0.1", "--port", str(port)]
    if kind == "uvicorn":
        command = [sys.executable, "-m", "uvicorn", "workers_service:app", "--app-dir",
                   str(HERE), *bind, "--workers", "3", "--loop", "asyncio",
                   "--log-level", "warning", "--timeout-graceful-shutdown", "2"]
    else:
        command = [sys.executable, "-m", "gunicorn", "workers_service:app", "--chdir",
                   str(HERE), "-w", "3", "-k", "uvicorn.workers.UvicornWorker", "-b",
                   f"127.0.0.1:{port}", "--graceful-timeout", "2", "--log-level", "warning"]
    log = tmp_path_factory.mktemp(f"workers-{kind}") / "server.log"
    env = {**os.environ, "PYPROF_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1",
           "PYPROF_PROFILES": "goroutine,profile,threadcreate,cmdline"}
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=HERE, start_new_session=True)
    served = Served(kind, f"http://127.0.0.1:{port}", proc, log)
    try:
        wait_for(served, 3)
        yield served
    finally:
        _stop(proc)
        leftover = Path(_rendezvous_dir(proc.pid))
        assert not leftover.exists() or not any(leftover.glob("*.sock")), list(leftover.iterdir())


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server and its workers (their session), SIGKILL if they linger."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _rendezvous_dir(server_pid: int) -> str:
    import tempfile

    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    if not os.path.isdir(base):
        base = tempfile.gettempdir()
    return os.path.join(base, f"pyprof_http-{os.getuid()}-{server_pid}")


def test_each_worker_answers_by_pid_and_names_itself(served: Served) -> None:
    pids = wait_for(served, 3)
    for pid in pids:
        status, headers, body = get(served.url(f"/goroutine?debug=1&worker={pid}"))
        assert status == 200, body
        assert headers["x-pyprof-worker"] == str(pid)
        assert f"# pid {pid} (worker " in body.decode() and " of 3)" in body.decode()
        assert "workers_parked_coroutine" in body.decode()
    status, headers, body = get(served.url("/"))
    assert status == 200
    listed = {int(p) for p in re.findall(r"\?worker=(\d+)'", body.decode())}
    assert listed == set(pids)
    assert f"Served by pid {headers['x-pyprof-worker']} (worker " in body.decode()
    for pid in pids:  # each worker's own index, titled as the one the client reached
        status, headers, body = get(served.url(f"/?worker={pid}"))
        assert status == 200 and headers["x-pyprof-worker"] == str(pid)
        page = body.decode()
        assert f"<title>{PREFIX}/</title>" in page and f"Served by pid {pid} (worker " in page
        assert f"goroutine?debug=1&worker={pid}'" in page  # its links stay on it
        assert f"goroutine?debug=2&amp;worker={pid}'" in page


def _go_pprof(go: str, args: list[str], path: Path) -> str:
    result = subprocess.run([go, "tool", "pprof", *args, str(path)], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_workers_all_goroutine_and_cpu_profile_hold_every_pid(
        served: Served, go_binary: str, tmp_path: Path) -> None:
    pids = wait_for(served, 3)
    for name, query in (("goroutine", "workers=all"),
                        ("profile", "seconds=2&workers=all")):
        status, headers, body = get(served.url(f"/{name}?{query}"), timeout=60)
        assert status == 200, body
        answered = sorted(int(p) for p in headers["x-pyprof-workers"].split(","))
        assert answered == pids and "x-pyprof-workers-missing" not in headers
        path = tmp_path / f"{name}.pb.gz"
        path.write_bytes(body)
        tags = _go_pprof(go_binary, ["-tags"], path)
        for pid in pids:
            assert re.search(rf"\b{pid}\b", tags), tags
            top = _go_pprof(go_binary, ["-top", f"-tagfocus=pid={pid}"], path)
            wanted = "workers_parked_coroutine" if name == "goroutine" else "workers_spin"
            assert wanted in top, top
        rooted = _go_pprof(go_binary, ["-top", "-cum", "-tagroot=pid"], path)
        roots = {int(p) for p in re.findall(r"%\s+(\d+)$", rooted, re.M)}  # a node per pid
        assert roots == set(pids), rooted[:2000]


def test_workers_all_text_is_one_section_per_worker(served: Served) -> None:
    pids = wait_for(served, 3)
    status, _headers, body = get(served.url("/goroutine?workers=all&debug=2"))
    assert status == 200
    text = body.decode()
    for pid in pids:
        assert f"==== pid {pid} (" in text
    assert text.count("workers_parked_coroutine") >= 3


def test_unknown_pid_is_404_listing_the_live_ones(served: Served) -> None:
    pids = wait_for(served, 3)
    status, _headers, body = get(served.url("/goroutine?debug=1&worker=1"))
    assert status == 404
    listed = {int(p) for p in re.findall(r"\d+", body.decode().split("live workers:")[1])}
    assert listed == set(pids)


@pytest.mark.parametrize("query", ["", "?worker={pid}", "?workers=all"])
def test_token_and_allowlist_apply_to_worker_and_workers(served: Served, query: str) -> None:
    pid = wait_for(served, 3)[-1]
    q = query.format(pid=pid)
    sep = "&" if q else "?"
    assert get(served.url(f"/goroutine{q}{sep}debug=1"), headers={})[0] == 401
    assert get(served.url(f"/goroutine{q}{sep}debug=1"),
               headers={"Authorization": "Bearer wrong-token-wrong-token"})[0] == 401
    assert get(served.url(f"/goroutine{q}{sep}debug=1"))[0] == 200
    assert get(served.url(f"/heap{q}"))[0] == 404  # not on the allowlist: as unknown
    assert get(served.url(f"/heap{q}"), headers={})[0] == 401  # auth before anything


def test_the_private_channel_is_ours_alone(served: Served) -> None:
    pids = wait_for(served, 3)
    directory = Path(_rendezvous_dir(served.proc.pid))
    info = os.lstat(directory)
    assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o700
    assert info.st_uid == os.getuid()
    sockets = sorted(directory.glob("*.sock"))
    assert sorted(int(p.stem) for p in sockets) == pids
    for path in sockets:
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
    if os.getuid() != 0:
        return  # another uid cannot be taken without root: the modes above are the guard
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        child = os.fork()
    if child == 0:  # another local user: no way through the 0700 directory
        code = 1
        try:
            os.setgid(65534)
            os.setuid(65534)
            with socket.socket(socket.AF_UNIX) as sock:
                try:
                    sock.connect(str(sockets[0]))
                except PermissionError:
                    code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "another uid connected to the channel"


def test_a_killed_worker_leaves_the_list_and_its_replacement_joins(served: Served) -> None:
    pids = wait_for(served, 3)
    victim = pids[0]
    os.kill(victim, signal.SIGKILL)
    after = wait_for(served, 3, without=victim)
    assert victim not in after and len(set(after) - set(pids)) == 1
    status, _headers, body = get(served.url(f"/goroutine?debug=1&worker={victim}"))
    assert status == 404 and str(victim) not in body.decode().split("live workers:")[1]


def test_gunicorn_preload_sets_each_worker_up_again(tmp_path: Path) -> None:
    """gunicorn --preload imports the app (install(): tracemalloc, lock patches, the
    Thread.start hook) in the arbiter, then forks: each worker has its own watchdog and channel
    (started at its lifespan), keeps tracing and lock profiling, and the arbiter joined nothing."""
    port = _free_port()
    log = tmp_path / "server.log"
    env = {**os.environ, "PYPROF_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1",
           "PYPROF_HEAP_TRACE_AT_START": "1", "PYPROF_HEAP_FRAMES": "1",
           "PYPROF_LOCK_PROFILE_FRACTION": "1"}
    command = [sys.executable, "-m", "gunicorn", "workers_service:app", "--chdir", str(HERE),
               "--preload", "-w", "2", "-k", "uvicorn.workers.UvicornWorker", "-b",
               f"127.0.0.1:{port}", "--graceful-timeout", "2", "--log-level", "warning"]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=HERE, start_new_session=True)
    served = Served("gunicorn-preload", f"http://127.0.0.1:{port}", proc, log)
    try:
        pids = wait_for(served, 2)
        assert proc.pid not in pids  # the arbiter is no member
        status, _headers, body = get(served.url("/goroutine?workers=all&debug=2"))
        assert status == 200
        for section in body.decode().split("==== pid ")[1:]:
            threads = re.findall(r'^thread \d+ native \d+ "([^"]+)"', section, re.M)
            assert threads.count("pyprof_http-worker-channel") == 1, threads
            assert threads.count("pyprof_http-watchdog") == 1, threads
        for pid in pids:
            assert get(served.url(f"/heap?debug=1&worker={pid}"))[0] == 200  # still tracing
            assert get(served.url(f"/mutex?debug=1&worker={pid}"))[0] == 200  # locks on
    finally:
        _stop(proc)


def _leave_after(url: str, seconds: float) -> None:
    """Send a GET for ``url`` and hang up after ``seconds`` without reading the answer."""
    parts = urllib.parse.urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     f"Authorization: Bearer {TOKEN}\r\n\r\n".encode())
        time.sleep(seconds)


def test_a_client_that_leaves_stops_the_profiles_it_started_in_every_worker(
        served: Served) -> None:
    """A 30 s profile in every worker, abandoned after 1 s: had any kept recording, the next
    profile there would be refused (409: one at a time) and named as missing."""
    pids = wait_for(served, 3)
    _leave_after(served.url("/profile?seconds=30&workers=all"), 1.0)
    _leave_after(served.url(f"/profile?seconds=30&worker={pids[0]}"), 1.0)
    deadline = time.monotonic() + 20  # generous: the hops see the hang-up within ~0.1 s
    while True:
        status, headers, body = get(served.url("/profile?seconds=1&workers=all"), timeout=60)
        if status == 200 and "x-pyprof-workers-missing" not in headers:
            break
        assert time.monotonic() < deadline, (status, headers, body[:300])
        time.sleep(0.5)
    assert sorted(int(p) for p in headers["x-pyprof-workers"].split(",")) == wait_for(served, 3)
