"""The index page: rows, relative links, escaping, and a CSP that allows exactly its style."""

from __future__ import annotations

import base64
import hashlib
import re
from html.parser import HTMLParser
from urllib.parse import urlsplit

from pyprof_http.render.index import CSP, IndexRow, render_index

ROWS = [
    IndexRow("cmdline", "The command line.", None, []),
    IndexRow("goroutine", "Stacks of everything.", 42, ["text", "pprof", "flamegraph"]),
]


class _Page(HTMLParser):
    """Collects links, table rows (cell texts), style blocks, and any element we never emit."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self.rows: list[list[str]] = []
        self.styles: list[str] = []
        self.tags: set[str] = set()
        self._href: str | None = None
        self._text: list[str] = []
        self._cell: list[str] | None = None
        self._in_style = False

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.add(tag)
        attrs = dict(attrs)
        if tag == "a":
            self._href, self._text = attrs.get("href"), []
        elif tag == "tr":
            self.rows.append([])
        elif tag == "td":
            self._cell = []
        elif tag == "style":
            self._in_style = True
            self.styles.append("")

    def handle_endtag(self, tag) -> None:
        if tag == "a" and self._href is not None:
            self.links.append((self._href, "".join(self._text)))
            self._href = None
        elif tag == "td" and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "style":
            self._in_style = False

    def handle_data(self, data) -> None:
        if self._href is not None:
            self._text.append(data)
        if self._cell is not None:
            self._cell.append(data)
        if self._in_style:
            self.styles[-1] += data


def _parse(body: bytes) -> _Page:
    page = _Page()
    page.feed(body.decode())
    return page


def test_media_type_and_csp() -> None:
    rendered = render_index("/debug/pprof/", ROWS)
    assert rendered.media_type == "text/html; charset=utf-8"
    assert rendered.filename is None
    assert rendered.content_security_policy == CSP
    assert "default-src 'none'" in CSP
    # the one inline script (the record form's countdown) is allowed by its hash, nothing else
    script = rendered.body.decode().split("<script>", 1)[1].split("</script>", 1)[0]
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}';" in CSP
    assert "unsafe-inline" not in CSP
    assert "frame-ancestors 'none'" in CSP


def test_rows_counts_and_descriptions() -> None:
    page = _parse(render_index("/debug/pprof/", ROWS).body)
    body_rows = [r for r in page.rows if r]  # the header row has th cells only
    assert body_rows == [
        ["", "cmdline", "view", "The command line."],
        ["42", "goroutine", "text pprof flamegraph", "Stacks of everything."],
    ]


def test_links_are_relative_and_point_at_each_format() -> None:
    page = _parse(render_index("/debug/pprof/", ROWS).body)
    links = dict((text, href) for href, text in page.links)
    assert ("goroutine?debug=1", "goroutine") in page.links  # the name opens the text view
    assert ("cmdline", "cmdline") in page.links
    assert ("cmdline", "view") in page.links
    assert links["text"] == "goroutine?debug=1"
    assert links["pprof"] == "goroutine?debug=0"
    assert links["flamegraph"] == "goroutine?format=flamegraph"
    assert ("goroutine?debug=2", "full goroutine stack dump") in page.links
    for href, _ in page.links:
        parts = urlsplit(href)
        assert not parts.scheme and not parts.netloc and not href.startswith("/"), href


def test_full_dump_link_only_with_goroutine() -> None:
    body = render_index("/debug/pprof/", ROWS[:1]).body.decode()
    assert "debug=2" not in body


def test_other_formats_link_with_format_parameter() -> None:
    rows = [IndexRow("heap", "Live memory.", 1, ["speedscope", "folded", "dump"])]
    page = _parse(render_index("/x/", rows).body)
    links = dict((text, href) for href, text in page.links)
    assert links == {"heap": "heap", "speedscope": "heap?format=speedscope",
                     "folded": "heap?format=folded", "dump": "heap?format=dump"}


def test_title() -> None:
    body = render_index("/ops/pprof/", ROWS).body.decode()
    assert "<title>/ops/pprof/</title>" in body
    assert "<h1>/ops/pprof/</h1>" in body


def test_hostile_names_and_descriptions_are_escaped() -> None:
    evil = "<script>alert(1)</script>'\"&"
    name = f"x'><img src=x onerror=alert(1)>{evil}"
    fmt = f"f'><b>{evil}"
    rows = [IndexRow(name, f"desc {evil}", 1, ["text", fmt])]
    body = render_index(f"/t{evil}/", rows).body.decode()
    page = _parse(body.encode())
    assert body.count("<script") == 1  # only the page's own (hash-allowed) countdown script
    assert "<img" not in body and "<b>" not in body
    assert page.tags <= {"html", "head", "meta", "title", "style", "body", "h1", "p", "table",
                         "thead", "tbody", "tr", "th", "td", "a", "code", "script"}
    # the text survives, as text
    assert page.rows[1][3] == f"desc {evil}"
    assert page.rows[1][1] == name
    # each href stays one attribute value: nothing broke out of the quotes
    assert page.links == [(f"{name}?debug=1", name), (f"{name}?debug=1", "text"),
                          (f"{name}?format={fmt}", fmt)]


def test_style_hash_in_csp_matches_the_inline_style() -> None:
    body = render_index("/debug/pprof/", ROWS).body.decode()
    styles = re.findall(r"<style>(.*?)</style>", body, flags=re.S)
    assert len(styles) == 1
    digest = base64.b64encode(hashlib.sha256(styles[0].encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in CSP
    assert "style=" not in body  # no inline style attributes: the hash would not cover them


def test_no_rows() -> None:
    page = _parse(render_index("/debug/pprof/", []).body)
    assert [r for r in page.rows if r] == []


def test_record_form_for_duration_profiles() -> None:
    from pyprof_http.render.index import RecordForm

    evil = "'><img src=x>"
    form = RecordForm(10, 60, ["cpu", "wall", evil], ["flamegraph", "text", evil])
    rows = [IndexRow("profile", "CPU profile.", None, [], record=form)]
    body = render_index("/debug/pprof/", rows).body.decode()
    assert "<form class=record method=get action='profile'>" in body
    assert "name=seconds type=number min=1 max=60 value=10" in body
    assert "<option>cpu</option><option>wall</option>" in body
    assert "<img" not in body
    assert "<span id=countdown></span>" in body
