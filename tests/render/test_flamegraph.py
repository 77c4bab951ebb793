import asyncio
import base64
import hashlib
import json
import re
import threading
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest

from pyprof_http import PprofApp, Settings
from pyprof_http.model import Profile, Sample, ValueType, frame
from pyprof_http.registry import BY_NAME, ProfileCapture
from pyprof_http.render import flamegraph, page_title
from pyprof_http.render.flamegraph import (
    MAX_GROUPS,
    flame_data,
    group_keys,
    render_flamegraph,
    script_json,
)

MAIN = frame("main", "/app/main.py", 3)
SERVE = frame("serve", "/app/server.py", 20)
HANDLE = frame("handle", "/app/server.py", 41)
HOSTILE = frame("</script><img src=x onerror=alert(1)>", "<!--/evil&.py", 6)
TITLE = "cpu </title><img src=x onerror=alert(2)>"
HOSTILE_TASK = "<img src=x onerror=alert(3)>"


class _Page(HTMLParser):
    """Collects what the tests look at: script/style contents and every tag's attributes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.styles: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self._open: tuple[str, dict[str, str | None]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag in ("script", "style"):
            self._open = (tag, dict(attrs))

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            tag, attrs = self._open
            if tag == "script":
                self.scripts.append((attrs, data))
            else:
                self.styles.append(data)
            self._open = None

    def handle_endtag(self, tag: str) -> None:
        self._open = None


def _profile() -> Profile:
    return Profile(
        sample_types=(ValueType("samples", "count"), ValueType("cpu", "nanoseconds")),
        samples=(
            Sample((HANDLE, SERVE, MAIN), (2, 20), {"thread": "a"}),
            Sample((HANDLE, SERVE, MAIN), (3, 30), {"thread": "b"}),
            Sample((HOSTILE, SERVE, MAIN), (1, 10), {"task": HOSTILE_TASK}),
            Sample((SERVE, MAIN), (0, 0)),
            Sample((MAIN,), (4, 0)),
        ),
        comments=("driver=signal",),
        default_sample_type="cpu",
    )


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    page.close()
    return page


def _data_block(html: str) -> str:
    match = re.search(
        r'<script type="application/json" id="profile-data">(.*?)</script>', html, re.S
    )
    assert match is not None
    return match.group(1)


def _sha256(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


def test_rendered_metadata() -> None:
    rendered = render_flamegraph(_profile(), "cpu")
    assert rendered.media_type == "text/html; charset=utf-8"
    assert rendered.filename is None
    assert rendered.content_security_policy is not None
    assert rendered.body.startswith(b"<!DOCTYPE html>")


def test_data_block_parses_back_to_the_same_data() -> None:
    profile = _profile()
    html = render_flamegraph(profile, TITLE).body.decode()
    data = json.loads(_data_block(html))
    assert data == flame_data(profile, TITLE)
    frames = [tuple(f) for f in data["frames"]]
    assert frames == [
        ("main", "/app/main.py", 3),
        ("serve", "/app/server.py", 20),
        ("handle", "/app/server.py", 41),
        (HOSTILE.function, HOSTILE.filename, 6),
    ]
    # distinct stacks root first, all-zero entries dropped (with a stack only they used)
    assert data["stacks"] == [[0, 1, 2], [0, 1, 3], [0]]
    # [stack, values, label value index per key (-1: absent)]: kept apart by their labels
    assert data["samples"] == [
        [0, [2, 20], [-1, 0]],
        [0, [3, 30], [-1, 1]],
        [1, [1, 10], [0, -1]],
        [2, [4, 0], [-1, -1]],
    ]
    assert data["label_keys"] == ["task", "thread"]
    assert data["label_values"] == [[HOSTILE_TASK], ["a", "b"]]
    assert data["group_by"] is None
    assert data["sample_types"] == [
        {"type": "samples", "unit": "count"},
        {"type": "cpu", "unit": "nanoseconds"},
    ]
    assert data["default_index"] == 1
    assert data["comments"] == ["driver=signal"]
    assert data["title"] == TITLE


def test_sample_type_choice() -> None:
    assert flame_data(_profile(), sample_type="samples")["default_index"] == 0
    html = render_flamegraph(_profile(), "t", sample_type="samples").body.decode()
    assert json.loads(_data_block(html))["default_index"] == 0
    with pytest.raises(KeyError):
        render_flamegraph(_profile(), "t", sample_type="nope")


def test_hostile_names_and_title_are_escaped() -> None:
    html = render_flamegraph(_profile(), TITLE, group_by="task").body.decode()
    assert "<img" not in html
    block = _data_block(html)
    assert "</script" not in block.lower()
    assert "<" not in block and ">" not in block and "&" not in block
    assert "\\u003c/script\\u003e\\u003cimg" in block
    assert '"label_values":[["\\u003cimg src=x onerror=alert(3)\\u003e"]' in block
    assert json.loads(block)["label_values"][0] == [HOSTILE_TASK]
    assert "<title>cpu &lt;/title&gt;&lt;img src=x onerror=alert(2)&gt;</title>" in html
    assert '<h1 id="title">cpu &lt;/title&gt;&lt;img' in html
    page = _parse(html)
    assert [t for t, _ in page.tags if t == "img"] == []
    assert len(page.scripts) == 2  # the data block and our code, nothing injected


def test_script_json_escapes() -> None:
    value = {"k": "<>&\u2028\u2029</script><!--"}
    text = script_json(value)
    assert not set(text) & set("<>&\u2028\u2029")
    assert json.loads(text) == value


def test_placeholders_in_data_are_not_expanded() -> None:
    odd = frame("{{script}}", "{{style}}", 1)
    profile = Profile((ValueType("n", "count"),), (Sample((odd,), (1,)),))
    html = render_flamegraph(profile, "{{data}}").body.decode()
    assert html.count(flamegraph.SCRIPT) == 1
    assert json.loads(_data_block(html))["frames"] == [["{{script}}", "{{style}}", 1]]


def test_csp_hashes_match_the_inline_script_and_style() -> None:
    rendered = render_flamegraph(_profile(), TITLE)
    html = rendered.body.decode()
    page = _parse(html)
    code = [text for attrs, text in page.scripts if "type" not in attrs]
    assert len(code) == 1
    assert len(page.styles) == 1
    policy = rendered.content_security_policy
    assert policy is not None
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["script-src"] == f"'sha256-{_sha256(code[0])}'"
    assert directives["style-src"] == f"'sha256-{_sha256(page.styles[0])}'"
    assert directives["default-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["base-uri"] == "'none'"
    assert directives["form-action"] == "'none'"
    assert directives["img-src"] == "data:"
    assert "unsafe" not in policy
    # the same policy travels in a <meta> (minus frame-ancestors, which <meta> cannot carry)
    metas = [a for t, a in page.tags if t == "meta" and a.get("http-equiv")]
    assert metas == [
        {
            "http-equiv": "Content-Security-Policy",
            "content": policy.replace("; frame-ancestors 'none'", ""),
        }
    ]


def test_no_external_resources_no_inline_handlers_no_style_attributes() -> None:
    html = render_flamegraph(_profile(), TITLE).body.decode()
    for tag, attrs in _parse(html).tags:
        assert tag != "link"
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name)
            assert name != "style", tag
            if name in ("src", "href", "action", "srcset"):
                raise AssertionError(f"{tag} has {name}={value!r}")
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*https?://", html, re.I)
    assert "http://" not in html and "https://" not in html
    assert "@import" not in flamegraph.STYLE and "url(" not in flamegraph.STYLE


def test_script_only_uses_text_content() -> None:
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in flamegraph.SCRIPT, sink
    assert "textContent" in flamegraph.SCRIPT


def test_empty_profile_renders() -> None:
    html = render_flamegraph(Profile((ValueType("goroutine", "count"),), ()), "empty").body
    data = json.loads(_data_block(html.decode()))
    assert data["stacks"] == [] and data["samples"] == []
    assert data["label_keys"] == [] and data["label_values"] == []
    assert b'id="empty"' in html
    no_types = render_flamegraph(Profile((), ()), "nothing").body.decode()
    assert json.loads(_data_block(no_types))["default_index"] == 0


def test_payload_grows_with_distinct_stacks_not_samples() -> None:
    stacks = [(frame(f"f{i}", "/a.py", i), SERVE, MAIN) for i in range(10)]
    samples = tuple(Sample(stacks[i % 10], (1, 7), {"n": i}) for i in range(20_000))
    profile = Profile((ValueType("samples", "count"), ValueType("cpu", "nanoseconds")), samples)
    data = flame_data(profile)
    assert len(data["stacks"]) == 10
    assert data["label_keys"] == []  # 20,000 distinct values: not a grouping, merged away
    assert [s[1] for s in data["samples"]] == [[2000, 14000]] * 10
    assert len(render_flamegraph(profile, "big").body) < 20_000


def test_labels_keep_samples_apart_only_by_the_values_that_can_group() -> None:
    stacks = [(frame(f"f{i}", "/a.py", i), SERVE, MAIN) for i in range(10)]
    samples = tuple(
        Sample(stacks[i % 10], (1,), {"request_id": str(i), "thread": f"t{i % 3}", "pid": 7})
        for i in range(6000)
    )
    data = flame_data(Profile((ValueType("samples", "count"),), samples))
    assert data["label_keys"] == ["pid", "thread"]  # request_id: > MAX_GROUPS values
    assert data["label_values"] == [["7"], ["t0", "t1", "t2"]]  # ints shown as text
    assert len(data["stacks"]) == 10
    assert len(data["samples"]) == 30  # (stack, thread) pairs, each of 200 samples
    assert {s[1][0] for s in data["samples"]} == {200}
    assert sum(s[1][0] for s in data["samples"]) == 6000


def test_group_keys_cap() -> None:
    def profile(n: int) -> Profile:
        return Profile(
            (ValueType("n", "count"),),
            tuple(Sample((MAIN,), (1,), {"route": f"/r{i}"}) for i in range(n)),
        )

    assert group_keys(profile(MAX_GROUPS)) == ["route"]
    assert group_keys(profile(MAX_GROUPS + 1)) == []
    assert group_keys(_profile()) == ["task", "thread"]


def test_group_by_opens_grouped_when_the_key_exists() -> None:
    assert flame_data(_profile(), group_by="thread")["group_by"] == "thread"
    for absent in ("route", "", "__proto__"):  # no sample carries it: ungrouped, no error
        assert flame_data(_profile(), group_by=absent)["group_by"] is None
    html = render_flamegraph(_profile(), "t", group_by="task").body.decode()
    assert json.loads(_data_block(html))["group_by"] == "task"


def test_page_has_the_grouping_control() -> None:
    page = _parse(render_flamegraph(_profile(), "t").body.decode())
    selects = [a.get("id") for t, a in page.tags if t == "select"]
    assert selects == ["sample-type", "group-by"]
    assert "location.hash" in flamegraph.SCRIPT and "group" in flamegraph.SCRIPT


# --- granularity: one box per function by default, as go tool pprof draws ------------------


def _parked_at_three_lines(stop: threading.Event, where: int) -> None:
    if where == 0:
        stop.wait(30)
    elif where == 1:
        stop.wait(timeout=30)
    else:
        stop.wait(30.0)


def _served_frames(query: str) -> list[list[Any]]:
    """The frame table of the goroutine flame graph served by a real PprofApp."""
    stop = threading.Event()
    threads = [threading.Thread(target=_parked_at_three_lines, args=(stop, i), daemon=True)
               for i in range(3)]
    for thread in threads:
        thread.start()
    try:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=PprofApp(Settings()))
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
                return await c.get(f"/goroutine?format=flamegraph{query}")

        response = asyncio.run(go())
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)
    assert response.status_code == 200, response.text
    frames: list[list[Any]] = json.loads(_data_block(response.text))["frames"]
    return [f for f in frames if f[0].endswith("_parked_at_three_lines")]


def test_one_frame_per_function_by_default() -> None:
    for query in ("", "&granularity=functions"):
        (parked,) = _served_frames(query)
        assert parked[2] == _parked_at_three_lines.__code__.co_firstlineno + 2  # lowest line


def test_granularity_lines_keeps_a_frame_per_line() -> None:
    lines = sorted(f[2] for f in _served_frames("&granularity=lines"))
    first = _parked_at_three_lines.__code__.co_firstlineno
    assert lines == [first + 2, first + 4, first + 6]



@pytest.mark.parametrize(("name", "title"), [("profile", "profile"),
                                             ("goroutine", "goroutine profile")])
def test_page_titles_never_say_profile_twice(name: str, title: str) -> None:
    page = BY_NAME[name].formats["flamegraph"].render_at(ProfileCapture(_profile()), name, None)
    assert re.search(r"<title>(.*?)</title>", page.body.decode())[1] == title  # type: ignore[index]
    assert page_title(name) == title
