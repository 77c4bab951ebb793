"""``/goroutineleak`` and ``/goroutine?min_age`` under a real uvicorn, with real collections.

``leak_service`` leaks one task of each kind next to 1,000 healthy parked tasks; the module's
server is driven through one scenario (in :func:`scenario`, in order) and each test checks
one thing it recorded, so the tests do not depend on the order they run in.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_server import Server, run_server
from test_go_pprof import go_pprof, ok

APP = "leak_service:app"
SERVICE = str(Path(__file__).with_name("leak_service.py"))
KINDS = {  # task name -> (function, what it awaits)
    "leak-future": ("leak_service_future", "Future"),
    "leak-event": ("leak_service_event", "Event.wait"),
    "leak-queue": ("leak_service_queue", "Queue.get"),
}
MIN_AGE_S = 1


def _line(text: str) -> int:
    lines = Path(SERVICE).read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)


@dataclass
class Scenario:
    server: Server
    text: str = ""
    pprof: bytes = b""
    dump: str = ""
    formats: dict[str, httpx.Response] = field(default_factory=dict)
    min_age_dump: str = ""
    fresh_task_name: str = ""
    index: str = ""
    stats_before: dict[str, Any] = field(default_factory=dict)
    stats_many: dict[str, Any] = field(default_factory=dict)
    concurrent: list[tuple[float, float]] = field(default_factory=list)
    window: tuple[float, float] = (0.0, 0.0)


def _get(client: httpx.Client, url: str, **params: Any) -> httpx.Response:
    response = client.get(url, params=params)
    assert response.status_code == 200, response.text
    return response


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    with run_server("/debug/pprof", tmp_path_factory.mktemp("leaks"), app=APP) as server, \
            httpx.Client(timeout=60) as client:
        s = Scenario(server)
        _get(client, server.base_url + "/healthy", n=1000)
        _get(client, server.base_url + "/leak")
        s.index = _get(client, server.url("/")).text  # must not collect
        s.stats_before = _get(client, server.base_url + "/stats").json()
        time.sleep(MIN_AGE_S + 0.2)  # the leaked tasks are now older than MIN_AGE_S
        s.text = _get(client, server.url("/goroutineleak"), debug=1).text
        s.pprof = _get(client, server.url("/goroutineleak")).content
        s.dump = _get(client, server.url("/goroutineleak"), debug=2).text
        for fmt in ("flamegraph", "folded", "json"):
            s.formats[fmt] = _get(client, server.url("/goroutineleak"), format=fmt, gc=0)
        _get(client, server.base_url + "/healthz")
        s.min_age_dump = _get(client, server.url("/goroutine"), debug=2,
                              min_age=MIN_AGE_S).text
        _get(client, server.base_url + "/leak_many", n=10_000)
        _get(client, server.url("/goroutineleak"), debug=1)
        s.stats_many = _get(client, server.base_url + "/stats").json()
        _concurrent_requests(client, s)
        yield s


def _concurrent_requests(client: httpx.Client, s: Scenario) -> None:
    """/healthz requests sent while a /goroutineleak (a 1 s window, then its collection) is in
    flight: which of them completed before it did is recorded, not how fast."""
    done = threading.Event()
    started = time.monotonic()

    def leak_request() -> None:
        with httpx.Client(timeout=60) as own:
            _get(own, s.server.url("/goroutineleak"), seconds=1, debug=1)
        s.window = (started, time.monotonic())
        done.set()

    thread = threading.Thread(target=leak_request)
    thread.start()
    while not done.is_set():
        sent = time.monotonic()
        _get(client, s.server.base_url + "/healthz")
        s.concurrent.append((sent, time.monotonic()))
    thread.join()


def test_each_leak_kind_found_with_creation_site_and_awaited_object(
        scenario: Scenario) -> None:
    dump = scenario.dump
    blocks = {b.split('"')[1]: b for b in dump.split("\n\n") if b.startswith("task ")}
    for name, (function, awaiting) in KINDS.items():
        block = blocks[name]
        assert f"[awaiting {awaiting} (leaked), lived " in block.splitlines()[0]
        kind = name.split("-")[1]
        assert f'File "{SERVICE}", line {_line(f"leak-site {kind}")}, in {function}' in block
        site = _line(f'name="{name}"')
        assert f"created by leak at {SERVICE}:{site}" in block
        assert "for request route \"/leak\"" in block


def test_the_reachable_one_and_healthy_tasks_are_not_reported(scenario: Scenario) -> None:
    for out in (scenario.text, scenario.dump):
        assert "leak-forgotten" not in out and "leak_service_forgotten" not in out
        assert "leak_service_sleeper" not in out and "leak_service_held" not in out
    assert scenario.text.startswith("goroutineleak profile: total 3\n")
    # the collection ran on a render thread, not on the event loop's
    assert "gc.collect() on thread pyprof_http-render: " in scenario.text


def test_min_age_shows_the_reachable_leak_and_not_fresh_tasks(scenario: Scenario) -> None:
    dump = scenario.min_age_dump
    assert '"leak-forgotten"' in dump
    assert "in leak_service_forgotten" in dump
    assert "min_age=1s: " in dump and "left out as of unknown age" in dump
    # the request's own task and the ones created after the leaks are younger than 1 s
    assert "leak_service_many" not in dump


def test_index_count_without_collecting(scenario: Scenario) -> None:
    assert "goroutineleak" in scenario.index
    assert scenario.stats_before["total"] == 0  # listing the index ran no collection


def test_formats(scenario: Scenario) -> None:
    assert scenario.formats["flamegraph"].headers["content-type"].startswith("text/html")
    assert "leak_service_event" in scenario.formats["flamegraph"].text
    folded = scenario.formats["folded"].text
    assert any(line.endswith(" 1") and "leak_service_queue" in line
               for line in folded.splitlines())
    data = scenario.formats["json"].json()
    assert "goroutineleak" in json.dumps(data)
    profile = gzip.decompress(scenario.pprof)
    assert b"goroutineleak" in profile and b"Event.wait" in profile


def test_ten_thousand_leaks_keep_memory_bounded(scenario: Scenario) -> None:
    stats = scenario.stats_many
    assert stats["total"] >= 10_003
    assert stats["ring"] <= 1_000 and stats["queued"] == 0
    assert stats["groups"] <= 10  # 10,000 leaks at one site are one group


def test_app_handler_saw_every_event(scenario: Scenario) -> None:
    stats = scenario.stats_many
    assert stats["events"] == stats["total"]  # handed on, one for one


def test_loop_kept_serving_during_the_leak_request(scenario: Scenario) -> None:
    begun, ended = scenario.window
    served = [(a, b) for a, b in scenario.concurrent if a >= begun and b <= ended]
    assert served, "no request completed while /goroutineleak was in flight"


def test_go_tool_pprof_top_and_traces(go_binary: str, tmp_path: Path,
                                      scenario: Scenario) -> None:
    url = scenario.server.url("/goroutineleak")
    top = ok(go_pprof(go_binary, tmp_path, "-top", "-nodefraction=0", url))
    assert "Type: goroutineleak" in top
    for function, _ in KINDS.values():
        assert function in top
    traces = ok(go_pprof(go_binary, tmp_path, "-traces", url))
    blocks = traces.split("-----------+")
    for name, (function, awaiting) in KINDS.items():
        block = next(b for b in blocks if f"task:  {name}\n" in b)
        assert f"awaiting:  {awaiting}\n" in block
        assert "created_by:  route /leak\n" in block
        frames = [line.split()[-1] for line in block.splitlines()
                  if line.strip() and ":" not in line.split()[0]]
        # the await chain, then the creation site as the outer frames
        assert frames[frames.index(function) + 1] == "leak"
        assert "leak_service_forgotten" not in traces


def test_app_handler_set_in_its_lifespan_stays_behind_ours_and_is_restored(
        tmp_path: Path) -> None:
    """The app sets its handler in its lifespan, after pyprof_http's startup: the recorder is
    put back in front once startup completes, so the app's own collection (no
    /goroutineleak request yet) is recorded and every event still reaches the app's handler;
    at shutdown the app's handler is the loop's again."""
    out = tmp_path / "shutdown.json"
    with run_server("/debug/pprof", tmp_path, {"LEAK_SERVICE_FILE": str(out)},
                    app=APP) as server, httpx.Client(timeout=60) as client:
        _get(client, server.base_url + "/leak")
        _get(client, server.base_url + "/collect")
        stats = _get(client, server.base_url + "/stats").json()
        text = _get(client, server.url("/goroutineleak"), debug=1).text
    assert stats["total"] == 3 and stats["events"] == 3
    assert text.startswith("goroutineleak profile: total 3\n")
    assert "replaced the exception handler" not in text
    assert json.loads(out.read_text()) == {"events": 3, "restored": True}
