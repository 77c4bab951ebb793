"""Serialize a :class:`~pyprof_http.model.Profile` as ``perftools.profiles.Profile`` (pprof).

Python frames have names, files and lines but no addresses, so every Location carries its
Line directly, with address 0, in one Mapping that stands for the whole program. The mapping
names the service (``uvicorn``, ``gunicorn``, ``app.py``: see :func:`program_name`), which
``go tool pprof`` shows as the profile's "File" and ``pprof -http`` in its title (without a
mapping both say "unknown"), and it says that functions, file names and lines are all there, so
pprof never tries to symbolize it or asks ``/symbol`` (see the Go reference, SUMMARY section 2).

Field numbers are those of Go 1.19's vendored pprof; names below follow ``profile.proto``.
"""

from __future__ import annotations

import gzip
import sys
from pathlib import PurePath
from typing import Final

from pyprof_http.model import Frame, LabelValue, Profile, ValueType
from pyprof_http.pprof.wire import Writer, encode_varint
from pyprof_http.render import Rendered
from pyprof_http.sanitize import printable

MEDIA_TYPE: Final = "application/octet-stream"

# Profile
_SAMPLE_TYPE, _SAMPLE, _MAPPING, _LOCATION, _FUNCTION, _STRING_TABLE = 1, 2, 3, 4, 5, 6
_TIME_NANOS, _DURATION_NANOS, _PERIOD_TYPE, _PERIOD = 9, 10, 11, 12
_COMMENT, _DEFAULT_SAMPLE_TYPE = 13, 14
# ValueType
_VT_TYPE, _VT_UNIT = 1, 2
# Sample
_S_LOCATION_ID, _S_VALUE, _S_LABEL = 1, 2, 3
# Label
_L_KEY, _L_STR, _L_NUM = 1, 2, 3
# Mapping
_M_ID, _M_FILENAME, _M_HAS_FUNCTIONS, _M_HAS_FILENAMES, _M_HAS_LINE_NUMBERS = 1, 5, 7, 8, 9
_MAPPING_ID: Final = 1
# Location and its Line
_LOC_ID, _LOC_MAPPING_ID, _LOC_LINE = 1, 2, 4
_LINE_FUNCTION_ID, _LINE_LINE = 1, 2
# Function
_F_ID, _F_NAME, _F_SYSTEM_NAME, _F_FILENAME = 1, 2, 3, 4


class _Strings:
    """The string table: every string is written once and referred to by index.

    Index 0 must be ``""``: readers reject the profile otherwise, and it lets any string field
    that is empty be left out like any other zero.
    """

    __slots__ = ("index",)

    def __init__(self) -> None:
        self.index: dict[str, int] = {"": 0}

    def __call__(self, text: str) -> int:
        index = self.index
        return index.setdefault(text, len(index))

    def write(self, out: Writer) -> None:
        for text in self.index:  # dicts keep insertion order, which is index order
            out.string(_STRING_TABLE, text)


def program_name(argv: list[str] | None = None) -> str:
    """The service's name for the mapping: the file name of ``sys.argv[0]`` (``uvicorn``,
    ``gunicorn``, ``app.py``), the package for ``python -m pkg``, else ``python``."""
    args = sys.argv if argv is None else argv
    path = PurePath(args[0]) if args and args[0] and args[0] != "-c" else None
    if path is None or not path.name:
        return "python"
    if path.name == "__main__.py" and path.parent.name:
        return path.parent.name
    return path.name


def encode(profile: Profile, program: str | None = None) -> bytes:
    """The uncompressed protobuf; ids of locations and functions start at 1 (0 means none).

    ``program`` names the mapping (default: :func:`program_name`).
    """
    strings = _Strings()
    head = Writer()
    for value_type in profile.sample_types:
        head.message(_SAMPLE_TYPE, _value_type(value_type, strings))

    locations: dict[Frame, int] = {}
    samples = _samples(profile, strings, locations)
    mapping = _mapping(program if program is not None else program_name(), strings)
    location_section, function_section = _locations(locations, strings)

    tail = Writer()
    tail.int64(_TIME_NANOS, profile.time_ns)
    tail.int64(_DURATION_NANOS, profile.duration_ns)
    if profile.period_type is not None:
        tail.message(_PERIOD_TYPE, _value_type(profile.period_type, strings))
    tail.int64(_PERIOD, profile.period)
    tail.int64s(_COMMENT, [strings(comment) for comment in profile.comments])
    if profile.default_sample_type is not None:
        tail.int64(_DEFAULT_SAMPLE_TYPE, strings(profile.default_sample_type))

    # Written in field-number order; the string table goes last among the sections built,
    # because every other section adds to it.
    out = head
    out.extend(samples)
    out.message(_MAPPING, mapping)
    out.extend(location_section)
    out.extend(function_section)
    strings.write(out)
    out.extend(tail)
    return out.getvalue()


