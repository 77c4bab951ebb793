"""Event-loop stalls: the ``block`` endpoint's collector (a watchdog thread per event loop).

An asyncio loop that runs a blocking call (``time.sleep``, a sync driver, a CPU-bound parse) does
not come back to its other tasks until the call returns; every request on that loop waits. Go's
block profile answers "where do goroutines wait?"; for an event loop the question is "what held
the loop, for how long, on which route?".

**How a stall is seen, without waking an idle loop.** A watchdog thread (``pyprof_http-watchdog``)
looks at the loop thread every ``stall_ms / 4`` (at most 25 ms) with ``sys._current_frames()``,
and twice as far apart while the loop was last seen idle (see :data:`IDLE_BACKOFF`).
A loop waiting in its selector's ``select`` is responsive: nothing is sent to it, so an idle
loop is never woken (an idle server pays only the watchdog thread's own wake-ups). A loop seen
doing anything else gets one **probe**, ``call_soon_threadsafe`` of a callback that stores when
it ran; a busy loop iterates anyway, so the probe rides on an iteration it makes regardless. The
loop was away at most from the last moment it was seen responsive to the probe's run, and at
least from the probe's posting: a stall is recorded when the former may reach ``stall_ms`` (so a
block of exactly the threshold is never missed; one up to a look shorter sometimes is). While a
probe is outstanding and the loop may be half a stall away, the loop thread's stack is sampled
(sparser as a stall goes on; at most 64 samples) with the task holding the loop and its route;
samples that show the selector, or are taken once the probe ran, are thrown away. A loop without
a Python selector (uvloop) cannot be seen idle and is probed at every look; a sample showing only
the frame that runs it (idle in C, or a C callback) is thrown away too, and CPU time judges.

**A late loop is not always a stalled one.** On a machine short of CPU, a loop can answer late
because it was not run at all. A stall needs evidence that the loop was held: a sampled stack
that is not the selector (then it is a stall however slowly the machine ran that code), or, with
no sample, the loop thread's CPU time (Linux schedstat, read when it was last responsive and
when the probe ran) covering most of it: a C call that keeps the GIL blocks the watchdog too,
but its CPU time is measured. Time the loop thread waited for a CPU, and time the watchdog
overslept that neither explains (the process was not run), hold nothing. Late answers without
such evidence are counted as *starved*, shown in a comment, never as stalls with an invented
stack; each stall shows the CPU time and the wait for a CPU that were measured. Where the CPU
time cannot be measured (no schedstat: not Linux, statistics off) an unsampled late answer is
listed with a ``<not sampled>`` stack that says so, and a comment says it may be starvation.

The recorded duration is a lower bound: the probe's lateness, or the loop thread's CPU time in
the episode if larger (a GIL-holding C call ends before the watchdog can post a probe).

The profile is Go's block profile: ``contentions/count`` and ``delay/nanoseconds``, one sample
per (blocking stack, thread, task, route), where the blocking stack is the one sampled most
often (ties: the first). ``delay`` is the default type, as pprof picks Go's last one: time the
loop was lost is what ranks stalls; their count alone would rank a 1 s parse with a 100 ms one.
Request ids stay out of the profile (one per request) and are kept on each :class:`Stall`;
asyncio's automatic ``Task-N`` names stay out too (:func:`~pyprof_http.loops.is_auto_task_name`).
Memory is bounded: the last :data:`MAX_STALLS` stalls are kept one by one, with identical stacks
shared, and a cumulative aggregate, itself capped at :data:`MAX_KEYS`, covers everything since
the first watch started. Costs are measured by ``benchmarks/loop.py`` and ``benchmarks/idle.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import selectors
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import CodeType, FrameType, FunctionType
from typing import Final

from ..bounded import BoundedCache
from ..captures.stalls import Stall, StallCapture
from ..loops import LOOPS, is_auto_task_name, running_task
from ..model import Frame, Profile, Sample, frame
from ..request_labels import task_request
from .frames import current_frames, frame_stack
from .locks import CONTENTIONS, DELAY

THREAD_NAME: Final = "pyprof_http-watchdog"
MAX_STALLS: Final = 1_000
"""Stalls kept individually (for windows and the text view); older ones live in the aggregate.
With identical stacks shared, 1,000 stalls of 4 distinct 128-frame stacks each are ~4 MB."""
MAX_SAMPLES_PER_STALL: Final = 64
MAX_STACKS_PER_STALL: Final = 4
"""Distinct stacks a :class:`Stall` keeps (most sampled first): bounds the history's memory."""
MAX_KEYS: Final = 10_000
"""Aggregate entries before new ones lose the task label (task names can be unique per task)."""
MAX_PERIOD_NS: Final = 25_000_000
"""The longest time between two looks at a loop (``stall_ms / 4`` when shorter)."""
IDLE_BACKOFF: Final = 2
"""After a look that found the loop waiting in its selector, the next look comes this many
periods later (never more than ``stall_ms / 2``): an idle server wakes the watchdog half as
often, and a block of exactly ``stall_ms`` still spans at least one look. The episode that
such a look starts counts the longer gap as what the look may have missed of the block's
start, so the threshold rule is unchanged; only the recorded lower bound can be one period
shorter for a stall that begins while the loop was idle."""
JOIN_TIMEOUT_S: Final = 2.0
NOT_SAMPLED: Final = frame("<not sampled>", "<no Python frame seen; the loop thread was on a CPU "
                           "(e.g. a C call holding the GIL)>", 0)
