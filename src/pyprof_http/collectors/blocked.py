"""Whether a thread is blocked in a system call (a sleep, I/O, a poll) at this instant.

The CPU sampler needs this to charge CPU to where it was spent (see ``cpu.py``). A thread found
waiting in ``time.sleep``, ``recv`` or ``epoll_wait`` used no CPU since it got there: the CPU its
clock shows since the previous tick was spent before, on the way in. Python cannot tell such a
thread from one that waits for the GIL to go on running (both sit at their last bytecode), so
this reads the kernel's answer, ``/proc/self/task/<tid>/syscall``: ``running``, or the number of
the system call the thread sleeps in. A thread waiting for the GIL sleeps in ``futex``, and so
does one waiting for a ``threading`` lock, a ``Queue`` or an ``Event``: those are counted as
runnable (their CPU stays where they are seen), since the two cannot be told apart cheaply.

The file is read with libc through ``ctypes.PyDLL``, which keeps the GIL: ``os.read`` would
release it, and every read in a tick would let another thread run (and the tick wait up to a
switch interval to get it back). 64-bit processes on Linux on x86-64 and aarch64 only (the
syscall numbers); elsewhere ``syscall_states()`` is None and nothing is classified.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from collections.abc import Callable

_FUTEX_SYSCALLS = {
    "x86_64": frozenset({202, 449}),  # futex, futex_waitv
    "aarch64": frozenset({98, 449}),
}
_BUFFER = 128

IsBlocked = Callable[[int], bool]
"""native thread id -> whether it sleeps in a system call other than futex."""


def blocked_in_syscall(text: bytes, futex: frozenset[int]) -> bool:
    """Parse one ``/proc/<pid>/task/<tid>/syscall``: blocked in a system call other than futex.

    ``running`` (on a CPU: C code without the GIL), ``-1 ...`` (stopped outside a system
    call), futex (the GIL, a lock) and anything unreadable count as not blocked.
    """
    first = text.split(b" ", 1)[0].strip()
    try:
        number = int(first)
    except ValueError:
        return False
    return number >= 0 and number not in futex


def syscall_states() -> IsBlocked | None:
    """A reader for this process's threads, or None where it cannot work."""
    futex = _FUTEX_SYSCALLS.get(platform.machine())  # the kernel's machine, not the process's:
    if futex is None or not sys.platform.startswith("linux") or sys.maxsize < 2**32:
        return None  # a 32-bit process's numbers are another table's (futex: 240 on i386)
    try:
        libc = ctypes.PyDLL(None)
        open_, read, close = libc.open, libc.read, libc.close
    except (OSError, AttributeError):
        return None
    open_.argtypes, open_.restype = [ctypes.c_char_p, ctypes.c_int], ctypes.c_int
    read.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
    read.restype = ctypes.c_ssize_t
    close.argtypes, close.restype = [ctypes.c_int], ctypes.c_int
    buffer = ctypes.create_string_buffer(_BUFFER)
    prefix = b"/proc/self/task/"

    def is_blocked(native_id: int) -> bool:
        # one tick runs at a time (TickGate), so the one buffer is never shared
        fd = open_(prefix + b"%d/syscall" % native_id, os.O_RDONLY | os.O_CLOEXEC)
        if fd < 0:
            return False
        try:
            size = read(fd, buffer, _BUFFER - 1)
        finally:
            close(fd)
        return size > 0 and blocked_in_syscall(buffer.raw[:size], futex)

    return is_blocked
