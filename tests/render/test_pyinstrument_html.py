"""pyinstrument's HTML page fed our samples: private API guard, content, CSP, escaping."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from html.parser import HTMLParser
from importlib import metadata
from typing import Any

import pytest

from pyprof_http.model import Frame, Profile, Sample, ValueType, frame
from pyprof_http.render.pyinstrument_html import render_pyinstrument, session_from_profile

SAMPLES = ValueType("samples", "count")
CPU = ValueType("cpu", "nanoseconds")
WALL = ValueType("wall", "nanoseconds")
MS = 1_000_000

MAIN = frame("main", "/app/main.py", 3)
SERVE = frame("serve", "/app/server.py", 20)
SERVE_LATER = frame("serve", "/app/server.py", 24)
HANDLE = frame("handle", "/app/server.py", 41)
HOSTILE_NAME = "</script><img src=x onerror=alert(1)>"
HOSTILE = frame(HOSTILE_NAME, "<!--/evil&\u2028.py", 6)
TITLE = "cpu </title><img src=x onerror=alert(2)>"


def _profile(time_type: ValueType = CPU) -> Profile:
    return Profile(
        sample_types=(SAMPLES, time_type),
        samples=(
            Sample((HANDLE, SERVE, MAIN), (20, 200 * MS), {"thread": "MainThread"}),
            Sample((HANDLE, SERVE_LATER, MAIN), (5, 50 * MS), {"thread": "worker"}),
            Sample((HOSTILE, SERVE, MAIN), (3, 30 * MS)),
            Sample((SERVE, MAIN), (1, 0)),  # no time: no record
        ),
        period_type=time_type,
        period=10 * MS,
        time_ns=1_700_000_000_000_000_000,
        duration_ns=2_000 * MS,
        default_sample_type=time_type.type,
    )


def _guarded(function: Any, *args: Any) -> Any:
    """Call, turning a change of pyinstrument's private API into one clear failure."""
    try:
        return function(*args)
    except (TypeError, AttributeError, KeyError, RuntimeError, ValueError) as exc:
        pytest.fail(
            f"pyinstrument {metadata.version('pyinstrument')}: its private Session/HTMLRenderer "
            f"API no longer matches render/pyinstrument_html.py ({type(exc).__name__}: {exc}). "
            "Adapt the adapter and the pyinstrument pin in pyproject.toml."
        )


def _render(profile: Profile, title: str = TITLE) -> Any:
    return _guarded(render_pyinstrument, profile, title)


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[tuple[str, str]] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._open = tag if tag in ("script", "style") else None

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self.blocks.append((self._open, data))
            self._open = None

    def handle_endtag(self, tag: str) -> None:
        self._open = None


def _parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    parser.close()
    return parser


