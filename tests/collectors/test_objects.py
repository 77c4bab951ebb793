"""The objects collector on the real heap: exact counts of known classes, growth, hostile types."""

from __future__ import annotations

import collections
import gc
import sys
import time

import pprof_schema
from pyprof_http.captures.objects import FILENAME, UNTRACKED_NOTE, ObjectsCapture
from pyprof_http.collectors.objects import (
    _sizer,
    growth,
    histogram,
    qualified_name,
)
from pyprof_http.pprof.encode import render_pprof


def _row(capture: ObjectsCapture, name: str) -> tuple[int, int] | None:
    for row in capture.rows:
        if row.name == name:
            return row.count, row.bytes
    return None


def test_counts_a_known_class_exactly():
    class ObjectsProbe:
        def __init__(self, i: int) -> None:
            self.i = i

    probes = [ObjectsProbe(i) for i in range(1234)]
    capture = histogram()
    name = f"{__name__}.test_counts_a_known_class_exactly.<locals>.ObjectsProbe"
    assert qualified_name(ObjectsProbe) == name
    assert _row(capture, name) == (1234, 1234 * sys.getsizeof(probes[0]))
    assert capture.total_objects == sum(row.count for row in capture.rows) > 1234
    assert capture.elapsed is None and capture.unsized == 0
    assert capture.time_ns > 0
    assert capture.profile.comments == (
        f"{capture.total_objects} gc-tracked objects in {len(capture.rows)} types",
        UNTRACKED_NOTE,
    )


def test_rows_are_sorted_by_count_then_bytes():
    rows = histogram().rows
    assert [(-r.count, -r.bytes, r.name) for r in rows] == sorted(
        (-r.count, -r.bytes, r.name) for r in rows
    )
    assert len({r.name for r in rows}) == len(rows)


def test_qualified_names_are_bare_for_builtins():
    assert qualified_name(dict) == "dict"
    assert qualified_name(collections.OrderedDict) == "collections.OrderedDict"
    assert qualified_name(ObjectsCapture) == "pyprof_http.captures.objects.ObjectsCapture"


def test_growth_over_a_window_is_what_was_added():
    class ObjectsProbe:
        pass

    class Shrinking:
        pass

    class Steady:
        pass

    probes = [ObjectsProbe() for _ in range(100)]
    shrinking = [Shrinking() for _ in range(100)]
    steady = [Steady() for _ in range(10)]
    before = histogram()
    probes.extend(ObjectsProbe() for _ in range(500))
    del shrinking[50:]
    time.sleep(0.01)
    after = histogram()
    grown = growth(before, after)

    prefix = f"{__name__}.test_growth_over_a_window_is_what_was_added.<locals>."
    assert _row(grown, prefix + "ObjectsProbe") == (500, 500 * sys.getsizeof(probes[0]))
    assert _row(grown, prefix + "Shrinking") is None
    assert _row(grown, prefix + "Steady") is None
    assert all(row.count > 0 for row in grown.rows)
    assert grown.rows[0].count >= 500  # sorted by count growth
    assert grown.elapsed is not None and 0.01 <= grown.elapsed < 10
    assert grown.total_before == before.total_objects
    assert grown.total_objects == after.total_objects
    assert grown.profile.time_ns == after.time_ns
    assert grown.profile.duration_ns == after.time_ns - before.time_ns
    assert grown.profile.comments[0].startswith(f"growth over {grown.elapsed:.1f} s: +")
    assert len(steady) == 10


def test_holding_a_capture_through_the_window_is_not_growth():
    """The ``before`` capture itself must not show up as growth of tuples, Frames or Samples."""
    before = histogram()
    grown = growth(before, histogram())
    assert sum(row.count for row in grown.rows) < 20, grown.rows


def test_the_applications_sizeof_is_never_called():
    """pandas' ``__sizeof__`` scans the whole frame: the side thread must not run app code.
    Such objects get what ``sys.getsizeof`` gives a class without ``__sizeof__``."""
    calls: list[str] = []

    class Deep:
        def __init__(self) -> None:
            self.payload = list(range(10))

        def __sizeof__(self) -> int:
            calls.append("called")
            raise RuntimeError("a deep scan")

    class Plain:
        def __init__(self) -> None:
            self.payload = list(range(10))

    class DeepList(list):  # a built-in base does not make the override safe to call
        def __sizeof__(self) -> int:
            calls.append("called")
            return 10**9

    deep, plain, deep_list = [Deep() for _ in range(4)], [Plain() for _ in range(4)], DeepList()
    capture = histogram()
    assert calls == []
    assert capture.unsized == 0
    assert _row(capture, f"{__name__}.{Deep.__qualname__}") == (4, 4 * sys.getsizeof(plain[0]))
    header = sys.getsizeof(plain[0]) - object.__sizeof__(plain[0])  # GC head, managed dict
    assert _row(capture, f"{__name__}.{DeepList.__qualname__}") == (
        1, object.__sizeof__(deep_list) + header)
    assert not any("could not be read" in c for c in capture.profile.comments)
    assert len(deep) == 4