def encode_gzip(profile: Profile, program: str | None = None) -> bytes:
    """What ``/debug/pprof/<name>`` serves: gzip at the fastest level, like Go's runtime.

    ``mtime=0`` makes the output a function of the profile alone, so equal profiles give equal
    bytes (and tests can compare them).
    """
    return gzip.compress(encode(profile, program), compresslevel=1, mtime=0)


def render_pprof(profile: Profile, name: str) -> Rendered:
    """The download ``go tool pprof`` and ``pprof -http`` read; named like Go's saved files."""
    return Rendered(body=encode_gzip(profile), media_type=MEDIA_TYPE, filename=f"{name}.pb.gz")


def _mapping(program: str, strings: _Strings) -> Writer:
    """The one mapping: no addresses, everything symbolized already."""
    out = Writer()
    out.uint64(_M_ID, _MAPPING_ID)
    out.int64(_M_FILENAME, strings(program))
    for field in (_M_HAS_FUNCTIONS, _M_HAS_FILENAMES, _M_HAS_LINE_NUMBERS):
        out.uint64(field, 1)
    return out


def _value_type(value_type: ValueType, strings: _Strings) -> Writer:
    out = Writer()
    out.int64(_VT_TYPE, strings(value_type.type))
    out.int64(_VT_UNIT, strings(value_type.unit))
    return out


def _samples(profile: Profile, strings: _Strings, locations: dict[Frame, int]) -> Writer:
    """Write the samples, giving each distinct frame a location id on first sight.

    This loop sees every frame of every sample (millions for a big profile), so each frame's
    id is varint-encoded once and found again by object identity, which is cheaper than
    hashing the frame; frames are interned, and equal but distinct ones still share a location.
    Labels repeat too (a task name on many samples) and are encoded once per (key, value).
    """
    out, sample = Writer(), Writer()  # ``sample`` is scratch, reused
    by_identity: dict[int, bytes] = {}
    by_label: dict[tuple[str, LabelValue, type], Writer] = {}

    def location_of(frame: Frame) -> bytes:
        location_id = locations.get(frame)
        if location_id is None:
            location_id = locations[frame] = len(locations) + 1
        encoded = by_identity[id(frame)] = encode_varint(location_id)
        return encoded

    find = by_identity.get
    for item in profile.samples:
        sample.clear()
        # Stacks are already leaf first, as pprof wants.
        ids = [find(id(frame)) or location_of(frame) for frame in item.stack]
        sample.varints(_S_LOCATION_ID, ids)
        sample.int64s(_S_VALUE, item.values)
        for key, value in item.labels.items():
            cache_key = (key, value, type(value))  # True == 1, yet they are different labels
            label = by_label.get(cache_key)
            if label is None:
                label = by_label[cache_key] = _label(strings(key), value, strings)
            sample.message(_S_LABEL, label)
        out.message(_SAMPLE, sample)
    return out


def _label(key: int, value: LabelValue, strings: _Strings) -> Writer:
    """A label is a string or a number, never both.

    A bool is an ``int`` to Python but reads as a tag, so it is written as the string
    ``"True"``/``"False"`` rather than as 1/0. Readers drop a label whose value is ``""`` or
    ``0`` (indistinguishable from "unset" on the wire), exactly as with Go's own profiles.
    String values are foreign text (a route is the client's raw path when no template
    matched; task names are the app's): control characters are escaped, since
    ``go tool pprof -tags``/``-raw`` print them straight to a terminal.
    """
    out = Writer()
    out.int64(_L_KEY, key)
    if isinstance(value, (str, bool)):
        out.int64(_L_STR, strings(printable(str(value), backslash=False)))
    elif isinstance(value, int):
        out.int64(_L_NUM, value)
    else:
        raise TypeError(f"label value must be str or int, not {type(value).__name__}")
    return out


def _locations(locations: dict[Frame, int], strings: _Strings) -> tuple[Writer, Writer]:
    """One Location per frame and one Function per (name, file), both numbered from 1."""
    location_out, function_out = Writer(), Writer()
    functions: dict[tuple[str, str], int] = {}
    function, location, line = Writer(), Writer(), Writer()  # scratch writers
    for frame, location_id in locations.items():
        key = (frame.function, frame.filename)
        function_id = functions.get(key)
        if function_id is None:
            function_id = functions[key] = len(functions) + 1
            name = strings(frame.function)
            function.clear()
            function.uint64(_F_ID, function_id)
            function.int64(_F_NAME, name)
            # no system_name: pprof demangles it as C++ and would turn "<module>" into "<unknown>"
            function.int64(_F_FILENAME, strings(frame.filename))
            function_out.message(_FUNCTION, function)
        line.clear()
        line.uint64(_LINE_FUNCTION_ID, function_id)
        line.int64(_LINE_LINE, frame.line)
        location.clear()
        location.uint64(_LOC_ID, location_id)
        location.uint64(_LOC_MAPPING_ID, _MAPPING_ID)
        location.message(_LOC_LINE, line)
        location_out.message(_LOCATION, location)
    return location_out, function_out
