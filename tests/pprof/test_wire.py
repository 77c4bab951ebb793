"""Wire primitives, checked byte for byte against protobuf's own encoder."""

from __future__ import annotations

import pytest

import pprof_schema
from pyprof_http.pprof.wire import Writer, encode_varint

INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1


def classes():
    return pprof_schema.message_classes()


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, b"\x00"), (1, b"\x01"), (127, b"\x7f"), (128, b"\x80\x01"), (300, b"\xac\x02")],
)
def test_varint_known_bytes(value, expected):
    assert encode_varint(value) == expected


def test_varint_largest_values_use_ten_bytes():
    assert encode_varint(UINT64_MAX) == b"\xff" * 9 + b"\x01"
    assert len(encode_varint(INT64_MAX)) == 9


@pytest.mark.parametrize("value", [0, 1, 127, 128, 16383, 16384, INT64_MAX, -1, -128, -(2**63)])
def test_int64_matches_protobuf(value):
    writer = Writer()
    writer.int64(9, value)  # Profile.time_nanos
    expected = pprof_schema.profile_message_class()(time_nanos=value).SerializeToString()
    assert writer.getvalue() == expected


def test_negative_int64_takes_ten_bytes():
    writer = Writer()
    writer.int64(9, -1)
    assert writer.getvalue() == b"\x48" + b"\xff" * 9 + b"\x01"


@pytest.mark.parametrize("value", [1, 128, INT64_MAX, UINT64_MAX])
def test_uint64_matches_protobuf(value):
    writer = Writer()
    writer.uint64(3, value)  # Location.address
    assert writer.getvalue() == classes()["Location"](address=value).SerializeToString()


def test_zero_scalars_are_left_out():
    writer = Writer()
    writer.int64(1, 0)
    writer.uint64(2, 0)
    assert writer.getvalue() == b""


@pytest.mark.parametrize(("value", "error"), [(-1, "uint64"), (2**64, "uint64")])
def test_uint64_out_of_range(value, error):
    with pytest.raises(ValueError, match=error):
        Writer().uint64(1, value)


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1])
def test_int64_out_of_range(value):
    with pytest.raises(ValueError, match="int64"):
        Writer().int64(1, value)
    with pytest.raises(ValueError, match="int64"):
        Writer().int64s(1, [value])


def test_more_than_two_values_are_packed_like_protobuf():
    values = [0, 1, -1, 300, INT64_MAX]
    writer = Writer()
    writer.int64s(2, values)  # Sample.value
    assert writer.getvalue() == classes()["Sample"](value=values).SerializeToString()
    assert writer.getvalue()[0] == (2 << 3) | 2


def test_two_values_or_fewer_are_unpacked_and_zeros_kept():
    writer = Writer()
    writer.uint64s(1, [0, 5])
    assert writer.getvalue() == b"\x08\x00\x08\x05"
    sample = classes()["Sample"].FromString(writer.getvalue())
    assert list(sample.location_id) == [0, 5]


@pytest.mark.parametrize("ids", [[], [1], [1, 300], [1, 300, 2**64 - 1]])
def test_pre_encoded_varints_match_uint64s(ids):
    plain, pre = Writer(), Writer()
    plain.uint64s(1, ids)
    pre.varints(1, [encode_varint(i) for i in ids])
    assert pre.getvalue() == plain.getvalue()
    assert list(classes()["Sample"].FromString(pre.getvalue()).location_id) == ids


def test_empty_repeated_writes_nothing():
    writer = Writer()
    writer.uint64s(1, [])
    assert len(writer) == 0


def test_strings_always_written_even_empty():
    writer = Writer()
    for text in ["", "héllo", "日本"]:
        writer.string(6, text)
    expected = pprof_schema.profile_message_class()(string_table=["", "héllo", "日本"])
    assert writer.getvalue() == expected.SerializeToString()


def test_lone_surrogate_is_escaped():
    writer = Writer()
    writer.string(6, "bad\udcff.py")
    decoded = pprof_schema.profile_message_class().FromString(writer.getvalue())
    assert list(decoded.string_table) == ["bad\\udcff.py"]


def test_nested_message_and_reused_scratch_writer():
    line, location, out = Writer(), Writer(), Writer()
    for location_id, lineno in [(1, 10), (2, 20)]:
        line.clear()
        line.uint64(1, 7)
        line.int64(2, lineno)
        location.clear()
        location.uint64(1, location_id)
        location.message(4, line)
        out.message(4, location)
    profile_class = pprof_schema.profile_message_class()
    expected = profile_class()
    for location_id, lineno in [(1, 10), (2, 20)]:
        added = expected.location.add(id=location_id)
        added.line.add(function_id=7, line=lineno)
    assert out.getvalue() == expected.SerializeToString()


def test_extend_concatenates():
    first, second = Writer(), Writer()
    first.int64(9, 5)
    second.int64(10, 6)
    first.extend(second)
    decoded = pprof_schema.profile_message_class().FromString(first.getvalue())
    assert (decoded.time_nanos, decoded.duration_nanos) == (5, 6)
