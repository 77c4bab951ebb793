"""``/trace`` on a real uvicorn (asyncio loop): the hogged request and its attribution, markers
and spans in every format, the Chrome JSON parsed by headless Chromium, the HTML timeline in
Chromium with a hostile task name, one trace at a time, and nothing patched after a window or a
client that hangs up.

One server and one recorded window per format for the whole module (each window is 1.5 s of
the same traffic). Assertions are on what was recorded (which events, their order, their
labels), never on how fast the machine ran: the only durations compared are of events that
contain one another by construction.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_server import Server, run_server
from playwright.sync_api import Browser, sync_playwright
from trace_service import HOG_TASK, HOSTILE_TASK_NAME, MARK_NAME, SPAN_NAME

from trace_schema import check_chrome_trace

CHROMIUM = "/usr/bin/chromium"
TRAFFIC = ("/hogged", "/sync", "/to-thread", "/hostile")
WAIT_FOR_HOOKS_S = 20.0


def client(server: Server, timeout: float = 30) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, timeout=timeout, trust_env=False)


def hooked(server: Server) -> bool:
    with client(server) as http:
        return bool(http.get("/hooked").json()["hooked"])


def wait_until(server: Server, want: bool) -> None:
    deadline = time.monotonic() + WAIT_FOR_HOOKS_S
    while hooked(server) != want:
        assert time.monotonic() < deadline, f"hooked stayed {not want}"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server("/debug/pprof", tmp_path_factory.mktemp("trace"),
                    app="trace_service:app") as running:
        yield running


def record(server: Server, params: dict[str, str], traffic: tuple[str, ...] = TRAFFIC
           ) -> httpx.Response:
    """A trace window with ``traffic`` sent once it has started; returns the trace."""
    result: list[httpx.Response] = []

    def get_trace() -> None:
        with client(server) as http:
            result.append(http.get(server.url("/trace"), params=params))

    thread = threading.Thread(target=get_trace)
    thread.start()
    try:
        wait_until(server, True)
        with client(server) as http:
            for path in traffic:
                assert http.get(path).status_code == 200
    finally:
        thread.join(60)
    (response,) = result
    assert response.status_code == 200, response.text
    wait_until(server, False)  # nothing stays patched after a window
    return response


@pytest.fixture(scope="module")
def traces(server: Server) -> dict[str, httpx.Response]:
    return {fmt: record(server, {"seconds": "2", **query}) for fmt, query in
            (("chrome", {}), ("html", {"format": "html"}), ("text", {"debug": "1"}))}


def _by(events: list[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    return [e for e in events if all(e.get(k) == v for k, v in match.items())]


def test_the_hogged_request_waits_behind_the_hog_in_order(traces: dict[str, httpx.Response]
                                                          ) -> None:
    response = traces["chrome"]
    assert response.headers["content-type"] == "application/json"
    events = check_chrome_trace(response.json())
    lanes = {e["tid"]: e["args"]["name"] for e in _by(events, name="thread_name")}
    (hog,) = [e for e in _by(events, ph="X", cat="task step", name=HOG_TASK)]
    assert lanes[hog["tid"]].endswith(f" {HOG_TASK}") and "route" not in hog["args"]
    (request,) = _by(events, ph="b", cat="request", name="GET /hogged")
    waits = [e for e in _by(events, cat="request", id=request["id"])
             if e["name"] == "waiting for the loop"]
    pairs = list(zip(waits[::2], waits[1::2], strict=True))  # each wait: a begin, its end
    behind_hog = [(b, e) for b, e in pairs if b["ph"] == "b" and e["ph"] == "e" and any(
        HOG_TASK in who for who in b["args"]["waited behind"])]
    assert len(behind_hog) == 1, waits
    ((wait, end),) = behind_hog
    # the request was ready before the hog's step began and ran only after it ended
    assert wait["ts"] <= hog["ts"] and end["ts"] >= hog["ts"] + hog["dur"] - 0.01
    assert request["args"]["status"] == "200"


def test_the_text_view_attributes_the_wait(traces: dict[str, httpx.Response]) -> None:
    text = traces["text"].text
    line = next(li for li in text.splitlines() if li.startswith("  GET /hogged -> 200"))
    assert "waiting for the loop" in line
    after = text.split(line, 1)[1].splitlines()[1]
    assert after.strip().startswith("waited behind task ") and f" {HOG_TASK} (step)" in after
    assert f"step {HOG_TASK} at" in text.split("longest loop steps")[1]


def test_markers_and_spans_in_every_format_with_labels(traces: dict[str, httpx.Response]
                                                       ) -> None:
    events = traces["chrome"].json()["traceEvents"]
    (marker,) = _by(events, ph="i", name=MARK_NAME)
    assert marker["args"]["table"] == "users" and marker["args"]["route"] == "/hogged"
    (page,) = _by(events, ph="b", cat="span", name=SPAN_NAME)
    assert page["args"]["template"] == "home" and page["args"]["route"] == "/hogged"
    (sync,) = _by(events, ph="b", cat="span", name="sync.work")
    assert sync["args"]["route"] == "/sync" and "AnyIO" in sync["args"]["thread"]
    work = [e for e in _by(events, ph="X", cat="thread pool") if e["args"].get("route")]
    assert {e["args"]["route"] for e in work} >= {"/sync", "/to-thread"}

    text = traces["text"].text
    assert f"mark {MARK_NAME} table=users" in text and "route=/hogged" in text
    assert f"span {SPAN_NAME}" in text and "template=home" in text

    page_html = traces["html"].text
    data = json.loads(page_html.split('id="trace-data">', 1)[1].split("</script>", 1)[0])
    kinds = data["kinds"]
    marks = [e for e in data["events"] if kinds[e[0]] == "mark" and e[4] == MARK_NAME]
    assert len(marks) == 1 and ["table", "users"] in marks[0][5]
    spans = [e for e in data["events"] if kinds[e[0]] == "span" and e[4] == SPAN_NAME]
    assert len(spans) == 1 and ["template", "home"] in spans[0][5]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is required (make system-deps)"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                              args=["--no-sandbox", "--disable-gpu"])
        try:
            yield launched
        finally:
            launched.close()


PARSE_IN_PAGE = """
text => {
  const doc = JSON.parse(text);
  const open = new Map();
  const names = new Map();
  let complete = 0, instants = 0;
  for (const e of doc.traceEvents) {
    if (e.ph === "M" && e.name === "thread_name") names.set(e.tid, e.args.name);
    if (e.ph === "X") { if (!(e.dur >= 0)) throw new Error("bad dur"); complete++; }
    if (e.ph === "i") instants++;
    if (e.ph === "b" || e.ph === "e") {
      const key = e.cat + "/" + e.id;
      open.set(key, (open.get(key) || 0) + (e.ph === "b" ? 1 : -1));
    }
  }
  const unbalanced = [...open.values()].filter(n => n !== 0).length;
  return {complete, instants, unbalanced, lanes: [...names.values()]};
}
"""


def test_chromium_parses_the_chrome_json(traces: dict[str, httpx.Response],
                                         browser: Browser) -> None:
    page = browser.new_page()
    try:
        page.set_content("<!DOCTYPE html><title>trace check</title>")
        result = page.evaluate(PARSE_IN_PAGE, traces["chrome"].text)
    finally:
        page.close()
    assert result["unbalanced"] == 0 and result["complete"] > 0 and result["instants"] >= 1
    assert any(lane.endswith(f" {HOG_TASK}") for lane in result["lanes"])
    assert any(lane.endswith(HOSTILE_TASK_NAME) for lane in result["lanes"])


def test_the_html_timeline_renders_lanes_and_survives_a_hostile_name(
        server: Server, traces: dict[str, httpx.Response], browser: Browser) -> None:
    response = traces["html"]
    assert response.headers["content-security-policy"].startswith("default-src 'none'")
    dialogs: list[str] = []
    errors: list[str] = []
    page = browser.new_page()
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        # served from the server's origin with its headers, as a browser would get it
        page.route("**/timeline.html", lambda route: route.fulfill(
            status=200, headers=dict(response.headers), body=response.content))
        page.goto(server.base_url + "/timeline.html")
        lanes = page.locator("#lanes li").all_text_contents()
        timeline = page.evaluate("window.__traceTimeline && {lanes: window.__traceTimeline.lanes,"
                                 " steps: window.__traceTimeline.find('step', '"
                                 + HOG_TASK + "')}")
        page.click("#zoom-in")
        page.mouse.click(400, 300)
        selected = page.evaluate("([kind, name]) => window.__traceTimeline.select(kind, name)",
                                 ["step", HOSTILE_TASK_NAME])
        heading = page.locator("#details h2").text_content()
        details = page.locator("#details").text_content() or ""
        injected = page.locator("#details img, body img").count()
    finally:
        page.close()
    assert not dialogs and not errors, (dialogs, errors)
    assert any(lane.endswith(HOSTILE_TASK_NAME) for lane in lanes), lanes
    assert any(lane.endswith(f" {HOG_TASK}") for lane in lanes)
    assert "requests" in lanes and "MainThread" in lanes
    assert timeline["lanes"] == len(lanes) and timeline["steps"] == 1
    # clicking an event shows its details, the hostile name as text
    assert selected >= 1 and heading == f"step: {HOSTILE_TASK_NAME}" and injected == 0
    assert "/hostile" in details and "duration" in details


def test_one_trace_at_a_time(server: Server) -> None:
    result: list[httpx.Response] = []

    def first() -> None:
        with client(server) as http:
            result.append(http.get(server.url("/trace"), params={"seconds": "2"}))

    thread = threading.Thread(target=first)
    thread.start()
    try:
        wait_until(server, True)
        with client(server) as http:
            second = http.get(server.url("/trace"), params={"seconds": "1"})
    finally:
        thread.join(60)
    assert second.status_code == 409 and second.text.startswith("a trace profile is already")
    assert result[0].status_code == 200
    wait_until(server, False)


def test_a_client_that_hangs_up_leaves_nothing_patched(server: Server) -> None:
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(f"GET {server.prefix}/trace?seconds=30 HTTP/1.1\r\n"
                     f"Host: {server.host}\r\n\r\n".encode())
        wait_until(server, True)
    wait_until(server, False)  # within ~1 s of the hang-up; bounded by WAIT_FOR_HOOKS_S
    with client(server) as http:  # and the slot is free again
        assert http.get(server.url("/trace"), params={"seconds": "1", "debug": "1"}
                        ).status_code == 200
