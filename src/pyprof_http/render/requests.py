"""``/requests``: the recently profiled requests as text, JSON and an HTML table.

Request ids are checked before they are kept (letters, digits, ``-_.:+=/@``), but routes and
methods are the client's text: every field is escaped for its format (``printable`` in text,
HTML escaping plus a percent-encoded link in HTML, ASCII escapes in JSON).
"""

from __future__ import annotations

import json
import time
from html import escape
from urllib.parse import quote

from ..captures.requests import RequestRecord, RequestsCapture
from ..sanitize import printable
from . import Rendered, utf8
from .csp import sha256_source
from .text import TEXT_PLAIN

HTML = "text/html; charset=utf-8"
_STYLE = ("body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}"
          "td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left}"
          "td.n{text-align:right}")
_CSP = (f"default-src 'none'; style-src {sha256_source(_STYLE)}; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'")
_COLUMNS = ("request_id", "route", "method", "status", "start", "duration_ms", "samples",
            "reason")


def _start(record: RequestRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.started))


def _row(record: RequestRecord) -> tuple[str, ...]:
    return (record.request_id, record.route, record.method,
            "-" if record.status is None else str(record.status), _start(record),
            f"{record.duration_ms:.1f}", str(record.samples), record.reason)


def render_requests_text(capture: RequestsCapture, name: str) -> Rendered:
    lines = [f"profiled requests: {len(capture.records)} (most recent first)",
             "\t".join(_COLUMNS)]
    lines += ["\t".join(printable(field) for field in _row(r)) for r in capture.records]
    return Rendered(utf8("\n".join(lines) + "\n"), TEXT_PLAIN)


def render_requests_json(capture: RequestsCapture, name: str) -> Rendered:
    rows = [dict(zip(_COLUMNS, (r.request_id, r.route, r.method, r.status, _start(r),
                                round(r.duration_ms, 3), r.samples, r.reason), strict=True))
            for r in capture.records]
    body = json.dumps({"requests": rows}, ensure_ascii=True, indent=1)
    return Rendered(body.encode("ascii"), "application/json")


def render_requests_html(capture: RequestsCapture, name: str) -> Rendered:
    body = ["<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
            "<title>profiled requests</title>", f"<style>{_STYLE}</style></head><body>",
            "<h1>profiled requests</h1>",
            "<p>Slower than slow_request_ms, chosen by request_sample_rate, or asked for with "
            "<code>X-Pprof-Profile: 1</code>; most recent first.</p>",
            "<table><thead><tr>" + "".join(f"<th>{c}</th>" for c in _COLUMNS)
            + "<th>views</th></tr></thead><tbody>"]
    for record in capture.records:
        href = "requests/" + quote(record.request_id, safe="")
        cells = "".join(
            f"<td{' class=n' if i in (3, 5, 6) else ''}>{escape(printable(field))}</td>"
            for i, field in enumerate(_row(record)))
        views = " ".join(f"<a href='{escape(href, quote=True)}?format={fmt}'>{fmt}</a>"
                         for fmt in ("flamegraph", "pyinstrument", "text", "pprof"))
        body.append(f"<tr>{cells}<td>{views}</td></tr>")
    body.append("</tbody></table></body></html>")
    return Rendered(utf8("\n".join(body)), HTML, content_security_policy=_CSP)
