"""What pushing to Pyroscope costs the demo app, and how many bytes it sends.

Run:  .venv/bin/python benchmarks/push.py [--rounds 6] [--seconds 3] [--clients 4]
                                          [--interval 15]

Three child uvicorn servers (this file with ``--serve``) run the demo app (demo_app/main.py,
``pyprof_http.install(app)``): ``off-a`` and ``off-b`` without a ``push_url``, ``on`` with
``PYPROF_PUSH_URL`` pointing at a capture server in this process (HTTP on 127.0.0.1 that
answers 200 and counts what arrives) and ``PYPROF_PUSH_INTERVAL=--interval``. Client threads
(keep-alive httpx) load one server at a time for ``--seconds`` over the demo's routes
(``/work``, ``/sync``, ``/spawn?n=10``, ``/``), the order rotating over ``--rounds`` rounds.
Per round: throughput on/off-a and off-b/off-a (the A/A noise figure: two identical servers
measured the same way); the table shows median (min-max).

Then the bytes the ``on`` server pushed (request bodies as sent: gzipped Connect
``PushRequest`` s) per minute of its life, with the number of pushes and series; the ``on``
server is left running idle to the end of a whole number of intervals so the figure covers
full batches, idle and loaded. Loopback only; servers always stopped.
"""

from __future__ import annotations

import argparse
import http.server
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _server import ServerProcess, serve_on_free_port

PATHS = ("/work", "/sync", "/spawn?n=10", "/")


class Capture:
    """Counts pushes and bytes (Content-Length of each POST)."""

    def __init__(self) -> None:
        self.pushes = 0
        self.bytes = 0
        self.lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                with owner.lock:
                    owner.pushes += 1
                    owner.bytes += length
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class Load:
    def __init__(self, base_url: str, clients: int) -> None:
        self.base_url, self.clients = base_url, clients
        self.count = self.errors = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def run(self, seconds: float) -> int:
        threads = [threading.Thread(target=self._client, args=(i,), daemon=True)
                   for i in range(self.clients)]
        self._stop.clear()
        self.count = 0
        for t in threads:
            t.start()
        time.sleep(seconds)
        self._stop.set()
        for t in threads:
            t.join(timeout=30)
        return self.count

    def _client(self, offset: int) -> None:
        import httpx

        done = 0
        with httpx.Client(base_url=self.base_url, timeout=30, trust_env=False) as client:
            i = offset
            while not self._stop.is_set():
                try:
                    client.get(PATHS[i % len(PATHS)]).raise_for_status()
                    done += 1
                except httpx.HTTPError:
                    self.errors += 1
                i += 1
        with self._lock:
            self.count += done


def throughput(server: ServerProcess, clients: int, seconds: float) -> float:
    load = Load(f"http://127.0.0.1:{server.port}", clients)
    load.run(0.3)
    started = time.monotonic()
    count = load.run(seconds)
    return count / (time.monotonic() - started)


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--interval", type=float, default=15.0)
    args = parser.parse_args()
    capture = Capture()
    me = [sys.executable, __file__, "--serve"]
    base = {k: v for k, v in os.environ.items() if not k.startswith("PYPROF_")}
    on_env = {**base, "PYPROF_PUSH_URL": capture.url,
              "PYPROF_PUSH_INTERVAL": str(args.interval), "PYPROF_PUSH_SERVICE_NAME": "demo"}
    ratios_on: list[float] = []
    ratios_aa: list[float] = []
    with (ServerProcess(me, env=base) as off_a, ServerProcess(me, env=base) as off_b,
          ServerProcess(me, env=on_env) as on):
        born = time.monotonic()
        servers = {"off-a": off_a, "off-b": off_b, "on": on}
        names = list(servers)
        for round_no in range(args.rounds):
            order = names[round_no % 3:] + names[:round_no % 3]
            rps = {name: throughput(servers[name], args.clients, args.seconds)
                   for name in order}
            ratios_on.append(rps["on"] / rps["off-a"])
            ratios_aa.append(rps["off-b"] / rps["off-a"])
            print(f"round {round_no + 1}: " + ", ".join(f"{n} {rps[n]:.0f} req/s"
                                                         for n in names), flush=True)
        # idle to the end of whole intervals, so every batch counted is complete
        lived = time.monotonic() - born
        whole = max(1, int(lived // args.interval) + 1) * args.interval
        time.sleep(max(0.0, whole - lived + 1.0))
        minutes = (time.monotonic() - born) / 60
        with capture.lock:
            pushes, sent = capture.pushes, capture.bytes
    print()
    print("| measure | value |")
    print("|---|---|")
    print(f"| throughput push on / off-a (median, min-max of {args.rounds}) | "
          f"{summary(ratios_on)} |")
    print(f"| throughput off-b / off-a (A/A noise) | {summary(ratios_aa)} |")
    print(f"| pushes received (interval {args.interval:g} s, {minutes:.2f} min) | {pushes} |")
    print(f"| bytes pushed per minute (gzipped request bodies) | {sent / minutes:,.0f} |")
    print(f"| bytes per push | {sent / max(pushes, 1):,.0f} |")


def serve() -> None:
    from demo_app.main import app

    serve_on_free_port(app)


if __name__ == "__main__":
    if "--serve" in sys.argv:
        serve()
    else:
        main()
