"""The Makefile's two README commands, run against fake tools in a scratch copy.

``make test`` used to stop at its first failing step, so one flaky test on another interpreter
skipped the whole integration suite; and ``make demo`` installed the whole dev tool chain. Here
every tool is a script that logs its call and exits as told, so the order and the outcome of each
step are what is checked, in well under a second per run.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _tool(path: Path, log: Path, exit_code: int = 0, version: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "#!/bin/sh\n"
        f'[ "$1" = --version ] && {{ echo "{version or path.name}"; exit 0; }}\n'
        f'echo "{path.parent.parent.name}/{path.name} $*" >> "{log}"\n'
        f"exit {exit_code}\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def _tree(tmp_path: Path, fail: set[str]) -> tuple[Path, Path]:
    """A copy of the Makefile with a fake .venv, .venv-3.10, .venv-3.13 and pyenv."""
    work, log = tmp_path / "repo", tmp_path / "calls.log"
    work.mkdir()
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, work / name)
    log.write_text("")
    for tool in ("python", "pytest", "ruff", "mypy", "pip"):
        _tool(work / ".venv" / "bin" / tool, log, 1 if tool in fail else 0, "Python 3.11.0")
    for version in ("3.10", "3.13"):
        _tool(work / f".venv-{version}" / "bin" / "pytest", log,
              1 if f"pytest-{version}" in fail else 0)
        _tool(tmp_path / "home" / ".pyenv" / "versions" / f"{version}.0" / "bin" /
              f"python{version}", log, 0, f"Python {version}.0")
    for marker in (".venv/bin/.installed", ".venv-3.10/.installed", ".venv-3.13/.installed"):
        (work / marker).touch()
        os.utime(work / marker, (2**31, 2**31))  # newer than pyproject.toml: nothing to install
    return work, log


def _make(work: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(tmp_path / "home"), "MAKEFLAGS": ""}
    # -o system-deps: never apt-get from a test (the real target needs go and chromium)
    return subprocess.run(["make", "-o", "system-deps", *args], cwd=work, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_a_failing_step_does_not_skip_the_others_and_fails_at_the_end(tmp_path: Path) -> None:
    work, log = _tree(tmp_path, fail={"pytest", "pytest-3.10"})
    done = _make(work, tmp_path, "test")
    assert done.returncode != 0
    calls = [line.split(" ", 1)[0] for line in log.read_text().splitlines()]
    # the full suite first, then lint, then every other interpreter despite the failures
    assert calls == [".venv/pytest", ".venv/ruff", ".venv/mypy", ".venv-3.10/pytest",
                     ".venv-3.13/pytest"]
    assert "make test FAILED: full-suite other-pythons" in done.stdout
    assert "unit tests failed on python: 3.10" in done.stdout


def test_all_steps_passing_passes(tmp_path: Path) -> None:
    work, _ = _tree(tmp_path, fail=set())
    done = _make(work, tmp_path, "test")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "make test: all steps passed" in done.stdout


def test_dry_run_runs_nothing(tmp_path: Path) -> None:
    work, log = _tree(tmp_path, fail=set())
    assert _make(work, tmp_path, "-n", "test").returncode == 0
    assert log.read_text() == ""


def test_demo_installs_only_the_demo_extra(tmp_path: Path) -> None:
    work, log = _tree(tmp_path, fail=set())
    done = _make(work, tmp_path, "-n", "demo")
    assert done.returncode == 0, done.stderr
    assert '-e ".[demo]"' in done.stdout
    assert "[dev]" not in done.stdout
    done = _make(work, tmp_path, "demo")  # fake pip and python: installs, then "starts"
    assert done.returncode == 0, done.stderr
    assert log.read_text().splitlines() == [
        '.venv/pip install -q --disable-pip-version-check -e .[demo]',
        ".venv/python -m uvicorn demo_app.main:app --host 127.0.0.1 --port 8000",
    ]
    assert (work / ".venv" / "bin" / ".installed-demo").exists()
