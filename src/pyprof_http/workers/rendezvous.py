"""Where the workers of one server find each other: a private directory of Unix sockets.

``<runtime dir>/pyprof_http-<uid>-<server pid>/<pid>.sock``: the runtime dir is
``$XDG_RUNTIME_DIR`` (per user, mode 0700) when set, else the temp dir. The directory is made
with mode 0700 and checked before every use (``lstat``: a real directory, not a symlink, owned
by our uid, mode exactly 0700); anything else is refused, never repaired, because in a shared
``/tmp`` another user may have made it first. Each socket is mode 0600 and only appears (by an
atomic rename) once it listens, so a sibling never mistakes a starting worker for a dead one.

Dead workers are noticed by their readers: a socket whose pid is gone, or that refuses a
connection (the server's pid reused after a crash or a reboot), is removed. A worker removes its
own socket at shutdown, and the last one out removes the directory.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

_SOCKET_NAME = re.compile(r"([1-9][0-9]{0,9})\.sock")
MAX_SOCKET_PATH = 100
"""sun_path holds 108 bytes on Linux; a longer path cannot be bound."""


class RendezvousRefused(Exception):
    """The rendezvous directory is not safe to use (the message says why)."""


@dataclass(frozen=True, slots=True)
class Member:
    pid: int
    path: str
    started_ns: int
    """When its socket appeared: the order of siblings (a worker's place among them)."""


def runtime_dir(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    runtime = env.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isdir(runtime):
        return Path(runtime)
    return Path(tempfile.gettempdir())


def directory_for(server: int, base: Path | None = None) -> Path:
    return (base if base is not None else runtime_dir()) / f"pyprof_http-{os.getuid()}-{server}"


def check_private(path: Path) -> None:
    """Raise :class:`RendezvousRefused` unless ``path`` is our own 0700 directory."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise RendezvousRefused(f"{path} does not exist") from None
    if stat.S_ISLNK(info.st_mode):
        raise RendezvousRefused(f"{path} is a symlink")
    if not stat.S_ISDIR(info.st_mode):
        raise RendezvousRefused(f"{path} is not a directory")
    if info.st_uid != os.getuid():
        raise RendezvousRefused(f"{path} belongs to uid {info.st_uid}, not {os.getuid()}")
    mode = stat.S_IMODE(info.st_mode)
    if mode != 0o700:
        raise RendezvousRefused(f"{path} has mode {mode:04o}, not 0700")


class Rendezvous:
    """One server's directory, as seen by one of its workers."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def open(self) -> None:
        """Make the directory (0700) if nobody did, then check it; raise if unsafe."""
        try:
            os.mkdir(self.path, 0o700)
        except FileExistsError:
            pass
        else:
            os.chmod(self.path, 0o700)  # the umask may have taken bits away; never adds any
        check_private(self.path)

    def socket_path(self, pid: int) -> str:
        path = str(self.path / f"{pid}.sock")
        if len(path.encode()) > MAX_SOCKET_PATH:
            raise RendezvousRefused(f"socket path {path} is too long for a Unix socket")
        return path

    def listen(self, pid: int) -> socket.socket:
        """A listening socket at ``<pid>.sock`` (mode 0600), visible only once it listens."""
        if not os.path.lexists(self.path):
            # the last sibling out removed it after our open() (a restart of every worker at
            # once: gunicorn's HUP): make it again rather than give up worker= for good
            self.open()
        check_private(self.path)
        final = self.socket_path(pid)
        staging = str(self.path / f".{pid}.sock.tmp")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staging)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(staging)
            os.chmod(staging, 0o600)
            sock.listen(256)
            os.rename(staging, final)
        except BaseException:
            sock.close()
            with contextlib.suppress(OSError):
                os.unlink(staging)
            raise
        return sock

    def keep_fresh(self, pid: int) -> None:
        """Mark the directory and our socket as used (their access time), so that an age-based
        ``/tmp`` cleaner (systemd-tmpfiles: 10 days) does not delete them under a server that
        runs longer; PostgreSQL touches its ``/tmp`` sockets for the same reason. The
        modification time, which orders the siblings, is kept."""
        now = time.time_ns()
        for path in (self.path, self.path / f"{pid}.sock"):
            with contextlib.suppress(OSError):
                info = os.lstat(path)
                os.utime(path, ns=(now, info.st_mtime_ns), follow_symlinks=False)

    def members(self) -> list[Member]:
        """Sockets whose pid is alive, in the order they appeared; dead pids' are removed."""
        found: list[Member] = []
        try:
            check_private(self.path)
            entries = list(os.scandir(self.path))
        except (OSError, RendezvousRefused):
            return []
        for entry in entries:
            match = _SOCKET_NAME.fullmatch(entry.name)
            if match is None:
                continue
            pid = int(match.group(1))
            if not pid_alive(pid):
                self.remove(pid)
                continue
            try:
                started = entry.stat(follow_symlinks=False).st_mtime_ns
            except OSError:
                continue
            found.append(Member(pid, entry.path, started))
        found.sort(key=lambda m: (m.started_ns, m.pid))
        return found

    def remove(self, pid: int) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path / f"{pid}.sock")

    def leave(self, pid: int) -> None:
        """Remove our socket; the last one out removes the directory."""
        self.remove(pid)
        with contextlib.suppress(OSError):  # not empty: a sibling is still there
            os.rmdir(self.path)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process now: a connect will tell it is not ours
    return True
