"""The one owner of the process-wide switches, reference-counted per app.

Some of what the profiler needs is process-wide: the task factory of a loop, the
``Thread.start`` hook, the patched lock classes, a loop's stall watchdog, the chain in front of
the server's SIGINT/SIGTERM handlers. Several apps can live in one process (hypercorn
dispatching lifespan to several apps, a ``TestClient`` beside a live app), and the first to shut
down must not switch off what another still uses. So each app holds a :class:`Claims`, and each
switch is on while any claim holds it: the last release switches it off.

Rules for each switch:

- **task factory** (per loop; ``loops.ORIGINS.install_factory``): held per loop.
- **loop watchdog** (per loop; ``collectors.loop.WATCHDOGS``): held per loop; the first
  claim's threshold wins (a watched loop keeps its threshold).
- **Thread.start hook** (``collectors.threads.THREAD_STARTS``): the deepest
  ``max_stack_depth`` asked.
- **lock profiling**: the application's own :func:`set_lock_profile_fraction` wins while it is
  not 0; otherwise the smallest fraction any app's settings ask for (each app gets at least the
  detail it asked for). A fraction switched behind our back (``locks.set_fraction``) is left
  alone when the last claim is released (while claims remain, theirs is applied again).
- **heap tracing at start** (``heap_trace_at_start``): started when the app is built, if
  ``heap`` is allowed; never stopped here (like ``PYTHONTRACEMALLOC``, it traces for the process;
  a ``/heap?seconds=N`` window leaves tracing it did not start alone).
- **Pyroscope pusher** (``push_url``; ``push.pusher``): one daemon thread per process, started
  by the first claim whose settings ask for it at its startup, stopped (after a last flush) when
  the last such claim goes; a forked child starts its own.
- **shutdown-signal chain**: one handler in front of the server's, which stops every running
  profile (the process is stopping), put back when the last claim goes. Only the main thread
  can set a handler: when the last claim goes on another thread (a ``TestClient``'s), ours
  stays in place, passing signals straight to the server's, until the next switch operation
  on the main thread puts the server's back.

What the allowlist excludes is not installed: no factory when neither ``goroutine`` nor
``goroutineleak`` (its readers) is allowed, no hook without ``threadcreate``, no lock patches
without ``mutex``, no watchdog without ``block``, no heap tracing without ``heap``.

A claim is released at its app's shutdown (the last one, when the same app object runs under
several servers at once, as a live server and a ``TestClient`` of one module-level app: an
earlier shutdown lets go only of its own loop's switches), or after the app was
garbage-collected without one (an app built and dropped, as tests do): a finalizer queues it,
and the next switch operation (another app's construction, startup or shutdown) releases it.
State is kept across ``importlib.reload``.

Free-threaded builds with the GIL disabled are refused (:func:`check_supported`): the
collectors walk other threads' frames, which is only safe while the GIL stops them running.
"""

from __future__ import annotations

import _thread
import asyncio
import collections
import contextlib
import itertools
import os
import signal
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any, Final, TypeVar

from . import thread_labels
from .collectors import heap, heap_sampler, locks, threads
from .collectors.gc_leaks import GC_LEAKS
from .collectors.loop import WATCHDOGS
from .collectors.recorder import RECORDER
from .collectors.session import SESSIONS
from .config import ConfigError, Settings
from .loops import ORIGINS
from .push import pusher
from .workers.membership import WORKERS

TASK_FACTORY_READERS: Final = frozenset({"goroutine", "goroutineleak"})
"""Profiles that read what the task factory records (task ids, age, creation site)."""

THREAD_LABEL_READERS: Final = frozenset({"profile", "recorder", "requests"})
"""Profiles whose samples read the request labels of thread-pool work."""

RECORDER_READERS: Final = frozenset({"profile", "recorder", "requests"})
"""Profiles that read the flight recorder (``profile?last=N``, ``recorder``, ``requests``)."""

_T = TypeVar("_T")
_Loop = asyncio.AbstractEventLoop


def _kept(name: str, make: Callable[[], _T]) -> _T:
    """The value ``name`` had before a reload of this module, else a new one."""
    return globals()[name] if name in globals() else make()


_lock: _thread.LockType = _kept("_lock", _thread.allocate_lock)
"""Guards the tables below (raw: never a profiled lock). Replaced in a forked child: a parent's
thread may have held it at the fork (a release holds it while it joins a watchdog)."""
_ids: Iterator[int] = _kept("_ids", lambda: itertools.count(1))
_factories: weakref.WeakKeyDictionary[_Loop, set[int]] = _kept(
    "_factories", weakref.WeakKeyDictionary)
