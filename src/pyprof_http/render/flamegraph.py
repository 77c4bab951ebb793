"""A self-contained HTML flame graph: one page, our own small script, no CDN, works offline.

The page is ``_assets/flamegraph.html`` with the stylesheet, the script and the profile data
inlined. The data goes in a ``<script type="application/json">`` block (a data block: never
executed) as a frame table plus the distinct stacks, root first, each with one value per sample
type; the script builds the tree in the browser. Everything user-controlled is escaped: the
title by :func:`html.escape`, the JSON with ``<``, ``>``, ``&``, U+2028 and U+2029 as ``\\uXXXX``
escapes, and the script puts names into the DOM only through ``textContent``.

The inline script and style are allowed by their sha256 hashes, computed once at import, so the
page runs under a strict Content-Security-Policy without ``'unsafe-inline'``.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from importlib import resources
from typing import Any, Final

from pyprof_http.model import Frame, Profile
from pyprof_http.render import Rendered


def _asset(name: str) -> str:
    text = (resources.files("pyprof_http") / "_assets" / name).read_text(encoding="utf-8")
    # The HTML parser turns CR LF and lone CR into LF before hashing: do the same (a checkout
    # with CRLF line endings must not break the hashes).
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _sha256(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


TEMPLATE: Final = _asset("flamegraph.html")
SCRIPT: Final = _asset("flamegraph.js")
STYLE: Final = _asset("flamegraph.css")
if re.search(r"</script|<!--", SCRIPT, re.IGNORECASE) or re.search(r"</style", STYLE, re.I):
    raise RuntimeError("flamegraph assets must not contain their own closing tag")

_POLICY: Final = (
    f"default-src 'none'; script-src {_sha256(SCRIPT)}; style-src {_sha256(STYLE)}; "
    "img-src data:; base-uri 'none'; form-action 'none'"
)
CONTENT_SECURITY_POLICY: Final = _POLICY + "; frame-ancestors 'none'"
"""The policy the HTTP layer must send with a flame graph page (also repeated in a ``<meta>``,
without ``frame-ancestors`` which a ``<meta>`` cannot carry, so a saved copy stays locked)."""

_JSON_ESCAPES: Final = {
    ord("<"): "\\u003c",
    ord(">"): "\\u003e",
    ord("&"): "\\u0026",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}
_PLACEHOLDER: Final = re.compile(r"\{\{(\w+)\}\}")


def script_json(value: object) -> str:
    """JSON that is safe inside ``<script type="application/json">`` (no ``</script>``, no
    ``<!--``) and still parses back to ``value`` with ``JSON.parse``."""
    return json.dumps(value, separators=(",", ":")).translate(_JSON_ESCAPES)


def flame_data(profile: Profile, title: str = "", sample_type: str | None = None) -> dict[str, Any]:
    """What the page's script reads: frames, distinct root-first stacks and their values.

    Equal stacks are merged (labels ignored) so the payload grows with distinct stacks, not with
    samples; stacks that are zero for every sample type are dropped.
    """
    default = profile.value_index(sample_type) if profile.sample_types else 0
    frame_ids: dict[Frame, int] = {}
    stacks: dict[tuple[int, ...], list[int]] = {}
    for sample in profile.samples:
        ids = tuple(frame_ids.setdefault(f, len(frame_ids)) for f in reversed(sample.stack))
        seen = stacks.get(ids)
        if seen is None:
            stacks[ids] = list(sample.values)
        else:
            for i, value in enumerate(sample.values):
                seen[i] += value
    kept = [(ids, values) for ids, values in stacks.items() if any(values)]
    return {
        "title": title,
        "comments": list(profile.comments),
        "sample_types": [{"type": t.type, "unit": t.unit} for t in profile.sample_types],
        "default_index": default,
        "frames": [[f.function, f.filename, f.line] for f in frame_ids],
        "stacks": [list(ids) for ids, _ in kept],
        "values": [values for _, values in kept],
    }


def render_flamegraph(profile: Profile, title: str, sample_type: str | None = None) -> Rendered:
    """The flame graph page for ``profile``, opened on ``sample_type`` (default: the profile's).

    Raises :class:`KeyError` for a ``sample_type`` the profile does not have.
    """
    parts = {
        "meta_csp": _POLICY,
        "title": html.escape(title, quote=True),
        "style": STYLE,
        "script": SCRIPT,
        "data": script_json(flame_data(profile, title, sample_type)),
    }
    # One pass over the template only, so text inside the data is never taken for a placeholder.
    page = _PLACEHOLDER.sub(lambda m: parts[m.group(1)], TEMPLATE)
    return Rendered(
        page.encode("utf-8", "replace"),
        "text/html; charset=utf-8",
        content_security_policy=CONTENT_SECURITY_POLICY,
    )
