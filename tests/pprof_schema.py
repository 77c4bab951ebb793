"""Decode pprof bodies in tests with the real ``protobuf`` package, as an independent check.

The ``perftools.profiles`` message classes are built at import time from the field numbers of
``profile.proto`` (Go 1.19's vendored copy), so no generated code is committed. Import it as
``import pprof_schema`` (``tests`` is on pytest's ``pythonpath``).
"""

from __future__ import annotations

import functools
import gzip
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "uint64": _F.TYPE_UINT64,
    "int64": _F.TYPE_INT64,
    "string": _F.TYPE_STRING,
    "bool": _F.TYPE_BOOL,
}

# message -> [(field name, number, type, repeated)]; a type not in _SCALARS is a message.
SCHEMA: dict[str, list[tuple[str, int, str, bool]]] = {
    "Profile": [
        ("sample_type", 1, "ValueType", True),
        ("sample", 2, "Sample", True),
        ("mapping", 3, "Mapping", True),
        ("location", 4, "Location", True),
        ("function", 5, "Function", True),
        ("string_table", 6, "string", True),
        ("drop_frames", 7, "int64", False),
        ("keep_frames", 8, "int64", False),
        ("time_nanos", 9, "int64", False),
        ("duration_nanos", 10, "int64", False),
        ("period_type", 11, "ValueType", False),
        ("period", 12, "int64", False),
        ("comment", 13, "int64", True),
        ("default_sample_type", 14, "int64", False),
    ],
    "ValueType": [("type", 1, "int64", False), ("unit", 2, "int64", False)],
    "Sample": [
        ("location_id", 1, "uint64", True),
        ("value", 2, "int64", True),
        ("label", 3, "Label", True),
    ],
    "Label": [
        ("key", 1, "int64", False),
        ("str", 2, "int64", False),
        ("num", 3, "int64", False),
        ("num_unit", 4, "int64", False),
    ],
    "Mapping": [
        ("id", 1, "uint64", False),
        ("memory_start", 2, "uint64", False),
        ("memory_limit", 3, "uint64", False),
        ("file_offset", 4, "uint64", False),
        ("filename", 5, "int64", False),
        ("build_id", 6, "int64", False),
        ("has_functions", 7, "bool", False),
        ("has_filenames", 8, "bool", False),
        ("has_line_numbers", 9, "bool", False),
        ("has_inline_frames", 10, "bool", False),
    ],
    "Location": [
        ("id", 1, "uint64", False),
        ("mapping_id", 2, "uint64", False),
        ("address", 3, "uint64", False),
        ("line", 4, "Line", True),
        ("is_folded", 5, "bool", False),
    ],
    "Line": [("function_id", 1, "uint64", False), ("line", 2, "int64", False)],
    "Function": [
        ("id", 1, "uint64", False),
        ("name", 2, "int64", False),
        ("system_name", 3, "int64", False),
        ("filename", 4, "int64", False),
        ("start_line", 5, "int64", False),
    ],
}


@functools.cache
def message_classes() -> dict[str, Any]:
    """All message classes, by name, from a private pool (no clash with any other copy)."""
    file = descriptor_pb2.FileDescriptorProto(
        name="pyprof_http_tests/profile.proto", package="perftools.profiles", syntax="proto3"
    )
    for message_name, fields in SCHEMA.items():
        message = file.message_type.add(name=message_name)
        for name, number, type_name, repeated in fields:
            field = message.field.add(name=name, number=number)
            field.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
            if type_name in _SCALARS:
                field.type = _SCALARS[type_name]
            else:
                field.type = _F.TYPE_MESSAGE
                field.type_name = f".perftools.profiles.{type_name}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(
            pool.FindMessageTypeByName(f"perftools.profiles.{name}")
        )
        for name in SCHEMA
    }


def profile_message_class() -> Any:
    """The ``perftools.profiles.Profile`` class."""
    return message_classes()["Profile"]


def decode(data: bytes) -> Any:
    """Parse a pprof body, gzip-compressed (detected by magic, as pprof does) or not."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    message = profile_message_class()()
    message.ParseFromString(data)
    return message


def resolved_samples(message: Any) -> list[tuple[list[tuple[str, str, int]], list[int], dict]]:
    """Each sample as (stack of (function, filename, line), values, labels), ids resolved.

    A label is a string when its ``str`` index is set, a number otherwise, as pprof reads it.
    """
    strings = list(message.string_table)
    functions = {f.id: (strings[f.name], strings[f.filename]) for f in message.function}
    locations = {}
    for location in message.location:
        assert len(location.line) == 1, "one Line per Python frame"
        line = location.line[0]
        name, filename = functions[line.function_id]
        locations[location.id] = (name, filename, line.line)
    result = []
    for sample in message.sample:
        labels: dict[str, str | int] = {}
        for label in sample.label:
            key = strings[label.key]
            labels[key] = strings[label.str] if label.str else label.num
        stack = [locations[i] for i in sample.location_id]
        result.append((stack, list(sample.value), labels))
    return result
