"""The rendezvous directory: private or refused; stale and dead sockets cleaned; last one out."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pyprof_http.workers.rendezvous import (
    Rendezvous,
    RendezvousRefused,
    check_private,
    directory_for,
    runtime_dir,
)


def test_made_0700_with_sockets_0600(tmp_path: Path) -> None:
    old = os.umask(0o077)  # a strict umask must not take the owner's bits away...
    try:
        rendezvous = Rendezvous(directory_for(4242, tmp_path))
        rendezvous.open()
    finally:
        os.umask(old)
    info = os.lstat(rendezvous.path)
    assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.getuid()
    assert rendezvous.path.name == f"pyprof_http-{os.getuid()}-4242"
    os.umask(0)  # ...and a loose one must not open the socket up
    try:
        sock = rendezvous.listen(os.getpid())
    finally:
        os.umask(old)
    try:
        path = Path(rendezvous.socket_path(os.getpid()))
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
        assert [m.pid for m in rendezvous.members()] == [os.getpid()]
        assert not list(rendezvous.path.glob(".*"))  # the staging name is gone
    finally:
        sock.close()
    rendezvous.leave(os.getpid())
    assert not rendezvous.path.exists()  # the last one out removes the directory


@pytest.mark.parametrize("spoil", ["symlink", "mode", "file", "owner"])
def test_an_unsafe_directory_is_refused(tmp_path: Path, spoil: str) -> None:
    path = directory_for(4243, tmp_path)
    if spoil == "symlink":
        real = tmp_path / "elsewhere"
        real.mkdir(mode=0o700)
        path.symlink_to(real)
    elif spoil == "mode":
        path.mkdir()
        path.chmod(0o755)
    elif spoil == "file":
        path.write_text("")
    else:
        if os.getuid() != 0:
            pytest.skip("only root can give a directory to another uid")
        path.mkdir(mode=0o700)
        os.chown(path, 65534, 65534)
    with pytest.raises(RendezvousRefused):
        Rendezvous(path).open()
    if spoil == "mode":
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o755  # refused, never repaired
    assert Rendezvous(path).members() == []


def test_dead_and_stale_sockets_are_removed(tmp_path: Path) -> None:
    rendezvous = Rendezvous(directory_for(4244, tmp_path))
    rendezvous.open()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    (rendezvous.path / f"{dead_pid}.sock").write_text("")  # its pid is gone
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(rendezvous.path / f"{os.getppid()}.sock"))  # a live pid, nobody listening
    stale.close()
    assert [m.pid for m in rendezvous.members()] == [os.getppid()]
    assert not (rendezvous.path / f"{dead_pid}.sock").exists()
    import asyncio

    from pyprof_http.workers.membership import Workers

    workers = Workers()
    workers.rendezvous = rendezvous
    assert asyncio.run(workers.live()) == []  # refused: the server pid was reused, say
    assert not (rendezvous.path / f"{os.getppid()}.sock").exists()


def test_runtime_dir_prefers_xdg(tmp_path: Path) -> None:
    assert runtime_dir({"XDG_RUNTIME_DIR": str(tmp_path)}) == tmp_path
    assert runtime_dir({"XDG_RUNTIME_DIR": str(tmp_path / "missing")}) != tmp_path / "missing"
    with pytest.raises(RendezvousRefused):
        check_private(tmp_path / "missing")


def test_a_directory_removed_by_the_last_sibling_out_is_made_again(tmp_path: Path) -> None:
    """A worker opened the directory, then the last old worker left and removed it before the
    new one listened: the new worker's listen() refused ("does not exist") for good."""
    rendezvous = Rendezvous(directory_for(4245, tmp_path))
    rendezvous.open()
    Rendezvous(rendezvous.path).leave(999_999)  # the last one out: an empty directory goes
    assert not rendezvous.path.exists()
    sock = rendezvous.listen(os.getpid())
    try:
        assert stat.S_IMODE(os.lstat(rendezvous.path).st_mode) == 0o700
        assert [m.pid for m in rendezvous.members()] == [os.getpid()]
    finally:
        sock.close()
        rendezvous.leave(os.getpid())
