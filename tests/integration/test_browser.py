"""Headless Chromium on the index and the flame graph, under the non-default ``/ops/profiling``.

Every page must load without a console error, a page error or a CSP violation, and the hostile
task and function names of ``sample_service`` must show up as text, never run as markup (a
``dialog`` would mean an ``alert`` ran). The task name reaches the flame graph through its
"group by" control (``#group=task``), one synthetic frame per task.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urldefrag, urlsplit

import pytest
from live_server import Server
from playwright.sync_api import Browser, ConsoleMessage, Dialog, Page, sync_playwright
from sample_service import HOSTILE_FUNCTION_NAME, HOSTILE_TASK_NAME

CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = Path("/tmp/integration_flamegraph.png")
GROUPED_SCREENSHOT = Path("/tmp/flame_grouped.png")
TIMED_PROFILES = ("/profile",)  # their links would take the default 30 s: follow with seconds=1
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
LABEL = re.compile(r"^(?P<name>.*) (?P<share>\d+(?:\.\d+)?)% \u00b7 (?P<value>\S.*)$", re.S)
"""A frame's label: its name, then its share of the total and its value ("f 52.31% · 1.20 s")."""


def name_of(label: str | None) -> str:
    """The name part of a frame's label."""
    match = LABEL.match(label or "")
    assert match is not None, f"frame label without its totals: {label!r}"
    return match["name"]


RECORD_CSP_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__cspViolations.push(e.violatedDirective + " blocked " + e.blockedURI);
});
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), (
        f"{CHROMIUM} is required by the browser tests; install it with `make system-deps` "
        "(Debian package chromium); never download a browser"
    )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Watched:
    """A page and everything bad it reported."""

    page: Page
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def csp_violations(self) -> list[str]:
        return list(self.page.evaluate("window.__cspViolations || []"))

    def assert_clean(self) -> None:
        assert self.dialogs == [], f"a dialog opened: injected script ran: {self.dialogs}"
        assert self.page_errors == [], self.page_errors
        assert self.console_errors == [], self.console_errors
        assert self.csp_violations() == []


@pytest.fixture
def watched(browser: Browser) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)  # a bound against hanging: Chromium on a loaded box is slow
    page.add_init_script(RECORD_CSP_VIOLATIONS)
    result = Watched(page)

    def on_console(message: ConsoleMessage) -> None:
        # Chromium asks the host app for /favicon.ico on plain-text pages: not ours to serve.
        if message.type == "error" and not message.location.get("url", "").endswith("/favicon.ico"):
            result.console_errors.append(f"{page.url}: {message.text} {message.location}")

    def on_dialog(dialog: Dialog) -> None:
        result.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("console", on_console)
    page.on("pageerror", lambda error: result.page_errors.append(f"{page.url}: {error}"))
    page.on("dialog", on_dialog)
    try:
        yield result
    finally:
        context.close()


def test_index_loads_cleanly_and_every_link_answers(watched: Watched, ops_server: Server) -> None:
    page = watched.page
    response = page.goto(ops_server.url("/"))
    assert response is not None and response.status == 200
    assert response.headers["x-frame-options"] == "DENY"
    assert "goroutine" in page.locator("table").inner_text()
    watched.assert_clean()

    table_links = page.eval_on_selector_all("table a[href]", "els => els.map(e => e.href)")
    all_links = page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
    assert len(table_links) >= 5, table_links  # cmdline x2, goroutine text/pprof/flamegraph
    for url in sorted({urldefrag(link).url for link in all_links}):  # "#record": the index
        assert url.startswith(ops_server.url("/")), f"link leaves the mount prefix: {url}"
        if urlsplit(url).path in {ops_server.prefix + p for p in TIMED_PROFILES}:
            url += "&seconds=1" if "?" in url else "?seconds=1"
        url = re.sub(r"seconds=\d+", "seconds=1", url)  # a heap link opens a window: keep it short
        answer = page.request.get(url, max_redirects=0)
        if urlsplit(url).path == ops_server.prefix + "/mutex":  # lock profiling is off here:
            assert answer.status == 412, answer.text()  # the link explains how to switch it on
            assert "PYPROF_LOCK_PROFILE_FRACTION" in answer.text()
            continue
        assert answer.status == 200, f"{url} -> {answer.status} {answer.text()[:200]}"
        if answer.headers["content-type"].startswith(("text/html", "text/plain")):
            visited = page.goto(url)  # downloads (pprof) are only fetched, not opened
            assert visited is not None and visited.status == 200
            watched.assert_clean()


