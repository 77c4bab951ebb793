"""The profile table: one row per endpoint, and everything else is derived from it.

Routes, the index page, the allowlist and parameter validation all read this table, so a new
profile is one row and cannot be half-registered (served but missing from the index, or listed
but unprotected). This is Go's ``profileDescriptions`` + ``profileSupportsDelta`` as data.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

from ._waiting import render_in_thread
from .captures.heap import HeapCapture, SampledHeapCapture
from .captures.leaks import LeakCapture
from .captures.objects import ObjectsCapture
from .captures.requests import RequestsCapture
from .captures.stacks import StackSnapshot, older_than
from .captures.stalls import StallCapture
from .captures.trace import TraceCapture
from .collectors import cpu, heap, heap_sampler, leak_runs, locks, objects, stacks, threads, tracing
from .collectors import trace as trace_collector
from .collectors.gc_leaks import GC_LEAKS
from .collectors.loop import WATCHDOGS
from .collectors.recorder import RECORDER
from .collectors.session import SESSIONS
from .collectors.trace_build import build as build_trace
from .config import Settings
from .errors import PreconditionFailed
from .model import Granularity, Profile, by_function
from .pprof.encode import render_pprof
from .render import Rendered, page_title, utf8
from .render.callgrind import render_callgrind
from .render.dump import render_dump
from .render.flamegraph import render_flamegraph
from .render.folded import render_folded
from .render.heap_text import render_any_heap_text
from .render.leak_dump import render_leak_dump
from .render.objects_text import render_objects_text
from .render.profile_json import render_json
from .render.pstats_out import render_pstats
from .render.pyinstrument_html import render_pyinstrument
from .render.requests import render_requests_html, render_requests_json, render_requests_text
from .render.speedscope import render_speedscope
from .render.stalls_text import render_stalls_text
from .render.text import TEXT_PLAIN, render_text
from .render.top import render_top
from .render.trace_chrome import render_trace_chrome
from .render.trace_html import render_trace_html
from .render.trace_text import render_trace_text
from .request_profiles import REQUESTS

if TYPE_CHECKING:
    from .params import ProfileQuery


class Capture(Protocol):
    """What a collector returns: at least a profile; richer captures add their own views."""

    @property
    def profile(self) -> Profile: ...


@dataclass(frozen=True, slots=True)
class ProfileCapture:
    """A capture that is only a profile, e.g. the difference of two captures."""

    profile: Profile


@dataclass(frozen=True, slots=True)
class Format:
    """One output format of a profile."""

    render: Callable[[Capture, str], Rendered]
    delta: bool = True
    """Whether it can show a delta (``seconds=N``), which is a bare profile."""
    modes: frozenset[str] | None = None
    """The ``mode`` values it applies to (None: all)."""
    granularity: Granularity | None = None
    """For a format that draws frames: what a frame is unless ``granularity=`` says otherwise
    (None: the format takes no ``granularity`` parameter)."""

    def render_at(self, capture: Capture, name: str, granularity: Granularity | None) -> Rendered:
        """Render, first widening frames to functions when that is the granularity asked for."""
        if self.granularity is not None and (granularity or self.granularity) == "functions":
            capture = ProfileCapture(by_function(capture.profile))
        return self.render(capture, name)


@dataclass(frozen=True, slots=True)
class CollectContext:
    """What a collector may use: the settings, the validated query, and a wait that ends early
    when the client disconnects or the app shuts down."""

    settings: Settings
    query: ProfileQuery
    wait: Callable[[float, threading.Event | None], Awaitable[None]]


Collector = Callable[[CollectContext], Awaitable[Capture]]


@dataclass(frozen=True, slots=True)
class ProfileSpec:
    """A row of the table. ``debug=N`` is an alias of ``debug_formats[N]``."""

    name: str
    description: str
    collect: Collector | None = None
    formats: Mapping[str, Format] = field(default_factory=dict)
    debug_formats: tuple[str, ...] = ("pprof", "text")
    count: Callable[[], int | str] | None = None
    delta: bool = False
    """``seconds=N`` means: the difference between two snapshots N seconds apart."""
    duration: int | None = None
    """``seconds=N`` means: record for N seconds; this is the default N (Go's 30)."""
    window: bool = False
    """``seconds=N`` means: watch a window of N seconds (no default; the collector decides)."""
    params: frozenset[str] = frozenset({"debug", "format", "seconds"})
    link_query: Callable[[], str] | None = None
    """Extra query for the index's links (heap without tracing links to a 10 s window)."""
    raw: Callable[[], Rendered] | None = None
    """For pseudo profiles such as cmdline: the whole answer, taking no parameters."""
    quiet_gc: bool = False
    """Pause the cyclic garbage collector while one capture is taken and rendered: its tens of
    thousands of short-lived records, promoted by the collections they would set off, bring on
    full collections of the application's heap, which hold the GIL (the event loop's too)
    for hundreds of milliseconds. Only for captures built in bounded time."""

    @property
    def default_format(self) -> str:
        return self.debug_formats[0]


_C = TypeVar("_C")


def _needs(kind: type[_C], render: Callable[[_C, str], Rendered], why: str) -> Format:
    """A format that needs its collector's own capture, not the bare profile of a delta."""

    def checked(capture: Capture, name: str) -> Rendered:
        if not isinstance(capture, kind):
            raise TypeError(why)
        return render(capture, name)

    return Format(checked, delta=False)


def _profile_formats(*only: str) -> dict[str, Format]:
    """The formats every sample profile can offer (``only`` these, if named)."""
    formats = {
        "pprof": Format(lambda c, name: render_pprof(c.profile, name)),
        "text": Format(lambda c, name: render_text(c.profile, name)),
        "flamegraph": Format(lambda c, name: render_flamegraph(c.profile, page_title(name)),
                             granularity="functions"),
        "folded": Format(lambda c, name: render_folded(c.profile)),
        "speedscope": Format(lambda c, name: render_speedscope(c.profile, name)),
        "json": Format(lambda c, name: render_json(c.profile, name)),
    }
    return {name: formats[name] for name in only} if only else formats




async def _collect_stacks(context: CollectContext) -> Capture:
    delta = context.query.seconds is not None
    snapshot = await stacks.collect(context.settings.max_stack_depth, skip_self=delta)
    if context.query.min_age is not None:
        return older_than(snapshot, context.query.min_age)
    return snapshot


async def _collect_leaks(context: CollectContext) -> Capture:
    """Leaks recorded so far (or during ``seconds``), after a collection unless ``gc=0``."""
    since = None
    if context.query.seconds is not None:
        since = (time.monotonic_ns(), GC_LEAKS.counts())
        await context.wait(context.query.seconds, None)
    comments = [leak_runs.watched_comment()]
    if context.query.gc != 0:
        # describe every pending task first: CPython closes a garbage coroutine before its
        # task's finalizer runs, so the chain can only be read before the collection
        run = await leak_runs.collect_on_request(context.settings.max_stack_depth)
        comments.append(run.comment())
    else:
        comments.append("gc=0: no collection was run; leaks found by the application's own "
                        "collections only")
    return GC_LEAKS.capture(since, tuple(comments))


async def _collect_cpu(context: CollectContext) -> Capture:
    query, settings = context.query, context.settings
    if query.last is not None:  # the flight recorder's last N seconds, at once
        return ProfileCapture(await render_in_thread(RECORDER.running().profile, query.last))
    seconds = query.duration(BY_NAME["profile"], settings)
    if query.mode == "cpu" and not sys.platform.startswith("linux"):
        raise PreconditionFailed("mode=cpu reads per-thread CPU clocks, which pyprof_http only "
                                 "knows how to read safely on Linux; use mode=wall or tracing")
    what = f"{query.mode} ({query.clock} clock)" if query.mode == "tracing" else query.mode
    # a scraper's next window may arrive just before the previous one has let go of the slot
    await SESSIONS.await_turn("cpu", SCRAPE_GRACE_S, lambda s: context.wait(s, None))
    with SESSIONS.claim("cpu", what, seconds) as stop:
        if query.mode == "tracing":
            return await tracing.trace(query.clock, seconds, lambda s: context.wait(s, stop))
        return await cpu.record(query.mode, query.hz, seconds, settings.max_stack_depth,
                                lambda s: context.wait(s, stop))


SCRAPE_GRACE_S = 1.0
"""A CPU profile due to end within this many seconds (or overdue by less) is waited for rather
than answered with 409: back-to-back scrape windows that overlap by a few hundred ms
(``collectors.session.await_turn``). Longer, and it would be a concurrent profile: 409 at once."""


async def _collect_recorder(context: CollectContext) -> Capture:
    recorder = RECORDER.running()
    return ProfileCapture(await render_in_thread(recorder.profile, recorder.seconds))


async def _collect_requests(context: CollectContext) -> Capture:
    return REQUESTS.capture()


def _requests_view(render: Callable[[RequestsCapture, str], Rendered]) -> Callable[
        [Capture, str], Rendered]:
    def view(capture: Capture, name: str) -> Rendered:
        if not isinstance(capture, RequestsCapture):
            raise TypeError("the requests views need the requests capture")
        return render(capture, name)

    return view


def _heap_count() -> str:
    """The index shows what tracing costs in memory, since it is the reason it is off; with
    the sampler, its estimate of what is in use and its own memory."""
    if heap_sampler.running():
        sampled = heap_sampler.state()
        return (f"~{sampled.inuse_bytes / 2**20:.1f} MiB in use (sampled, "
                f"+{sampled.memory_bytes / 2**20:.1f} MiB)")
    if not heap.is_tracing():
        return "off"
    state = heap.read_state()
    return (f"{state.traced_current / 2**20:.1f} MiB traced "
            f"(+{state.tracemalloc_memory / 2**20:.1f} MiB)")


def _uses_sampler(context: CollectContext) -> bool:
    """``source=sampler``, or no source while the sampler runs (412 if asked and off)."""
    source = context.query.source
    if source == "sampler" and not heap_sampler.running():
        raise PreconditionFailed(heap_sampler.why_not_running())
    return source == "sampler" or (source is None and heap_sampler.running())


async def _collect_sampled(context: CollectContext, default_type: str) -> Capture:
    gc_first, seconds = context.query.gc == 1, context.query.seconds
    if seconds is None:
        return await render_in_thread(heap_sampler.capture_now, default_type, gc_first)
    before = await render_in_thread(heap_sampler.profile_now, default_type, gc_first)
    await context.wait(seconds, None)
    after = await render_in_thread(heap_sampler.profile_now, default_type, gc_first)
    return await render_in_thread(heap_sampler.window, before, after, seconds)


async def _collect_allocs(context: CollectContext) -> Capture:
    if _uses_sampler(context):
        return await _collect_sampled(context, "alloc_space")
    return await _collect_heap(context)


async def _collect_heap(context: CollectContext) -> Capture:
    query, settings = context.query, context.settings
    gc_first = query.gc == 1
    if _uses_sampler(context):
        return await _collect_sampled(context, "inuse_space")
    if query.seconds is None:
        if not heap.is_tracing():
            raise PreconditionFailed(heap.NOT_TRACING_REASON)
        return await render_in_thread(heap.snapshot_profile, "", gc_first)
    with SESSIONS.claim("heap", "heap window", query.seconds) as stop:
        return await heap.trace_window(query.seconds, settings.heap_frames,
                                       lambda s: context.wait(s, stop), gc_first=gc_first)


async def _collect_objects(context: CollectContext) -> Capture:
    first = await render_in_thread(objects.histogram)
    if context.query.seconds is None:
        return first
    await context.wait(context.query.seconds, None)
    return objects.growth(first, await render_in_thread(objects.histogram))


def _mutex_count() -> int | str:
    return locks.contentions() if locks.is_enabled() else "off"


async def _collect_mutex(context: CollectContext) -> Capture:
    if not locks.is_enabled():
        raise PreconditionFailed(locks.NOT_ENABLED_REASON)
    return ProfileCapture(locks.snapshot(context.settings.max_stack_depth))


async def _collect_block(context: CollectContext) -> Capture:
    since = None
    if context.query.seconds is not None:  # stalls that end within the window
        since = time.monotonic_ns()
        await context.wait(context.query.seconds, None)
    return WATCHDOGS.capture(since, context.settings.max_stack_depth)


async def _collect_threadcreate(context: CollectContext) -> Capture:
    return ProfileCapture(threads.collect(threads.THREAD_STARTS))


async def _collect_trace(context: CollectContext) -> Capture:
    """Record the timeline for ``seconds`` (default 1), then build it off the loop, with the
    stalls the watchdog saw end in the window."""
    seconds = context.query.seconds or 1
    with SESSIONS.claim("trace", "trace", seconds) as stop:
        recording = await trace_collector.record(
            seconds, lambda s: context.wait(s, stop), context.settings.max_stack_depth)
    stalls = WATCHDOGS.capture(recording.started_ns).stalls
    return await render_in_thread(build_trace, recording, stalls)


def _render_heap_text(capture: Capture, name: str) -> Rendered:
    if not isinstance(capture, (HeapCapture, SampledHeapCapture)):
        raise TypeError("the heap text needs a heap capture (its footer shows the source's "
                        "figures)")
    return render_any_heap_text(capture, name)


_heap_text = Format(_render_heap_text, delta=False)


def _tracing_only(render: Callable[[Any, str], Rendered]) -> Format:
    return Format(render, modes=frozenset({"tracing"}))


def _sampling_only(render: Callable[[Capture, str], Rendered]) -> Format:
    return Format(render, modes=frozenset({"cpu", "wall"}))


def _cmdline() -> Rendered:
    return Rendered(utf8("\0".join(sys.argv)), TEXT_PLAIN)


_HEAP_ROW: Final[dict[str, Any]] = {
    "formats": {**_profile_formats(), "text": _heap_text},
    "count": _heap_count,
    "link_query": lambda: "" if heap_sampler.running() or heap.is_tracing() else "seconds=10",
    "window": True,
    "params": frozenset({"debug", "format", "seconds", "gc", "source"}),
}
"""What /heap and /allocs share: they are one profile with another default sample type."""


PROFILES: tuple[ProfileSpec, ...] = (
    ProfileSpec(
        name="goroutine",
        description="Stack traces of all threads and all asyncio tasks, with what each task "
        "awaits, who awaits it and where it was created. Safe to take at any time: the event "
        "loop is held only while the task list and frames are read (about 2 µs a task), the "
        "rest is done on a worker thread, and concurrent requests share one snapshot.",
        collect=_collect_stacks,
        formats={**_profile_formats(), "dump": _needs(
            StackSnapshot, lambda snapshot, name: render_dump(snapshot),
            "the dump needs a stacks snapshot (only a live snapshot has states)")},
        debug_formats=("pprof", "text", "dump"),
        count=stacks.count,
        delta=True,
        quiet_gc=True,
        params=frozenset({"debug", "format", "seconds", "min_age"}),
    ),
    ProfileSpec(
        name="goroutineleak",
        description="Stack traces of all leaked tasks: pending asyncio tasks the garbage "
        "collector proved unreachable (parked on a Future, Event, Queue or Lock nobody else "
        "can reach), with what each awaited and where it was created. The request runs a full "
        "collection first (gc=0 skips it) on a worker thread. Tasks parked on something "
        "reachable (a module-level queue) are not found: see goroutine?min_age.",
        collect=_collect_leaks,
        formats={**_profile_formats("pprof", "text", "flamegraph", "folded", "json"),
                 "dump": _needs(LeakCapture, lambda capture, name: render_leak_dump(capture),
                                "the leak dump needs a leak capture (its individual records)")},
        debug_formats=("pprof", "text", "dump"),
        count=lambda: GC_LEAKS.total,
        window=True,
        params=frozenset({"debug", "format", "seconds", "gc"}),
    ),
    ProfileSpec(
        name="profile",
        description="CPU profile of every thread for seconds=N (default 30): mode=cpu weights "
        "each sample by the CPU its thread used, mode=wall counts time, mode=tracing records "
        "every call with yappi (slow: x5.6 wall, x22 cpu clock). Samples carry thread, task and "
        "route labels. One at a time; ~1-3% overhead at the default 100 Hz.",
        collect=_collect_cpu,
        formats={
            **_profile_formats(),
            "text": Format(lambda c, name: render_top(c.profile, name)),
            "pyinstrument": _sampling_only(
                lambda c, name: render_pyinstrument(c.profile, page_title(name))),
            "callgrind": _tracing_only(render_callgrind),
            "pstats": _tracing_only(render_pstats),
        },
        duration=30,
        params=frozenset({"debug", "format", "seconds", "mode", "hz", "clock", "last"}),
    ),
    ProfileSpec(
        name="recorder",
        description="The flight recorder: CPU samples of every thread taken all the time at "
        "recorder_hz (default 19, under 1% of throughput), kept per second for the last "
        "recorder_seconds (default 300), with thread, task, route and request_id labels. This "
        "is the whole window; /profile?last=N the last N seconds. The count column shows its "
        "rate, window and memory.",
        collect=_collect_recorder,
        formats={**_profile_formats(),
                 "text": Format(lambda c, name: render_top(c.profile, name)),
                 "pyinstrument": Format(
                     lambda c, name: render_pyinstrument(c.profile, page_title(name)))},
        count=RECORDER.describe,
        params=frozenset({"debug", "format"}),
    ),
    ProfileSpec(
        name="requests",
        description="Recently profiled requests, each with its own CPU profile (every format): "
        "those slower than slow_request_ms (default 1000), those whose X-Request-ID hash falls "
        "in request_sample_rate (the same choice in every service), and those an authorized "
        "client asked for with X-Pprof-Profile: 1 (sampled at 100 Hz; the response's "
        "X-Pprof-Request-Profile header links to it). Samples come from the flight recorder. "
        "format=html is a table linking to each; pprof holds them all, by request_id label.",
        collect=_collect_requests,
        formats={"pprof": Format(lambda c, name: render_pprof(c.profile, name)),
                 "html": Format(_requests_view(render_requests_html), delta=False),
                 "text": Format(_requests_view(render_requests_text), delta=False),
                 "json": Format(_requests_view(render_requests_json), delta=False)},
        debug_formats=("pprof", "text", "json"),
        count=lambda: len(REQUESTS),
        params=frozenset({"debug", "format"}),
    ),
    ProfileSpec(
        name="heap",
        description="A sampling of memory allocations of live objects, as Go's: an always-on "
        "sampler (one allocation per ~512 KiB, PYPROF_HEAP_SAMPLE_BYTES) answers at once with "
        "alloc_objects, alloc_space, inuse_objects, inuse_space (default), scaled; seconds=N "
        "shows the growth over a window; gc=1 collects first. source=tracemalloc gives exact "
        "answers by tracing (x3-x7 slower with 1 frame, x18-x33 with 32): a seconds=N window, "
        "or a snapshot while tracing (PYPROF_HEAP_TRACE_AT_START=1); without the sampler "
        "extension that is the only source.",
        collect=_collect_heap,
        **_HEAP_ROW,
    ),
    ProfileSpec(
        name="allocs",
        description="A sampling of all past memory allocations, as Go's: the heap profile "
        "with alloc_space as its default sample type (what continuous-profiling scrapers "
        "ask for); the same parameters as heap.",
        collect=_collect_allocs,
        **_HEAP_ROW,
    ),
    ProfileSpec(
        name="objects",
        description="Live objects by type (gc.get_objects, shallow sizes that never call the "
        "app's __sizeof__; ints, strs and floats are mostly not gc-tracked, so absent); "
        "seconds=N shows the types whose "
        "count grew. No tracing needed: ~0.2 s per million objects, off the event loop.",
        collect=_collect_objects,
        formats=_profile_formats("pprof", "flamegraph", "json") | {"text": _needs(
            ObjectsCapture, render_objects_text,
            "the objects table needs an objects capture (its per-type rows)")},
        window=True,
    ),
    ProfileSpec(
        name="mutex",
        description="Contended lock acquisitions (threading Lock/RLock and what is built on "
        "them: Condition, Queue, ...; asyncio Lock/Semaphore/Condition): who waited, how "
        "long, on which lock. Off by default (PYPROF_LOCK_PROFILE_FRACTION=N records 1 in N; "
        "~2x on an uncontended acquire). seconds=N shows a window.",
        collect=_collect_mutex,
        formats=_profile_formats(),
        count=_mutex_count,
        delta=True,
    ),
    ProfileSpec(
        name="block",
        description="Event-loop stalls: code that kept the loop from coming back for longer "
        "than loop_stall_ms (default 100 ms), with its stack, duration, task and route. A "
        "watchdog thread per loop; debug=1 lists the worst stalls first. seconds=N watches a "
        "window.",
        collect=_collect_block,
        formats={**_profile_formats(), "text": _needs(
            StallCapture, render_stalls_text,
            "the stalls text needs a stalls capture (its per-stall records)")},
        count=WATCHDOGS.stall_count,
        window=True,
    ),
    ProfileSpec(
        name="threadcreate",
        description="Where each live thread was started (the stack that called Thread.start, "
        "recorded from install() on; older threads show their target function).",
        collect=_collect_threadcreate,
        formats=_profile_formats("pprof", "text", "folded", "json"),
        count=threading.active_count,
        delta=True,
    ),
    ProfileSpec(
        name="trace",
        description="A trace of the event loop for seconds=N (default 1): every task step and "
        "callback with its start, duration, task and request; each request from arrival to "
        "response, thread-pool work, GC pauses, loop stalls and the app's pyprof_http.mark() / "
        "span() markers. format=chrome (default) opens in Perfetto, chrome://tracing or "
        "speedscope; format=html is a timeline page; debug=1 says per request where the time "
        "went. One at a time; hooks are in place only during the window.",
        collect=_collect_trace,
        formats={
            "chrome": _needs(TraceCapture, render_trace_chrome, "a trace needs a trace capture"),
            "html": _needs(TraceCapture, render_trace_html, "a trace needs a trace capture"),
            "text": _needs(TraceCapture, render_trace_text, "a trace needs a trace capture"),
        },
        debug_formats=("chrome", "text"),
        window=True,
    ),
    ProfileSpec(
        name="cmdline",
        description="The command line invocation of the current program (sys.argv, "
        "NUL-separated).",
        raw=_cmdline,
    ),
)

BY_NAME: Mapping[str, ProfileSpec] = {spec.name: spec for spec in PROFILES}

REQUEST_PROFILE = ProfileSpec(
    name="request",
    description="One profiled request's CPU profile (/requests/<request_id>).",
    formats={**BY_NAME["recorder"].formats},
    params=frozenset({"debug", "format"}),
)
"""``/requests/<request_id>``: not a row of its own (served, and allowed, as ``requests``)."""


def allowed(settings: Settings) -> list[ProfileSpec]:
    """The rows this app serves, sorted by name as Go's index is."""
    return sorted((s for s in PROFILES if settings.allows(s.name)), key=lambda s: s.name)
