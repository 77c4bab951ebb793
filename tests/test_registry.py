"""The profile table is consistent, and the allowlist filters and sorts it."""

from __future__ import annotations

import asyncio
import inspect
import sys

import pytest

from pyprof_http.config import Settings
from pyprof_http.params import ProfileQuery
from pyprof_http.registry import (
    BY_NAME,
    PROFILES,
    CollectContext,
    ProfileCapture,
    ProfileSpec,
    allowed,
)


@pytest.mark.parametrize("spec", PROFILES, ids=[s.name for s in PROFILES])
def test_row_is_consistent(spec: ProfileSpec) -> None:
    assert (spec.raw is None) != (spec.collect is None), "exactly one of raw / collect"
    assert spec.name and spec.name == spec.name.strip() and "/" not in spec.name
    assert spec.description.strip()
    if spec.collect is not None:
        assert inspect.iscoroutinefunction(spec.collect)
        assert spec.formats, "a collected profile offers formats"
        assert spec.default_format in spec.formats
        # Go's /trace is not a pprof profile either: its default is the trace (here Chrome's)
        assert spec.default_format == ("chrome" if spec.name == "trace" else "pprof")
        for fmt in spec.debug_formats:
            assert fmt in spec.formats, f"debug format {fmt} is not offered"
        assert len(set(spec.debug_formats)) == len(spec.debug_formats)
    else:
        assert not spec.formats, "a raw profile has no formats"
        assert not spec.delta
    if spec.delta:
        assert any(f.delta for f in spec.formats.values())


def test_names_are_unique_and_indexed() -> None:
    names = [s.name for s in PROFILES]
    assert len(names) == len(set(names))
    assert set(BY_NAME) == set(names)
    assert all(BY_NAME[s.name] is s for s in PROFILES)


def test_goroutine_row() -> None:
    spec = BY_NAME["goroutine"]
    assert spec.debug_formats == ("pprof", "text", "dump")
    assert spec.delta
    assert spec.count is not None
    assert set(spec.formats) >= {"pprof", "text", "dump", "flamegraph", "folded",
                                 "speedscope", "json"}
    assert not spec.formats["dump"].delta  # a delta is a bare profile: no per-task dump
    assert all(f.delta for name, f in spec.formats.items() if name != "dump")


def _context(settings: Settings) -> CollectContext:
    async def no_wait(seconds: float, stop: object = None) -> None:
        raise AssertionError("a snapshot must not wait")

    return CollectContext(settings, ProfileQuery(), no_wait)


def test_goroutine_collects_a_snapshot_and_dump_needs_one() -> None:
    spec = BY_NAME["goroutine"]

    async def main():
        return await spec.collect(_context(Settings(max_stack_depth=4)))  # type: ignore[misc]

    capture = asyncio.run(main())
    assert capture.profile.sample_types[0].type == "goroutine"
    assert all(len(s.stack) <= 4 for s in capture.profile.samples)
    dump = spec.formats["dump"].render(capture, "goroutine")
    assert dump.body.startswith(b"goroutine dump:")
    with pytest.raises(TypeError, match="stacks snapshot"):
        spec.formats["dump"].render(ProfileCapture(capture.profile), "goroutine")


@pytest.mark.parametrize("fmt", ["pprof", "text", "flamegraph", "folded", "speedscope", "json"])
def test_every_delta_format_renders_a_bare_profile(fmt: str) -> None:
    spec = BY_NAME["goroutine"]

    async def main():
        return await spec.collect(_context(Settings()))  # type: ignore[misc]

    capture = ProfileCapture(asyncio.run(main()).profile)
    rendered = spec.formats[fmt].render(capture, "goroutine")
    assert rendered.body
    assert rendered.media_type


def test_cmdline_is_argv_joined_by_nul(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["prog", "--flag", "a b"])
    rendered = BY_NAME["cmdline"].raw()  # type: ignore[misc]
    assert rendered.body == b"prog\0--flag\0a b"
    assert rendered.media_type == "text/plain; charset=utf-8"


def test_allowed_default_is_every_profile_sorted() -> None:
    names = [s.name for s in allowed(Settings())]
    assert names == sorted(s.name for s in PROFILES)


def test_allowed_respects_the_allowlist() -> None:
    assert [s.name for s in allowed(Settings(profiles=frozenset({"cmdline"})))] == ["cmdline"]
    assert allowed(Settings(profiles=frozenset())) == []
    both = allowed(Settings(profiles=frozenset({"goroutine", "cmdline", "nonexistent"})))
    assert [s.name for s in both] == ["cmdline", "goroutine"]
    assert all(isinstance(s, ProfileSpec) for s in both)
