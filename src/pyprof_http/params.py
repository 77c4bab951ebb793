"""Query parameters, validated strictly by pydantic.

Go falls back to defaults on bad input (``seconds=abc`` profiles for 30 s); during an incident
that silently answers a different question than the one asked, so here every invalid, repeated
or unsupported parameter is a 400 whose one line names the parameter and what is allowed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from starlette.datastructures import QueryParams

from .config import Settings
from .errors import BadRequest
from .model import Granularity
from .registry import ProfileSpec

DEFAULT_HZ, MIN_HZ, MAX_HZ = 100, 1, 250
_CHOICES = {"mode": ("cpu", "wall", "tracing"), "clock": ("cpu", "wall"),
            "granularity": ("functions", "lines")}
MAX_MIN_AGE_S = 10**9
_DECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?")
_FORMAT_PARAMS = frozenset({"granularity"})
"""Parameters of a format rather than of a profile: allowed wherever that format is."""


def _context(info: ValidationInfo) -> tuple[ProfileSpec, Settings]:
    context = info.context or {}
    return context["spec"], context["settings"]


def _whole(value: Any, low: int, high: int) -> int | None:
    """``value`` as a plain ASCII whole number within [low, high], else None.

    Stricter than int(): no sign, space, underscore, decimal point or non-ASCII digit.
    """
    # the length first: int() of over 4,300 digits raises, and its message (naming
    # sys.set_int_max_str_digits) became the client's 400 reason
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20:
        number = int(value)
        if low <= number <= high:
            return number
    return None


class ProfileQuery(BaseModel):
    """Parameters of a named profile (``/goroutine`` and its kin)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    debug: int | None = Field(default=None, description="0 pprof, 1 text, 2 full dump")
    format: str | None = Field(default=None, description="output format; wins over debug")
    seconds: int | None = Field(default=None, description="a delta over, or a profile of, N s")
    mode: Literal["cpu", "wall", "tracing"] = Field(default="cpu", description="profile kind")
    hz: int = Field(default=DEFAULT_HZ, description="samples per second (cpu and wall)")
    clock: Literal["cpu", "wall"] = Field(default="wall", description="tracing clock")
    gc: int | None = Field(default=None, description="1: run the garbage collector first")
    granularity: Granularity | None = Field(
        default=None, description="flame graph frames: functions (default) or lines")
    min_age: float | None = Field(
        default=None, description="goroutine: only threads and tasks at least this many "
        "seconds old (of known age)")

    @field_validator("min_age", mode="before")
    @classmethod
    def _min_age(cls, value: Any) -> float:
        if (isinstance(value, str) and value.isascii() and len(value) <= 20
                and _DECIMAL.fullmatch(value) and float(value) <= MAX_MIN_AGE_S):
            return float(value)
        raise ValueError(f"must be a number of seconds from 0 to {MAX_MIN_AGE_S}, "
                         "e.g. 300 or 0.5")

    last: int | None = Field(default=None, description="the flight recorder's last N s, at once")

    @field_validator("last", mode="before")
    @classmethod
    def _last(cls, value: Any, info: ValidationInfo) -> int:
        _, settings = _context(info)
        limit = settings.recorder_seconds
        number = _whole(value, 1, limit)
        if number is None:
            raise ValueError(f"must be a whole number of seconds from 1 to {limit} "
                             "(recorder_seconds: what the flight recorder keeps)")
        return number

    source: Literal["sampler", "tracemalloc"] | None = Field(
        default=None, description="heap: the always-on sampler (default when it runs) or "
        "tracemalloc (exact, costly)")

    @field_validator("source", mode="before")
    @classmethod
    def _source(cls, value: Any) -> str:
        if value not in ("sampler", "tracemalloc"):
            raise ValueError("must be one of sampler, tracemalloc")
        return str(value)

    @field_validator("gc", mode="before")
    @classmethod
    def _gc(cls, value: Any) -> int:
        number = _whole(value, 0, 1)
        if number is None:
            raise ValueError("must be 0 or 1")
        return number

    @field_validator("mode", "clock", "granularity", mode="before")
    @classmethod
    def _choice(cls, value: Any, info: ValidationInfo) -> str:
        choices = _CHOICES[str(info.field_name)]
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return str(value)

    @field_validator("hz", mode="before")
    @classmethod
    def _hz(cls, value: Any) -> int:
        number = _whole(value, MIN_HZ, MAX_HZ)
        if number is None:
            raise ValueError(f"must be a whole number from {MIN_HZ} to {MAX_HZ}")
        return number

    @field_validator("debug", mode="before")
    @classmethod
    def _debug(cls, value: Any, info: ValidationInfo) -> int:
        spec, _ = _context(info)
        number = _whole(value, 0, len(spec.debug_formats) - 1)
        if number is None:
            choices = ", ".join(f"{i} ({f})" for i, f in enumerate(spec.debug_formats))
            raise ValueError(f"must be one of {choices}")
        return number

    @field_validator("format", mode="before")
    @classmethod
    def _format(cls, value: Any, info: ValidationInfo) -> str:
        spec, _ = _context(info)
        if value not in spec.formats:
            raise ValueError(f"{spec.name} offers {', '.join(sorted(spec.formats))}")
        return str(value)

    @field_validator("seconds", mode="before")
    @classmethod
    def _seconds(cls, value: Any, info: ValidationInfo) -> int:
        spec, settings = _context(info)
        if not spec.delta and spec.duration is None and not spec.window:
            raise ValueError(f"not supported by {spec.name}")
        limit = settings.max_profile_seconds
        number = _whole(value, 1, limit)
        if number is None:
            raise ValueError(f"must be a whole number of seconds from 1 to {limit}")
        return number

    def duration(self, spec: ProfileSpec, settings: Settings) -> int:
        """How long a duration profile runs: ``seconds``, else Go's 30 s within the limit."""
        if self.seconds is not None:
            return self.seconds
        return min(spec.duration or 0, settings.max_profile_seconds)

    def resolved_format(self, spec: ProfileSpec) -> str:
        """``format`` wins over ``debug``; neither means the profile's default (pprof)."""
        if self.format is not None:
            return self.format
        if self.debug is not None:
            return spec.debug_formats[self.debug]
        return spec.default_format


