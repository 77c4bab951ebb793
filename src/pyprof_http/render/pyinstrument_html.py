"""pyinstrument's own interactive HTML page (its call tree) for our CPU and wall samples.

Users who know pyinstrument get its viewer without running pyinstrument's profiler (which sees
one thread and slows the app about x3 here). Our samples are turned into a pyinstrument
``Session``; its constructor is private API, so pyproject pins the major version this was
written against and ``tests/render/test_pyinstrument_html.py`` fails loudly if it changes.

A frame record is ``(call stack root first, seconds)``; each stack entry is a frame info string
``function NUL filename NUL line`` optionally followed by ``SOH``-separated attributes. Like
pyinstrument, a function is one node (its identifier line is the lowest line sampled, our best
guess at the ``def``) and the line being run is an ``l<line>`` attribute. One record per distinct
stack, with its summed time, sorted by stack. Samples are aggregated as they are taken, so there
is no time order to show: the page's Timeline view (which would draw the stacks side by side as
if in time) is hidden, and the saved view reset to the call tree.

What pyinstrument's page does not do and we add after rendering:

- It embeds the session as a JS object literal from ``json.dumps``, which leaves ``</script>``
  and ``<!--`` in names as they are: a function named ``</script><img src=x onerror=...>`` would
  break out of the script. We re-escape ``<``, ``>``, ``&``, U+2028 and U+2029 as ``\\uXXXX``
  inside that literal (JSON has those characters only inside strings, so its value is the same).
- Its script preloads Google Fonts: removed, so the page needs no network (the stylesheet's
  fallback fonts apply).
- A strict Content-Security-Policy: the inline scripts and stylesheets by sha256 of the bytes
  sent (:mod:`.csp`), computed per page because the data script differs each time. The app also
  sets a few inline ``style`` attributes (the time colours, a spacer, the timeline tooltip's
  font); those are allowed by hash with ``'unsafe-hashes'`` (exact strings only, never
  ``'unsafe-inline'``). Allowed too: ``img-src data:`` (the page's logo is a data: PNG).
"""

from __future__ import annotations

import re
import sys
from importlib import resources
from typing import Final

from pyinstrument.renderers.html import HTMLRenderer
from pyinstrument.session import Session

from ..model import Frame, Profile
from . import Rendered, utf8
from .csp import sha256_source

_JS_ESCAPES: Final = {
    ord("<"): "\\u003c",
    ord(">"): "\\u003e",
    ord("&"): "\\u0026",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}
_FIELD_ESCAPES: Final = {0: "\ufffd", 1: "\ufffd"}  # NUL and SOH are pyinstrument's separators
_DATA_START: Final = "const sessionData = "
_META: Final = '<meta charset="utf-8">'
_BLOCK: Final = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)
_WEB_FONTS: Final = re.compile(r'(\w+)\.href="https?://fonts\.(?:googleapis|gstatic)\.com/[^"]*",'
                               r"document\.head\.appendChild\(\1\)")
"""app.js preloads Google Fonts by adding a ``<link>`` to the head: the page must work offline
(and the policy refuses it, a console error). Dropped; the stylesheet's fallback fonts apply."""
_CALL_TREE_ONLY: Final = (
    # Before app.js reads its saved view: a viewer who used pyinstrument's timeline elsewhere
    # (same origin) would otherwise land in it. localStorage may be refused: then it is unset.
    '<script>try{localStorage.setItem("pyinstrument:viewOptions",'
    '\'{"viewMode":"call-stack"}\')}catch(e){}</script>'
    # The call-stack / timeline switch: the only element of class "toggle" in app.js.
    "<style>.toggle{display:none}</style>"
)
"""The timeline is hidden: our samples are aggregated by stack as they are taken, so there is
no time order to show, and pyinstrument would draw the stacks side by side as if in time."""


def _style_attributes() -> tuple[str, ...]:
    """The constant inline ``style`` attributes pyinstrument's app.js writes via innerHTML."""
    js = (resources.files("pyinstrument") / "renderers/html_resources/app.js").read_text("utf-8")
    found = set(re.findall(r'style="([^"$`]*)"', js))  # literal ones, e.g. a spacer's height
    colour = re.search(r'style="color: \$\{(\w+)\(', js)  # time colours: a function of 5 literals
    if colour is not None:
        body = re.search(r"function " + colour.group(1) + r"\(\w+\)\{return([^}]*)\}", js)
        if body is not None:
            found.update(f"color: {c}" for c in re.findall(r'"(#[0-9A-Fa-f]{3,8})"', body[1]))
    tooltip = re.search(r"`font: \$\{(\w+)\}; max-width: \$\{(\w+)\}px;`", js)  # timeline
    if tooltip is not None:
        font = re.search(r"\b" + tooltip[1] + r'="([^"]*)"', js)
        width = re.search(r"\b" + tooltip[2] + r"=(\d+)\b", js)
        if font is not None and width is not None:
            found.add(f"font: {font[1]}; max-width: {width[1]}px;")
    return tuple(sorted(found))


_STYLE_ATTRIBUTE_HASHES: Final = " ".join(sha256_source(s) for s in _style_attributes())


