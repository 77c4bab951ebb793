"""Property test: no generated path or query string gets a 5xx, a traceback or a hang.

Thousands of requests are thrown at every route of the registry in-process. The wait of
``seconds=N`` deltas is replaced by a no-op so the run stays fast; everything else is real.
"""

from __future__ import annotations

import asyncio
import urllib.parse

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyprof_http.app as app_module
from pyprof_http import PprofApp, Settings
from pyprof_http.registry import PROFILES

ROUTES = ["", "/"] + [f"/{spec.name}" for spec in PROFILES]
KEYS = ["debug", "format", "seconds", "gc", "hz", "mode", "x", "", "debug[]", "Seconds"]
VALUES = st.one_of(
    st.sampled_from(["0", "1", "2", "3", "-1", "01", "1.5", "abc", "", "60", "61", "9" * 30,
                     "pprof", "text", "dump", "flamegraph", "folded", "speedscope", "json",
                     "callgrind", "\u0661", " 1", "1 ", "true"]),
    st.text(max_size=12),
)
QUERY = st.lists(st.tuples(st.sampled_from(KEYS) | st.text(max_size=6), VALUES), max_size=4)
EXTRA_PATH = st.sampled_from(["", "/", "//", "/..", "%2e%2e", "?", "/x"]) | st.text(max_size=8)


@pytest.fixture(scope="module")
def client():
    async def instant(request, seconds, stop=None):
        return None

    original = app_module.sleep_unless_disconnected
    app_module.sleep_unless_disconnected = instant
    loop = asyncio.new_event_loop()
    transport = httpx.ASGITransport(app=PprofApp(Settings(max_profile_seconds=60)))
    http = httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1")
    try:
        yield lambda url: loop.run_until_complete(asyncio.wait_for(http.get(url), 10))
    finally:
        loop.run_until_complete(http.aclose())
        loop.close()
        app_module.sleep_unless_disconnected = original


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                    HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(ROUTES), extra=EXTRA_PATH, query=QUERY)
def test_no_input_gets_a_5xx(client, route, extra, query):
    path = urllib.parse.quote(route + extra, safe="/%?")
    url = path + ("?" + urllib.parse.urlencode(query) if query else "")
    response = client(url)
    assert response.status_code < 500, (url, response.status_code, response.text)
    if 400 <= response.status_code < 500:
        body = response.text
        assert body.endswith("\n") and body.count("\n") == 1 and len(body) > 5, (url, body)
        assert "Traceback" not in body
        assert response.headers["X-Go-Pprof"] == "1"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
