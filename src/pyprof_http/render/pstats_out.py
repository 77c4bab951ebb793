"""A tracing capture as a ``pstats`` file: ``pstats.Stats(path)``, snakeviz, tuna, gprof2dot.

The file is what ``cProfile`` dumps: a ``marshal``'d dict ``{(file, line, function): (cc, nc, tt,
ct, callers)}`` with ``callers = {(file, line, function): (nc, cc, tt, ct)}`` — note the order of
the call counts differs between the two tuples (that is cProfile's, and yappi's own converter gets
it wrong): ``nc`` is all calls, ``cc`` the primitive (non-recursive) ones. Times are seconds; the
caller edge's ``tt`` / ``ct`` are the callee's self / total time when called from that caller.
"""

from __future__ import annotations

import marshal

from pyprof_http.captures.tracing import TracingCapture
from pyprof_http.model import Frame
from pyprof_http.render import Rendered

_Key = tuple[str, int, str]


def _key(frame: Frame) -> _Key:
    return (frame.filename, frame.line, frame.function)


def stats_dict(capture: TracingCapture) -> dict[_Key, tuple[object, ...]]:
    """The dict ``pstats.Stats`` keeps in ``.stats``; every caller is also a key, as it expects."""
    stats: dict[_Key, tuple[object, ...]] = {}
    for fn in capture.functions:
        callers = {
            _key(caller): (e.ncall, e.nactualcall, e.tsub_ns / 1e9, e.ttot_ns / 1e9)
            for caller, e in fn.callers
        }
        stats[_key(fn.frame)] = (
            fn.nactualcall, fn.ncall, fn.tsub_ns / 1e9, fn.ttot_ns / 1e9, callers
        )
    return stats


def render_pstats(capture: TracingCapture, name: str) -> Rendered:
    """``<name>.pstats``, loadable with ``pstats.Stats(path)`` on the same Python version."""
    return Rendered(marshal.dumps(stats_dict(capture)), "application/octet-stream",
                    filename=f"{name}.pstats")