def test_dump_shows_hostile_task_name_as_text(watched: Watched, ops_server: Server) -> None:
    page = watched.page
    page.goto(ops_server.url("/goroutine?debug=2"))
    text = page.locator("body").inner_text()
    assert f'"{HOSTILE_TASK_NAME}"' in text
    assert "integration_nested_helper" in text
    assert page.locator("img").count() == 0
    watched.assert_clean()


def test_flamegraph_renders_zooms_and_searches(watched: Watched, ops_server: Server) -> None:
    page = watched.page
    response = page.goto(ops_server.url("/goroutine?format=flamegraph"))
    assert response is not None and response.status == 200
    assert "script-src 'sha256-" in response.headers["content-security-policy"]
    page.wait_for_selector("#chart .frame")
    frames = page.locator("#chart .frame")
    assert frames.count() >= 10
    assert name_of(page.locator("#chart .frame.root").first.text_content()) == "all"
    assert page.locator("#empty").is_hidden()
    assert page.locator("#title").text_content() == "goroutine profile"

    def frame(name: str):
        return page.locator("#chart .frame").filter(has_text=name)

    for name in (
        "integration_nested_helper",
        "integration_waiter_coroutine",
        "integration_worker_thread",
        "Event.wait",
    ):
        assert frame(name).count() >= 1, name

    # The hostile function name is a frame label, as text: nothing was parsed out of it.
    hostile = frame(HOSTILE_FUNCTION_NAME)
    assert hostile.count() == 1
    assert name_of(hostile.text_content()) == HOSTILE_FUNCTION_NAME
    assert HOSTILE_FUNCTION_NAME in (hostile.get_attribute("title") or "")
    assert page.locator("img").count() == 0
    assert page.evaluate("document.scripts.length") == 2  # the data block and our script
    hostile.hover()
    assert page.locator("#status").text_content().startswith(HOSTILE_FUNCTION_NAME)

    page.fill("#search", "onerror")
    assert page.locator("#match").text_content().startswith("Matched: ")
    assert page.locator("#chart .frame.match").count() == 1
    page.locator("#search").press("Escape")
    assert page.locator("#chart .frame.match").count() == 0

    # Zoom into the waiter: its subtree fills the width, other subtrees are gone.
    waiter = frame("integration_waiter_coroutine").first
    waiter.click()
    page.mouse.move(1, 1)  # leave the chart: the status line goes back to the zoomed frame
    assert page.locator("#reset").is_enabled()
    assert page.locator("#status").text_content().startswith("Zoomed: integration_waiter_coroutine")
    zoomed = frame("integration_waiter_coroutine")
    assert zoomed.count() == 1
    assert zoomed.evaluate("e => e.style.width") == "100%"
    assert frame("integration_worker_thread").count() == 0
    assert frame("integration_nested_helper").count() == 1

    page.fill("#search", "nested_helper")
    assert page.locator("#match").text_content().startswith("Matched: ")
    matched = page.locator("#chart .frame.match")
    assert matched.count() == 1
    assert name_of(matched.text_content()) == "integration_nested_helper"

    page.click("#reset")
    assert page.locator("#reset").is_disabled()
    assert frame("integration_worker_thread").count() >= 1
    page.fill("#search", "integration_")
    assert page.locator("#chart .frame.match").count() >= 4
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    watched.assert_clean()


