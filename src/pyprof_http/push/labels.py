"""Series labels for pushed profiles, and the sample labels that may go with them.

Pyroscope turns every pprof *sample* label into a *series* label, except ``span_id`` and
``trace_id``: a label with one value per request (``request_id``) or per task would create a
series per request. So a pushed profile keeps only bounded sample labels (``thread``,
``route``) and carries the request id as ``span_id``, which Pyroscope stores per sample without
making a series of it. Pyroscope reads a ``span_id`` as 16 hex digits (an OpenTelemetry span
id): a request id of another shape is hashed to one, stably, so all samples of one request
still share it.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import replace
from typing import Final

from ..config import Settings
from ..model import LabelValue, Profile, Sample
from ..pprof.encode import program_name

SERIES_SAFE: Final = frozenset({"thread", "route"})
"""Sample labels a pushed profile keeps besides ``span_id``: bounded by the app's threads and
route templates."""
_SPAN_ID: Final = re.compile(r"[0-9a-f]{16}")
_LABEL_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
MAX_VALUE: Final = 1024
"""Longest label value pushed: Pyroscope refuses a whole profile with a value over its limit
(2048 by default), and a thread or route name is the app's (or the client's) to choose."""


def bounded(text: str) -> str:
    """``text`` cut to at most :data:`MAX_VALUE` bytes as it goes on the wire (UTF-8, a lone
    surrogate as its escape): Pyroscope measures Go string lengths, in bytes, so 1024
    characters of CJK or emoji (up to 4 KiB) had the whole profile refused."""
    raw = text.encode("utf-8", "backslashreplace")
    if len(raw) <= MAX_VALUE:
        return text
    return raw[:MAX_VALUE].decode("utf-8", "ignore")  # a character cut in two is left out


def _bounded(value: LabelValue) -> LabelValue:
    return bounded(value) if isinstance(value, str) else value


def span_id(request_id: str) -> str:
    """``request_id`` as Pyroscope's ``span_id``: itself when already 16 lower-case hex digits,
    else the first 8 bytes of its BLAKE2b hash in hex."""
    if _SPAN_ID.fullmatch(request_id):
        return request_id
    return hashlib.blake2b(request_id.encode("utf-8", "backslashreplace"),
                           digest_size=8).hexdigest()


def pushable(profile: Profile) -> Profile:
    """``profile`` with only series-safe sample labels, and request ids as ``span_id``."""
    samples = []
    for sample in profile.samples:
        labels: dict[str, LabelValue] = {k: _bounded(v) for k, v in sample.labels.items()
                                         if k in SERIES_SAFE}
        request = sample.labels.get("request_id")
        if isinstance(request, str) and request:
            labels["span_id"] = span_id(request)
        samples.append(Sample(sample.stack, sample.values, labels))
    return replace(profile, samples=tuple(samples))


def base_labels(settings: Settings, pid: int | None = None,
                host: str | None = None) -> dict[str, str]:
    """``service_name``, ``pid``, ``host``, ``version`` and the extra labels of the settings.

    The pid is read when the batch is built (not at import), so each worker of a forking server
    pushes its own series. Extra labels cannot replace the four above.
    """
    labels = {name: bounded(value) for name, value in settings.push_labels.items()
              if _LABEL_NAME.fullmatch(name) and not name.startswith("__")}
    labels["service_name"] = bounded(settings.push_service_name or program_name())
    labels["pid"] = str(os.getpid() if pid is None else pid)
    labels["host"] = bounded(socket.gethostname() if host is None else host)
    if settings.push_version:
        labels["version"] = bounded(settings.push_version)
    return labels


def series(name: str, base: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The label set of one pushed series: ``__name__`` (the profile type), then the rest
    sorted by name."""
    return (("__name__", name), *sorted(base.items()))


def ingest_name(base: Mapping[str, str]) -> str:
    """The ``name`` of Pyroscope's ``/ingest``: ``service{key=value,...}``. Characters that
    syntax gives a meaning to (``{}=,`` and spaces) are replaced by ``_`` in values."""
    def clean(text: str) -> str:
        return re.sub(r"[{}=,\s]", "_", text)

    tags = ",".join(f"{clean(k)}={clean(v)}" for k, v in sorted(base.items())
                    if k != "service_name")
    return f"{clean(base.get('service_name', 'python'))}{{{tags}}}"