NO_EVIDENCE: Final = frame("<not sampled>", "<no Python frame seen; CPU time not measurable "
                           "here>", 0)
OTHER: Final = frame("<other stacks>", "<aggregate limit reached>", 0)

_Key = tuple[tuple[Frame, ...], str, str, str]
"""A sample of a stall: stack, task name, route, request id ("" when absent)."""
_AggKey = tuple[tuple[Frame, ...], str, str, str]
"""An aggregate entry: stack, thread name, task name, route."""


@dataclass(frozen=True, slots=True)
class WatchInfo:
    """A watched loop, for the index."""

    thread: str
    stall_ms: int
    period_ms: float
    since_ns: int


class _History:
    """The stalls of every watched loop: a bounded deque plus a cumulative aggregate."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stalls: deque[Stall] = deque(maxlen=MAX_STALLS)
        self.totals: dict[_AggKey, list[int]] = {}
        self.seen = 0
        self.dropped_ends: deque[int] = deque(maxlen=MAX_STALLS)
        """End times of stalls that fell out of ``stalls``, so a window knows what it misses."""
        self.dropped = 0
        self.started_ns: int | None = None
        self.started_wall_ns = 0
        self.starved = 0
        self.starved_ns = 0
        self._stacks: BoundedCache[tuple[Frame, ...], tuple[Frame, ...]] = BoundedCache(
            max_entries=4 * MAX_KEYS)
        """One tuple per distinct stack, shared by every stall that shows it."""

    def begin(self) -> None:
        with self.lock:
            if self.started_ns is None:
                self.started_ns, self.started_wall_ns = time.monotonic_ns(), time.time_ns()

    def add(self, stall: Stall) -> None:
        with self.lock:
            stall = self._share(stall)
            if len(self.stalls) == self.stalls.maxlen:
                self.dropped += 1
                self.dropped_ends.append(self.stalls[0].end_ns)
            self.stalls.append(stall)
            self.seen += 1
            _add(self.totals, stall)

    def add_starved(self, late_ns: int) -> None:
        with self.lock:
            self.starved += 1
            self.starved_ns += late_ns

    def _share(self, stall: Stall) -> Stall:
        """The stall with its stacks replaced by the kept copies of equal ones (bounded)."""
        stacks = self._stacks
        stack = stacks.setdefault(stall.stack, stall.stack)
        others = tuple((stacks.setdefault(s, s), n) for s, n in stall.stacks)
        return dataclasses.replace(stall, stack=stack, stacks=others)


def _add(totals: dict[_AggKey, list[int]], stall: Stall) -> None:
    """Count ``stall`` in an aggregate of (stack, thread, task, route) -> [count, delay]."""
    task = "" if is_auto_task_name(stall.task) else stall.task
    key = _bounded_key(totals, (stall.stack, stall.thread, task, stall.route))
    entry = totals.setdefault(key, [0, 0])
    entry[0] += 1
    entry[1] += stall.duration_ns


def _bounded_key(totals: dict[_AggKey, list[int]], key: _AggKey) -> _AggKey:
    """Past :data:`MAX_KEYS` entries new keys drop the task; past twice that, the stack too."""
    if key in totals or len(totals) < MAX_KEYS:
        return key
    stack, thread, _task, route = key
    if (stack, thread, "", route) in totals or len(totals) < 2 * MAX_KEYS:
        return stack, thread, "", route
    return (OTHER,), thread, "", ""


class _Evidence:
    """The loop thread's scheduler counters: CPU time it ran, time it waited for a CPU.

    Read from ``/proc/self/task/<tid>/schedstat`` (Linux): one ``pread`` gives both, and a
    thread that has exited makes it fail with ``OSError`` rather than crash (unlike
    ``pthread_getcpuclockid`` on a stale ident). Elsewhere there is no evidence and
    the watchdog says so instead of guessing. So does a kernel whose scheduler statistics are
    off: it prints ``0 0 0`` for every thread, and a CPU time of 0 would turn each unsampled
    stall (a C call holding the GIL) into "starved" and show 0 ms on a CPU for sampled ones. A
    thread that has run Python code has a CPU time above 0, so 0 at the start means unknown.
    """

    def __init__(self, native_id: int | None) -> None:
        self._fd: int | None = None
        if native_id is not None and sys.platform.startswith("linux"):
            try:
                self._fd = os.open(f"/proc/self/task/{native_id}/schedstat", os.O_RDONLY)
            except OSError:
                self._fd = None
            first = self.read()
            if first is not None and first[0] == 0:  # statistics off: no evidence, say so
                self.close()

    def read(self) -> tuple[int, int] | None:
        """``(cpu_ns, runqueue_ns)`` so far, or None when unknown."""
        fd = self._fd
        if fd is None:
            return None
        try:
            fields = os.pread(fd, 128, 0).split()
            return int(fields[0]), int(fields[1])
        except (OSError, ValueError, IndexError):
            return None

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


@dataclass(slots=True)
class _Episode:
    """The loop was seen busy: a probe is on its way, and what was known when it left."""

    seq: int
    posted_ns: int
    """When the probe was posted (the loop was certainly busy then)."""
    ok_ns: int
    """The last instant the loop was known to be responsive: the stall began after it."""
    ok_evidence: tuple[int, int] | None
    blind_ns: int = 0
    """How much later than planned the watchdog itself woke during the episode, beyond what
    its own wait for a CPU explains."""
    late_ns: int = 0
    """How late the look that posted the probe was: the block may have begun that much
    earlier before it, on top of one period."""


class _Watch:
    """The watchdog thread of one loop and the probes it sends."""

    def __init__(self, loop: asyncio.AbstractEventLoop, ident: int, native_id: int | None,
                 thread_name: str, stall_ms: int, max_depth: int,
                 record: Callable[[Stall], None], starved: Callable[[int], None],
                 on_exit: Callable[[_Watch], None]) -> None:
        self.loop, self.ident, self.thread_name = loop, ident, thread_name
        self.stall_ms, self.stall_ns, self.max_depth = stall_ms, stall_ms * 1_000_000, max_depth
        self.period_ns = max(1_000_000, min(MAX_PERIOD_NS, self.stall_ns // 4))
        self.idle_period_ns = max(self.period_ns,
                                  min(IDLE_BACKOFF * self.period_ns, self.stall_ns // 2))
        self.looks = 0
        """Looks taken (each wakes the watchdog once): for the benchmark and tests."""
        self._idle_seen = False
        """The last look found the loop in its selector (the next one may come later)."""
        self.since_ns = time.monotonic_ns()
        self.stopped = False
        self.probes = 0
        """Probes posted (each wakes the loop once): for the benchmark and tests."""
        self._record, self._starved, self._on_exit = record, starved, on_exit
        self._evidence = _Evidence(native_id)
        self._sample_after_ns = (self.stall_ns - self.period_ns) // 2
        self._idle_codes = _idle_codes(loop)
        self._run_frame: FrameType | None = None
        """Without a Python selector (uvloop): the frame that runs the loop, learnt by the
        first probe. Idle in the loop's C code, or in a C callback, its thread shows only this
        frame: a sample of it shows nothing holding the loop (a process that was not run would
        otherwise be a "sampled" stall of ``Runner.run``); CPU time judges those instead."""
        self._ok: tuple[int, tuple[int, int] | None] = (self.since_ns, self._evidence.read())
        self._episode: _Episode | None = None
        self._ran: tuple[int, int, tuple[int, int] | None] = (0, 0, None)
        """(probe number, ran at, evidence then): written by the probe on the loop, one tuple."""
        self._seq = 0
        self._samples: Counter[_Key] = Counter()
        self._lock = threading.Lock()
        self._asleep = threading.Lock()
        """Held while watching; released once by stop(), which wakes the watchdog at once. A
        plain lock's timed acquire is the cheapest sleep that can be cut short (an Event's
        wait builds a new lock and a Condition round trip per wake-up)."""
        self._asleep.acquire()
        self.thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def alive(self) -> bool:
        return not self.stopped and self.thread.is_alive()

    def stop(self) -> None:
        """Stop watching and join the watchdog (bounded); safe on the loop thread."""
        if asyncio._get_running_loop() is self.loop:  # the loop is back: end a pending stall
            self._settle(time.monotonic_ns(), self._evidence.read(), on_loop=True)
        was_stopped, self.stopped = self.stopped, True
        if not was_stopped:
            with contextlib.suppress(RuntimeError):  # released already
                self._asleep.release()
        if threading.current_thread() is not self.thread and self.thread.ident is not None:
            self.thread.join(JOIN_TIMEOUT_S)

    # ---- the loop side ----------------------------------------------------------------------

    def _probe(self, seq: int) -> None:
        """Runs on the loop: it is back. Two reads and one store."""
        self._ran = (seq, time.monotonic_ns(), self._evidence.read())

    def _probe_first(self, seq: int) -> None:
        """:meth:`_probe` that also learns the loop's own frame: a loop in C (uvloop) calls
        its callbacks straight from the frame that runs it."""
        self._run_frame = sys._getframe(1)
        self._probe(seq)

    # ---- the watchdog thread ----------------------------------------------------------------

    def _run(self) -> None:
        own = _Evidence(threading.get_native_id())
        self._ok = (time.monotonic_ns(), self._evidence.read())  # the loop waits in
        try:  # Thread.start() until we run: not a stall, and not worth a probe
            wait_ns = self.period_ns
            self._sleep(wait_ns)
            planned, before = time.monotonic_ns(), own.read()
            while not self.stopped and not self.loop.is_closed() and self.loop.is_running():
                # the loop thread's frame first, before anything that lets the GIL go (a read
                # of the counters does): right after a C call that kept the GIL, the loop
                # would run on and the call's caller would never be seen
                now, top = time.monotonic_ns(), current_frames().get(self.ident)
                late_ns = max(0, now - planned)
                # a backed-off look may miss more of a block's start than one period (only
                # then: after an episode, the probe's run is a known responsive instant)
                self._tick(now, top, late_ns + self._backoff_ns(wait_ns))
                self.looks += 1
                del top
                after = own.read()
                if self._episode is not None:
                    self._episode.blind_ns += _blind(late_ns, before, after, self.period_ns)
                wait_ns = self._next_look(now)
                planned, before = time.monotonic_ns() + wait_ns, after  # one read per look
                self._sleep(wait_ns)
        finally:
            self.stopped = True
            self._run_frame = None
            own.close()
            self._evidence.close()
            self._on_exit(self)

    def _sleep(self, ns: int) -> None:
        if self._asleep.acquire(timeout=ns / 1e9):
            self._asleep.release()  # stop() released it: stay awake from now on

    def _tick(self, now: int, top: FrameType | None, late_ns: int) -> None:
        """One look at the loop (``top``: its thread's frame at ``now``): settle a probe that
        ran, else probe a loop seen busy, and sample a loop that may be half a stall away."""
        episode = self._episode
        if episode is not None:
            seq, ran_ns, evidence = self._ran
            if seq != episode.seq:
                self._maybe_sample(episode, now, top)
                return
            self._settle(ran_ns, evidence, on_loop=False)
        self._idle_seen = False
        if top is None:
            return
        if top.f_code in self._idle_codes:  # waiting in its selector: responsive, no probe
            self._ok = (now, self._evidence.read())
            self._idle_seen = True
            return
        ok_ns, ok_evidence = self._ok
        self._seq += 1
        episode = _Episode(self._seq, now, ok_ns, ok_evidence, late_ns=late_ns)
        with self._lock:
            self._episode, self._samples = episode, Counter()
        self._maybe_sample(episode, now, top)
        try:
            probe = self._probe if self._idle_codes or self._run_frame else self._probe_first
            self.loop.call_soon_threadsafe(probe, episode.seq)
        except RuntimeError:  # closed meanwhile
            self.stopped = True
            return
        self.probes += 1

    def _maybe_sample(self, episode: _Episode, now: int, top: FrameType | None) -> None:
        if now - episode.ok_ns >= self._sample_after_ns:
            self._sample(episode, top)

    def _backoff_ns(self, wait_ns: int) -> int:
        """How much longer than a period the wait before this look was because the loop had
        been seen idle (0 after a look at a busy loop or during an episode)."""
        return wait_ns - self.period_ns if self._idle_seen and self._episode is None else 0

    def _next_look(self, now: int) -> int:
        """Nanoseconds until the next look: every period (the idle period after a look that
        found the loop in its selector); while a probe is out, at the first sample's time, then
        every ``stall_ms / 4``, sparser as a stall goes on."""
        episode = self._episode
        if episode is None:
            return self.idle_period_ns if self._idle_seen else self.period_ns
        away = now - episode.ok_ns
        if away < self._sample_after_ns:
            return max(min(self._sample_after_ns - away, self.period_ns), 1_000_000)
        interval = max(self.stall_ns // 4, away // 16)
        if self._samples.total() >= MAX_SAMPLES_PER_STALL:
            interval = max(interval, self.stall_ns)  # only watch for the end now
        return interval

    def _sample(self, episode: _Episode, top: FrameType | None) -> int:
        """Add ``top``, the loop thread's frame, as a sample of ``episode``; how many it has."""
        if (top is None or self._ran[0] == episode.seq or self._episode is not episode
                or top.f_code in self._idle_codes or top is self._run_frame):
            return 0  # back meanwhile, or idle in its selector / C loop: not a block
        task = running_task(self.loop)
        request = task_request(task) if task is not None else None
        route, request_id = request if request is not None else ("", "")
        key = (frame_stack(top, self.max_depth), task.get_name() if task is not None else "",
               route, request_id)
        del top
        with self._lock:
            if self._episode is not episode:
                return 0
            self._samples[key] += 1
            return self._samples.total()

    # ---- either side --------------------------------------------------------------------------

    def _settle(self, end_ns: int, end_evidence: tuple[int, int] | None, on_loop: bool) -> None:
        """The loop is back at ``end_ns``: judge the episode (if any) and start afresh."""
        with self._lock:
            episode, samples = self._episode, self._samples
            self._episode, self._samples = None, Counter()
            if on_loop and episode is None:  # busy since the last look, not probed yet
                ok_ns, ok_evidence = self._ok
                episode = _Episode(-1, end_ns, ok_ns, ok_evidence)
            self._ok = (end_ns, end_evidence)
        if episode is None:
            return
        verdict = judge(episode, end_ns, end_evidence, bool(samples), self.stall_ns,
                        self.period_ns)
        if verdict is None:
            return
        duration_ns, cpu_ns, waited_ns, is_stall = verdict
        if not is_stall:
            self._starved(end_ns - episode.ok_ns)
            return
        ranked = samples.most_common()  # stable: ties keep the first-sampled order
        if ranked:
            stack, task, route, request_id = ranked[0][0]
        else:
            stack, task, route, request_id = (NOT_SAMPLED if cpu_ns is not None
                                              else NO_EVIDENCE,), "", "", ""
        stacks: Counter[tuple[Frame, ...]] = Counter()
        for (sampled, *_labels), count in ranked:
            stacks[sampled] += count
        start_ns = end_ns - duration_ns
        self._record(Stall(
            start_ns=start_ns, start_wall_ns=time.time_ns() - (time.monotonic_ns() - start_ns),
            duration_ns=duration_ns, stack=stack,
            stacks=tuple(stacks.most_common(MAX_STACKS_PER_STALL)),
            task=task, route=route, request_id=request_id, thread=self.thread_name,
            cpu_ns=cpu_ns, waited_ns=waited_ns,
        ))


def _blind(late_ns: int, before: tuple[int, int] | None, after: tuple[int, int] | None,
           period_ns: int) -> int:
    """How long the watchdog overslept for a reason other than waiting for a CPU itself (the
    process was not run, or another thread kept the GIL); timer slack under a period is none."""
    if late_ns <= period_ns:
        return 0
    if before is not None and after is not None:
        late_ns -= after[1] - before[1]
    return max(0, late_ns)


def judge(episode: _Episode, end_ns: int, end_evidence: tuple[int, int] | None,
          sampled: bool, stall_ns: int, period_ns: int
          ) -> tuple[int, int | None, int | None, bool] | None:
    """Was the episode a stall? ``(duration, cpu, waited for a CPU, stall or starved)``, or
    None when it was too short to be either.

    The loop may have been away since ``ok_ns`` (the last time it was seen responsive) and
    certainly was since the probe was posted; what a look can miss of a block's start is one
    period and the look's own lateness. When the watchdog sampled code holding the loop (not
    the selector), it was a stall, however slowly a starved machine ran that code (the record
    shows its CPU time and its wait for a CPU). Without a sample, only measured CPU time shows
    the loop was held (a C call that keeps the GIL cannot be sampled): of the time it may have
    been away, what it waited for a CPU (runqueue) and what the watchdog overslept that
    neither explains (the whole process was not run) held nothing; the rest must reach the
    threshold (within half a period: a thread's wait for a CPU is counted when it gets one)
    and be mostly on a CPU. Otherwise it was starved, not stalled: counted, never listed with
    an invented stack. Without counters (not Linux) the lateness stands.
    """
    duration_ns = end_ns - episode.posted_ns
    cpu_ns = waited_ns = None
    if episode.ok_evidence is not None and end_evidence is not None:
        cpu_ns = max(0, end_evidence[0] - episode.ok_evidence[0])
        waited_ns = max(0, end_evidence[1] - episode.ok_evidence[1])
    # what a look can miss of a block's start is one period and its own lateness (half a
    # period of slack): the last responsive instant may lie further back than that only
    # because the loop was busy with other, shorter work in between
    may_ns = min(end_ns - episode.ok_ns, max(duration_ns, cpu_ns or 0) + period_ns
                 + period_ns // 2 + episode.late_ns)
    if may_ns < stall_ns:
        return None
    if cpu_ns is None or waited_ns is None:
        return duration_ns, None, None, True
    shown_ns = max(duration_ns, min(cpu_ns, may_ns))
    if sampled:  # code was seen holding the loop: a stall, however slowly the machine ran it
        return shown_ns, cpu_ns, waited_ns, True
    window_ns = end_ns - episode.ok_ns  # what the counters cover
    not_run_ns = waited_ns + max(0, episode.blind_ns - cpu_ns - waited_ns)
    held_ns = min(may_ns, window_ns - not_run_ns)
    on_cpu = 2 * cpu_ns >= held_ns
    return shown_ns, cpu_ns, waited_ns, on_cpu and held_ns + period_ns // 2 >= stall_ns


def _idle_codes(loop: asyncio.AbstractEventLoop) -> frozenset[CodeType]:
    """Code objects a loop's thread is in while it waits for I/O (its selector's ``select``).

    Empty for loops without a Python selector (uvloop): those are probed at every look.
    """
    if not isinstance(getattr(loop, "_selector", None), selectors.BaseSelector):
        return frozenset()
    return _SELECT_CODES


_SELECT_CODES: Final = frozenset(
    cls.select.__code__ for cls in vars(selectors).values()
    if isinstance(cls, type) and issubclass(cls, selectors.BaseSelector)
    and isinstance(getattr(cls, "select", None), FunctionType)
)


class Watchdogs:
    """Every watched loop, and the stalls they recorded (kept after a watch stops)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watches: dict[asyncio.AbstractEventLoop, _Watch] = {}
        self._history = _History()
        self._threshold_ms = 0
        self._period_ms = 0.0

    def start(self, loop: asyncio.AbstractEventLoop, stall_ms: int, max_depth: int = 128) -> None:
        """Watch ``loop`` (running; best called on its own thread) unless already watched.

        Cheap when it is (a dict lookup): call it on every request. A loop already watched keeps
        its threshold.
        """
        watch = self._watches.get(loop)
        if watch is not None and watch.alive():
            return
        ident, native_id, name = _loop_thread(loop)
        with self._lock:
            watch = self._watches.get(loop)
            if watch is not None and watch.alive():
                return
            watch = _Watch(loop, ident, native_id, name, stall_ms, max_depth, self._record,
                           self._record_starved, self._forget)
            self._watches[loop] = watch
            self._threshold_ms, self._period_ms = stall_ms, watch.period_ns / 1e6
            self._history.begin()
            watch.start()

    def stop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Stop watching ``loop`` and join its watchdog (at most ~2 s)."""
        with self._lock:
            watch = self._watches.pop(loop, None)
        if watch is not None:
            watch.stop()

    def stop_all(self) -> None:
        with self._lock:
            watches = list(self._watches.values())
            self._watches.clear()
        for watch in watches:
            watch.stop()

    def is_watching(self, loop: asyncio.AbstractEventLoop) -> bool:
        watch = self._watches.get(loop)
        return watch is not None and watch.alive()

    def watching(self) -> list[WatchInfo]:
        with self._lock:
            watches = [w for w in self._watches.values() if w.alive()]
        return [WatchInfo(w.thread_name, w.stall_ms, w.period_ns / 1e6, w.since_ns)
                for w in watches]

    def stall_count(self) -> int | str:
        """Stalls recorded since watching began, or "off" when no loop is watched (index)."""
        if not self.watching():
            return "off"
        return self._history.seen

    def clear(self) -> None:
        """Forget every recorded stall (tests; a fresh process starts empty anyway)."""
        self._history = _History()
        if self.watching():
            self._history.begin()

    def _record(self, stall: Stall) -> None:
        self._history.add(stall)

    def _record_starved(self, late_ns: int) -> None:
        self._history.add_starved(late_ns)

    def capture(self, since_ns: int | None = None, max_depth: int = 128) -> StallCapture:
        """Stalls that ended after ``since_ns`` (monotonic ns), or all since watching began."""
        history, now, wall = self._history, time.monotonic_ns(), time.time_ns()
        with history.lock:
            stalls = tuple(history.stalls)
            started = history.started_ns if history.started_ns is not None else now
            if since_ns is None:
                totals: Mapping[_AggKey, Sequence[int]] = {
                    key: tuple(v) for key, v in history.totals.items()}
                seen, dropped = history.seen, history.dropped
            else:
                stalls = tuple(s for s in stalls if s.end_ns > since_ns)
                totals = _aggregate(stalls)
                dropped = sum(1 for end in history.dropped_ends if end > since_ns)
                seen = len(stalls) + dropped
            starved = (history.starved, history.starved_ns)
        begin = started if since_ns is None else max(since_ns, started)
        unmeasured = sum(1 for s in stalls if s.stack == (NO_EVIDENCE,))
        comments = self._comments(seen, dropped, since_ns, now - begin, starved, unmeasured)
        profile = Profile(
            sample_types=(CONTENTIONS, DELAY), samples=_samples(totals, max_depth),
            period_type=CONTENTIONS, period=1, time_ns=wall - (now - begin),
            duration_ns=now - begin, comments=comments, default_sample_type=DELAY.type,
        )
        return StallCapture(profile, stalls, self._threshold_ms, now, seen, dropped)

    def _comments(self, seen: int, dropped: int, since_ns: int | None, window_ns: int,
                  starved: tuple[int, int], unmeasured: int = 0) -> tuple[str, ...]:
        out = [
            f"loop stall threshold {self._threshold_ms} ms: a stall is an event loop that may "
            f"have been held that long (looked at every {self._period_ms:g} ms); durations are "
            "lower bounds",
            f"loops watched now: {len(self.watching())}",
            f"stalls: {seen} in the last {window_ns / 1e9:.1f} s "
            + ("(since watching began)" if since_ns is None else "(the requested window)"),
        ]
        if starved[0]:
            out.append(f"not stalls: {starved[0]} times since watching began the loop answered "
                       f"late ({starved[1] / 1e6:.0f} ms in all) only because it was not run "
                       "(waiting for a CPU, or the whole process was not scheduled)")
        if unmeasured:
            out.append(f"{unmeasured} of the kept stalls had neither a sampled stack nor the "
                       "loop thread's CPU time (no scheduler statistics here): the loop answered "
                       "late, held or not run (starved); nothing tells which")
        if not self.watching():
            out.append("no asyncio event loop is watched (none running, or the server runs "
                       "another event loop such as trio): stalls cannot be seen")
        if dropped and since_ns is None:
            out.append(f"{dropped} older stalls are no longer kept one by one (history holds "
                       f"the last {MAX_STALLS}); they are still counted in this profile")
        elif dropped:
            out.append(f"{dropped} stalls of this window are missing from it: they fell out of "
                       f"the kept history (the last {MAX_STALLS} stalls)")
        return tuple(out)

    def _after_fork_in_child(self) -> None:
        """A forked child has none of the parent's watchdog threads: drop their watches (a
        new loop there starts its own), and renew the locks a watchdog may have held at the
        fork (it records a stall under the history's lock), which nothing would release."""
        self._lock = threading.Lock()
        self._history.lock = threading.Lock()
        self._watches.clear()

    def _forget(self, watch: _Watch) -> None:
        """A watchdog that ended by itself (loop stopped or closed) drops out."""
        with self._lock:
            if self._watches.get(watch.loop) is watch:
                del self._watches[watch.loop]


def _aggregate(stalls: Iterable[Stall]) -> dict[_AggKey, list[int]]:
    totals: dict[_AggKey, list[int]] = {}
    for stall in stalls:
        _add(totals, stall)
    return totals


def _samples(totals: Mapping[_AggKey, Sequence[int]], max_depth: int) -> tuple[Sample, ...]:
    merged: dict[_AggKey, list[int]] = {}
    for (stack, thread, task, route), (count, delay) in totals.items():
        entry = merged.setdefault((stack[:max_depth], thread, task, route), [0, 0])
        entry[0] += count
        entry[1] += delay
    samples = []
    for (stack, thread, task, route), (count, delay) in merged.items():
        labels = {"thread": thread}
        if task:
            labels["task"] = task
        if route:
            labels["route"] = route
        samples.append(Sample(stack, (count, delay), labels))
    return tuple(samples)


def _loop_thread(loop: asyncio.AbstractEventLoop) -> tuple[int, int | None, str]:
    """The ident, native id and name of the thread that runs ``loop``: the caller's, else as
    registered."""
    if asyncio._get_running_loop() is loop:
        return threading.get_ident(), threading.get_native_id(), threading.current_thread().name
    ident: object = None
    for info in LOOPS.running():
        if info.loop is loop:
            ident = info.thread_ident
    if ident is None:
        ident = getattr(loop, "_thread_id", None)  # asyncio's own loops, while running
    if not isinstance(ident, int):
        raise ValueError("the loop is not running: start() must be called on the loop's thread")
    thread = threading._active.get(ident)  # type: ignore[attr-defined]
    if thread is None:
        return ident, None, f"thread-{ident}"
    return ident, thread.native_id, thread.name


WATCHDOGS = Watchdogs()
if hasattr(os, "register_at_fork") and "_fork_hook_registered" not in globals():
    # late-bound (a reload makes a new WATCHDOGS); not on Windows
    os.register_at_fork(after_in_child=lambda: WATCHDOGS._after_fork_in_child())
    _fork_hook_registered = True


def stall_samples(stalls: Iterable[Stall], max_depth: int = 128) -> tuple[Sample, ...]:
    """The samples of a stalls profile built from ``stalls`` (the pusher picks which stalls it
    has not pushed yet: a stall is recorded a few ms after it ends, so selecting by end time
    alone would miss one that ended just before a push and was recorded just after)."""
    return _samples(_aggregate(stalls), max_depth)
