"""serve_in_background in workers: every worker asks for the same port and none crash-loops."""

from __future__ import annotations

import os
import socket
import urllib.request
from pathlib import Path

import pytest

import pyprof_http
from pyprof_http.config import Settings
from pyprof_http.workers.membership import WORKERS


def test_workers_sharing_a_base_port_each_get_one(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    with socket.socket() as taken:  # the first worker's port, say
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        base = taken.getsockname()[1]
        settings = Settings(workers_rendezvous="on")
        first = pyprof_http.serve_in_background(port=base, settings=settings)
        second = pyprof_http.serve_in_background(port=base, settings=settings)
        try:
            ports = {first.port, second.port}
            assert len(ports) == 2 and base not in ports
            assert all(base < port < base + 64 for port in ports)
            assert WORKERS.joined  # the side server joined its siblings at once
            for server in (first, second):
                with urllib.request.urlopen(server.url + "cmdline", timeout=30) as response:
                    assert response.status == 200
            first.stop()  # two apps in one process: the other keeps the membership
            assert WORKERS.joined
            with urllib.request.urlopen(second.url + f"cmdline?worker={os.getpid()}",
                                        timeout=30) as response:
                assert response.status == 200
        finally:
            first.stop()
            second.stop()
    assert not WORKERS.joined


def test_outside_workers_a_taken_port_still_raises() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError):
            pyprof_http.serve_in_background(port=taken.getsockname()[1],
                                            settings=Settings(workers_rendezvous="off"))
