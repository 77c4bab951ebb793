"""The app's side of multi-worker serving: ``workers=all`` as one answer, and how each view of
a worker names the process that answered.

Kept out of ``app.py`` so that the sub-app only dispatches: it validates a request once (auth
ran before), then hands ``workers=all`` here and wraps its renderers with :func:`naming_process`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping

from starlette.datastructures import QueryParams
from starlette.requests import Request

from .._waiting import render_in_thread
from ..config import Settings
from ..errors import BadRequest
from ..model import Granularity, with_labels
from ..params import parse_query
from ..registry import Capture, ProfileCapture, ProfileSpec
from ..render import Rendered, page_title
from ..render.pyinstrument_html import render_pyinstrument
from . import fanout, routing
from .membership import WORKERS

RenderAt = Callable[[Capture, str, "Granularity | None"], Rendered]


def hop_timeout(query: QueryParams, spec: ProfileSpec, settings: Settings) -> float:
    """How long a sibling may take: what it records, plus ``worker_timeout_seconds``. Validates
    the query on the way (a 400 is given by the worker the client reached)."""
    parsed = parse_query(query, spec, settings)
    records = 0
    if spec.raw is None and (parsed.seconds is not None or spec.duration is not None):
        records = parsed.duration(spec, settings)
    return float(records + settings.worker_timeout_seconds)


async def everyone(serve: routing.ASGI, request: Request, path: str, spec: ProfileSpec,
                   settings: Settings, rest: bytes) -> tuple[Rendered, Mapping[str, str]]:
    """Every worker's answer to ``path?rest`` at once, as one body, and the headers naming
    who answered and who did not."""
    timeout = hop_timeout(request.query_params, spec, settings)
    parsed = None if spec.raw is not None else parse_query(request.query_params, spec, settings)
    fmt = "text" if parsed is None else parsed.resolved_format(spec)
    if fmt in fanout.MERGED_FORMATS:
        if "json" not in spec.formats:
            raise BadRequest(f"{spec.name} cannot be merged across workers; use worker=PID")
        query = fanout.json_query(rest)
    elif fmt in fanout.SECTION_FORMATS:
        query = rest
    else:
        raise BadRequest(f"format {fmt} cannot be combined across workers (merged: "
                         f"{', '.join(sorted(fanout.MERGED_FORMATS))}; one section per "
                         f"worker: {', '.join(sorted(fanout.SECTION_FORMATS))}); "
                         "ask each worker with worker=PID")
    pids = await routing.live_pids(probe=False)  # a dead one is found by its hop
    ask = routing.asker(serve, path, timeout)
    answers, missing = await routing.unless_disconnected(
        request, fanout.ask_all(pids, query, ask))
    if not answers:
        raise routing.BadGateway("no worker answered: " + fanout.missing_header(missing))
    if fmt in fanout.MERGED_FORMATS:
        try:
            merged = fanout.merged_profile(answers, missing)
        except (ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
            raise routing.BadGateway(f"the workers' profiles cannot be merged: {exc}") from None
        granularity = parsed.granularity if parsed is not None else None
        rendered = await render_in_thread(spec.formats[fmt].render_at, ProfileCapture(merged),
                                          spec.name, granularity)
    else:
        places = {a.pid: f"pid {a.pid}" for a in answers}
        rendered = Rendered(fanout.sections(answers, missing, places),
                            "text/plain; charset=utf-8")
    headers = {"X-Pyprof-Workers": ",".join(str(a.pid) for a in answers)}
    if missing:
        headers["X-Pyprof-Workers-Missing"] = fanout.missing_header(missing)
    return rendered, headers


def naming_process(render_at: RenderAt, fmt: str) -> RenderAt:
    """In a worker, ``render_at`` with the process named: profile formats get a ``pid`` label
    on every sample and a comment, pyinstrument pages a title. Elsewhere ``render_at`` itself
    (a single-process server's profiles stay exactly as they were)."""
    if not WORKERS.joined:
        return render_at
    process = WORKERS.describe()

    def named(capture: Capture, name: str, granularity: Granularity | None) -> Rendered:
        if fmt in fanout.MERGED_FORMATS:
            labelled = with_labels(capture.profile, {"pid": os.getpid()}, process)
            return render_at(ProfileCapture(labelled), name, granularity)
        if fmt == "pyinstrument":  # its page shows no comments: the title says it
            return render_pyinstrument(capture.profile, f"{page_title(name)}, {process}")
        return render_at(capture, name, granularity)

    return named


def name_process(rendered: Rendered, fmt: str) -> Rendered:
    """In a worker, text and dumps name the process that answered, as a comment after their
    first line (a single-process server's text stays as it was)."""
    if (not WORKERS.joined or fmt not in fanout.SECTION_FORMATS
            or not rendered.media_type.startswith("text/plain")):
        return rendered
    first, newline, rest = rendered.body.partition(b"\n")
    line = f"# {WORKERS.describe()}".encode()
    body = first + b"\n" + line + b"\n" + rest if newline else first + b"\n" + line + b"\n"
    return Rendered(body, rendered.media_type, rendered.filename,
                    rendered.content_security_policy)
