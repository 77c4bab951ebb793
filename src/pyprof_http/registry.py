"""The profile table: one row per endpoint, and everything else is derived from it.

Routes, the index page, the allowlist and parameter validation all read this table, so a new
profile is one row and cannot be half-registered (served but missing from the index, or listed
but unprotected). This is Go's ``profileDescriptions`` + ``profileSupportsDelta`` as data.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from .collectors import stacks
from .config import Settings
from .model import Profile
from .pprof.encode import render_pprof
from .render import Rendered
from .render.dump import render_dump
from .render.flamegraph import render_flamegraph
from .render.folded import render_folded
from .render.profile_json import render_json
from .render.speedscope import render_speedscope
from .render.text import TEXT_PLAIN, render_text


class Capture(Protocol):
    """What a collector returns: at least a profile; richer captures add their own views."""

    @property
    def profile(self) -> Profile: ...


@dataclass(frozen=True, slots=True)
class ProfileCapture:
    """A capture that is only a profile, e.g. the difference of two captures."""

    profile: Profile


@dataclass(frozen=True, slots=True)
class Format:
    """One output format of a profile."""

    render: Callable[[Capture, str], Rendered]
    delta: bool = True
    """Whether it can show a delta (``seconds=N``), which is a bare profile."""


Collector = Callable[[Settings], Awaitable[Capture]]


@dataclass(frozen=True, slots=True)
class ProfileSpec:
    """A row of the table. ``debug=N`` is an alias of ``debug_formats[N]``."""

    name: str
    description: str
    collect: Collector | None = None
    formats: Mapping[str, Format] = field(default_factory=dict)
    debug_formats: tuple[str, ...] = ("pprof", "text")
    count: Callable[[], int] | None = None
    delta: bool = False
    raw: Callable[[], Rendered] | None = None
    """For pseudo profiles such as cmdline: the whole answer, taking no parameters."""

    @property
    def default_format(self) -> str:
        return self.debug_formats[0]


def _profile_formats() -> dict[str, Format]:
    """The formats every sample profile offers."""
    return {
        "pprof": Format(lambda c, name: render_pprof(c.profile, name)),
        "text": Format(lambda c, name: render_text(c.profile, name)),
        "flamegraph": Format(lambda c, name: render_flamegraph(c.profile, f"{name} profile")),
        "folded": Format(lambda c, name: render_folded(c.profile)),
        "speedscope": Format(lambda c, name: render_speedscope(c.profile, name)),
        "json": Format(lambda c, name: render_json(c.profile, name)),
    }


def _render_goroutine_dump(capture: Capture, name: str) -> Rendered:
    if not isinstance(capture, stacks.StackSnapshot):  # only a live snapshot has states
        raise TypeError("the dump needs a stacks snapshot")
    return render_dump(capture)


async def _collect_stacks(settings: Settings) -> Capture:
    return await stacks.collect(settings.max_stack_depth)


def _cmdline() -> Rendered:
    return Rendered("\0".join(sys.argv).encode(), TEXT_PLAIN)


PROFILES: tuple[ProfileSpec, ...] = (
    ProfileSpec(
        name="goroutine",
        description="Stack traces of all threads and all asyncio tasks, with what each task "
        "awaits, who awaits it and where it was created. Cheap: safe to take at any time.",
        collect=_collect_stacks,
        formats={**_profile_formats(), "dump": Format(_render_goroutine_dump, delta=False)},
        debug_formats=("pprof", "text", "dump"),
        count=stacks.count,
        delta=True,
    ),
    ProfileSpec(
        name="cmdline",
        description="The command line invocation of the current program (sys.argv, "
        "NUL-separated).",
        raw=_cmdline,
    ),
)

BY_NAME: Mapping[str, ProfileSpec] = {spec.name: spec for spec in PROFILES}


def allowed(settings: Settings) -> list[ProfileSpec]:
    """The rows this app serves, sorted by name as Go's index is."""
    return sorted((s for s in PROFILES if settings.allows(s.name)), key=lambda s: s.name)