_watchers: weakref.WeakKeyDictionary[_Loop, set[int]] = _kept(
    "_watchers", weakref.WeakKeyDictionary)
_leak_watchers: weakref.WeakKeyDictionary[_Loop, set[int]] = _kept(
    "_leak_watchers", weakref.WeakKeyDictionary)
"""loop -> claims holding the destroyed-pending-task recorder in its exception handler."""
_thread_hooks: dict[int, int] = _kept("_thread_hooks", dict)
"""claim id -> the max_stack_depth it asked for."""
_lock_claims: dict[int, int] = _kept("_lock_claims", dict)
"""claim id -> the lock profile fraction its settings ask for."""
_lock_state: dict[str, int] = _kept("_lock_state", lambda: {"process": 0, "applied": 0})
"""``process``: the application's own fraction; ``applied``: what we last set."""
_signal_holders: set[int] = _kept("_signal_holders", set)
_signal_previous: dict[int, tuple[Any, Any]] = _kept("_signal_previous", dict)
"""signal number -> (the server's handler, ours in front of it)."""
_thread_label_holders: set[int] = _kept("_thread_label_holders", set)
"""Claims that want thread-pool work labelled with its request (``thread_labels``)."""
_recorder_holders: set[int] = _kept("_recorder_holders", set)
"""Claims whose app started (or joined) the flight recorder; the first one's settings win."""
_orphans: collections.deque[int] = _kept("_orphans", collections.deque)
"""Claims whose app was collected, to release at the next chance."""
_push_holders: set[int] = _kept("_push_holders", set)
"""Claims whose settings asked for the Pyroscope pusher (one per process)."""
_heap_samplers: dict[int, tuple[int, int]] = _kept("_heap_samplers", dict)
"""claim id -> (heap_sample_bytes, max_stack_depth) its settings ask for."""


def _after_fork_in_child() -> None:
    global _lock
    _lock = _thread.allocate_lock()
    _push_holders.clear()  # the parent's pusher thread is not in the child (push/pusher.py)


if hasattr(os, "register_at_fork") and "_fork_hook_registered" not in globals():
    os.register_at_fork(after_in_child=lambda: _after_fork_in_child())  # late-bound: reloads
    _fork_hook_registered = True


def gil_disabled() -> bool:
    """Whether this is a free-threaded build running without the GIL (3.13t)."""
    is_enabled = getattr(sys, "_is_gil_enabled", None)
    return is_enabled is not None and not is_enabled()


def check_supported() -> None:
    """Refuse a free-threaded interpreter running without the GIL, with the reason.

    ``ConfigError`` at app construction (not ``ImportError``): importing the package stays
    harmless, and the refusal reaches whoever builds the app, at startup, with a way out.
    """
    if gil_disabled():
        raise ConfigError(
            "pyprof_http does not support free-threaded Python with the GIL disabled yet: it "
            "reads other threads' frames, which is only safe while the GIL stops them; run "
            "with PYTHON_GIL=1 (or -X gil=1) or on a standard build")


@contextlib.contextmanager
def _held() -> Iterator[None]:
    with _lock:
        _release_orphans()
        yield
        if not _signal_holders:
            _restore_signals()  # a release on another thread could not (main thread only)


def _orphaned(claim_id: int) -> None:
    """Finalizer of a :class:`Claims` (its app is gone): queue its release, nothing more. A
    finalizer runs inside whatever allocation triggered the collection, possibly while that
    thread holds a collector's lock (a watchdog starting): releasing from here could wait for
    that very lock, forever."""
    _orphans.append(claim_id)


def release_orphans() -> None:
    """Release the claims of apps that were collected without a shutdown (done by every
    switch operation; tests call it after ``gc.collect()``)."""
    with _held():
        pass


def _release_orphans() -> None:
    while _orphans:
        try:
            claim_id = _orphans.popleft()
        except IndexError:
            return
        _release(claim_id)


