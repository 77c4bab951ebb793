"""Headless Chromium on ``format=pyinstrument``: it works with no network, under its policy.

pyinstrument's page preloads Google Fonts from its script; with the network cut (every request
that leaves the test server is aborted and recorded) the page must ask for nothing outside, log
no console error, raise no page error and violate no CSP directive, draw its call tree, and offer
no timeline (our samples are aggregated by stack: there is no time order to draw).
"""

from __future__ import annotations

from live_server import Server
from playwright.sync_api import Browser, ConsoleMessage, Route
from test_browser import RECORD_CSP_VIOLATIONS, browser  # noqa: F401 -- its fixture


def test_pyinstrument_page_needs_no_network_and_shows_no_timeline(
        browser: Browser, server: Server) -> None:  # noqa: F811 -- the imported fixture
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)  # a bound against hanging: Chromium on a loaded box is slow
    page.add_init_script(RECORD_CSP_VIOLATIONS)
    outside: list[str] = []
    errors: list[str] = []

    def offline(route: Route) -> None:
        if route.request.url.startswith(server.base_url + "/"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort("internetdisconnected")

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(f"{message.text} {message.location}")

    page.route("**/*", offline)
    page.on("console", on_console)
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        response = page.goto(server.url("/profile?seconds=1&mode=wall&format=pyinstrument"))
        assert response is not None and response.status == 200
        page.wait_for_selector(".call-tree-view, .frame-description, .name", state="attached")
        page.wait_for_load_state("networkidle")
        assert outside == []
        assert errors == []
        assert page.evaluate("window.__cspViolations") == []
        assert page.locator("input[value=timeline]").is_hidden()
        assert page.evaluate("JSON.parse(localStorage.getItem('pyinstrument:viewOptions'))"
                             ) == {"viewMode": "call-stack"}
    finally:
        context.close()
