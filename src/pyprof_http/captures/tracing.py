"""What a tracing profile (``/profile?mode=tracing``) is: exact calls and times per function and
per caller→callee edge, and the pprof view of them."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal, NamedTuple

from ..model import Frame, Profile, Sample, ValueType

Clock = Literal["cpu", "wall"]
CALLS = ValueType("calls", "count")


class CallStats(NamedTuple):
    """Calls along one caller→callee edge and the callee's time when called from that caller."""

    ncall: int
    nactualcall: int  # calls not made recursively (pstats' "primitive" calls)
    tsub_ns: int  # self time
    ttot_ns: int  # inclusive time


class FunctionStats(NamedTuple):
    """One traced function, summed over threads, with the edges from each of its callers."""

    frame: Frame
    ncall: int
    nactualcall: int
    tsub_ns: int
    ttot_ns: int
    callers: tuple[tuple[Frame, CallStats], ...]


@dataclass(frozen=True)
class TracingCapture:
    """What one trace measured. ``functions`` feed callgrind and pstats; ``profile`` the rest."""

    clock: Clock
    functions: tuple[FunctionStats, ...]
    time_ns: int
    duration_ns: int

    @cached_property
    def profile(self) -> Profile:
        """One sample per caller→callee edge: (calls, callee self time on that edge).

        Tracing knows one level of callers, so stacks are two deep, and the flat view (``-top``) is
        exact self time. What is on no known edge (roots, left-out callers) gets a one-frame stack.
        """
        samples: list[Sample] = []
        for fn in self.functions:
            calls, self_ns = fn.ncall, fn.tsub_ns
            for caller, edge in fn.callers:
                samples.append(Sample((fn.frame, caller), (edge.ncall, edge.tsub_ns)))
                calls, self_ns = calls - edge.ncall, self_ns - edge.tsub_ns
            if calls > 0 or self_ns > 0:
                samples.append(Sample((fn.frame,), (max(calls, 0), max(self_ns, 0))))
        time_type = ValueType(self.clock, "nanoseconds")
        return Profile(
            sample_types=(CALLS, time_type),
            samples=tuple(samples),
            period_type=time_type, period=1,
            time_ns=self.time_ns, duration_ns=self.duration_ns,
            comments=(f"tracing with yappi, {self.clock} clock; "
                      "values are self time per caller→callee edge",),
            default_sample_type=self.clock,
        )