def test_a_metaclass_with_hostile_hash_and_module_is_counted():
    class Meta(type):
        def __hash__(cls) -> int:
            raise RuntimeError("no hash")

        def __eq__(cls, other: object) -> bool:
            raise RuntimeError("no eq")

        @property
        def __module__(cls) -> str:  # type: ignore[override]
            raise RuntimeError("no module")

    class Weird(metaclass=Meta):
        pass

    weird = [Weird() for _ in range(7)]
    capture = histogram()
    assert _row(capture, f"{__name__}.{Weird.__qualname__}") == (7, 7 * sys.getsizeof(weird[0]))


def test_pprof_has_one_synthetic_frame_per_type_and_defaults_to_space():
    class ObjectsProbe:
        pass

    probes = [ObjectsProbe() for _ in range(1234)]
    capture = histogram()
    rendered = render_pprof(capture.profile, "objects")
    message = pprof_schema.decode(rendered.body)
    strings = list(message.string_table)
    assert [(strings[t.type], strings[t.unit]) for t in message.sample_type] == [
        ("objects", "count"),
        ("space", "bytes"),
    ]
    assert strings[message.default_sample_type] == "space"
    samples = pprof_schema.resolved_samples(message)
    assert len(samples) == len(capture.rows) == len(message.function)
    by_type = {}
    for stack, values, labels in samples:
        assert len(stack) == 1 and labels == {}
        function, filename, line = stack[0]
        assert (filename, line) == (FILENAME, 0)
        by_type[function] = values
    name = f"{__name__}.{ObjectsProbe.__qualname__}"
    assert by_type[name] == [1234, 1234 * sys.getsizeof(probes[0])]
    assert UNTRACKED_NOTE in [strings[i] for i in message.comment]


def test_a_hostile_type_name_stays_data():
    hostile = type("<img src=x>", (), {})
    objects = [hostile() for _ in range(3)]
    capture = histogram()
    name = f"{__name__}.<img src=x>"
    assert _row(capture, name) == (3, 3 * sys.getsizeof(objects[0]))
    samples = pprof_schema.resolved_samples(
        pprof_schema.decode(render_pprof(capture.profile, "objects").body)
    )
    assert [values for stack, values, _ in samples if stack[0][0] == name] == [
        [3, 3 * sys.getsizeof(objects[0])]
    ]


def test_sizes_match_getsizeof_wherever_no_app_sizeof_is_defined():
    """On the live heap, every object whose type keeps CPython's own ``__sizeof__`` is sized as
    ``sys.getsizeof`` sizes it (the header arithmetic holds on this Python), and the types
    measured on their first object only really have one size."""
    # keyed by id: the heap may hold classes whose metaclass refuses hashing (see above)
    constant: dict[int, tuple[type, set[int]]] = {}
    wrong: list[tuple[str, int, int]] = []
    for obj in gc.get_objects():
        cls = type(obj)
        size, fixed = _sizer(cls)
        owner = getattr(getattr(cls, "__sizeof__", None), "__objclass__", None)
        if getattr(owner, "__module__", None) != "builtins":
            continue  # the app's or an extension's own __sizeof__: getsizeof would run it
        if size(obj) != sys.getsizeof(obj):
            wrong.append((cls.__qualname__, size(obj), sys.getsizeof(obj)))
        if fixed:
            constant.setdefault(id(cls), (cls, set()))[1].add(sys.getsizeof(obj))
    assert wrong == []
    assert len(constant) > 20
    assert [(cls.__qualname__, s) for cls, s in constant.values() if len(s) != 1] == []
    assert not _sizer(list)[1] and not _sizer(tuple)[1] and not _sizer(type)[1]


def test_variable_size_types_are_measured_per_object():
    class ProbeList(list):
        pass

    lists = [ProbeList(range(n)) for n in (0, 10, 1000)]
    capture = histogram()
    assert _row(capture, f"{__name__}.{ProbeList.__qualname__}") == (
        3,
        sum(sys.getsizeof(x) for x in lists),
    )