class Claims:
    """One app's hold on the process-wide switches; :meth:`shut_down` at each lifespan's end.

    The other methods are idempotent: :meth:`task_factory` and :meth:`watch`, called on every
    request, cost a lookup once held.
    """

    def __init__(self) -> None:
        check_supported()
        release_orphans()  # apps dropped without a shutdown let go first
        self.id: Final = next(_ids)
        finalizer = weakref.finalize(self, _orphaned, self.id)
        finalizer.atexit = False
        self._recent_factory: weakref.ref[_Loop] | None = None
        self._recent_watch: weakref.ref[_Loop] | None = None
        self._recent_leaks: weakref.ref[_Loop] | None = None
        self._lifespans: weakref.WeakKeyDictionary[_Loop, int] = weakref.WeakKeyDictionary()
        """Loop -> lifespans of this app started on it and not shut down yet."""
        self._worker_app: tuple[Any, Any] | None = None
        """(the app siblings' requests go to, workers_rendezvous), once the app says so."""
        self._worker_joined = False

    def follow(self, settings: Settings) -> None:
        """Hold what ``settings`` ask for that needs no loop: the Thread.start hook and lock
        profiling (only the profiles the allowlist lets in)."""
        if settings.allows("threadcreate"):
            self.hook_thread_start(settings.max_stack_depth)
        self.profile_locks(settings)
        if any(settings.allows(name) for name in THREAD_LABEL_READERS):
            self.label_threads()
        self.sample_heap(settings)

    def label_threads(self) -> None:
        """Thread-pool work a request submits carries its labels (``thread_labels``)."""
        with _held():
            _thread_label_holders.add(self.id)
            thread_labels.install()

    def start_on(self, loop: _Loop, settings: Settings) -> None:
        """At startup: the task factory and the stall watchdog of the serving loop, and the
        shutdown-signal chain (as the allowlist allows)."""
        with _held():
            self._lifespans[loop] = self._lifespans.get(loop, 0) + 1
        if wants_task_factory(settings):
            self.task_factory(loop)
        if settings.allows("block"):
            self.watch(loop, settings.loop_stall_ms, settings.max_stack_depth)
        if settings.allows("goroutineleak"):
            self.record_leaks(loop)
        SESSIONS.shutting_down = False  # a fresh start (tests restart apps in one process)
        self.chain_shutdown_signals()
        self.join_workers()
        self.record(settings)

    def serves_workers(self, app: Any, mode: Any) -> None:
        """Offer ``app`` (auth already done) to sibling workers, joined at startup or at the
        first request: a multi-worker server's rendezvous (nothing in a single process)."""
        self._worker_app = (app, mode)

    def join_workers(self) -> None:
        """Join the rendezvous if this process is a worker; a flag check once done."""
        if self._worker_joined or self._worker_app is None:
            return
        self._worker_joined = True
        app, mode = self._worker_app
        with _held():
            WORKERS.join(self.id, app, mode)

    def record(self, settings: Settings) -> None:
        """The flight recorder, if the settings ask for it (``recorder_hz`` > 0) and a
        profile that reads it is allowed. One per process: a running one is joined as is."""
        if not settings.recorder_hz or not any(
                settings.allows(name) for name in RECORDER_READERS):
            return
        with _held():
            _recorder_holders.add(self.id)
            RECORDER.start(settings.recorder_hz, settings.recorder_seconds,
                           settings.max_stack_depth)

    def task_factory(self, loop: _Loop) -> None:
        recent = self._recent_factory
        if recent is None or recent() is not loop:
            with _held():
                _factories.setdefault(loop, set()).add(self.id)
            self._recent_factory = weakref.ref(loop)
        ORIGINS.install_factory(loop)  # once per loop; cheap when ours is in place

    def watch(self, loop: _Loop, stall_ms: int, max_depth: int) -> None:
        recent = self._recent_watch
        if recent is None or recent() is not loop:
            with _held():
                _watchers.setdefault(loop, set()).add(self.id)
            self._recent_watch = weakref.ref(loop)
        WATCHDOGS.start(loop, stall_ms, max_depth)  # a dict lookup once the loop is watched

    def record_leaks(self, loop: _Loop) -> None:
        """Chain the destroyed-pending-task recorder into ``loop``'s exception handler
        (``goroutineleak``); once per app and loop, cheap when held."""
        recent = self._recent_leaks
        if recent is not None and recent() is loop:
            return
        with _held():
            holders = _leak_watchers.setdefault(loop, set())
            if not holders:  # the first holder: one watch, unwatched when the last goes
                GC_LEAKS.watch(loop)
            holders.add(self.id)
        self._recent_leaks = weakref.ref(loop)

    def after_startup(self, loop: _Loop) -> None:
        """Once the app's own startup code ran: put the leak recorder back in front of an
        exception handler the app set there (it then hands every event on to it)."""
        with _held():
            if self.id in _leak_watchers.get(loop, ()):
                GC_LEAKS.rechain(loop)

    def hook_thread_start(self, max_depth: int) -> None:
        with _held():
            _thread_hooks[self.id] = max_depth
            threads.THREAD_STARTS.install(max(_thread_hooks.values()))

    def profile_locks(self, settings: Settings) -> None:
        """Lock profiling at the settings' fraction, if set and ``mutex`` is allowed."""
        if not settings.lock_profile_fraction or not settings.allows("mutex"):
            return
        with _held():
            _lock_claims[self.id] = settings.lock_profile_fraction
            _apply_locks()

    def trace_heap(self, settings: Settings) -> None:
        """tracemalloc from now on, if the settings ask for it and ``heap`` is allowed (it slows
        every allocation: nothing the allowlist excludes may cost that)."""
        if settings.heap_trace_at_start and settings.allows("heap"):
            heap.start_at_startup(settings.heap_frames)

    def sample_heap(self, settings: Settings) -> None:
        """The always-on heap sampler (``heap_sample_bytes``, 0: off), if ``heap`` or ``allocs``
        is allowed. Several apps: the finest rate and deepest stacks any of them asks for."""
        if not settings.heap_sample_bytes or not (
                settings.allows("heap") or settings.allows("allocs")):
            return
        with _held():
            wanted = (settings.heap_sample_bytes, settings.max_stack_depth)
            if _heap_samplers.get(self.id) != wanted or not heap_sampler.running():
                _heap_samplers[self.id] = wanted
                _apply_heap_sampler()

    def chain_shutdown_signals(self) -> None:
        with _held():
            _signal_holders.add(self.id)
            _chain_signals()

    def push(self, settings: Settings, loop: _Loop | None) -> None:
        """The Pyroscope pusher, if ``settings`` has a ``push_url``: one per process, started
        by the first claim that asks (its settings win), stopped after a last flush when the
        last one lets go."""
        if settings.push_url is None:
            return
        with _held():
            _push_holders.add(self.id)
            pusher.start(settings, loop)

    def shut_down(self, loop: _Loop) -> None:
        """One lifespan's shutdown (or failed startup) on ``loop``: :meth:`release_all` if it
        was this app's last; else only this loop's task factory and watchdog (the app still
        serves under another server, whose loop and process-wide switches stay on)."""
        self._recent_factory = self._recent_watch = None
        self._recent_leaks = None
        with _held():
            left = self._lifespans.pop(loop, 0) - 1
            if left > 0:
                self._lifespans[loop] = left
            for closed in [other for other in self._lifespans if other.is_closed()]:
                del self._lifespans[closed]  # ended without a shutdown: it serves no more
            if not self._lifespans:
                _release(self.id)
                self._worker_joined = False
            elif left <= 0:
                _release_loop(self.id, loop)

    def release_all(self) -> None:
        """Let go of everything this app holds (its shutdown): stop the profiles it started,
        and switch off whatever no other app still holds."""
        self._recent_factory = self._recent_watch = None
        self._recent_leaks = None
        self._worker_joined = False
        with _held():
            _release(self.id)


