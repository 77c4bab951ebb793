"""Where the kernel's per-thread system call state can be read, and what happens where not."""

from __future__ import annotations

import sys

import pytest

from pyprof_http.collectors import blocked


def test_a_32_bit_process_on_a_64_bit_kernel_classifies_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``platform.machine()`` is the kernel's (x86_64), but a 32-bit process's
    ``/proc/.../syscall`` holds 32-bit numbers (futex is 240 on i386, 202 on x86-64). Before,
    the 64-bit table was used: every thread waiting for the GIL counted as blocked, and its CPU
    was moved to where it last ran."""
    assert blocked.syscall_states() is not None or not sys.platform.startswith("linux")
    monkeypatch.setattr(blocked.sys, "maxsize", 2**31 - 1)
    assert blocked.syscall_states() is None


@pytest.mark.parametrize("platform", ["darwin", "win32", "freebsd14"])
def test_elsewhere_than_linux_nothing_is_classified(
        monkeypatch: pytest.MonkeyPatch, platform: str) -> None:
    monkeypatch.setattr(blocked.sys, "platform", platform)
    assert blocked.syscall_states() is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_thread_that_is_gone_is_not_blocked() -> None:
    """A thread may exit between the tick's listing and this read: the open fails, no error."""
    is_blocked = blocked.syscall_states()
    assert is_blocked is not None
    assert is_blocked(2**22 + 12345) is False  # above the largest pid_max: never a thread
