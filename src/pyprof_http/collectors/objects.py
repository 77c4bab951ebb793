"""Live objects by type from ``gc.get_objects()``: the ``objects`` profile and its growth.

It answers "what is eating memory?" at any time without tracemalloc (which slows allocation):
one pass over the collector's list, counting per type with each object's shallow size. The size
never runs the application's code: ``__sizeof__`` may be anything (pandas' scans a whole frame,
on this side thread, for every object), so only CPython's own built-in types (list, dict, set,
bytearray, ...) are measured by their C ``__sizeof__`` (through ``sys.getsizeof``); every other
object gets ``object.__sizeof__``'s size (basic size + item size x length) plus the header
``sys.getsizeof`` would add, which is what ``sys.getsizeof`` gives for any class that does not
define ``__sizeof__``.
Only GC-tracked objects are seen (containers, instances); ints, strs, floats and tuples of atoms
are mostly untracked and absent. Growth keeps the types whose count grew (``objgraph.growth``).

:func:`histogram` is synchronous, for a worker thread (``render_in_thread``): its time grows with
the tracked objects (the README gives the figure). The loop keeps serving meanwhile, but the pass
holds the GIL (the loop gets it back at the switch interval) and ``gc.get_objects()`` is one C call
that never releases it.
"""

from __future__ import annotations

import gc
import struct
import sys
import time
from collections.abc import Callable
from types import MethodDescriptorType
from typing import Any, Final

from ..captures.objects import ObjectsCapture

_TYPE: Final = type.__dict__
"""``type``'s own descriptors, read directly: a metaclass may override ``__module__``,
``__getattribute__`` or ``__hash__`` with code that raises."""
_OBJECT_SIZEOF: Final = object.__dict__["__sizeof__"]
_GC_HEAD: Final = sys.getsizeof([]) - [].__sizeof__()
_PREHEADER_FLAGS: Final = (
    0 if sys.version_info < (3, 11)
    else 1 << 4 if sys.version_info < (3, 12)  # Py_TPFLAGS_MANAGED_DICT
    else 1 << 3 | 1 << 4  # and Py_TPFLAGS_MANAGED_WEAKREF
)
"""Types with these flags carry two pointers before the object (``_PyType_PreHeaderSize``)."""
_POINTER: Final = struct.calcsize("P")
Sizer = Callable[[object], int]


def qualified_name(cls: type) -> str:
    """``module.QualName``, builtins bare (``dict``), as objgraph names types."""
    module, qualname = _read(_TYPE["__module__"], cls), _read(_TYPE["__qualname__"], cls) or "?"
    if module is None or module == "builtins":
        return qualname
    return f"{module}.{qualname}"


def _sizer(cls: type) -> tuple[Sizer, bool]:
    """How to size ``cls``'s objects without running application code, and whether every one
    has the same size. Read through ``type``'s own descriptors so that no metaclass code runs."""
    try:
        for base in _TYPE["__mro__"].__get__(cls, type):
            namespace = _TYPE["__dict__"].__get__(base, type)
            if "__sizeof__" in namespace:
                found = namespace["__sizeof__"]
                break
        else:  # unreachable: object has __sizeof__
            found = _OBJECT_SIZEOF
        if found is not _OBJECT_SIZEOF and _builtin_method(found):
            return sys.getsizeof, False  # list, dict, bytearray...: their exact C sizes
        header = _GC_HEAD + (
            2 * _POINTER if _TYPE["__flags__"].__get__(cls, type) & _PREHEADER_FLAGS else 0)
        constant = not _TYPE["__itemsize__"].__get__(cls, type)
    except Exception:  # a broken type: the object's own basic size, measured each time
        return _object_size, False
    return (lambda obj: _OBJECT_SIZEOF(obj) + header), constant


def _builtin_method(method: object) -> bool:
    """A ``__sizeof__`` written in C by CPython itself (``builtins``' types): it reads sizes and
    runs nothing else. A C extension's may scan (numpy's counts buffers), so only these."""
    owner = getattr(method, "__objclass__", None) if isinstance(method, MethodDescriptorType) \
        else None
    return isinstance(owner, type) and _read(_TYPE["__module__"], owner) == "builtins"


def _object_size(obj: object) -> int:
    return int(_OBJECT_SIZEOF(obj)) + _GC_HEAD


def _read(descriptor: Any, cls: type) -> str | None:
    """A type attribute via ``type``'s descriptor; None unless a str (``__module__`` can be any)."""
    try:
        value = descriptor.__get__(cls, type)
    except Exception:
        return None
    return value if isinstance(value, str) else None


def histogram() -> ObjectsCapture:
    """One pass over ``gc.get_objects()``: count and shallow bytes per type.

    Keyed by ``id(type)`` during the pass (an int hash: no metaclass ``__hash__`` runs); names
    are built once per type afterwards. Sizing is half the cost of the pass, so a type whose
    size cannot vary (see :func:`_sizer`) is measured on its first object only. The list is the
    only large allocation (8 bytes per object) and is dropped right after.
    """
    counts: dict[int, int] = {}
    sizes: dict[int, int] = {}  # constant-size types: the size of one object until the end
    classes: dict[int, type] = {}
    sizers: dict[int, Sizer] = {}  # variable-size types only
    unsized = 0
    objects = gc.get_objects()
    total = len(objects)
    try:
        for obj in objects:
            key = id(type(obj))  # the type is alive: its instance is in the list
            seen = counts.get(key)
            if seen is None:
                cls = classes[key] = type(obj)
                counts[key] = 1
                sizes[key] = 0
                size, constant = _sizer(cls)
                if not constant:
                    sizers[key] = size
            else:
                counts[key] = seen + 1
                size = sizers.get(key)  # type: ignore[assignment]
                if size is None:
                    continue
            try:
                sizes[key] += size(obj)
            except Exception:  # a C __sizeof__ that failed: count it, 0 bytes
                unsized += 1
    finally:
        del objects
    for key in counts.keys() - sizers.keys():
        sizes[key] *= counts[key]
    named: dict[str, int] = {}  # distinct types can share a name (a class defined twice)
    named_sizes: dict[str, int] = {}
    for key, count in counts.items():
        name = qualified_name(classes[key])
        named[name] = named.get(name, 0) + count
        named_sizes[name] = named_sizes.get(name, 0) + sizes[key]
    return ObjectsCapture(named, named_sizes, total, time.time_ns(), unsized)


def growth(before: ObjectsCapture, after: ObjectsCapture) -> ObjectsCapture:
    """Types whose count grew from ``before`` to ``after``: +count and +bytes.

    Types that shrank or stayed are dropped, as in ``objgraph.growth``: a leak is a count that
    keeps going up, and churn in the other direction is noise here. +bytes may be negative
    (more objects that are smaller, e.g. emptied lists).
    """
    counts: dict[str, int] = {}
    sizes: dict[str, int] = {}
    for name, count in after.counts.items():
        more = count - before.counts.get(name, 0)
        if more > 0:
            counts[name] = more
            sizes[name] = after.sizes[name] - before.sizes.get(name, 0)
    elapsed = max(0, after.time_ns - before.time_ns) / 1e9
    end = (after.total_objects, after.time_ns, after.unsized)
    return ObjectsCapture(counts, sizes, *end, elapsed, before.total_objects)