def wants_task_factory(settings: Settings) -> bool:
    return any(settings.allows(name) for name in TASK_FACTORY_READERS)


def _release(claim_id: int) -> None:
    """Drop ``claim_id`` from every table and switch off what nobody holds; ``_lock`` held."""
    SESSIONS.stop_all(owner=claim_id)
    for loop in {*_factories.keys(), *_watchers.keys(), *_leak_watchers.keys()}:
        _release_loop(claim_id, loop)
    if _thread_hooks.pop(claim_id, None) is not None:
        if _thread_hooks:
            threads.THREAD_STARTS.max_depth = max(_thread_hooks.values())
        else:
            threads.THREAD_STARTS.uninstall()
    if _lock_claims.pop(claim_id, None) is not None:
        _apply_locks()
    if claim_id in _recorder_holders:
        _recorder_holders.discard(claim_id)
        if not _recorder_holders:
            RECORDER.stop()
    if claim_id in _thread_label_holders:
        _thread_label_holders.discard(claim_id)
        if not _thread_label_holders:
            thread_labels.uninstall()
    if _heap_samplers.pop(claim_id, None) is not None:
        _apply_heap_sampler()
    if claim_id in _signal_holders:
        _signal_holders.discard(claim_id)
        if not _signal_holders:
            _restore_signals()
    if claim_id in _push_holders:
        _push_holders.discard(claim_id)
        if not _push_holders:
            pusher.stop()
    WORKERS.leave(claim_id)  # the last app out leaves the rendezvous


