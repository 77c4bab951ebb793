"""The pytest plugin, run on real pytest sessions (pytester).

Sessions whose tests leak threads run in a subprocess (a leaked thread must not outlive the
session into this one; each example releases what it leaked at session end). Sessions that
leak only tasks run in-process: pytest-asyncio and anyio close their loops after each test.
Leak checks there use a short retry budget (ini ``leak_check_max_sleep``) so that expected
failures do not each wait the default ~0.4 s.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest

pytest_plugins = ["pytester"]

HELPERS = '''
import asyncio
import concurrent.futures
import contextlib
import threading

RELEASE = []
KEEP = []  # what a real leak has: something still refers to the parked task (a client, a
# server object); unreferenced, the collector may destroy it first ("destroyed task" leaks)


async def wait_event(event):
    await event.wait()


def spawn_event_waiter():
    event = asyncio.Event()
    task = asyncio.get_running_loop().create_task(wait_event(event), name="event-waiter")
    KEEP.append(task)
    return task, event


async def drain(queue):
    await queue.get()


def spawn_queue_reader():
    task = asyncio.get_running_loop().create_task(drain(asyncio.Queue()), name="queue-reader")
    KEEP.append(task)
    return task


async def tick_forever():
    while True:
        await asyncio.sleep(3600)


def spawn_ticker():
    task = asyncio.create_task(tick_forever(), name="ticker")
    KEEP.append(task)
    return task


async def stop(task):
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def start_locked_thread():
    lock = threading.Lock()
    lock.acquire()
    thread = threading.Thread(target=lock.acquire, name="locked")
    thread.start()
    RELEASE.append(lambda: lock.locked() and lock.release())
    return thread, lock


def start_pool():
    pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="unshut")
    pool.submit(int).result()
    RELEASE.append(pool.shutdown)
    return pool
'''

CONFTEST = '''
import pytest

import helpers


def pytest_sessionfinish(session):
    for release in helpers.RELEASE:
        release()


@pytest.fixture
def anyio_backend():
    return "asyncio"
'''

INI = """
[pytest]
asyncio_default_fixture_loop_scope = function
leak_check_max_sleep = 0.002
"""

KINDS = '''
import asyncio

import pytest

import helpers

@pytest.mark.asyncio
async def test_event_leak():
    helpers.spawn_event_waiter()


@pytest.mark.asyncio
async def test_event_fixed():
    task, event = helpers.spawn_event_waiter()
    event.set()
    await task


@pytest.mark.asyncio
async def test_queue_leak():
    helpers.spawn_queue_reader()


@pytest.mark.asyncio
async def test_queue_fixed():
    await helpers.stop(helpers.spawn_queue_reader())


@pytest.mark.asyncio
async def test_create_task_leak():
    helpers.spawn_ticker()


@pytest.mark.asyncio
async def test_create_task_fixed():
    await helpers.stop(helpers.spawn_ticker())


@pytest.mark.asyncio
@pytest.mark.leak_check(max_sleep=0.1)
async def test_task_ending_within_the_budget():
    asyncio.create_task(asyncio.sleep(0.02))


def test_thread_leak():
    helpers.start_locked_thread()


def test_thread_fixed():
    thread, lock = helpers.start_locked_thread()
    lock.release()
    thread.join()


def test_pool_leak():
    helpers.start_pool()


def test_pool_fixed():
    helpers.start_pool().shutdown()


@pytest.mark.anyio
async def test_anyio_leak():
    helpers.spawn_event_waiter()


@pytest.mark.anyio
async def test_anyio_fixed():
    await helpers.stop(helpers.spawn_ticker())
'''

UNITTEST = '''
import unittest

import helpers


class Case(unittest.IsolatedAsyncioTestCase):
    task = None

    async def asyncTearDown(self):
        if self.task is not None:
            await helpers.stop(self.task)

    async def test_unittest_leak(self):
        helpers.spawn_queue_reader()

    async def test_unittest_stopped_in_teardown(self):
        self.task = helpers.spawn_ticker()

    async def test_unittest_stopped_in_a_cleanup(self):  # runs after asyncTearDown
        self.addAsyncCleanup(helpers.stop, helpers.spawn_ticker())
'''

LEAKED = {
    "test_event_leak": ("Event.wait", "spawn_event_waiter", "event-waiter"),
    "test_queue_leak": ("Queue.get", "spawn_queue_reader", "queue-reader"),
    "test_create_task_leak": ("sleep", "spawn_ticker", "ticker"),
    "test_thread_leak": ("locked", "start_locked_thread", "locked"),
    "test_pool_leak": ("ThreadPoolExecutor that was not shut down", "start_pool", "unshut_0"),
    "test_anyio_leak": ("Event.wait", "spawn_event_waiter", "event-waiter"),
    "test_unittest_leak": ("Queue.get", "spawn_queue_reader", "queue-reader"),
}


def _helpers_line(source: str, function: str, needle: str) -> int:
    """The line of ``helpers.py`` in ``function`` holding ``needle``: the creation site."""
    lines = HELPERS.lstrip("\n").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"def {function}("))
    return next(i for i in range(start, len(lines)) if needle in lines[i]) + 1


SITES = {
    "spawn_event_waiter": "create_task(wait_event",
    "spawn_queue_reader": "create_task(drain",
    "spawn_ticker": "create_task(tick",
    "start_locked_thread": "thread.start()",
    "start_pool": "pool.submit",
}


def failure_sections(output: str) -> dict[str, str]:
    """Each failed test's report section, by test name (``Class.test`` -> ``test``)."""
    parts = re.split(r"^_{3,} (\S+) _{3,}$", output, flags=re.MULTILINE)
    return {name.split(".")[-1].split("::")[-1]: re.split(r"^={3,}", body, flags=re.M)[0]
            for name, body in zip(parts[1::2], parts[2::2], strict=True)}


