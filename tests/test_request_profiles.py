"""Which requests keep a profile, the bounded ring, and memory over many unique request ids."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import httpx
from fastapi import FastAPI

import pyprof_http
from pyprof_http import request_labels, request_profiles
from pyprof_http.captures.requests import RequestRecord
from pyprof_http.collectors.recorder import RECORDER
from pyprof_http.request_profiles import REQUESTS, RequestProfiles, reason_for, sampled

IDS = [f"req-{i:04d}" for i in range(2000)]
"""2,000 for the hash test; the memory test sends the first 1,000."""


def test_hash_sampling_picks_the_same_ids_in_another_process() -> None:
    """Python's hash() is salted per process: a different PYTHONHASHSEED must not matter."""
    here = [i for i in IDS if sampled(i, 0.1)]
    code = textwrap.dedent(f"""
        import json
        from pyprof_http.request_profiles import sampled
        print(json.dumps([i for i in {IDS!r} if sampled(i, 0.1)]))
    """)
    picks = []
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, env={**os.environ, "PYTHONHASHSEED": seed})
        picks.append(json.loads(out.stdout))
    assert picks[0] == picks[1] == here
    assert 120 < len(here) < 280  # about a tenth of 2,000


def test_sampled_edges() -> None:
    assert not any(sampled(i, 0.0) for i in IDS)
    assert all(sampled(i, 1.0) for i in IDS)


def test_reasons() -> None:
    assert reason_for("a", 10, True, 1000, 0.0) == "asked"
    assert reason_for("a", 2_000_000_000, False, 1000, 0.0) == "slow"
    assert reason_for("a", 2_000_000_000, False, 0, 0.0) is None  # 0: none for being slow
    assert reason_for("a", 10, False, 1000, 1.0) == "sampled"
    assert reason_for("a", 10, False, 1000, 0.0) is None


def record(request_id: str) -> RequestRecord:
    return RequestRecord(request_id, "/r", "GET", 200, 0.0, 1.0, 0, "slow",
                         request_profiles._EMPTY)


def test_the_ring_keeps_the_last_k_and_a_repeated_id_once() -> None:
    ring = RequestProfiles()
    for i in range(10):
        ring.add(record(f"id-{i}"), kept=4)
    ring.add(record("id-7"), kept=4)
    assert [r.request_id for r in ring.capture().records] == ["id-7", "id-9", "id-8", "id-6"]
    assert ring.get("id-0") is None and ring.get("id-9") is not None


def test_memory_stays_flat_over_many_unique_request_ids() -> None:
    """1,000 requests with unique ids, every one kept (rate 1.0), half of them on the thread
    pool: the ring holds the last 10, and nothing else holds a request id afterwards."""
    app = FastAPI()

    @app.get("/sync")
    def sync_route() -> dict[str, int]:
        return {"n": sum(range(2000))}

    @app.get("/async")
    async def async_route() -> dict[str, int]:
        return {"n": sum(range(2000))}

    pyprof_http.install(app, pyprof_http.Settings(request_sample_rate=1.0,
                                                  request_profiles_kept=10))
    REQUESTS.clear()
    RECORDER.start(50, 10, 64)  # no lifespan here: the recorder is started by hand

    async def main() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for n, request_id in enumerate(IDS[:1000]):
                path = "/sync" if n % 2 else "/async"
                response = await client.get(path, headers={"X-Request-ID": request_id})
                assert response.headers["x-request-id"] == request_id
        # the cuts run on the default executor, which asyncio.run() waits for at its end

    try:
        asyncio.run(main())
        recorder = RECORDER.running()
        intervals, keys, _size = recorder.memory()
    finally:
        RECORDER.stop()
    assert len(REQUESTS) == 10
    # the ring keeps the last cuts to finish (they run concurrently): ids from the end
    assert {r.request_id for r in REQUESTS.capture().records} <= set(IDS[960:1000])
    assert request_labels._BY_THREAD == {} and request_labels._BY_TASK == {}
    assert intervals <= 11  # the window (10 s) and the current second
    # keys are bounded by what the ticks could see, not by the 2,000 ids
    assert keys <= intervals * 50 * 8
    REQUESTS.clear()


def test_the_requests_table_escapes_what_the_client_chose() -> None:
    from pyprof_http.captures.requests import RequestsCapture
    from pyprof_http.render.requests import (
        render_requests_html,
        render_requests_json,
        render_requests_text,
    )

    hostile = RequestRecord("id/../x", "/<script>alert(1)</script>\u2028\x1b[31m", "GE\nT",
                            None, 0.0, 1.0, 3, "slow", request_profiles._EMPTY)
    capture = RequestsCapture((hostile,), request_profiles._EMPTY)
    html = render_requests_html(capture, "requests").body.decode()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "\u2028" not in html and "\x1b" not in html
    assert "href='requests/id%2F..%2Fx?format=flamegraph'" in html
    text = render_requests_text(capture, "requests").body.decode()
    assert "\x1b" not in text and "\u2028" not in text and text.count("\n") == 3
    rows: list[dict[str, Any]] = json.loads(render_requests_json(capture, "requests").body)[
        "requests"]
    assert rows[0]["route"].startswith("/<script>") and rows[0]["status"] is None
