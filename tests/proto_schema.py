"""Decode Pyroscope push requests in tests with the real ``protobuf`` package.

There is no ``protoc`` here, so the ``.proto`` files in ``tests/proto`` (written from
Pyroscope's documentation) are read by the small parser below, which understands exactly the
subset they use (``package``, ``import``, ``message`` with scalar, message and ``repeated``
fields, comments) and builds ``FileDescriptorProto``s from them; ``message_factory`` makes the
classes. A construct outside that subset raises rather than being skipped, so the schema the
tests decode with is the text in the ``.proto`` files, field for field.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PROTO_DIR = Path(__file__).parent / "proto"
_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "string": _F.TYPE_STRING, "bytes": _F.TYPE_BYTES, "int64": _F.TYPE_INT64,
    "uint64": _F.TYPE_UINT64, "int32": _F.TYPE_INT32, "bool": _F.TYPE_BOOL,
}
_TOKEN = re.compile(r'"[^"]*"|[A-Za-z_][\w.]*|\d+|[{};=]')


def _tokens(text: str) -> list[str]:
    text = re.sub(r"//[^\n]*", "", text)
    rest = _TOKEN.sub("", text)
    if rest.strip():
        raise ValueError(f"unsupported proto syntax: {rest.strip()[:40]!r}")
    return _TOKEN.findall(text)


def parse(path: Path, name: str) -> descriptor_pb2.FileDescriptorProto:
    """A ``FileDescriptorProto`` for one of the ``.proto`` files, under its import ``name``."""
    tokens = _tokens(path.read_text())
    proto = descriptor_pb2.FileDescriptorProto(name=name, syntax="proto3")
    i = 0
    while i < len(tokens):
        word = tokens[i]
        if word == "syntax":
            i += 4  # syntax = "proto3" ;
        elif word == "package":
            proto.package, i = tokens[i + 1], i + 3
        elif word == "import":
            proto.dependency.append(tokens[i + 1].strip('"'))
            i += 3
        elif word == "message":
            message = proto.message_type.add(name=tokens[i + 1])
            i += 3  # message Name {
            while tokens[i] != "}":
                label = _F.LABEL_OPTIONAL
                if tokens[i] == "repeated":
                    label, i = _F.LABEL_REPEATED, i + 1
                kind, name, eq, number, semi = tokens[i:i + 5]
                if eq != "=" or semi != ";":
                    raise ValueError(f"unsupported field syntax near {name!r}")
                field = message.field.add(name=name, number=int(number), label=label)
                if kind in _SCALARS:
                    field.type = _SCALARS[kind]
                else:
                    field.type = _F.TYPE_MESSAGE
                    qualified = kind if "." in kind else f"{proto.package}.{kind}"
                    field.type_name = "." + qualified
                i += 5
            i += 1
        else:
            raise ValueError(f"unsupported proto statement {word!r} in {path.name}")
    return proto


@functools.cache
def _classes() -> dict[str, Any]:
    pool = descriptor_pool.DescriptorPool()
    for name in ("types/v1/types.proto", "push/v1/push.proto"):
        pool.Add(parse(PROTO_DIR / Path(name).name, name))
    wanted = ("push.v1.PushRequest", "types.v1.LabelPair")
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(name))
            for name in wanted}


def push_request(body: bytes) -> Any:
    """Decode a ``PushRequest`` body (already un-gzipped)."""
    message = _classes()["push.v1.PushRequest"]()
    message.ParseFromString(body)
    return message
