"""Is this process one worker of a multi-worker server, and which server?

The answer decides whether the process joins a rendezvous (a thread and a socket) or behaves as
a single-process server always did (nothing started). Workers of one server share a parent: the
uvicorn supervisor (``--workers N`` starts them with multiprocessing *spawn*, so
``multiprocessing.parent_process()`` is set in each) or the gunicorn arbiter (which forks them
and puts ``SERVER_SOFTWARE=gunicorn/...`` in the environment). The parent's pid names the server.

``workers_rendezvous=auto`` (the default) answers yes for:

- a multiprocessing child whose parent's command line is not uvicorn's ``--reload`` supervisor
  and whose uvicorn config does not say ``reload`` (one reloaded process is a single-process
  server);
- a process with ``SERVER_SOFTWARE=gunicorn/...`` whose parent's command line mentions gunicorn.

``on`` always joins (keyed by the parent pid: for a server these rules miss, such as a custom
supervisor); ``off`` never does.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
from dataclasses import dataclass
from typing import Literal

Mode = Literal["auto", "on", "off"]


@dataclass(frozen=True, slots=True)
class Role:
    """What this process is: ``server`` is the parent pid that names its siblings' group."""

    worker: bool
    server: int
    why: str
    """Why it is (or is not) a worker, for the log and the tests."""


def parent_command_line(ppid: int) -> list[str]:
    """The parent's argv (Linux ``/proc``); empty where it cannot be read."""
    try:
        with open(f"/proc/{ppid}/cmdline", "rb") as file:
            raw = file.read()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def uvicorn_reload_child() -> bool:
    """Whether this process is the one child of uvicorn's reloader, read from the ``config``
    that ``uvicorn._subprocess.subprocess_started`` (on the main thread's stack while the
    child serves) was given. ``uvicorn.run(..., reload=True)`` from a script and ``fastapi
    dev`` leave no ``--reload`` in the parent's command line: by argv alone, their child looked
    like a worker, and a single-process dev server joined a rendezvous."""
    main = threading.main_thread().ident
    frame = sys._current_frames().get(main) if main is not None else None
    while frame is not None:
        if (frame.f_code.co_name == "subprocess_started"
                and frame.f_globals.get("__name__") == "uvicorn._subprocess"):
            return bool(getattr(frame.f_locals.get("config"), "reload", False))
        frame = frame.f_back
    return False


def _mentions(argv: list[str], word: str) -> bool:
    return any(word in os.path.basename(arg) or arg.startswith(word) for arg in argv)


def detect(mode: Mode, environ: dict[str, str] | None = None,
           argv_of_parent: list[str] | None = None,
           spawned_child: bool | None = None) -> Role:
    """The role of this process under ``mode``; the keyword arguments stand in for the process
    (tests answer both ways without starting a server)."""
    ppid = os.getppid()
    if mode == "off":
        return Role(False, ppid, "workers_rendezvous=off")
    if mode == "on":
        return Role(True, ppid, "workers_rendezvous=on")
    env = os.environ if environ is None else environ
    argv = parent_command_line(ppid) if argv_of_parent is None else argv_of_parent
    if spawned_child is None:
        spawned_child = multiprocessing.parent_process() is not None
    if env.get("SERVER_SOFTWARE", "").startswith("gunicorn/") and _mentions(argv, "gunicorn"):
        return Role(True, ppid, "a gunicorn worker (parent is the gunicorn arbiter)")
    if spawned_child and "--reload" not in argv and not _mentions(argv, "gunicorn") and (
            not uvicorn_reload_child()):
        return Role(True, ppid, "a worker spawned by a multiprocessing supervisor (uvicorn)")
    return Role(False, ppid, "a single-process server")
