"""What counts as a leak, found in two steps: a cheap difference, then stacks only if needed.

:mod:`pyprof_http.leaks` calls :func:`candidates` on every attempt: the threads and tasks that
exist now and did not at the baseline, minus the ones recognisable without a stack (the main
and the calling thread, the library's own ``pyprof_http-*`` threads, pytest-timeout's timer,
execnet's threads under pytest-xdist, done tasks, the calling task). When nothing is left,
which is what a passing test suite sees, the check has cost a set difference. Otherwise
:func:`examine` reads the stacks of just those (the stacks collector's own walkers) and
decides, as a person reading the dump would:

- a task still pending is a leak, whatever it waits on;
- a thread still alive is a leak, except a worker that is *idle in a pool that will reuse it*:
  the default executor of an event loop that is still open (the loop shuts it down when it
  closes), an idle AnyIO worker thread (its runner stops it) or trio's thread cache (a worker
  ends after 10 s without work);
- a ``ThreadPoolExecutor`` worker of a pool that was not shut down is a leak even when idle: its
  thread lives until the interpreter exits (non-daemon: it is joined at exit);
- a worker still running a work item, or of a pool shutting down, is a leak if it does not end
  within the retry budget.

Rules (:class:`Ignore`) are applied last, on the records with their stacks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures.thread
import fnmatch
import os
import queue
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from .captures.stacks import TaskStack, ThreadStack
from .collectors.stacks import OWN_PREFIX, walk_loop_tasks, walk_threads
from .collectors.threads import THREAD_STARTS
from .loops import LOOPS, ORIGINS, LoopInfo
from .model import Frame

MAX_DEPTH = 64
"""Frames kept per leaked thread or task in the report."""
_STDLIB_DIR = os.path.dirname(threading.__file__)
_OWN_DIR = os.path.dirname(__file__) + os.sep
_PARKING_FILES = (threading.__file__, queue.__file__)
"""Where an idle worker's innermost frames are while it waits for work."""
_POOL_WORKER = concurrent.futures.thread._worker
_RUNNER_MODULES = ("pytest_timeout", "_pytest", "execnet", "xdist")
"""Modules whose threads belong to the test runner itself."""

RuleKind = Literal["top_function", "any_function", "created_by", "name"]


@dataclass(frozen=True, slots=True)
class Ignore:
    """One goleak-style ignore rule; build it with the ``ignore_*`` functions of
    :mod:`pyprof_http.leaks`. Patterns are ``fnmatch`` globs; a function pattern is matched
    against the qualified name (``Worker.run``) and against ``module.qualified name``
    (``client.Worker.run``), the module being the file's name without ``.py``."""

    kind: RuleKind
    pattern: str

    def matches(self, finding: Finding) -> bool:
        if self.kind == "name":
            return fnmatch.fnmatchcase(finding.record.name, self.pattern)
        if self.kind == "top_function":
            frames = finding.record.stack[:1]
        elif self.kind == "any_function":
            frames = finding.record.stack
        else:
            frames = finding.started_by[:1]
        return any(_function_matches(f, self.pattern) for f in frames)


def _function_matches(f: Frame, pattern: str) -> bool:
    if fnmatch.fnmatchcase(f.function, pattern):
        return True
    module = os.path.splitext(os.path.basename(f.filename))[0]
    return fnmatch.fnmatchcase(f"{module}.{f.function}", pattern)


class Baseline(NamedTuple):
    """What existed when a check began (goleak's ``IgnoreCurrent``)."""

    threads: frozenset[threading.Thread]
    tasks: weakref.WeakSet[asyncio.Task[Any]]


def take_baseline(loop: asyncio.AbstractEventLoop | None) -> Baseline:
    tasks: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()
    if loop is not None:
        tasks.update(asyncio.all_tasks(loop))
    return Baseline(frozenset(threading.enumerate()), tasks)


@dataclass(frozen=True, slots=True)
class Finding:
    """A leaked thread or task with its record (as the ``debug=2`` dump shows it)."""

    kind: Literal["thread", "task"]
    record: ThreadStack | TaskStack
    reason: str
    started_by: tuple[Frame, ...] = ()
    """For a thread, where ``Thread.start`` was called (user frames, innermost first); for a
    task, its creation site (also in the record)."""


def candidates(baseline: Baseline | None, loop: asyncio.AbstractEventLoop | None
               ) -> tuple[list[threading.Thread], list[asyncio.Task[Any]]]:
    """Threads and tasks that may be leaks, without reading a stack."""
    me = threading.current_thread()
    main = threading.main_thread()
    known = baseline.threads if baseline is not None else frozenset()
    threads = [t for t in threading.enumerate()
               if t not in known and t is not me and t is not main and t.is_alive()
               and not isinstance(t, threading._DummyThread)
               and not t.name.startswith(OWN_PREFIX) and not _runner_thread(t)]
    tasks: list[asyncio.Task[Any]] = []
    if loop is not None:
        current = asyncio.current_task(loop)
        old = baseline.tasks if baseline is not None else ()
        tasks = [t for t in asyncio.all_tasks(loop) if t is not current and t not in old]
    return threads, tasks


