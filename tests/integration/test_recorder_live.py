"""The flight recorder, per-request profiles and log context under a real uvicorn.

Assertions are on what was recorded (which stacks, which labels, which requests were kept),
never on rates: each test drives load until the server has recorded it, with generous bounds
only against hanging.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from live_server import Server, run_server

from pyprof_http.request_labels import valid_id

TOKEN = "recorder-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WAIT_S = 60.0
"""Bound on polling for something the server records after a response: never reached unless
it is broken."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server("/debug/pprof", tmp_path_factory.mktemp("recorder"),
                    app="recorder_service:app") as running:
        yield running


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        yield http


def with_function(document: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [s for s in document["samples"] if any(f["function"].endswith(name)
                                                 for f in s["stack"])]


def pprof(client: httpx.Client, path: str) -> httpx.Response:
    response = client.get("/debug/pprof" + path, headers=AUTH)
    assert response.status_code == 200, response.text
    return response


def test_a_sync_route_is_labelled_in_profile_and_in_the_recorder_after_the_load(
        client: httpx.Client) -> None:
    done = threading.Event()
    result: dict[str, Any] = {}

    def profile() -> None:
        try:
            result["doc"] = pprof(client, "/profile?seconds=3&format=json").json()
        finally:
            done.set()

    thread = threading.Thread(target=profile)
    thread.start()
    while not done.is_set():  # load for as long as the profile runs
        client.get("/sync-burn?ms=50", headers={"X-Request-ID": "sync-load"})
    thread.join()
    burned = with_function(result["doc"], "recorder_sync_route_burn")
    assert burned, "the sync route's CPU is in the profile"
    assert all(s["labels"].get("route") == "/sync-burn"
               and s["labels"].get("request_id") == "sync-load" for s in burned), burned[:3]
    # the load is over: the recorder still has it, under its route
    last = pprof(client, "/profile?last=60&format=json").json()
    recorded = with_function(last, "recorder_sync_route_burn")
    assert recorded and all(s["labels"].get("route") == "/sync-burn" for s in recorded)
    assert any("flight recorder" in c for c in last["comments"])


def wait_for_request(client: httpx.Client, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        listed = pprof(client, "/requests?format=json").json()["requests"]
        for row in listed:
            if row["request_id"] == request_id:
                return dict(row)
        time.sleep(0.05)
    raise AssertionError(f"{request_id} was never listed")


def test_a_slow_request_keeps_its_own_profile_without_a_concurrent_fast_ones_frames(
        client: httpx.Client) -> None:
    done = threading.Event()

    def slow() -> None:
        try:
            with httpx.Client(base_url=str(client.base_url), timeout=60) as other:
                other.get("/slow?ms=1500", headers={"X-Request-ID": "slow-it-1"})
        finally:
            done.set()

    thread = threading.Thread(target=slow)
    thread.start()
    n = 0
    while not done.is_set():
        client.get("/fast", headers={"X-Request-ID": f"fast-it-{n}"})
        n += 1
    thread.join()
    row = wait_for_request(client, "slow-it-1")
    assert (row["route"], row["method"], row["status"], row["reason"]) == (
        "/slow", "GET", 200, "slow")
    assert row["duration_ms"] >= 300 and row["samples"] > 0
    document = pprof(client, "/requests/slow-it-1?format=json").json()
    assert with_function(document, "recorder_slow_handler_burn")
    assert not with_function(document, "recorder_fast_handler_burn")
    assert {s["labels"]["request_id"] for s in document["samples"]} == {"slow-it-1"}
    for fmt in ("pprof", "flamegraph", "pyinstrument", "speedscope", "text", "folded"):
        assert client.get(f"/debug/pprof/requests/slow-it-1?format={fmt}",
                          headers=AUTH).status_code == 200, fmt
    page = pprof(client, "/requests?format=html").text
    assert "href='requests/slow-it-1?format=flamegraph'" in page


def test_the_profile_header_counts_only_with_credentials(client: httpx.Client) -> None:
    ignored = client.get("/sync-burn?ms=100", headers={"X-Pprof-Profile": "1",
                                                       "X-Request-ID": "ask-anonymous"})
    assert ignored.status_code == 200
    assert ignored.headers["x-request-id"] == "ask-anonymous"
    assert "x-pprof-request-profile" not in ignored.headers
    asked = client.get("/sync-burn?ms=300", headers={"X-Pprof-Profile": "1",
                                                     "X-Request-ID": "ask-token", **AUTH})
    assert asked.headers["x-pprof-request-profile"] == "/debug/pprof/requests/ask-token"
    row = wait_for_request(client, "ask-token")
    assert row["reason"] == "asked"
    document = pprof(client, "/requests/ask-token?format=json").json()
    assert any("100 Hz" in c for c in document["comments"])
    assert with_function(document, "recorder_sync_route_burn")
    listed = {r["request_id"] for r in pprof(client, "/requests?format=json").json()["requests"]}
    assert "ask-anonymous" not in listed
    assert client.get("/debug/pprof/requests/ask-token?format=json").status_code == 401
    assert client.get("/debug/pprof/requests/nope", headers=AUTH).status_code == 404


def test_request_ids_are_echoed_or_made(client: httpx.Client) -> None:
    made = client.get("/healthz").headers["x-request-id"]
    assert valid_id(made)
    assert client.get("/healthz").headers["x-request-id"] != made
    hostile = client.get("/healthz", headers={"X-Request-ID": "<script>x</script>"})
    assert hostile.headers["x-request-id"] != "<script>x</script>"
    assert valid_id(hostile.headers["x-request-id"])


def test_log_records_carry_the_request_id_in_async_and_sync_routes(
        client: httpx.Client) -> None:
    client.get("/log-async", headers={"X-Request-ID": "log-async-1"})
    client.get("/log-sync", headers={"X-Request-ID": "log-sync-1"})
    records = client.get("/logs").json()
    assert {"message": "from async", "request_id": "log-async-1", "route": "/log-async"} in records
    assert {"message": "from sync", "request_id": "log-sync-1", "route": "/log-sync"} in records


def test_last_is_validated_and_the_index_shows_the_recorder(client: httpx.Client,
                                                            server: Server) -> None:
    for query in ("last=0", "last=301", "last=x", "last=5&seconds=5", "last=5&mode=wall",
                  "last=5&hz=50"):
        response = client.get(f"/debug/pprof/profile?{query}", headers=AUTH)
        assert response.status_code == 400, (query, response.text)
    index = pprof(client, "/").text
    assert "19 Hz, last" in index and "MiB" in index
    assert "href='requests?debug=1'" in index and "href='requests?format=html'" in index
