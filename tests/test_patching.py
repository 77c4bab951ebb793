"""_patching: another library's wrapper over one of our patches survives switching off *and*
switching on again (Sentry wraps ``Thread.start`` with ``functools.wraps``).

Switching on again used to put our new replacement in place of that wrapper, and the next
switch-off put the original back: the other library's hook was gone for good.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

_SCRIPT = textwrap.dedent("""
    import asyncio, functools, threading
    from pyprof_http.collectors import locks, threads

    def wrap(ours):
        @functools.wraps(ours)  # copies our marks too: only identity tells theirs from ours
        def theirs(*args, **kwargs):
            theirs.calls += 1
            return ours(*args, **kwargs)
        theirs.calls = 0
        return theirs

    def cycle(name, owner, attribute, on, off, use):
        original = vars(owner)[attribute]
        on()
        theirs = wrap(vars(owner)[attribute])
        setattr(owner, attribute, theirs)
        off()
        on()  # again, with their wrapper still over our earlier patch
        kept_on = vars(owner)[attribute] is theirs
        if name == "Thread.start":
            assert threads.THREAD_STARTS.installed, "ours runs under theirs: the hook is on"
        use()
        off()
        print(name, kept_on, vars(owner)[attribute] is theirs, theirs.calls)
        setattr(owner, attribute, original)

    def start_thread():
        worker = threading.Thread(target=lambda: None)
        worker.start()
        worker.join()
        assert threads.THREAD_STARTS.stack_of(worker) is not None, "ours still runs under theirs"

    async def contend():
        lock = asyncio.Lock()
        await lock.acquire()
        waiter = asyncio.ensure_future(lock.acquire())
        await asyncio.sleep(0)
        lock.release()
        await waiter

    cycle("Thread.start", threading.Thread, "start", lambda: threads.THREAD_STARTS.install(8),
          threads.THREAD_STARTS.uninstall, start_thread)
    cycle("threading.Lock", threading, "Lock", lambda: locks.set_fraction(1),
          lambda: locks.set_fraction(0), lambda: threading.Lock().acquire())
    cycle("asyncio.Lock.acquire", asyncio.Lock, "acquire", lambda: locks.set_fraction(1),
          lambda: locks.set_fraction(0), lambda: asyncio.run(contend()))
    print("contentions", locks.contentions())
""")


def test_a_foreign_wrapper_over_ours_survives_switching_off_and_on_again() -> None:
    done = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    # name, theirs in place while on again, theirs in place after off again, calls through it
    assert done.stdout.splitlines() == [
        "Thread.start True True 1",
        "threading.Lock True True 1",
        "asyncio.Lock.acquire True True 2",
        "contentions 1",  # recorded through their wrapper: ours runs under it
    ]


_PUT_BACK_SCRIPT = textwrap.dedent("""
    import asyncio, threading
    from pyprof_http import _patching
    from pyprof_http.collectors import locks, threads

    original_start, original_lock = threading.Thread.start, threading.Lock
    threads.THREAD_STARTS.install(8)
    locks.set_fraction(1)
    # a library that had patched before us puts back what it saved: ours is gone
    threading.Thread.start, threading.Lock = original_start, original_lock
    threads.THREAD_STARTS.uninstall()
    locks.set_fraction(0)
    threads.THREAD_STARTS.install(8)
    locks.set_fraction(1)
    print(_patching.is_ours(threading.Thread.start), _patching.is_ours(threading.Lock))
    threading.Thread.start = original_start  # put back while on: the hook is off
    assert not threads.THREAD_STARTS.installed
    threads.THREAD_STARTS.uninstall()
    locks.set_fraction(0)
    print(threading.Thread.start is original_start, threading.Lock is original_lock)
""")


def test_switching_on_again_after_ours_was_replaced_by_the_original_installs_ours() -> None:
    """Only a wrapper that says it wraps ours is left in place: the original put back over ours
    does not call ours, and leaving it would switch profiling on in name only."""
    done = subprocess.run([sys.executable, "-c", _PUT_BACK_SCRIPT], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["True True", "True True"]