def session_from_profile(profile: Profile, title: str, sample_type: str | None = None) -> Session:
    """A pyinstrument ``Session`` holding ``profile``'s time for ``sample_type``.

    The sample type must be a time in nanoseconds (default: the profile's default when it is one,
    else its first time type); :class:`ValueError` otherwise, :class:`KeyError` if unknown.
    """
    index = profile.value_index(sample_type) if profile.sample_types else -1
    if index < 0 or profile.sample_types[index].unit != "nanoseconds":
        if sample_type is not None:
            raise ValueError(f"pyinstrument needs a time sample type, not {sample_type!r}")
        units = [t.unit for t in profile.sample_types]
        if "nanoseconds" not in units:
            raise ValueError("pyinstrument needs a profile with a nanoseconds sample type")
        index = units.index("nanoseconds")
    by_stack: dict[tuple[Frame, ...], int] = {}  # aggregate on our interned frames first
    for sample in profile.samples:
        value = sample.values[index]
        if value > 0 and sample.stack:
            by_stack[sample.stack] = by_stack.get(sample.stack, 0) + value
    first_line: dict[tuple[str, str], int] = {}
    for f in {f for stack in by_stack for f in stack}:
        first_line[f.function, f.filename] = min(first_line.get(f[:2], f.line), f.line)
    infos: dict[Frame, str] = {}  # one string per frame: records share them, sorting is fast
    for f in {f for stack in by_stack for f in stack}:
        infos[f] = (
            f"{f.function.translate(_FIELD_ESCAPES)}\x00{f.filename.translate(_FIELD_ESCAPES)}"
            f"\x00{first_line[f.function, f.filename]}\x01l{f.line}"
        )
    stacks: dict[tuple[str, ...], int] = {}
    for stack, value in by_stack.items():
        key = tuple(infos[f] for f in reversed(stack))
        stacks[key] = stacks.get(key, 0) + value
    total = sum(stacks.values())
    counts = [i for i, t in enumerate(profile.sample_types) if t.type == "samples"]
    interval = profile.period / 1e9 if profile.period else 0.01
    return Session(
        # Sorted, so stacks sharing a prefix are neighbours: pyinstrument reuses a node only
        # from the previous record's stack, so this keeps the tree (and the page) small.
        frame_records=[(list(infos), stacks[infos] / 1e9) for infos in sorted(stacks)],
        start_time=profile.time_ns / 1e9,
        duration=(profile.duration_ns or total) / 1e9,
        min_interval=interval,
        max_interval=interval,
        sample_count=sum(s.values[counts[0]] for s in profile.samples) if counts else len(stacks),
        # pyinstrument trims the tree down to where its profiler was started; an identifier that
        # no frame has (ours all contain NUL) keeps every frame.
        start_call_stack=[""],
        target_description=title,
        cpu_time=total / 1e9 if profile.sample_types[index].type == "cpu" else 0.0,
        sys_path=list(sys.path),
        sys_prefixes=Session.current_sys_prefixes(),
    )


def _escape_data(page: str) -> str:
    """Re-escape the session literal so no name can close its ``<script>`` (see module doc)."""
    start = page.find(_DATA_START)
    end = page.find(";\n", start)  # JSON has no raw newline, so this is the literal's end
    if start < 0 or end < 0:
        raise RuntimeError("pyinstrument's HTML page changed shape: sessionData not found")
    start += len(_DATA_START)
    literal = page[start:end]
    if not (literal.startswith('{"session": ') and literal.endswith("}")):
        raise RuntimeError("pyinstrument's HTML page changed shape: sessionData not JSON")
    return page[:start] + literal.translate(_JS_ESCAPES) + page[end:]


def render_pyinstrument(profile: Profile, title: str, sample_type: str | None = None) -> Rendered:
    """pyinstrument's HTML page for ``profile`` with the policy that allows exactly its code."""
    session = session_from_profile(profile, title, sample_type)
    # resample_interval=0: records are already one per distinct stack; resampling would print
    # to stderr and drop stacks.
    page = HTMLRenderer(resample_interval=0).render(session)
    # The HTML parser turns CR LF and CR into LF before hashing: do the same.
    page = _escape_data(page.replace("\r\n", "\n").replace("\r", "\n"))
    page = _WEB_FONTS.sub("void 0", page).replace(_META, _META + _CALL_TREE_ONLY, 1)
    scripts: list[str] = []
    styles: list[str] = []
    for match in _BLOCK.finditer(page):
        (scripts if match[1] == "script" else styles).append(sha256_source(match[2]))
    if not scripts or _META not in page:
        raise RuntimeError("pyinstrument's HTML page changed shape: no inline script found")
    policy = (
        f"default-src 'none'; script-src {' '.join(scripts)}; "
        f"style-src {' '.join(styles)} 'unsafe-hashes' {_STYLE_ATTRIBUTE_HASHES}; "
        "img-src data:; base-uri 'none'; form-action 'none'"
    )
    # Also in a <meta> so a saved copy stays locked (frame-ancestors cannot go in a <meta>).
    meta = f'<meta http-equiv="Content-Security-Policy" content="{policy}">'
    page = page.replace(_META, _META + meta, 1)
    return Rendered(
        utf8(page),  # the bytes the hashes were taken over
        "text/html; charset=utf-8",
        content_security_policy=policy + "; frame-ancestors 'none'",
    )