def _release_loop(claim_id: int, loop: _Loop) -> None:
    """Drop ``claim_id``'s hold on ``loop``'s factory and watchdog; ``_lock`` held."""
    for table, switch_off in ((_factories, ORIGINS.uninstall_factory),
                              (_watchers, WATCHDOGS.stop), (_leak_watchers, GC_LEAKS.unwatch)):
        holders = table.get(loop)
        if holders is not None and claim_id in holders:
            holders.discard(claim_id)
            if not holders:
                del table[loop]
                switch_off(loop)


def _apply_heap_sampler() -> None:
    """Run the heap sampler as the claims ask, or stop it when none does; ``_lock`` held."""
    if not _heap_samplers:
        heap_sampler.stop()
        return
    rate = min(rate for rate, _ in _heap_samplers.values())
    depth = max(depth for _, depth in _heap_samplers.values())
    heap_sampler.start(rate, depth)  # running: only the rate and depth change


# --- lock profiling --------------------------------------------------------------------------


def _wanted_fraction() -> int:
    process = _lock_state["process"]
    if process:
        return process
    return min(_lock_claims.values(), default=0)


def _apply_locks() -> None:
    """Set the wanted fraction, unless the current one was set behind our back; ``_lock``
    held."""
    wanted, applied = _wanted_fraction(), _lock_state["applied"]
    current = locks.fraction()
    if current == wanted:
        _lock_state["applied"] = wanted
        return
    if current != applied and not wanted:
        return  # someone set it without us (locks.set_fraction): not ours to switch off
    locks.set_fraction(wanted)
    _lock_state["applied"] = wanted


def set_lock_profile_fraction(n: int) -> int:
    """Record 1 in ``n`` contended lock acquisitions (0: off), as Go's
    ``runtime.SetMutexProfileFraction``; returns the previous fraction.

    The application's own setting wins over every app's ``lock_profile_fraction``; 0 gives
    the decision back to them (profiling stays on while an app's settings ask for it).
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"lock profile fraction must be an int, not {type(n).__name__}")
    if n < 0:
        raise ValueError(f"lock profile fraction must be >= 0, got {n}")
    if n:
        check_supported()
    with _held():
        previous = locks.fraction()
        _lock_state["process"] = n
        wanted = _wanted_fraction()
        if locks.fraction() != wanted:
            locks.set_fraction(wanted)
        _lock_state["applied"] = wanted
        return previous


# --- the shutdown-signal chain ---------------------------------------------------------------


def _chain_signals() -> None:
    """Put one handler in front of the server's SIGINT/SIGTERM handlers; ``_lock`` held.

    Servers wait for open requests before they run the lifespan shutdown (uvicorn: "Waiting
    for connections to close"), so a 60-second profile would hold the process for its full
    length. The handler stops every running profile first (a plain store: a handler that took
    a lock could deadlock with the code it interrupted; every wait polls the flag within
    0.1 s); the server's handler then runs as before. Only Python handlers are chained (a
    default handler terminates the process anyway), only from the main thread.
    """
    if threading.current_thread() is not threading.main_thread() or _signal_previous:
        return
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(signum)
        if not callable(previous) or previous is signal.default_int_handler:
            continue

        def handler(number: int, frame: FrameType | None, previous: Any = previous) -> None:
            if _signal_holders:  # (none: left in place by a release off the main thread)
                SESSIONS.shutting_down = True
            previous(number, frame)

        signal.signal(signum, handler)
        _signal_previous[signum] = (previous, handler)


def _restore_signals() -> None:
    """Put the server's handlers back where ours is still in place; ``_lock`` held. Off the
    main thread this cannot be done: ours stays, inert, for the next call on the main thread."""
    if not _signal_previous or threading.current_thread() is not threading.main_thread():
        return
    for signum, (previous, ours) in list(_signal_previous.items()):
        if signal.getsignal(signum) is ours:  # someone else's since: leave theirs
            signal.signal(signum, previous)
    _signal_previous.clear()
