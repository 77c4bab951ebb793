"""The README is what a new user reads first: it may point only at files this repository has,
and its settings table must list every setting."""

from __future__ import annotations

import re
from pathlib import Path

from pyprof_http import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")

_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_PATH = re.compile(r"`([\w.-]+(?:/[\w.-]+)+\.(?:py|md|toml|txt|json|html|js|css|cfg))`")


def _targets() -> list[str]:
    links = [t for t in _LINK.findall(README) if not re.match(r"[a-z]+:|#", t)]
    return [t.split("#")[0] for t in links] + _PATH.findall(README)


def test_every_file_the_readme_names_exists() -> None:
    targets = _targets()
    assert "benchmarks/heap.py" in targets  # the pattern does find what it should
    missing = [t for t in targets if not (ROOT / t).resolve().is_file()]
    assert missing == []
    for target in targets:  # and nothing outside the repository (../shared/...)
        assert (ROOT / target).resolve().is_relative_to(ROOT), target


def test_no_reference_to_the_design_notes_outside_the_repository() -> None:
    for outside in ("DESIGN.md", "../shared", "shared/"):
        assert outside not in README


def test_the_settings_table_lists_every_setting() -> None:
    rows = set(re.findall(r"^\| `(\w+)` \| (?:`PYPROF_\w+`|\(code only\)) \|", README, re.M))
    assert rows == set(Settings.model_fields)
