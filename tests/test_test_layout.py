"""The suite's own layout: pytest collects tests/ without packages (rootdir-relative
basenames), so two test modules with one basename in different folders make the whole run
stop at collection ("import file mismatch"): one such pair once hid the entire suite."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).parent


def test_every_test_module_basename_is_unique() -> None:
    names = Counter(path.name for path in TESTS.rglob("*.py") if path.name != "__init__.py"
                    and path.name != "conftest.py")
    assert [name for name, count in names.items() if count > 1] == []