def _sha(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def _directives(policy: str) -> dict[str, list[str]]:
    parts = (d.split() for d in policy.split(";") if d.strip())
    return {p[0]: p[1:] for p in parts}


def _session_data(page: str) -> Any:
    literal = re.search(r"const sessionData = ([^\n]*);\n", page)
    assert literal is not None
    return json.loads(literal[1])


def _functions(node: dict[str, Any] | None) -> set[str]:
    if node is None:
        return set()
    found = {node["identifier"].split("\x00")[0]}
    for child in node["children"]:
        found |= _functions(child)
    return found


def test_session_from_profile() -> None:
    session = _guarded(session_from_profile, _profile(), "t")
    records = sorted(session.frame_records, key=lambda r: -r[1])
    assert records == [
        (
            [
                "main\x00/app/main.py\x003\x01l3",
                "serve\x00/app/server.py\x0020\x01l20",
                "handle\x00/app/server.py\x0041\x01l41",
            ],
            pytest.approx(0.2),
        ),
        # a function is one node (lowest line seen); the line run is the ``l`` attribute
        (
            [
                "main\x00/app/main.py\x003\x01l3",
                "serve\x00/app/server.py\x0020\x01l24",
                "handle\x00/app/server.py\x0041\x01l41",
            ],
            pytest.approx(0.05),
        ),
        (
            [
                records[2][0][0],
                records[2][0][1],
                f"{HOSTILE_NAME}\x00<!--/evil&\u2028.py\x006\x01l6",
            ],
            pytest.approx(0.03),
        ),
    ]
    assert session.sample_count == 29
    assert session.duration == 2.0
    assert session.cpu_time == pytest.approx(0.28)
    assert session.min_interval == session.max_interval == 0.01
    assert session.target_description == "t"
    root = _guarded(session.root_frame)
    assert root is not None and root.function == "main"  # nothing trimmed
    assert session_from_profile(_profile(WALL), "t").cpu_time == 0.0


def test_needs_a_time_sample_type() -> None:
    with pytest.raises(ValueError, match="time sample type"):
        session_from_profile(_profile(), "t", sample_type="samples")
    with pytest.raises(ValueError, match="nanoseconds"):
        session_from_profile(Profile((SAMPLES,), (Sample((MAIN,), (1,)),)), "t")
    counted = Profile((SAMPLES, CPU), (Sample((MAIN,), (1, MS)),), default_sample_type="samples")
    assert session_from_profile(counted, "t").frame_records[0][1] == pytest.approx(0.001)


def test_page_renders_with_our_names() -> None:
    rendered = _render(_profile())
    assert rendered.media_type == "text/html; charset=utf-8"
    page = rendered.body.decode()
    assert "pyinstrumentHTMLRenderer.render(" in page
    data = _session_data(page)
    assert _functions(data["frame_tree"]) == {"main", "serve", "handle", HOSTILE_NAME, "[self]"}
    assert data["session"]["target_description"] == TITLE
    assert data["session"]["sample_count"] == 29


def test_csp_allows_exactly_the_inline_blocks() -> None:
    rendered = _render(_profile())
    page = rendered.body.decode()
    parsed = _parse(page)
    scripts = [_sha(text) for kind, text in parsed.blocks if kind == "script"]
    styles = [_sha(text) for kind, text in parsed.blocks if kind == "style"]
    assert len(scripts) == 3 and len(styles) == 2  # ours (call tree only), app.js, the data
    policy = rendered.content_security_policy
    assert policy.endswith("; frame-ancestors 'none'")
    directives = _directives(policy)
    assert directives["default-src"] == ["'none'"]
    assert directives["script-src"] == scripts
    assert directives["style-src"][: len(styles) + 1] == [*styles, "'unsafe-hashes'"]
    # the inline style attributes app.js writes; if pyinstrument changes them the call tree
    # loses its colours (cosmetic), so say so here rather than in a browser
    for attribute in ("color: #FF4159", "color: #58984f", "height: 20px;"):
        assert _sha(attribute) in directives["style-src"], attribute
    assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy
    assert directives["img-src"] == ["data:"]
    metas = [a for tag, a in parsed.tags if tag == "meta" and a.get("http-equiv")]
    assert metas == [
        {
            "http-equiv": "Content-Security-Policy",
            "content": policy.removesuffix("; frame-ancestors 'none'"),
        }
    ]


def test_hostile_name_is_not_markup() -> None:
    page = _render(_profile()).body.decode()
    assert "<img" not in page
    assert page.count("</script") == 3  # only the three real script blocks end
    assert "<!--" not in page and "\u2028" not in page
    parsed = _parse(page)
    assert [tag for tag, _ in parsed.tags] == [
        "html",
        "head",
        "meta",
        "meta",
        "script",
        "style",
        "body",
        "div",
        "script",
        "style",
        "script",
    ]
    data_script = parsed.blocks[-1][1]
    assert "<" not in data_script and ">" not in data_script and "&" not in data_script
    assert "\\u003c/script\\u003e\\u003cimg" in data_script


def test_empty_profile_renders_pyinstruments_no_samples_page() -> None:
    empty = Profile((SAMPLES, CPU), (), default_sample_type="cpu")
    page = _render(empty, "empty").body.decode()
    assert _session_data(page)["frame_tree"] is None


RESOURCE_URL = re.compile(
    r"""(?:href|src|srcset|action|poster|data)\s*=\s*["']?\s*https?://"""  # attributes
    r"""|\.(?:href|src)\s*=\s*["'`]https?://"""  # set from script
    r"""|@import\s*(?:url\()?\s*["']?https?://|url\(\s*["']?https?://"""  # CSS
    r"""|(?:fetch|open|import)\(\s*["'`]https?://""",
    re.IGNORECASE,
)


def test_page_references_nothing_on_the_network() -> None:
    """The page must work offline: no link, script, image, @import, url() or fetch to http(s).
    What remains of "http" are XML namespace names (``http://www.w3.org/2000/svg``), which are
    identifiers, never fetched."""
    page = _render(_profile()).body.decode()
    assert RESOURCE_URL.findall(page) == []
    assert "fonts.googleapis" not in page and "fonts.gstatic" not in page
    assert set(re.findall(r"https?://[^\s\"'`)]*", page)) <= {"http://www.w3.org/2000/svg"}
    assert RESOURCE_URL.search('r.href="https://fonts.googleapis.com/css"')  # the check bites


def test_timeline_is_hidden_and_call_tree_forced() -> None:
    """Samples are aggregated by stack, so a timeline would draw them as if in time order: the
    view switch is hidden and the saved view reset, before app.js reads it."""
    page = _render(_profile()).body.decode()
    parsed = _parse(page)
    ours_first = [text for _, text in parsed.blocks[:2]]
    assert 'localStorage.setItem("pyinstrument:viewOptions"' in ours_first[0]
    assert '\'{"viewMode":"call-stack"}\'' in ours_first[0]
    assert ours_first[1] == ".toggle{display:none}"
    app_js = parsed.blocks[2][1]
    assert app_js.count('"toggle"') == 1  # the switch is the only element of that class


def test_lone_surrogates_render_and_hashes_match_the_bytes() -> None:
    odd = Frame("handle_\udc80", "/srv/caf\udce9.py", 3)
    profile = Profile((SAMPLES, CPU), (Sample((odd, MAIN), (1, MS)),), default_sample_type="cpu")
    rendered = _render(profile, "odd \udcff title")
    body = rendered.body
    body.decode("utf-8")
    directives = _directives(rendered.content_security_policy)
    for block in re.findall(rb"<script>(.*?)</script>", body, re.DOTALL):
        digest = base64.b64encode(hashlib.sha256(block).digest()).decode()
        assert f"'sha256-{digest}'" in directives["script-src"]
