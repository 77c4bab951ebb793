"""``/profile`` under a real uvicorn: go tool pprof, sample rate under load, 409, disconnect,
shutdown, and the downloads.

The served app is ``cpu_service`` (an ``async def`` route that burns CPU on the event loop). A
bounded loopback load loop in this process keeps that loop busy while profiles run.
"""

from __future__ import annotations

import contextlib
import io
import marshal
import os
import pstats
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from live_server import HERE, STARTUP_TIMEOUT_S, Server, _answers, _free_port, _stop

GO_TIMEOUT_S = 30
BURN_FUNCTIONS = ("cpu_service_burn", "cpu_service_hot_loop")
ERROR_MARKERS = ("Traceback", "ERROR", "Exception")


# --------------------------------------------------------------------------------------------
# The server and the load
# --------------------------------------------------------------------------------------------


@dataclass
class Running:
    server: Server
    proc: subprocess.Popen[bytes]


@contextlib.contextmanager
def serve_cpu_service(workdir: Path, *uvicorn_args: str) -> Iterator[Running]:
    """``cpu_service:app`` under uvicorn on a free loopback port; always stopped."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for _attempt in range(3):
        port = _free_port()
        log = workdir / f"uvicorn-cpu-{port}.log"
        command = [sys.executable, "-m", "uvicorn", "cpu_service:app", "--app-dir", str(HERE),
                   "--host", "127.0.0.1", "--port", str(port), "--lifespan", "on",
                   "--no-access-log", "--log-level", "warning", "--loop", "asyncio",
                   *uvicorn_args]  # a later --loop wins
        with log.open("wb") as log_file:
            proc = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                                    cwd=workdir)
        try:
            server = Server(f"http://127.0.0.1:{port}", "/debug/pprof", "127.0.0.1", port, log)
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            while proc.poll() is None and time.monotonic() < deadline:
                if _answers(server.base_url + "/healthz"):
                    yield Running(server, proc)
                    return
                time.sleep(0.05)
            if "address already in use" not in server.log_text().lower():
                raise AssertionError(f"uvicorn did not start:\n{server.log_text()}")
        finally:
            _stop(proc)
    raise AssertionError("could not bind a free loopback port in 3 attempts")


@pytest.fixture(scope="module")
def cpu_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with serve_cpu_service(tmp_path_factory.mktemp("cpu-server")) as running:
        yield running


@pytest.fixture(scope="module")
def uvloop_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with serve_cpu_service(tmp_path_factory.mktemp("uvloop-server"), "--loop", "uvloop") as running:
        yield running


def client(server: Server, timeout: float = 30) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, timeout=timeout, trust_env=False)


@contextlib.contextmanager
def load(server: Server, workers: int = 3, burn_ms: int = 5,
         max_seconds: float = 15, path: str = "/burn") -> Iterator[list[int]]:
    """Keep ``/burn`` busy from ``workers`` threads (keep-alive) until the block ends (bounded
    by ``max_seconds``); yields the per-worker request counts."""
    stop = threading.Event()
    counts = [0] * workers
    deadline = time.monotonic() + max_seconds

    def worker(index: int) -> None:
        with client(server, timeout=10) as http:
            while not stop.is_set() and time.monotonic() < deadline:
                http.get(path, params={"ms": burn_ms}).raise_for_status()
                counts[index] += 1

    threads = [threading.Thread(target=worker, args=(i,), name=f"load-{i}", daemon=True)
               for i in range(workers)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.2)  # the loop is busy before the profile starts
        yield counts
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    assert sum(counts) > 0, "the load generator made no request"


def sampler_header(response: httpx.Response) -> dict[str, str]:
    """``X-Pyprof-Sampler: driver=signal; requested_hz=100; achieved_hz=99.1`` as a dict."""
    parts = (item.strip().split("=", 1) for item in response.headers["X-Pyprof-Sampler"].split(";"))
    return {key: value for key, value in parts}


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def assert_clean_log(server: Server) -> None:
    text = server.log_text()
    assert not any(marker in text for marker in ERROR_MARKERS), text


# --------------------------------------------------------------------------------------------
# go tool pprof
# --------------------------------------------------------------------------------------------


def go_pprof(go: str, home: Path, *args: str) -> str:
    env = {**os.environ, "HOME": str(home), "PPROF_TMPDIR": str(home / "saved"),
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    env.pop("PPROF_BINARY_PATH", None)
    result = subprocess.run([go, "tool", "pprof", *args], capture_output=True, text=True,
                            env=env, timeout=GO_TIMEOUT_S, check=False)
    assert result.returncode == 0, (
        f"go tool pprof exited {result.returncode}\nstdout:\n{result.stdout}\n"
        f"stderr:\n{result.stderr}")
    return result.stdout


@pytest.mark.parametrize(("mode", "type_line"),
                         [("cpu", "Type: cpu"), ("wall", "Type: wall"), ("tracing", "Type: wall")])
def test_go_pprof_top_reads_each_mode(go_binary: str, tmp_path: Path, cpu_server: Running,
                                      mode: str, type_line: str) -> None:
    server = cpu_server.server
    with load(server):
        out = go_pprof(go_binary, tmp_path, "-top",
                       server.url(f"/profile?seconds=2&mode={mode}"))
    assert type_line in out, out
    # the profile says how long it really recorded: the window asked for, less what the loop
    # took to start the profiler (a tracing window starts two loop turns in, on purpose)
    duration = re.search(r"^Duration: ([\d.]+)(m?s)", out, re.MULTILINE)
    assert duration is not None, out
    seconds = float(duration[1]) / (1000 if duration[2] == "ms" else 1)
    assert 1.5 <= seconds <= 2.5, out
    for name in BURN_FUNCTIONS:
        assert re.search(rf"\s{name}$", out, re.MULTILINE), (name, out)
    assert_clean_log(server)


def test_go_pprof_seconds_flag(go_binary: str, tmp_path: Path, cpu_server: Running) -> None:
    server = cpu_server.server
    env_home = tmp_path
    with load(server):
        started = time.monotonic()
        out = go_pprof(go_binary, env_home, "-seconds=2", "-top", server.url("/profile"))
        elapsed = time.monotonic() - started
    assert 2 <= elapsed < 15, elapsed
    assert "Type: cpu" in out and "Duration: 2" in out, out
    assert re.search(r"\scpu_service_hot_loop$", out, re.MULTILINE), out


# --------------------------------------------------------------------------------------------
# Sample rate under a busy event loop
# --------------------------------------------------------------------------------------------


def test_busy_event_loop_keeps_the_requested_rate(cpu_server: Running) -> None:
    """The reason for the signal driver: a sampler thread gets 0.5-3.5 ticks/s here."""
    server, pid = cpu_server.server, cpu_server.proc.pid
    with load(server) as counts, client(server) as http:
        wall = http.get(server.url("/profile"), params={"seconds": "2", "mode": "wall"})
        cpu_before = process_cpu_seconds(pid)
        cpu = http.get(server.url("/profile"), params={"seconds": "2", "mode": "cpu"})
        server_cpu = process_cpu_seconds(pid) - cpu_before
    assert wall.status_code == cpu.status_code == 200
    assert sum(counts) > 100, counts
    wall_rate, cpu_rate = sampler_header(wall), sampler_header(cpu)
    assert wall_rate["driver"] == cpu_rate["driver"] == "signal"
    # per wall second, the wall timer's rate depends on how often the machine runs the server
    # (pending SIGALRMs merge while it waits for a core: 70.5 Hz seen under load); 40 Hz is still
    # over 10 times what a sampler thread gets from a busy loop, the difference this checks
    assert float(wall_rate["achieved_hz"]) >= 40, wall_rate
    # ITIMER_PROF counts the process's CPU time: ticks per CPU second is the rate it keeps
    ticks = float(cpu_rate["achieved_hz"]) * 2
    per_cpu_second = ticks / server_cpu
    print(f"wall mode {wall_rate['achieved_hz']} Hz; cpu mode {cpu_rate['achieved_hz']} Hz "
          f"over wall time, {per_cpu_second:.0f} per second of server CPU ({server_cpu:.2f} s)")
    # enough CPU for the rate to mean something (30+ ticks expected); a loaded machine gave the
    # server 0.5 s of its 2 s window, so more than that cannot be asked for
    assert server_cpu > 0.3, f"the load did not keep the server busy: {server_cpu:.2f} s CPU"
    assert per_cpu_second >= 80, (per_cpu_second, cpu_rate)


def test_cpu_burnt_in_the_thread_pool_keeps_the_rate(cpu_server: Running) -> None:
    """A sync route burns CPU in pool threads while the loop's thread waits: the timer signal
    lands on a pool thread, and the handler runs only when the main thread runs Python. Before
    the helper thread and the CPU-clock tick cost this got ~25 ticks per 100 requested."""
    server, pid = cpu_server.server, cpu_server.proc.pid
    # 200 ms per request: the loop's thread sits idle in epoll while the pool burns
    with load(server, workers=2, burn_ms=200, path="/burn-sync") as counts, \
            client(server) as http:
        cpu_before = process_cpu_seconds(pid)
        response = http.get(server.url("/profile"), params={"seconds": "2", "mode": "cpu"})
        server_cpu = process_cpu_seconds(pid) - cpu_before
    assert response.status_code == 200, response.text
    assert sum(counts) > 4, counts
    rate = sampler_header(response)
    assert rate["driver"] == "signal", rate
    per_cpu_second = float(rate["achieved_hz"]) * 2 / server_cpu
    print(f"sync route: {rate['achieved_hz']} Hz over wall time, {per_cpu_second:.0f} per second "
          f"of server CPU ({server_cpu:.2f} s)")
    assert server_cpu > 0.5, f"the load did not keep the server busy: {server_cpu:.2f} s CPU"
    # ITIMER_PROF raises 100 signals per CPU second; ticks held back by the cost limit are few
    assert per_cpu_second >= 70, (per_cpu_second, rate)


# --------------------------------------------------------------------------------------------
# Guards: one at a time, disconnect, shutdown
# --------------------------------------------------------------------------------------------


def wait_for_a_running_profile(server: Server) -> None:
    """Until the server is inside a ``/profile`` (its task awaits ``cpu.record``): a fixed
    sleep let a loaded machine send the second request before the first one had started."""
    deadline = time.monotonic() + 30
    running = re.compile(r'collectors[/\\]cpu\.py", line \d+, in record\b')
    with client(server) as http:
        while not running.search(http.get(server.url("/goroutine"), params={"debug": "2"}).text):
            assert time.monotonic() < deadline, "the first profile never started"
            time.sleep(0.05)


def test_second_concurrent_profile_is_409_at_once(cpu_server: Running) -> None:
    server = cpu_server.server
    first: list[httpx.Response] = []

    def run_first() -> None:
        with client(server) as http:
            first.append(http.get(server.url("/profile"), params={"seconds": "5",
                                                                 "mode": "wall"}))

    thread = threading.Thread(target=run_first)
    thread.start()
    wait_for_a_running_profile(server)
    with client(server) as http:
        started = time.monotonic()
        second = http.get(server.url("/profile"), params={"seconds": "5", "mode": "tracing"})
        elapsed = time.monotonic() - started
    thread.join(30)
    assert second.status_code == 409, second.text
    # at once: not after a 5 s profile of its own (nor after the first's); a loaded machine
    # may take a good part of a second for one small request, so the bound is 3 s, not 0.5 s
    assert elapsed < 3, elapsed
    assert second.headers["X-Go-Pprof"] == "1"
    assert second.headers["content-type"].startswith("text/plain")
    assert second.text.startswith("a wall profile is already running"), second.text
    assert first and first[0].status_code == 200, first


def test_disconnect_mid_profile_frees_the_slot_within_1s(cpu_server: Running) -> None:
    server = cpu_server.server
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(f"GET {server.prefix}/profile?seconds=30 HTTP/1.1\r\n"
                     f"Host: {server.host}\r\n\r\n".encode())
        wait_for_a_running_profile(server)  # profiling (a fixed sleep may not have sufficed)
    gone = time.monotonic()
    time.sleep(1.0)
    with client(server) as http:
        # the slot is freed once uvicorn hands the app the disconnect; a loaded machine may do
        # that late, so it is retried for a while, far from the 30 s the profile would hold it
        while (after := http.get(server.url("/profile"), params={"seconds": "1", "mode": "wall"})
               ).status_code == 409 and time.monotonic() - gone < 10:
            time.sleep(0.2)
    assert after.status_code == 200, after.text
    assert_clean_log(server)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_shutdown_mid_profile_exits_within_a_few_seconds(tmp_path: Path,
                                                         signum: signal.Signals) -> None:
    """No ``--timeout-graceful-shutdown``: uvicorn would wait for the 30 s profile to end."""
    with serve_cpu_service(tmp_path) as running:
        server, proc = running.server, running.proc
        with socket.create_connection((server.host, server.port), timeout=10) as sock:
            sock.sendall(f"GET {server.prefix}/profile?seconds=30 HTTP/1.1\r\n"
                         f"Host: {server.host}\r\n\r\n".encode())
            wait_for_a_running_profile(server)  # a fixed sleep may signal before it started
            started = time.monotonic()
            proc.send_signal(signum)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pytest.fail(f"still running 20 s after {signum.name}:\n{server.log_text()}")
            exit_seconds = time.monotonic() - started
            received = b""
            with contextlib.suppress(OSError):
                while chunk := sock.recv(65536):
                    received += chunk
    # far from the 30 s profile it would otherwise wait for; a loaded machine takes a few
    # seconds for a graceful shutdown and interpreter exit (3 s was within its reach)
    assert exit_seconds < 10, f"{exit_seconds:.1f} s to exit after {signum.name}"
    # uvicorn re-raises the signal it stopped on after a graceful shutdown: SIGTERM gives -15
    assert proc.returncode in (0, -signum), (proc.returncode, server.log_text())
    # the profile ended early and was still delivered
    assert received.startswith(b"HTTP/1.1 200 "), received[:200]
    assert_clean_log(server)


# --------------------------------------------------------------------------------------------
# Other formats over HTTP
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def one_burn(server: Server, ms: int = 700) -> Iterator[None]:
    thread = threading.Thread(target=lambda: client(server).get("/burn", params={"ms": ms}))
    time_to_start = 0.2
    timer = threading.Timer(time_to_start, thread.start)
    timer.start()
    try:
        yield
    finally:
        timer.join()
        thread.join(10)


def test_pyinstrument_html(cpu_server: Running) -> None:
    server = cpu_server.server
    with one_burn(server), client(server) as http:
        response = http.get(server.url("/profile"),
                            params={"seconds": "1", "format": "pyinstrument"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "Content-Security-Policy" in response.headers
    assert "pyinstrument" in response.text.lower()
    assert "cpu_service_burn" in response.text


def test_tracing_callgrind_download(cpu_server: Running) -> None:
    server = cpu_server.server
    with one_burn(server, 300), client(server) as http:
        response = http.get(server.url("/profile"),
                            params={"seconds": "1", "mode": "tracing", "format": "callgrind"})
    assert response.status_code == 200, response.text
    assert response.headers["Content-Disposition"].startswith("attachment; filename=")
    assert "callgrind" in response.headers["Content-Disposition"]
    text = response.content.decode()
    assert "events:" in text and "fn=" in text
    assert "cpu_service_hot_loop" in text


def test_tracing_pstats_download_loads(cpu_server: Running, tmp_path: Path) -> None:
    server = cpu_server.server
    with one_burn(server, 300), client(server) as http:
        response = http.get(server.url("/profile"), params={"seconds": "1", "mode": "tracing",
                                                            "clock": "cpu", "format": "pstats"})
    assert response.status_code == 200, response.text
    assert response.headers["Content-Disposition"].startswith("attachment; filename=")
    path = tmp_path / "profile.pstats"
    path.write_bytes(response.content)
    assert isinstance(marshal.loads(response.content), dict)
    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.sort_stats("tottime").print_stats(5)
    assert "cpu_service_hot_loop" in out.getvalue(), out.getvalue()


@pytest.mark.parametrize("query", ["format=callgrind", "mode=wall&format=pstats"])
def test_tracing_only_formats_refuse_sampling_modes(cpu_server: Running, query: str) -> None:
    with client(cpu_server.server) as http:
        response = http.get(cpu_server.server.url(f"/profile?seconds=1&{query}"))
    assert response.status_code == 400
    assert "mode=tracing" in response.text or "tracing" in response.text


@pytest.mark.parametrize("mode", ["cpu", "wall"])
def test_under_uvloop_the_signal_driver_keeps_the_rate(uvloop_server: Running, mode: str) -> None:
    """uvloop owns the wakeup fd, so no helper thread is started: its loop runs our handler
    for each timer signal. The profile must still tick at the rate and see the hot code."""
    server, pid = uvloop_server.server, uvloop_server.proc.pid
    with load(server) as counts, client(server) as http:
        cpu_before = process_cpu_seconds(pid)
        answer = http.get(server.url("/profile"),
                          params={"seconds": "2", "mode": mode, "format": "folded"})
        server_cpu = process_cpu_seconds(pid) - cpu_before
    assert answer.status_code == 200, answer.text
    assert sum(counts) > 0 and server_cpu > 0.3, (counts, server_cpu)  # the load did run
    rate = sampler_header(answer)
    assert rate["driver"] == "signal", rate
    assert "cpu_service_hot_loop" in answer.text
    ticks = float(rate["achieved_hz"]) * 2
    # cpu mode: ITIMER_PROF counts process CPU, so judge ticks per CPU second received. wall
    # mode ticks only when the loop's thread is scheduled: on a loaded 2-core machine that is
    # well below 100 Hz, but a starved sampler thread gets 0.5-3.5 Hz (the failure this
    # guards against), so 20 Hz still tells the two apart.
    if mode == "cpu":
        assert ticks / server_cpu >= 50, (ticks / server_cpu, rate, server_cpu)
    else:
        assert ticks / 2 >= 20, (rate, server_cpu)
    assert_clean_log(server)
