"""The index page: one row per allowed profile, built from the registry like Go's ``Index``.

Links are relative, so the page works under any mount prefix (the app redirects the prefix
without its trailing slash to the slash form, as a relative link needs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from . import Rendered, utf8
from .csp import sha256_source

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:2rem;color:#222}
h1{font-size:1.3rem}
table{border-collapse:collapse;margin:1rem 0}
td,th{padding:.3rem .8rem;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}
td.count{text-align:right;font-variant-numeric:tabular-nums}
a{color:#0645ad}
.links a{margin-right:.6rem}
.desc{color:#555;max-width:40rem}
code{background:#f4f4f4;padding:0 .2rem}
form.record{display:flex;gap:.5rem;align-items:center;flex-wrap:wrap}
form.record input{width:4rem}
#countdown{color:#a15c00;font-weight:600}
"""
# While a profile records, the browser waits on the form's navigation: say how long is left.
_SCRIPT = """
document.querySelectorAll("form.record").forEach(function (form) {
  form.addEventListener("submit", function () {
    var left = parseInt(form.elements.seconds.value, 10) || 0;
    var out = document.getElementById("countdown");
    var button = form.querySelector("button");
    button.disabled = true;
    function show() {
      out.textContent = left > 0 ? "recording\u2026 " + left + " s left" : "rendering\u2026";
      left -= 1;
    }
    show();
    var timer = setInterval(function () { if (left < 0) { clearInterval(timer); } show(); }, 1000);
    window.addEventListener("pageshow", function () { clearInterval(timer); button.disabled = false;
      out.textContent = ""; });
  });
});
"""


CSP = (
    "default-src 'none'; "
    f"style-src {sha256_source(_STYLE)}; "
    f"script-src {sha256_source(_SCRIPT)}; "
    "img-src data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


@dataclass(frozen=True, slots=True)
class IndexRow:
    """What the index shows for one profile."""

    name: str
    description: str
    count: int | str | None
    formats: Sequence[str]
    """Formats to link to, in the order shown; empty for a pseudo profile linked as is."""
    link_query: str = ""
    """Added to every link of the row, e.g. ``seconds=10``."""
    record: RecordForm | None = None
    """For a profile that records for a duration: a form instead of links."""


@dataclass(frozen=True, slots=True)
class RecordForm:
    """The "record N seconds" form of a duration profile (``/profile``)."""

    default_seconds: int
    max_seconds: int
    modes: Sequence[str]
    formats: Sequence[str]


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """Which process serves the page, and its sibling workers (empty: a single process)."""

    pid: int
    described: str
    """e.g. ``pid 1234 (worker 2 of 3)``."""
    siblings: Sequence[int] = ()
    """Live workers of the same server, this one included."""
    refusal: str | None = None
    """Why this worker could not join its siblings, if it could not."""
    via_worker: bool = False
    """Served for another worker (``worker=PID``): links keep ``worker=`` so they stay here."""


_LINK_QUERY = {"text": "?debug=1", "pprof": "?debug=0", "flamegraph": "?format=flamegraph"}


def _siblings(process: ProcessInfo) -> list[str]:
    out = [f"<p class=process>Served by {escape(process.described)}.</p>"]
    if process.refusal is not None:
        out.append(f"<p class=process>Sibling workers unavailable: {escape(process.refusal)}</p>")
    if len(process.siblings) > 1 or (process.siblings and process.siblings[0] != process.pid):
        links = " ".join(
            f"<a href='./?worker={pid}'>{pid}</a>" + (" (this one)" if pid == process.pid else "")
            for pid in process.siblings)
        out.append(f"<p class=workers>Workers of this server: {links}. Every view takes "
                   "<code>?worker=PID</code>; <a href='goroutine?workers=all&amp;debug=1'>all "
                   "workers' goroutines</a>, <code>?workers=all</code> merges any profile.</p>")
    return out


def render_index(title: str, rows: Sequence[IndexRow], process: ProcessInfo | None = None,
                 notes: Sequence[str] = ()) -> Rendered:
    """The whole page; every name and description is escaped. ``notes``: status lines shown
    under the table (the Pyroscope pusher's)."""
    if process is not None and process.via_worker:  # every link stays on that worker
        rows = [IndexRow(r.name, r.description, r.count, r.formats,
                         "&".join(q for q in (r.link_query, f"worker={process.pid}") if q),
                         r.record) for r in rows]
    body = [
        "<!DOCTYPE html>",
        "<html lang=en><head><meta charset=utf-8>",
        f"<title>{escape(title)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        *(_siblings(process) if process is not None else []),
        "<p>Types of profiles available:</p>",
        "<table><thead><tr><th>Count</th><th>Profile</th><th>Views</th><th>Description</th>"
        "</tr></thead><tbody>",
    ]
    for row in rows:
        if row.record is not None:
            body.append(_record_row(row, row.record))
            continue
        name = escape(row.name, quote=True)
        extra = f"&{escape(row.link_query, quote=True)}" if row.link_query else ""
        links = " ".join(
            f"<a href='{name}{_LINK_QUERY.get(f, '?format=' + escape(f, quote=True))}{extra}'>"
            f"{escape(f)}</a>"
            for f in row.formats
        ) or f"<a href='{name}'>view</a>"
        count = "" if row.count is None else escape(str(row.count))
        main_link = f"{name}?debug=1{extra}" if "text" in row.formats else name
        body.append(
            f"<tr><td class=count>{count}</td><td><a href='{main_link}'>{escape(row.name)}</a></td>"
            f"<td class=links>{links}</td><td class=desc>{escape(row.description)}</td></tr>"
        )
    body.append("</tbody></table>")
    body.extend(f"<p class=note>{escape(note)}</p>" for note in notes)
    if any(row.name == "goroutine" for row in rows):
        pinned = f"&amp;worker={process.pid}" if process is not None and process.via_worker else ""
        body.append(f"<p><a href='goroutine?debug=2{pinned}'>full goroutine stack dump</a> "
                    "(every thread and task, with await chains)</p>")
    body.append(
        "<p>Read any profile with <code>go tool pprof -top URL</code>; "
        "add <code>?seconds=N</code> for the change over N seconds.</p>",
    )
    body.append(f"<script>{_SCRIPT}</script></body></html>")
    return Rendered(utf8("\n".join(body)), "text/html; charset=utf-8",
                    content_security_policy=CSP)


def _record_row(row: IndexRow, form: RecordForm) -> str:
    name = escape(row.name, quote=True)
    worker = dict(p.partition("=")[::2] for p in row.link_query.split("&") if p).get("worker")
    extra = f"<input type=hidden name=worker value={int(worker)}>" if worker else ""
    modes = "".join(f"<option>{escape(m)}</option>" for m in form.modes)
    formats = "".join(f"<option>{escape(f)}</option>" for f in form.formats)
    return (
        f"<tr id=record><td class=count></td><td><a href='#record'>{escape(row.name)}</a></td>"
        f"<td><form class=record method=get action='{name}'>"
        f"<label>seconds <input name=seconds type=number min=1 max={form.max_seconds} "
        f"value={form.default_seconds} required></label>"
        f"<label>mode <select name=mode>{modes}</select></label>"
        f"<label>format <select name=format>{formats}</select></label>"
        f"{extra}<button type=submit>record</button> <span id=countdown></span></form></td>"
        f"<td class=desc>{escape(row.description)}</td></tr>"
    )
