"""Protobuf wire-format primitives, just enough to write ``profile.proto``.

pprof files are plain protobuf, and the schema uses only varints and length-delimited fields,
so a few dozen lines replace a runtime dependency on ``protobuf`` (Go's runtime does the same).
Everything appends to one :class:`bytearray`: a profile can hold 100k samples, and building it
by ``bytes`` concatenation would be quadratic.

Proto3 rules followed here, as Go's encoder does: a singular field equal to its default (0) is
left out, because readers cannot tell "absent" from "zero"; elements of a repeated field are
always written, since their count carries meaning (one value per sample type).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

VARINT: Final = 0
LEN: Final = 2

_UINT64_MAX: Final = (1 << 64) - 1
_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1
_PACK_ABOVE: Final = 2
"""Go packs repeated ints only when there are more than two; both forms are legal to readers."""


def append_varint(buf: bytearray, value: int) -> None:
    """Append ``value`` (already a uint64) in base-128, least significant group first."""
    while value > 0x7F:
        buf.append((value & 0x7F) | 0x80)
        value >>= 7
    buf.append(value)


def uint64_bits(value: int) -> int:
    """Check that ``value`` fits a uint64; a silent wrap would corrupt the profile."""
    if not 0 <= value <= _UINT64_MAX:
        raise ValueError(f"{value} does not fit in uint64")
    return value


def int64_bits(value: int) -> int:
    """Two's complement of an int64: negatives (delta profiles) take all ten varint bytes."""
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"{value} does not fit in int64")
    return value & _UINT64_MAX


def encode_varint(value: int) -> bytes:
    """A uint64 varint on its own, for tests and for callers that need the bytes."""
    buf = bytearray()
    append_varint(buf, uint64_bits(value))
    return bytes(buf)


class Writer:
    """Appends protobuf fields to a growing buffer.

    Sub-messages are written to a separate (reusable) ``Writer`` and then copied in with
    :meth:`message`, because their length prefix must be known before their bytes; the copy
    keeps the total cost linear in the output size.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def __len__(self) -> int:
        return len(self._buf)

    def getvalue(self) -> bytes:
        """The bytes written so far."""
        return bytes(self._buf)

    def clear(self) -> None:
        """Empty the buffer so a scratch writer can be reused for the next sub-message."""
        self._buf.clear()

    def key(self, field: int, wire_type: int) -> None:
        """A field key: the field number and wire type share one varint."""
        append_varint(self._buf, (field << 3) | wire_type)

    def uint64(self, field: int, value: int) -> None:
        """A singular uint64, left out when 0."""
        if value:
            self.key(field, VARINT)
            append_varint(self._buf, uint64_bits(value))

    def int64(self, field: int, value: int) -> None:
        """A singular int64, left out when 0; negatives take ten bytes."""
        if value:
            self.key(field, VARINT)
            append_varint(self._buf, int64_bits(value))

    def delimited(self, field: int, data: bytes | bytearray) -> None:
        """A length-delimited field, always written (used for repeated strings and messages)."""
        buf = self._buf
        append_varint(buf, (field << 3) | LEN)
        append_varint(buf, len(data))
        buf += data

    def string(self, field: int, text: str) -> None:
        """A string, always written: ``string_table[0]`` must be present even though it is ``""``.

        Protobuf strings must be UTF-8; a lone surrogate (a filename with undecodable bytes)
        is written as its ``\\udcff`` escape rather than failing the whole profile.
        """
        self.delimited(field, text.encode("utf-8", "backslashreplace"))

    def message(self, field: int, sub: Writer) -> None:
        """An embedded message, always written: an empty one still counts as an element."""
        self.delimited(field, sub._buf)

    def extend(self, other: Writer) -> None:
        """Append another writer's fields: top-level fields may come in any order and count."""
        self._buf += other._buf

    def varints(self, field: int, encoded: Sequence[bytes]) -> None:
        """A repeated varint field from already encoded elements (see :func:`encode_varint`).

        The hot path: location ids repeat across samples, so the encoder converts each once.
        """
        buf = self._buf
        if len(encoded) > _PACK_ABOVE:
            payload = b"".join(encoded)
            append_varint(buf, (field << 3) | LEN)
            append_varint(buf, len(payload))
            buf += payload
        else:
            for element in encoded:
                append_varint(buf, (field << 3) | VARINT)
                buf += element

    def uint64s(self, field: int, values: Sequence[int]) -> None:
        """A repeated uint64 (e.g. location ids)."""
        self._repeated(field, [uint64_bits(v) for v in values])

    def int64s(self, field: int, values: Sequence[int]) -> None:
        """A repeated int64 (e.g. sample values, which may be negative)."""
        self._repeated(field, [int64_bits(v) for v in values])

    def _repeated(self, field: int, bits: list[int]) -> None:
        buf = self._buf
        if len(bits) > _PACK_ABOVE:
            packed = bytearray()
            for value in bits:
                append_varint(packed, value)
            append_varint(buf, (field << 3) | LEN)
            append_varint(buf, len(packed))
            buf += packed
        else:
            for value in bits:
                append_varint(buf, (field << 3) | VARINT)
                append_varint(buf, value)
