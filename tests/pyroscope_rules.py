"""Pyroscope's ingestion checks on a pprof profile, as a test helper.

What Pyroscope refuses (its documentation of ingestion limits and validation): a string table
whose first entry is not ``""``; a location or function id of 0; a sample whose number of
values differs from the number of sample types; a sample type name that is not a valid metric
name (no ``-``); strings that are not valid UTF-8; a ``time_nanos`` outside the ingestion
window (older than an hour, or more than ten minutes in the future). Sample label names must be
valid label names too. Decoded with the real ``protobuf`` package (``pprof_schema``), whose
``string`` fields would reject invalid UTF-8, so the bytes are also checked by hand.
"""

from __future__ import annotations

import re
import time

import pprof_schema

REJECT_OLDER_THAN_NS = 3600 * 10**9
CREATION_GRACE_NS = 600 * 10**9
_METRIC = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_.]*")


def _string_table_is_utf8(raw: bytes) -> None:
    """Walk the top-level fields and decode every string-table entry strictly."""
    position = 0

    def varint() -> int:
        nonlocal position
        shift = value = 0
        while True:
            byte = raw[position]
            position += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while position < len(raw):
        key = varint()
        field, wire = key >> 3, key & 7
        if wire == 0:
            varint()
        elif wire == 2:
            length = varint()
            chunk = raw[position:position + length]
            position += length
            if field == 6:
                chunk.decode("utf-8")  # strict: raises on a lone surrogate's bytes
        else:
            raise AssertionError(f"unexpected wire type {wire} in a profile")


def violations(raw: bytes, now_ns: int | None = None) -> list[str]:
    """Every rule ``raw`` (an uncompressed or gzipped pprof) breaks; [] when it would be
    accepted."""
    import gzip

    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    found: list[str] = []
    try:
        _string_table_is_utf8(raw)
    except UnicodeDecodeError as exc:
        return [f"invalid UTF-8 in the string table: {exc}"]
    profile = pprof_schema.decode(raw)
    strings = list(profile.string_table)
    if not strings or strings[0] != "":
        found.append("string_table[0] is not empty")
    if not profile.sample_type:
        found.append("no sample types")
    for value_type in profile.sample_type:
        name = strings[value_type.type]
        if not _METRIC.fullmatch(name):
            found.append(f"sample type {name!r} is not a valid metric name")
    ids = {location.id for location in profile.location}
    if 0 in ids:
        found.append("a location has id 0")
    if any(function.id == 0 for function in profile.function):
        found.append("a function has id 0")
    functions = {function.id for function in profile.function}
    for location in profile.location:
        if any(line.function_id not in functions for line in location.line):
            found.append(f"location {location.id} names an unknown function")
    for sample in profile.sample:
        if len(sample.value) != len(profile.sample_type):
            found.append(f"a sample has {len(sample.value)} values for "
                         f"{len(profile.sample_type)} sample types")
        if any(location_id not in ids for location_id in sample.location_id):
            found.append("a sample names an unknown location")
        for label in sample.label:
            if not _LABEL.fullmatch(strings[label.key]):
                found.append(f"label name {strings[label.key]!r} is not valid")
    now = time.time_ns() if now_ns is None else now_ns
    if profile.time_nanos and not (now - REJECT_OLDER_THAN_NS <= profile.time_nanos
                                   <= now + CREATION_GRACE_NS):
        found.append(f"time_nanos {profile.time_nanos} is outside the ingestion window")
    return found
