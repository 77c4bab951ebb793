"""Event-loop stalls: the ``block`` endpoint's collector (a watchdog thread per event loop).

An asyncio loop that runs a blocking call (``time.sleep``, a sync driver, a CPU-bound parse) does
not come back to its other tasks until the call returns; every request on that loop waits. Go's
block profile answers "where do goroutines wait?"; for an event loop the question is "what held
the loop, for how long, on which route?". Two halves answer it:

- **A heartbeat on the loop**: a ``call_later`` callback that re-arms itself every period
  (``stall_ms / 4``, at most 10 ms) and remembers when it is due. When it runs, its lateness
  (ran at - due at) is how long the loop did not come back, recorded there and then, so no
  stall is missed for want of a stack. The lateness is a lower bound: the block may have begun
  up to one period before the beat was due (under load, callbacks queued behind the block add
  to it; measured -8..+7 ms, median -1 ms, for 110-150 ms blocks). So a stall is recorded when
  it *may* have reached ``stall_ms`` (lateness + period >= threshold): a block of exactly the
  threshold is then always caught (measured against the lateness alone, 65 % were), and one up
  to a period shorter sometimes is; the duration shown stays the lateness.
- **A watchdog thread** (``pyprof_http-watchdog``) that sleeps until the pending beat is half a
  threshold overdue, then reads the loop thread's stack with ``sys._current_frames()`` every
  ``stall_ms / 4`` (sparser as a stall goes on; at most 64 samples), with the task holding the
  loop and its route. It never calls into the loop; a sample taken once the beat has run is
  thrown away (the loop was back: it would show the heartbeat or the selector, not the block).
  A busy loop may starve it of the GIL (DESIGN §5), which is harmless: a stall gives it the GIL
  within the 5 ms switch interval (pure Python) or at once (a blocking syscall). A C call that
  holds the GIL throughout is sampled the moment it returns, before the loop reaches the beat,
  so its caller's line is shown; ``<not sampled>`` is left for stalls no sample reached. The
  thread ends by itself once the loop stops running or closes, so a mount-only app whose
  shutdown never reaches us leaves no thread behind.

Costs (``benchmarks/loop.py``, 2-CPU VM, threshold 100 ms): under load the heartbeat rides on
iterations the loop makes anyway, and heartbeat plus watchdog take ~0.3 % of a core (throughput
on/off within the host's noise; a busy loop's CPU for fixed work x1.00); the watchdog thread
wakes ~17 times a second (~2-3 ms CPU/s). An *idle* loop is woken 100 times a second by the
heartbeat, ~20 ms CPU/s on that VM (a wake-up of an idle process costs ~190 µs there); a 20 ms
period saves only a quarter of that and doubles the duration error, hence 10 ms.

The profile is Go's block profile: ``contentions/count`` and ``delay/nanoseconds``, one sample
per (blocking stack, thread, task, route), where the blocking stack is the one sampled most
often (ties: the first). ``delay`` is the default type, as pprof picks Go's last one: time the
loop was lost is what ranks stalls; their count alone would rank a 1 s parse with a 100 ms one.
Request ids stay out of the profile (one per request) and are kept on each :class:`Stall`.
Memory is bounded: the last :data:`MAX_STALLS` stalls are kept one by one (``seconds=N``
windows are built from them), and a cumulative aggregate, itself capped at :data:`MAX_KEYS`,
covers everything since the first watch started.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from ..loops import LOOPS, running_task
from ..model import Frame, Profile, Sample, frame
from ..request_labels import task_request
from .frames import frame_stack
from .locks import CONTENTIONS, DELAY

THREAD_NAME: Final = "pyprof_http-watchdog"
MAX_STALLS: Final = 10_000
"""Stalls kept individually (for windows and the text view); older ones live in the aggregate."""
MAX_SAMPLES_PER_STALL: Final = 64
MAX_STACKS_PER_STALL: Final = 8
"""Distinct stacks a :class:`Stall` keeps (most sampled first): bounds the history's memory."""
MAX_KEYS: Final = 10_000
"""Aggregate entries before new ones lose the task label (task names can be unique per task)."""
MAX_PERIOD_NS: Final = 10_000_000
JOIN_TIMEOUT_S: Final = 2.0
NOT_SAMPLED: Final = frame("<not sampled>", "<the loop thread held the GIL throughout>", 0)
OTHER: Final = frame("<other stacks>", "<aggregate limit reached>", 0)

_Key = tuple[tuple[Frame, ...], str, str, str]
"""A sample of a stall: stack, task name, route, request id ("" when absent)."""
_AggKey = tuple[tuple[Frame, ...], str, str, str]
"""An aggregate entry: stack, thread name, task name, route."""


