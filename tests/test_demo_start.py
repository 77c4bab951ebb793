"""The demo image's start script (demo_app/start.py), without docker.

From the host, a container's clients are not loopback, so the image used to answer 403
everywhere. The script fills in a token and the container's attached networks, prints a
``curl`` line, and runs the demo: the printed line must work, from a non-loopback address too,
and nothing must work without the token.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyprof_http import Settings
from pyprof_http.config import MIN_TOKEN_LENGTH

ROOT = Path(__file__).resolve().parent.parent
# demo_app is not an installed package: load the script by path, as the image runs it from /app
_SPEC = importlib.util.spec_from_file_location("demo_start", ROOT / "demo_app" / "start.py")
assert _SPEC is not None and _SPEC.loader is not None
start = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(start)
attached_networks, container_config = start.attached_networks, start.container_config
IPV4_ROUTES = """\
Iface	Destination	Gateway 	Flags	RefCnt	Use	Metric	Mask		MTU	Window	IRTT
eth0	00000000	010011AC	0003	0	0	0	00000000	0	0	0
eth0	000011AC	00000000	0001	0	0	0	0000FFFF	0	0	0
"""
IPV6_ROUTES = (
    "fd000000000000000000000000000000 40 00000000000000000000000000000000 00 "
    "00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth0\n"
    "fd000000000000000000000000000002 80 00000000000000000000000000000000 00 "
    "00000000000000000000000000000000 00000000 00000003 00000000 80200001 eth0\n"
    "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
    "fd000000000000000000000000000001 00000400 00000003 00000000 00000003 eth0\n"
    "ff000000000000000000000000000000 08 00000000000000000000000000000000 00 "
    "00000000000000000000000000000000 00000100 00000003 00000000 00000001 eth0\n"
)


def test_attached_networks_are_the_directly_connected_ones() -> None:
    """Docker's bridge 172.17.0.0/16 (the host connects from 172.17.0.1); not the default
    route, not a gateway route, not multicast, not a host route inside an attached network."""
    assert attached_networks(IPV4_ROUTES, IPV6_ROUTES) == [
        ipaddress.ip_network("172.17.0.0/16"), ipaddress.ip_network("fd00::/64")]
    assert attached_networks("", "") == []


def test_without_settings_a_token_is_generated_and_the_settings_are_valid() -> None:
    added, lines = container_config({}, [ipaddress.ip_network("172.17.0.0/16")])
    token = added["PYPROF_TOKEN"]
    assert len(token) >= MIN_TOKEN_LENGTH
    assert added["PYPROF_ALLOW_CLIENTS"] == "127.0.0.0/8,::1/128,172.17.0.0/16"
    settings = Settings(token=token, allow_clients=added["PYPROF_ALLOW_CLIENTS"])  # no ConfigError
    assert ipaddress.ip_address("172.17.0.1") in settings.allow_clients[2]
    assert f"  curl -u :{token} 'http://localhost:8000/debug/pprof/goroutine?debug=1'" in lines
    assert any("browser" in line and "token as password" in line for line in lines)
    assert container_config({}, [])[0]["PYPROF_TOKEN"] != token  # random per run


def test_what_the_user_set_wins() -> None:
    environ = {"PYPROF_TOKEN": "a-token-the-user-chose-0123456789",
               "PYPROF_ALLOW_CLIENTS": "10.0.0.0/8"}
    added, lines = container_config(environ, [ipaddress.ip_network("172.17.0.0/16")], port=9000)
    assert added == {}
    assert "  curl -u :a-token-the-user-chose-0123456789 " \
           "'http://localhost:9000/debug/pprof/goroutine?debug=1'" in lines
    assert any("10.0.0.0/8" in line for line in lines)


# --- the script itself, running the demo ----------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _outward_address() -> str | None:
    """This machine's address on its main interface (connecting a UDP socket sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = str(sock.getsockname()[0])
    return None if ipaddress.ip_address(address).is_loopback else address


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, OSError):
        return 0  # not listening yet


@pytest.fixture(scope="module")
def started() -> Iterator[tuple[list[str], int]]:
    """``python -m demo_app.start`` with no token set: its printed lines and its port."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYPROF_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "demo_app.start", "--host", "0.0.0.0", "--port", str(port)],
        cwd=ROOT, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().rstrip("\n") for _ in range(5)]
        deadline = time.monotonic() + 60
        while _status(f"http://127.0.0.1:{port}/") != 200:
            assert proc.poll() is None and time.monotonic() < deadline, "the demo did not start"
            time.sleep(0.2)
        yield lines, port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _curl(line: str, host: str, port: int) -> subprocess.CompletedProcess[str]:
    argv = shlex.split(line.replace("localhost:8000", f"{host}:{port}"))
    assert argv[0] == "curl"
    return subprocess.run([*argv, "-sS", "-w", "\n%{http_code}"], capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.mark.parametrize("where", ["loopback", "outward"])
def test_the_printed_curl_line_works_and_nothing_works_without_it(
    started: tuple[list[str], int], where: str
) -> None:
    lines, port = started
    host = "127.0.0.1" if where == "loopback" else _outward_address()
    if host is None:
        pytest.skip("this machine has no non-loopback IPv4 address to connect from")
    (curl,) = [line for line in lines if line.lstrip().startswith("curl ")]
    done = _curl(curl, host, port)
    assert done.returncode == 0, done.stderr
    body, status = done.stdout.rsplit("\n", 1)
    assert status == "200", body
    assert body.startswith("goroutine profile: total ")
    assert _status(f"http://{host}:{port}/debug/pprof/goroutine?debug=1") == 401
    forged = re.sub(r"-u \S+", "-u :not-the-token-0123456789abcdef", curl)
    assert _curl(forged, host, port).stdout.rsplit("\n", 1)[1] == "401"
