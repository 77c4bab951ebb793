"""A self-contained HTML flame graph: one page, our own small script, no CDN, works offline.

The page is ``_assets/flamegraph.html`` with the stylesheet, the script and the profile data
inlined. The data goes in a ``<script type="application/json">`` block (a data block: never
executed) as a frame table, the distinct stacks (root first) and a label table; the script builds
the tree in the browser and can group it by a label (``task``, ``thread``, ``route``...: one
synthetic root-level frame per value, like ``pprof -tagroot``), chosen in the page or by a link
ending in ``#group=task``. A frame is a function by default, as ``go tool pprof`` draws (the
registry widens the profile's frames with :func:`~pyprof_http.model.by_function`); with
``granularity=lines`` each sampled line is its own frame, labelled ``function:line``. Each box
shows its share of the total and its value, not only on hover. Everything user-controlled is
escaped: the
title by :func:`html.escape`, the JSON with ``<``, ``>``, ``&``, U+2028 and U+2029 as ``\\uXXXX``
escapes, and the script puts names into the DOM only through ``textContent``.

The inline script and style are allowed by their sha256 hashes, computed once at import, so the
page runs under a strict Content-Security-Policy without ``'unsafe-inline'``.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any, Final

from pyprof_http.model import Frame, Profile
from pyprof_http.render import Rendered
from pyprof_http.render.csp import page

_PAGE: Final = page("flamegraph")
TEMPLATE: Final = _PAGE.template
SCRIPT: Final = _PAGE.script
STYLE: Final = _PAGE.style
_POLICY: Final = _PAGE.meta_policy
CONTENT_SECURITY_POLICY: Final = _PAGE.content_security_policy
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


MAX_GROUPS: Final = 1000
"""A label key with more distinct values than this (a request id, a counter) is not offered for
grouping: so many groups cannot be read in a flame graph, and the page would grow with samples."""


def group_keys(profile: Profile) -> list[str]:
    """The label keys the page can group by, sorted."""
    seen: dict[str, set[str]] = {}
    for sample in profile.samples:
        for key, value in sample.labels.items():
            seen.setdefault(key, set()).add(str(value))
    return sorted(key for key, values in seen.items() if len(values) <= MAX_GROUPS)


def flame_data(
    profile: Profile, title: str = "", sample_type: str | None = None, group_by: str | None = None
) -> dict[str, Any]:
    """What the page's script reads.

    ``samples`` are ``[stack index, [value per sample type], [label value index per key in
    label_keys, -1 when the sample lacks it]]``; ``label_values`` holds each key's values. Equal
    (stack, grouping labels) are merged, so the payload grows with what the page can show, not
    with samples; entries that are zero for every sample type are dropped. ``group_by`` is the
    grouping the page opens with; a key no sample carries opens ungrouped, as a ``#group=`` link
    does.
    """
    default = profile.value_index(sample_type) if profile.sample_types else 0
    keys = group_keys(profile)
    merged: dict[tuple[tuple[Frame, ...], tuple[str | None, ...]], list[int]] = {}
    for sample in profile.samples:
        tags = tuple(None if (v := sample.labels.get(k)) is None else str(v) for k in keys)
        seen = merged.get((sample.stack, tags))
        if seen is None:
            merged[sample.stack, tags] = list(sample.values)
        else:
            for i, value in enumerate(sample.values):
                seen[i] += value
    frame_ids: dict[Frame, int] = {}
    stack_ids: dict[tuple[Frame, ...], int] = {}
    tables: list[dict[str, int]] = [{} for _ in keys]
    samples = []
    for (stack, tags), values in merged.items():
        if not any(values):
            continue
        if stack not in stack_ids:
            stack_ids[stack] = len(stack_ids)
            for f in reversed(stack):
                frame_ids.setdefault(f, len(frame_ids))
        indices = [
            -1 if v is None else t.setdefault(v, len(t)) for v, t in zip(tags, tables, strict=True)
        ]
        samples.append([stack_ids[stack], values, indices])
    return {
        "title": title,
        "comments": list(profile.comments),
        "sample_types": [{"type": t.type, "unit": t.unit} for t in profile.sample_types],
        "default_index": default,
        "frames": [[f.function, f.filename, f.line] for f in frame_ids],
        "stacks": [[frame_ids[f] for f in reversed(stack)] for stack in stack_ids],
        "samples": samples,
        "label_keys": keys,
        "label_values": [list(table) for table in tables],
        "group_by": group_by if group_by in keys else None,
    }


def render_flamegraph(
    profile: Profile, title: str, sample_type: str | None = None, group_by: str | None = None
) -> Rendered:
    """The flame graph page for ``profile``, opened on ``sample_type`` (default: the profile's)
    and grouped by the label ``group_by`` (default: not grouped; see :func:`flame_data`).

    Raises :class:`KeyError` for a ``sample_type`` the profile does not have.
    """
    parts = {
        "meta_csp": _POLICY,
        "title": html.escape(title, quote=True),
        "style": STYLE,
        "script": SCRIPT,
        "data": script_json(flame_data(profile, title, sample_type, group_by)),
    }
    # One pass over the template only, so text inside the data is never taken for a placeholder.
    page = _PLACEHOLDER.sub(lambda m: parts[m.group(1)], TEMPLATE)
    return Rendered(
        page.encode("utf-8", "replace"),
        "text/html; charset=utf-8",
        content_security_policy=CONTENT_SECURITY_POLICY,
    )