@dataclass(frozen=True, slots=True)
class Stall:
    """One time the loop did not come back for at least the threshold."""

    start_ns: int
    """``time.monotonic_ns()`` when the stall began (its end minus its duration)."""
    start_wall_ns: int
    """``time.time_ns()`` of the same instant."""
    duration_ns: int
    stack: tuple[Frame, ...]
    """The blocking stack, innermost first: the one sampled most often."""
    stacks: tuple[tuple[tuple[Frame, ...], int], ...]
    """Distinct stacks sampled during the stall with their counts, most sampled first."""
    task: str
    route: str
    request_id: str
    thread: str

    @property
    def end_ns(self) -> int:
        return self.start_ns + self.duration_ns


@dataclass(frozen=True, slots=True)
class StallCapture:
    """The ``block`` profile and the stalls it was built from."""

    profile: Profile
    stalls: tuple[Stall, ...]
    """Individual stalls in the capture (oldest first; the bounded history only)."""
    threshold_ms: int
    taken_ns: int
    """``time.monotonic_ns()`` at capture, so a renderer can say how long ago a stall was."""
    seen: int
    """Stalls in the capture's window, kept individually or not."""
    dropped: int
    """Of those, how many fell out of the bounded history: not in ``stalls``; still in the
    profile of a whole capture (``since_ns=None``), missing from a window's."""


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

    def begin(self) -> None:
        with self.lock:
            if self.started_ns is None:
                self.started_ns, self.started_wall_ns = time.monotonic_ns(), time.time_ns()

    def add(self, stall: Stall) -> None:
        with self.lock:
            if len(self.stalls) == self.stalls.maxlen:
                self.dropped += 1
                self.dropped_ends.append(self.stalls[0].end_ns)
            self.stalls.append(stall)
            self.seen += 1
            _add(self.totals, stall)


def _add(totals: dict[_AggKey, list[int]], stall: Stall) -> None:
    """Count ``stall`` in an aggregate of (stack, thread, task, route) -> [count, delay]."""
    key = _bounded_key(totals, (stall.stack, stall.thread, stall.task, stall.route))
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


