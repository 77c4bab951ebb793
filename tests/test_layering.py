"""The layers stay readable from the imports (DESIGN §5 "Layering"), checked by parsing them.

Renderers only format: they import the model and the capture types, never a collector (which
reads the process). Capture types are plain data beside the model, so they import no collector
either. Collectors know nothing of HTTP: they raise their own errors and the app maps them to
statuses, so they import neither the HTTP error classes nor starlette.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "pyprof_http"


def _modules(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, as an absolute dotted name (relative imports resolved;
    ``from pkg import name`` also counts ``pkg.name``, which may be a module)."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = parts[:-1]  # the package a relative import starts from (also for __init__)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _offending(path: Path, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        name for name in imported_modules(path)
        if any(name == bad or name.startswith(bad + ".") for bad in forbidden)
    )


def test_imports_are_resolved_from_relative_and_absolute_forms() -> None:
    # the checker itself: relative imports one and two levels up are resolved
    names = imported_modules(PACKAGE / "render" / "dump.py")
    assert "pyprof_http.captures.stacks" in names and "pyprof_http.model" in names
    names = imported_modules(PACKAGE / "collectors" / "locks" / "recording.py")
    assert "pyprof_http.loops" in names


@pytest.mark.parametrize("path", _modules("render"), ids=lambda p: p.name)
def test_renderers_import_no_collector(path: Path) -> None:
    assert _offending(path, ("pyprof_http.collectors",)) == []


@pytest.mark.parametrize("path", _modules("captures"), ids=lambda p: p.name)
def test_capture_types_import_no_collector(path: Path) -> None:
    assert _offending(path, ("pyprof_http.collectors",)) == []


@pytest.mark.parametrize("path", _modules("collectors"), ids=lambda p: p.name)
def test_collectors_know_no_http(path: Path) -> None:
    assert _offending(path, ("pyprof_http.errors", "starlette")) == []
