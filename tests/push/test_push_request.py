"""The push bodies (push/request.py), decoded with the real protobuf package from
tests/proto/push.proto and types.proto."""

from __future__ import annotations

import gzip

import proto_schema
from pyprof_http.push.request import Series, connect_body, multipart, push_request


def _series(name: str, pprof: bytes) -> Series:
    return Series((("__name__", name), ("pid", "1"), ("service_name", "s\udcffvc")), pprof,
                  1_000, 2_000).with_id()


def test_push_request_decodes_with_the_schema() -> None:
    batch = [_series("process_cpu", b"\x0a\x02ab"), _series("goroutines", b"")]
    message = proto_schema.push_request(push_request(batch))
    assert len(message.series) == 2
    first = message.series[0]
    assert [(p.name, p.value) for p in first.labels] == [
        ("__name__", "process_cpu"), ("pid", "1"), ("service_name", "s\\udcffvc")]
    (sample,) = first.samples
    assert sample.raw_profile == b"\x0a\x02ab"
    assert batch[0].id == sample.ID and len(sample.ID) == 36
    assert message.series[1].samples[0].raw_profile == b""
    assert batch[0].id != batch[1].id


def test_connect_body_is_the_gzipped_request() -> None:
    batch = [_series("process_cpu", b"x")]
    assert gzip.decompress(connect_body(batch)) == push_request(batch)


def test_multipart_holds_one_gzipped_profile_part() -> None:
    body = multipart(b"PPROF", "BOUNDARY")
    head, _, rest = body.partition(b"\r\n\r\n")
    assert head.startswith(b"--BOUNDARY\r\n")
    assert b'name="profile"' in head
    payload, _, tail = rest.rpartition(b"\r\n--BOUNDARY--\r\n")
    assert tail == b""
    assert gzip.decompress(payload) == b"PPROF"