class _Watch:
    """The heartbeat and the watchdog thread of one loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, ident: int, thread_name: str,
                 stall_ms: int, max_depth: int, record: Callable[[Stall], None],
                 on_exit: Callable[[_Watch], None]) -> None:
        self.loop, self.ident, self.thread_name = loop, ident, thread_name
        self.stall_ms, self.stall_ns, self.max_depth = stall_ms, stall_ms * 1_000_000, max_depth
        self.period_ns = max(1_000_000, min(MAX_PERIOD_NS, self.stall_ns // 4))
        self.since_ns = time.monotonic_ns()
        self.stopped = False
        self._record, self._on_exit = record, on_exit
        self._pending = (0, self.since_ns + self.period_ns)
        """(beat number, due at): one tuple, so the watchdog never reads half an update."""
        self._samples: Counter[_Key] = Counter()
        self._samples_seq = -1
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._handle: asyncio.TimerHandle | None = None
        self.thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)

    def start(self) -> None:
        if asyncio._get_running_loop() is self.loop:
            self._arm()
        else:
            self.loop.call_soon_threadsafe(self._arm)
        self.thread.start()

    def alive(self) -> bool:
        return not self.stopped and self.thread.is_alive()

    def stop(self) -> None:
        """Stop beating and join the watchdog (bounded); safe on the loop thread."""
        if asyncio._get_running_loop() is self.loop:  # the loop is back: end a pending stall
            self._beat(rearm=False)
            if self._handle is not None:
                self._handle.cancel()  # elsewhere cancel() is not thread-safe: see `stopped`
        self.stopped = True
        self._wake.set()
        if threading.current_thread() is not self.thread and self.thread.ident is not None:
            self.thread.join(JOIN_TIMEOUT_S)

    # ---- the loop side ----------------------------------------------------------------------

    def _arm(self) -> None:
        if self.stopped:
            return
        self._pending = (self._pending[0], time.monotonic_ns() + self.period_ns)
        self._handle = self.loop.call_later(self.period_ns / 1e9, self._beat)

    def _beat(self, rearm: bool = True) -> None:
        now = time.monotonic_ns()
        if self.stopped:
            return
        seq, due = self._pending
        self._pending = (seq + 1, now + self.period_ns)
        if rearm:
            self._handle = self.loop.call_later(self.period_ns / 1e9, self._beat)
        if now - due + self.period_ns >= self.stall_ns:  # it may have lasted the threshold
            self._complete(seq, now - due, now)

    def _complete(self, seq: int, duration_ns: int, end_ns: int) -> None:
        with self._lock:
            samples = self._samples if self._samples_seq == seq else Counter()
            self._samples, self._samples_seq = Counter(), -1
        ranked = samples.most_common()  # stable: ties keep the first-sampled order
        stack, task, route, request_id = ranked[0][0] if ranked else ((NOT_SAMPLED,), "", "", "")
        stacks: Counter[tuple[Frame, ...]] = Counter()
        for (sampled, *_labels), count in ranked:
            stacks[sampled] += count
        start_ns = end_ns - duration_ns
        self._record(Stall(
            start_ns=start_ns, start_wall_ns=time.time_ns() - (time.monotonic_ns() - start_ns),
            duration_ns=duration_ns, stack=stack,
            stacks=tuple(stacks.most_common(MAX_STACKS_PER_STALL)),
            task=task, route=route, request_id=request_id, thread=self.thread_name,
        ))

    # ---- the watchdog thread ----------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self.stopped and not self.loop.is_closed() and self.loop.is_running():
                self._wake.wait(self._check(time.monotonic_ns()))
        finally:
            self.stopped = True
            self._on_exit(self)

    def _check(self, now: int) -> float:
        """Sample if the pending beat is half a threshold overdue; seconds until the next look."""
        seq, due = self._pending
        sample_from = due + (self.stall_ns - self.period_ns) // 2
        if now < sample_from:
            return max(sample_from - now, 1_000_000) / 1e9
        taken = self._sample(seq)
        interval = max(self.stall_ns // 4, (now - due) // 16)  # sparser as a long stall goes on
        if taken >= MAX_SAMPLES_PER_STALL:
            interval = max(interval, self.stall_ns)  # only watch for the end now
        return interval / 1e9

    def _sample(self, seq: int) -> int:
        """Add one sample of the loop thread to stall ``seq``; how many it has."""
        top = sys._current_frames().get(self.ident)
        if top is None or self._pending[0] != seq or top.f_code is _BEAT_CODE:
            return 0  # the loop came back meanwhile: this stack is not the block
        task = running_task(self.loop)
        request = task_request(task) if task is not None else None
        route, request_id = request if request is not None else ("", "")
        key = (frame_stack(top, self.max_depth), task.get_name() if task is not None else "",
               route, request_id)
        del top
        with self._lock:
            if self._samples_seq != seq:
                self._samples, self._samples_seq = Counter(), seq
            self._samples[key] += 1
            return self._samples.total()


_BEAT_CODE = _Watch._beat.__code__


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
        ident, name = _loop_thread(loop)
        with self._lock:
            watch = self._watches.get(loop)
            if watch is not None and watch.alive():
                return
            watch = _Watch(loop, ident, name, stall_ms, max_depth, self._record,
                           self._forget)
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
        begin = started if since_ns is None else max(since_ns, started)
        comments = self._comments(seen, dropped, since_ns, now - begin)
        profile = Profile(
            sample_types=(CONTENTIONS, DELAY), samples=_samples(totals, max_depth),
            period_type=CONTENTIONS, period=1, time_ns=wall - (now - begin),
            duration_ns=now - begin, comments=comments, default_sample_type=DELAY.type,
        )
        return StallCapture(profile, stalls, self._threshold_ms, now, seen, dropped)

    def _comments(self, seen: int, dropped: int, since_ns: int | None,
                  window_ns: int) -> tuple[str, ...]:
        out = [
            f"loop stall threshold {self._threshold_ms} ms: a stall is an event loop coming "
            f"back at least that late to a heartbeat due every {self._period_ms:g} ms; "
            "durations are lower bounds, short by up to one heartbeat period",
            f"loops watched now: {len(self.watching())}",
            f"stalls: {seen} in the last {window_ns / 1e9:.1f} s "
            + ("(since watching began)" if since_ns is None else "(the requested window)"),
        ]
        if dropped and since_ns is None:
            out.append(f"{dropped} older stalls are no longer kept one by one (history holds "
                       f"the last {MAX_STALLS}); they are still counted in this profile")
        elif dropped:
            out.append(f"{dropped} stalls of this window are missing from it: they fell out of "
                       f"the kept history (the last {MAX_STALLS} stalls)")
        return tuple(out)

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


def _loop_thread(loop: asyncio.AbstractEventLoop) -> tuple[int, str]:
    """The ident and name of the thread that runs ``loop``: the caller's, else as registered."""
    if asyncio._get_running_loop() is loop:
        return threading.get_ident(), threading.current_thread().name
    for info in LOOPS.running():
        if info.loop is loop:
            return info.thread_ident, info.thread_name
    ident = getattr(loop, "_thread_id", None)  # asyncio's own loops, while running
    if not isinstance(ident, int):
        raise ValueError("the loop is not running: start() must be called on the loop's thread")
    thread = threading._active.get(ident)  # type: ignore[attr-defined]
    return ident, thread.name if thread is not None else f"thread-{ident}"


WATCHDOGS = Watchdogs()
