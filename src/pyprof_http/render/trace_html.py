"""``/trace?format=html``: a self-contained timeline page, like the flame graph: no CDN, works
offline, runs under a strict Content-Security-Policy (inline script and style allowed by their
sha256 hashes, :mod:`pyprof_http.render.csp`).

One lane per thread, per task and one for the requests; events that overlap in a lane are
stacked in rows. Zoom and pan; clicking an event shows its details (labels, how long it waited
for the loop and behind what, a sampled stack). The data travels as JSON in a
``<script type="application/json">`` block escaped by :func:`~pyprof_http.render.flamegraph.
script_json` (no ``</script>``, no U+2028), and names reach the page only through canvas text
and ``textContent``.
"""

from __future__ import annotations

import html
import re
from typing import Any, Final

from ..captures.trace import TraceCapture
from . import Rendered, utf8
from .csp import page
from .flamegraph import script_json

_PAGE: Final = page("trace")
TEMPLATE: Final = _PAGE.template
SCRIPT: Final = _PAGE.script
STYLE: Final = _PAGE.style
_POLICY: Final = _PAGE.meta_policy
CONTENT_SECURITY_POLICY: Final = _PAGE.content_security_policy
KINDS: Final = ("step", "callback", "work", "gc", "stall", "mark", "span", "request")
_PLACEHOLDER: Final = re.compile(r"\{\{(\w+)\}\}")


def trace_data(capture: TraceCapture, title: str) -> dict[str, Any]:
    """What the page's script reads (see the comment at the top of ``trace.js``)."""
    index = {kind: i for i, kind in enumerate(KINDS)}
    return {
        "title": title,
        "notes": list(capture.notes) + ([f"{capture.dropped} events dropped"]
                                        if capture.dropped else []),
        "duration_ns": capture.duration_ns,
        "kinds": list(KINDS),
        "lanes": [[lane.id, lane.kind, lane.name] for lane in capture.lanes],
        "events": [
            [index[e.kind], e.lane, e.start_ns, e.duration_ns, e.name,
             [list(pair) for pair in e.args], e.wait_ns, [list(b) for b in e.behind],
             [[f.function, f.filename, f.line] for f in e.stack], e.request]
            for e in capture.events
        ],
    }


def render_trace_html(capture: TraceCapture, name: str = "trace") -> Rendered:
    title = f"{name} of pid {capture.pid}: {capture.duration_ns / 1e9:.3f} s"
    parts = {
        "meta_csp": _POLICY,
        "title": html.escape(title, quote=True),
        "style": STYLE,
        "script": SCRIPT,
        "data": script_json(trace_data(capture, title)),
    }
    page = _PLACEHOLDER.sub(lambda m: parts[m.group(1)], TEMPLATE)
    return Rendered(utf8(page), "text/html; charset=utf-8",
                    content_security_policy=CONTENT_SECURITY_POLICY)