def _runner_thread(thread: threading.Thread) -> bool:
    """pytest-timeout's timer, execnet's and xdist's threads: the test runner's own."""
    target = getattr(thread, "function", None) or getattr(thread, "_target", None)
    for owner in (target, type(thread)):
        module = getattr(owner, "__module__", None) or ""
        if module.split(".")[0] in _RUNNER_MODULES:
            return True
    return False


def examine(threads: list[threading.Thread], tasks: list[asyncio.Task[Any]],
            loop: asyncio.AbstractEventLoop | None, rules: tuple[Ignore, ...]) -> list[Finding]:
    """The candidates that are leaks, with their stacks; threads first."""
    found: list[Finding] = []
    if threads:
        by_ident = {t.ident: t for t in threads}
        open_pools = _open_default_executors(loop)
        for record in walk_threads(MAX_DEPTH):
            thread = by_ident.get(record.ident)
            if thread is None:
                continue
            reason = _thread_reason(thread, record, open_pools)
            if reason is not None:
                found.append(Finding("thread", record, reason, _started_by(thread)))
    if tasks and loop is not None:
        ids = {ORIGINS.task_id(t) for t in tasks}
        thread = threading.current_thread()
        info = LoopInfo(loop, thread.ident or 0, thread.name)
        for task in walk_loop_tasks(info, MAX_DEPTH):
            if task.id in ids:
                site = (task.created_by,) if task.created_by is not None else ()
                found.append(Finding("task", task, "task still pending", site))
    return [f for f in found if not any(rule.matches(f) for rule in rules)]


def _open_default_executors(loop: asyncio.AbstractEventLoop | None) -> list[Any]:
    loops = [info.loop for info in LOOPS.running()]
    if loop is not None:
        loops.append(loop)
    return [ex for lp in loops if not lp.is_closed()
            and (ex := getattr(lp, "_default_executor", None)) is not None]


def _thread_reason(thread: threading.Thread, record: ThreadStack,
                   open_pools: list[Any]) -> str | None:
    """Why this thread is a leak, or None when it is an idle worker that will be reused."""
    kind = "daemon thread" if thread.daemon else "non-daemon thread"
    if getattr(thread, "_target", None) is _POOL_WORKER:
        args = getattr(thread, "_args", ())
        pool = args[0]() if args and isinstance(args[0], weakref.ref) else None
        idle = _parked_in(record, "_worker")
        if pool is not None and any(pool is p for p in open_pools):
            return None if idle else (
                "worker of an event loop's default executor, still running a work item")
        if idle and pool is not None and not getattr(pool, "_shutdown", False):
            return (f"{kind}: idle worker of a ThreadPoolExecutor that was not shut down "
                    "(it lives until the interpreter exits)")
        return f"{kind}: worker of a ThreadPoolExecutor, still running a work item"
    if type(thread).__module__.startswith("anyio") and _parked_in(record, "WorkerThread.run"):
        return None  # idle in AnyIO's pool: its runner stops it
    target_module = getattr(getattr(thread, "_target", None), "__module__", None) or ""
    if target_module.startswith("trio.") and _parked_in(record, "WorkerThread._work"):
        return None  # idle in trio's thread cache: reused, or ends after 10 s without work
    return f"{kind} still running"


def _parked_in(record: ThreadStack, function: str) -> bool:
    """Whether the thread waits for work: its innermost frame outside the threading and queue
    modules is the pool's worker loop (``function``)."""
    for f in record.stack:
        if f.filename in _PARKING_FILES:
            continue
        # 3.10's code objects have no qualified name: "run" for "WorkerThread.run"
        return (f.function == function or f.function.endswith("." + function)
                or f.function == function.rsplit(".", 1)[-1])
    return False


def _started_by(thread: threading.Thread) -> tuple[Frame, ...]:
    """Where ``thread`` was started, user frames first (the standard library's and our own are
    skipped: a pool's ``_adjust_thread_count``, or the wrapper that labels thread-pool work
    with its request, is not who asked for the thread)."""
    stack = THREAD_STARTS.stack_of(thread) or ()
    user = tuple(f for f in stack if not _in_stdlib(f.filename)
                 and not f.filename.startswith(_OWN_DIR))
    return (user or stack)[:4]


def _in_stdlib(filename: str) -> bool:
    return filename.startswith(_STDLIB_DIR + os.sep) and "site-packages" not in filename