def parse_query(query: QueryParams, spec: ProfileSpec, settings: Settings) -> ProfileQuery:
    """Validate ``query`` for ``spec``; raise :class:`BadRequest` with a one-line reason."""
    _reject_repeats(query)
    if spec.raw is not None:
        if query:
            raise BadRequest(f"{spec.name} takes no parameters (got {', '.join(sorted(query))})")
        return ProfileQuery()
    for key in query:
        if key in _FORMAT_PARAMS:
            continue  # checked against the chosen format below
        if key not in spec.params and key in ProfileQuery.model_fields:
            raise BadRequest(f'parameter "{key}" is not supported by {spec.name}; allowed: '
                             f"{', '.join(sorted(spec.params))}")
    try:
        parsed = ProfileQuery.model_validate(
            dict(query), context={"spec": spec, "settings": settings}
        )
    except ValidationError as exc:
        raise BadRequest(_one_line(exc, sorted(spec.params))) from None
    chosen = parsed.resolved_format(spec)
    modes = spec.formats[chosen].modes
    if modes is not None and parsed.mode not in modes:
        raise BadRequest(f"format {chosen} is for mode {' or '.join(sorted(modes))}, "
                         f"not mode={parsed.mode}")
    if "granularity" in query and spec.formats[chosen].granularity is None:
        offered = sorted(f for f, v in spec.formats.items() if v.granularity is not None)
        raise BadRequest(f'"granularity" applies to format={" or ".join(offered) or "flamegraph"} '
                         f"only, not format {chosen}")
    if "last" in query:
        for other in ("seconds", "hz", "mode"):
            if other in query and (other != "mode" or parsed.mode != "cpu"):
                raise BadRequest(f'"last" cannot be combined with "{other}": it reads what the '
                                 "flight recorder took (mode=cpu, at recorder_hz)")
    if "clock" in query and parsed.mode != "tracing":
        raise BadRequest('"clock" applies to mode=tracing only')
    if "hz" in query and parsed.mode == "tracing":
        raise BadRequest('"hz" applies to mode=cpu and mode=wall only: tracing sees every call')
    if parsed.seconds is not None and spec.delta and not spec.formats[chosen].delta:
        raise BadRequest(f'"seconds" cannot be combined with format {chosen}: a delta has no '
                         "per-task detail; use the pprof, text or flamegraph format")
    return parsed


def _reject_repeats(query: QueryParams) -> None:
    for key in query:
        if len(query.getlist(key)) > 1:
            raise BadRequest(f'parameter "{key}" given more than once')


def _one_line(exc: ValidationError, known: Sequence[str]) -> str:
    error = exc.errors()[0]
    name = str(error["loc"][0]) if error["loc"] else "?"
    if error["type"] == "extra_forbidden":
        return f'unknown parameter "{name}"; allowed: {", ".join(known)}'
    message = str(error["msg"]).removeprefix("Value error, ")
    return f'invalid value for "{name}": {message}'