def test_flamegraph_grouped_by_task_shows_hostile_task_name_as_text(
    watched: Watched, ops_server: Server
) -> None:
    page = watched.page
    response = page.goto(ops_server.url("/goroutine?format=flamegraph#group=task"))
    assert response is not None and response.status == 200
    page.wait_for_selector("#chart .frame.group")
    assert page.locator("#group-label").is_visible()
    assert page.locator("#group-by").input_value() == "task"
    keys = page.eval_on_selector_all("#group-by option", "els => els.map(e => e.value)")
    assert keys[0] == "" and {"task", "thread"} <= set(keys[1:]), keys

    groups = page.locator("#chart .frame.group")
    names = [name_of(label) for label in groups.all_text_contents()]
    for expected in (
        f"task: {HOSTILE_TASK_NAME}",
        "task: integration-waiter",
        "task: (none)",
    ):  # threads and tasks with asyncio's Task-N names
        assert expected in names, names
    # Grouped frames sit on the row below "all", every stack one row lower.
    assert {g.evaluate("e => e.style.top") for g in groups.all()} == {"18px"}

    # The hostile task name is a frame label as text, and its hover text too: no markup.
    hostile = groups.filter(has_text=HOSTILE_TASK_NAME)
    assert hostile.count() == 1
    assert name_of(hostile.text_content()) == f"task: {HOSTILE_TASK_NAME}"
    assert hostile.evaluate("e => e.children.length") == 0
    assert (hostile.get_attribute("title") or "").startswith(f"task: {HOSTILE_TASK_NAME} ")
    hostile.hover()
    status = page.locator("#status")
    assert (status.text_content() or "").startswith(f"task: {HOSTILE_TASK_NAME} \u2014 1 ")
    assert status.evaluate("e => e.children.length") == 0
    assert page.locator("img").count() == 0
    assert page.evaluate("document.scripts.length") == 2

    # The hostile task's own stack is drawn inside its group's span.
    function = page.locator("#chart .frame").filter(has_text=HOSTILE_FUNCTION_NAME)
    assert function.count() == 1
    group_box, function_box = hostile.bounding_box(), function.bounding_box()
    assert group_box is not None and function_box is not None
    assert group_box["x"] - 1 <= function_box["x"]
    assert function_box["x"] + function_box["width"] <= group_box["x"] + group_box["width"] + 1
    page.screenshot(path=str(GROUPED_SCREENSHOT), full_page=True)

    # Zooming into the group keeps only that task's stacks.
    hostile.click()
    page.mouse.move(1, 1)
    assert (status.text_content() or "").startswith(f"Zoomed: task: {HOSTILE_TASK_NAME} ")
    others = page.locator("#chart .frame").filter(has_text="integration_waiter_coroutine")
    assert others.count() == 0
    page.click("#reset")

    # Searching a task name highlights its group.
    page.fill("#search", "integration-waiter")
    matched = page.locator("#chart .frame.match").all_text_contents()
    assert [name_of(label) for label in matched] == ["task: integration-waiter"]
    page.locator("#search").press("Escape")

    # The control and the fragment share one state.
    page.select_option("#group-by", "thread")
    assert page.evaluate("location.hash") == "#group=thread"
    assert all(n.startswith("thread: ") for n in groups.all_text_contents())
    assert "thread: integration-worker" in [name_of(t) for t in groups.all_text_contents()]
    page.select_option("#group-by", "")
    assert page.evaluate("location.hash") == ""
    assert groups.count() == 0
    page.evaluate("location.hash = '#group=task'")
    page.wait_for_selector("#chart .frame.group")
    assert page.locator("#group-by").input_value() == "task"
    page.evaluate("location.hash = '#group=%3Cimg%3E'")  # not a key: ungrouped, nothing breaks
    page.wait_for_function("document.querySelectorAll('#chart .frame.group').length === 0")
    assert page.locator("#group-by").input_value() == ""
    assert page.locator("img").count() == 0
    watched.assert_clean()


def test_flamegraph_frames_show_their_share_and_one_box_per_function(
    watched: Watched, ops_server: Server
) -> None:
    """Totals are in the box, not only on hover: each label's share is the box's width."""
    page = watched.page
    response = page.goto(ops_server.url("/goroutine?format=flamegraph"))
    assert response is not None and response.status == 200
    page.wait_for_selector("#chart .frame")
    boxes = page.eval_on_selector_all(
        "#chart .frame", "els => els.map(e => [e.textContent, parseFloat(e.style.width)])")
    assert len(boxes) >= 10
    root = LABEL.match(boxes[0][0])
    assert root is not None and root["name"] == "all" and root["share"] == "100.00"
    for label, width in boxes:
        match = LABEL.match(label)
        assert match is not None, label
        assert abs(float(match["share"]) - width) <= 0.006, (label, width)
    # By default the page gets one frame per function, however many lines it was sampled at.
    frames = page.evaluate("JSON.parse(document.getElementById('profile-data').textContent)"
                           ".frames.map(f => f[0] + ' ' + f[1])")
    assert len(frames) == len(set(frames))
    assert "integration_worker_thread" in [name_of(label) for label, _ in boxes]
    waits = page.locator("#chart .frame").filter(has_text=re.compile(r"^Event\.wait "))
    assert waits.count() >= 1
    waits.first.hover()
    assert (page.locator("#status").text_content() or "").startswith("Event.wait \u2014 ")
    watched.assert_clean()
