"""A Pyroscope stand-in on loopback that records every request (tests only).

``mode`` decides each answer: ``ok`` (200), ``fail`` (500), ``hang`` (read the request,
then hold the connection until ``release``, then 503), ``no_connect`` (404 on the Connect
path, like a server without the push API; 200 on ``/ingest``), ``redirect`` (307 to another
host).
"""

from __future__ import annotations

import gzip
import http.server
import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)

    def payload(self) -> bytes:
        """The body, un-gzipped when the request says it is."""
        if self.headers.get("content-encoding") == "gzip":
            return gzip.decompress(self.body)
        return self.body


class CaptureServer:
    def __init__(self, mode: str = "ok") -> None:
        self.mode = mode
        self.requests: list[Recorded] = []
        self.release = threading.Event()
        self.arrived = threading.Condition()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with owner.arrived:
                    owner.requests.append(Recorded(
                        self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    owner.arrived.notify_all()
                mode = owner.mode
                if mode == "hang":  # then answer 503 (the client may have given up meanwhile)
                    owner.release.wait(30)
                    self.close_connection = True
                    mode = "fail"
                status = {"ok": 200, "fail": 500, "redirect": 307}.get(mode, 200)
                if mode == "no_connect":
                    status = 404 if self.path.startswith("/push.v1") else 200
                self.send_response(status)
                if mode == "redirect":
                    self.send_header("Location", "http://203.0.113.9/steal")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                        daemon=True, name="capture-server")

    def __enter__(self) -> CaptureServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, count: int, timeout: float = 60.0) -> list[Recorded]:
        """The first ``count`` requests, waiting for them (generously: a loaded CI box)."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while len(self.requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.requests)} of {count} requests arrived")
                self.arrived.wait(left)
            return list(self.requests[:count])
