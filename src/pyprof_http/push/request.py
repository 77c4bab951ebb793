"""The bodies of a push: Connect's ``PushRequest`` and the legacy ``/ingest`` form.

``PushRequest`` (``push.v1``) is ``repeated RawProfileSeries series = 1``; a series is
``repeated types.v1.LabelPair labels = 1`` (``name = 1``, ``value = 2``) and ``repeated
RawSample samples = 2`` (``bytes raw_profile = 1``, ``string ID = 2``). Written with the pprof
encoder's own protobuf primitives: no runtime dependency on ``protobuf``. As the official
Python SDK does (recorded by tests/push/test_conformance.py), the raw profile is plain pprof
and the whole request body is gzipped (``Content-Encoding: gzip``).
"""

from __future__ import annotations

import gzip
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from ..pprof.wire import Writer

_SERIES, _LABELS, _SAMPLES = 1, 1, 2
_NAME, _VALUE = 1, 2
_RAW_PROFILE, _ID = 1, 2


@dataclass(frozen=True, slots=True)
class Series:
    """One profile to push: its series labels and its uncompressed pprof bytes."""

    labels: tuple[tuple[str, str], ...]
    pprof: bytes
    start_ns: int
    end_ns: int
    sample_rate: int = 0
    id: str = ""

    def with_id(self) -> Series:
        return self if self.id else Series(self.labels, self.pprof, self.start_ns,
                                           self.end_ns, self.sample_rate, str(uuid.uuid4()))

    @property
    def name(self) -> str:
        return dict(self.labels).get("__name__", "")


def push_request(series: Sequence[Series]) -> bytes:
    """The ``PushRequest`` protobuf (uncompressed)."""
    out, one, pair, sample = Writer(), Writer(), Writer(), Writer()
    for item in series:
        one.clear()
        for name, value in item.labels:
            pair.clear()
            pair.string(_NAME, name)
            pair.string(_VALUE, value)
            one.message(_LABELS, pair)
        sample.clear()
        sample.delimited(_RAW_PROFILE, item.pprof)
        sample.string(_ID, item.with_id().id)
        one.message(_SAMPLES, sample)
        out.message(_SERIES, one)
    return out.getvalue()


def connect_body(series: Sequence[Series]) -> bytes:
    """What goes on the wire for Connect: the request, gzipped (fast level)."""
    return gzip.compress(push_request(series), compresslevel=1, mtime=0)


def multipart(profile: bytes, boundary: str) -> bytes:
    """``/ingest``'s form: one part ``profile`` holding the gzipped pprof."""
    head = (f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="profile"; filename="profile.pprof"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return head + gzip.compress(profile, compresslevel=1, mtime=0) + tail