@pytest.fixture
def examples(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini(INI)
    pytester.makepyfile(helpers=HELPERS)
    pytester.makeconftest(CONFTEST)
    return pytester


def test_each_leak_kind_fails_its_own_test_with_its_creation_site(
        examples: pytest.Pytester) -> None:
    """Under pytest-xdist (two workers, each checking its own tests): one subprocess for it
    all, since starting sessions is what costs here."""
    examples.makepyfile(test_kinds=KINDS, test_unittest_case=UNITTEST)
    result = examples.runpytest_subprocess("-n", "2", "-p", "no:randomly",
                                           "-p", "no:cacheprovider", "--tb=short", "-rf",
                                           "--leak-check")
    failed = set(re.findall(r"^FAILED \S+::(?:Case::)?(\w+)", result.stdout.str(), re.M))
    assert failed == set(LEAKED), result.stdout.str()
    result.assert_outcomes(failed=len(LEAKED), passed=9)  # every fixed version passes
    sections = failure_sections(result.stdout.str())
    helpers = str(examples.path / "helpers.py")
    for test, (waits_on, spawner, name) in LEAKED.items():
        section = sections[test]
        assert "LeakError: found 1 leak" in section, section
        assert waits_on in section, section
        assert f'"{name}"' in section, section
        line = _helpers_line(HELPERS, spawner, SITES[spawner])
        creator = "created" if spawner.startswith("spawn") else "started"
        assert f"{creator} by {spawner} at {helpers}:{line}" in section, section


def test_auto_mode_the_inert_default_ini_and_a_failing_test(examples: pytest.Pytester) -> None:
    examples.makepyfile(test_auto='''
        import helpers

        async def test_leaks():
            helpers.spawn_event_waiter()

        async def test_clean():
            await helpers.stop(helpers.spawn_ticker())

        async def test_fails():
            helpers.spawn_ticker()
            assert 1 == 2
    ''')
    quiet = ("-p", "no:randomly", "-p", "no:cacheprovider", "-o", "asyncio_mode=auto")
    examples.runpytest(*quiet).assert_outcomes(passed=2, failed=1)  # not asked: not checked
    result = examples.runpytest(*quiet, "--leak-check", "-rf")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["FAILED test_auto.py::test_leaks - *",
                                 "FAILED test_auto.py::test_fails - assert 1 == 2"])
    sections = failure_sections(result.stdout.str())
    assert sections["test_leaks"].lstrip().startswith(  # the report alone, no traceback
        "pyprof_http.leaks.LeakError: found 1 leak (1 task)")
    # a test that failed anyway is reported as itself: its leftover task is no second report
    assert "LeakError" not in sections["test_fails"]
    examples.runpytest(*quiet, "-o", "leak_check=true").assert_outcomes(passed=1, failed=2)


def test_marker_switches_off_and_passes_ignore_rules(examples: pytest.Pytester) -> None:
    examples.makepyfile(test_marks='''
        import pytest

        import helpers
        from pyprof_http import leaks

        @pytest.mark.asyncio
        @pytest.mark.leak_check(False)
        async def test_off():
            helpers.spawn_event_waiter()

        @pytest.mark.asyncio
        @pytest.mark.leak_check(ignore=[leaks.ignore_name("event-*")])
        async def test_ignored_by_name():
            helpers.spawn_event_waiter()

        @pytest.mark.asyncio
        @pytest.mark.leak_check(ignore=[leaks.ignore_created_by("helpers.spawn_ticker")])
        async def test_ignored_by_creator():
            helpers.spawn_ticker()

        @pytest.mark.asyncio
        @pytest.mark.leak_check(ignore=[leaks.ignore_top_function("Queue.get")])
        async def test_rule_for_another_leak():
            helpers.spawn_event_waiter()

        @pytest.mark.asyncio
        async def test_fixture(no_leaks):
            helpers.spawn_ticker()

        @pytest.mark.asyncio
        async def test_unchecked():
            helpers.spawn_ticker()
    ''')
    result = examples.runpytest("-p", "no:randomly", "-p", "no:cacheprovider", "-rf",
                                "-o", "asyncio_mode=strict")
    result.assert_outcomes(passed=4, failed=2)  # only the marked/fixture tests are checked
    result = examples.runpytest("-p", "no:randomly", "-p", "no:cacheprovider", "-rf",
                                "--leak-check")
    failed = set(re.findall(r"^FAILED \S+::(\w+)", result.stdout.str(), re.M))
    assert failed == {"test_rule_for_another_leak", "test_fixture", "test_unchecked"}


def test_the_plugin_loads_inert_under_a_pluggy_without_new_style_wrappers() -> None:
    """pytest 7 locked with pluggy 1.0 has no ``hookimpl(wrapper=True)``: the entry point is
    loaded by every session there, which must still start; asking for the check says why
    it cannot run."""
    script = textwrap.dedent("""
        import types, pytest
        real = pytest.hookimpl
        def old_hookimpl(function=None, hookwrapper=False, optionalhook=False,
                         tryfirst=False, trylast=False, specname=None):
            return real(function, hookwrapper=hookwrapper, optionalhook=optionalhook,
                        tryfirst=tryfirst, trylast=trylast, specname=specname)
        pytest.hookimpl = old_hookimpl
        from pyprof_http import pytest_plugin as plugin
        print(hasattr(plugin, "pytest_runtest_call"))
        config = types.SimpleNamespace(getoption=lambda name: True, getini=lambda name: False,
                                       addinivalue_line=lambda *args: None)
        try:
            plugin.pytest_configure(config)
        except pytest.UsageError as error:
            print(error)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "False"
    assert "needs pytest >= 8" in done.stdout
