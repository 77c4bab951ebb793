"""What a collector raises when it cannot do what was asked now, without knowing HTTP.

``str(error)`` is the reason for whoever asked, saying what to do instead. The app turns each
kind into its status in one place (:func:`pyprof_http.errors.from_collector`): a collector is
usable, and testable, without the web layer.
"""

from __future__ import annotations


class CollectorError(Exception):
    """A profile that cannot be taken now; the message says why."""


class Busy(CollectorError):
    """Another profiler holds what this one needs (one of a kind at a time, or a profiler
    started outside pyprof_http): asking again later may work."""


class NeedsSwitch(CollectorError):
    """The profile needs something switched on first (heap tracing); the message says how."""
