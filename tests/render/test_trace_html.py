"""The HTML timeline page: self-contained, locked by its CSP, names only as data."""

from __future__ import annotations

import json
import re

from trace_fixtures import HOSTILE, capture

from pyprof_http.render.csp import sha256_source
from pyprof_http.render.trace_html import SCRIPT, STYLE, render_trace_html


def _page() -> str:
    return render_trace_html(capture()).body.decode()


def test_policy_allows_exactly_the_inline_script_and_style() -> None:
    rendered = render_trace_html(capture())
    policy = rendered.content_security_policy or ""
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert sha256_source(SCRIPT) in policy and sha256_source(STYLE) in policy
    assert "unsafe-inline" not in policy


def test_names_travel_only_as_escaped_json() -> None:
    page = _page()
    assert "<img" not in page and "</script><" not in page.split('id="trace-data">')[1][:-40]
    data = re.search(r'<script type="application/json" id="trace-data">(.*?)</script>',
                     page, re.S)
    assert data is not None
    parsed = json.loads(data.group(1))
    assert [lane[2] for lane in parsed["lanes"]][2] == f"task 7 {HOSTILE}"
    kinds = {parsed["kinds"][e[0]] for e in parsed["events"]}
    assert kinds == {"request", "step", "mark", "gc", "span", "work", "stall"}


def test_no_network_references() -> None:
    page = _page()
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page)
