"""What Grafana Alloy's ``pyroscope.scrape`` and Parca's scraper ask for, against real uvicorn.

Both read Go-style paths on a fixed schedule: ``/debug/pprof/profile?seconds=<interval - 1>``
(Alloy: 14 s every 15 s) or ``?seconds=<interval>`` (Parca: the whole interval), plus
``/goroutine``, ``/block``, ``/mutex`` and ``/allocs`` without parameters, all at once per
target. A CPU window that ends a little late must not make the next one fail with 409. Here
the windows are 2 s long and the next scrape comes 0.15 s *before* the previous window is due
to end, on a fixed schedule (each window late by 150 ms more than the one before, as a wait
pushes the next window back: 0.45 s by the fourth, within the 1 s grace): every one must be
200, and together the windows must cover the time without overlapping.
"""

from __future__ import annotations

import gzip
import itertools
import threading
import time
import urllib.error
import urllib.request

from live_server import Server

import pprof_schema
import pyroscope_rules
from pyprof_http.registry import BY_NAME

WINDOW_S = 2
LATE_S = 0.15


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_back_to_back_cpu_windows_all_succeed_and_cover_the_time(server: Server) -> None:
    results: list[tuple[int, bytes]] = [(0, b"")] * 4
    alongside: dict[str, tuple[int, bytes]] = {}
    # Alloy's other default targets, scraped at the same time as the first CPU window
    others = ["/goroutine", "/block"] + (["/allocs"] if "allocs" in BY_NAME else [])

    def scrape(index: int) -> None:
        results[index] = _get(server.url(f"/profile?seconds={WINDOW_S}"))

    def scrape_other(path: str) -> None:
        alongside[path] = _get(server.url(path))

    threads = []
    start = time.monotonic()
    for index in range(4):
        due = start + index * (WINDOW_S - LATE_S)
        time.sleep(max(0.0, due - time.monotonic()))
        thread = threading.Thread(target=scrape, args=(index,))
        thread.start()
        threads.append(thread)
        if index == 0:
            for path in others:
                other = threading.Thread(target=scrape_other, args=(path,))
                other.start()
                threads.append(other)
    for thread in threads:
        thread.join(120)
    statuses = [status for status, _ in results]
    assert statuses == [200] * 4, [body[:200] for _, body in results]
    windows = []
    for _, body in results:
        raw = gzip.decompress(body)
        assert pyroscope_rules.violations(raw) == []
        profile = pprof_schema.decode(raw)
        windows.append((profile.time_nanos, profile.time_nanos + profile.duration_nanos))
    windows.sort()
    for (_, end), (next_start, _) in itertools.pairwise(windows):
        assert next_start >= end - 10_000_000  # one sampler at a time: no overlap (10 ms clocks)
    covered = sum(end - begin for begin, end in windows)
    span = windows[-1][1] - windows[0][0]
    assert covered >= 0.8 * span  # the gaps are the hand-overs, not lost windows
    for path in others:
        status, body = alongside[path]
        assert status == 200, (path, body[:200])
        assert pyroscope_rules.violations(gzip.decompress(body)) == []
