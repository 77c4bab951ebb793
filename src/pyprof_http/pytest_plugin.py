"""pytest plugin: fail the test that leaves tasks or threads behind (``pytest11`` entry point).

Inert until asked: ``pytest --leak-check`` (or ini ``leak_check = true``) checks every test;
``@pytest.mark.leak_check`` switches it on for a test, class or module
(``pytestmark = pytest.mark.leak_check``), ``@pytest.mark.leak_check(False)`` off, and takes
rules: ``@pytest.mark.leak_check(ignore=[leaks.ignore_name("pool-*")], retries=5)``; the
``no_leaks`` fixture switches it on for the test that asks for it.

Each checked test runs inside one :func:`pyprof_http.leaks.check`, taken around the test body
only (fixtures' own setup is the baseline; their teardown runs after the check, as goleak's
``defer VerifyNone`` runs before ``t.Cleanup``). A leak fails the test itself, in its call
phase, with the report; a test that failed anyway is not checked.

- async tests (pytest-asyncio in strict or auto mode, anyio's plugin): the test's coroutine
  function is wrapped so the check runs inside the test's own loop, right after the body
  returns and before the plugin cancels leftover tasks and closes the loop; retries yield to
  that loop. The task factory is installed on that loop for the test, so each task created in
  the body has its creation site.
- sync tests: threads (a thread running an event loop shows it in its stack).
- ``unittest.IsolatedAsyncioTestCase``: the baseline is taken when ``asyncSetUp`` starts and
  the check runs on the test's loop after ``asyncTearDown`` and the test's own cleanups.
- pytest-xdist: each worker checks its own tests.

The plugin imports :mod:`pyprof_http.leaks` only when a test is checked.
"""

from __future__ import annotations

import functools
import inspect
import unittest
from collections.abc import Callable, Generator
from typing import Any

import pytest

_ENABLED = pytest.StashKey[bool]()
"""Set on an item by the ``no_leaks`` fixture."""
_SESSION_CLAIM = pytest.StashKey[Any]()
"""A session-wide hold on the ``Thread.start`` hook while tests are checked, so that it is not
put in and taken out again for every test."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("leak-check", "pyprof_http leak checks")
    group.addoption("--leak-check", action="store_true", default=None,
                    help="fail each test that leaves asyncio tasks or threads behind "
                         "(pyprof_http.leaks; report: where each was created, what it waits on)")
    parser.addini("leak_check", type="bool", default=False,
                  help="check every test for leaked tasks and threads (as --leak-check)")
    parser.addini("leak_check_retries", type="string", default="20",
                  help="leak checks: attempts after the first before failing (default 20)")
    parser.addini("leak_check_max_sleep", type="string", default="0.1",
                  help="leak checks: longest sleep between attempts, seconds (default 0.1; "
                       "sleeps start at 1 us and double)")


def _new_style_wrapper() -> Callable[[Callable[..., Any]], Any] | None:
    """``pytest.hookimpl(wrapper=True)``, or None under a pluggy older than 1.1 (pytest 7
    locked with pluggy 1.0): this module is loaded by every pytest session of an environment
    that has pyprof_http installed, and must not break the ones that never ask for it."""
    try:
        return pytest.hookimpl(wrapper=True, tryfirst=True)
    except TypeError:
        return None


_WRAPPER = _new_style_wrapper()


def pytest_configure(config: pytest.Config) -> None:
    if _WRAPPER is None and (config.getoption("leak_check")
                             or config.getini("leak_check")):
        raise pytest.UsageError("--leak-check / leak_check needs pytest >= 8 (pluggy >= 1.1, "
                                "new-style hook wrappers); this pytest has an older pluggy")
    config.addinivalue_line(
        "markers", "leak_check(enabled=True, *, ignore=(), retries=20, max_sleep=0.1): check "
        "this test (module, class) for leaked tasks and threads, or not (False); ignore rules "
        "from pyprof_http.leaks.ignore_*")


def pytest_unconfigure(config: pytest.Config) -> None:
    claims = config.stash.get(_SESSION_CLAIM, None)
    if claims is not None:
        claims.release_all()
        del config.stash[_SESSION_CLAIM]


@pytest.fixture
def no_leaks(request: pytest.FixtureRequest) -> None:
    """Check this test for leaked tasks and threads (as ``@pytest.mark.leak_check``)."""
    request.node.stash[_ENABLED] = True


def _options(item: pytest.Item) -> dict[str, Any] | None:
    """The check's options for ``item``, or None when it is not checked: on with the option
    or the ini setting, unless the closest marker says otherwise; the ``no_leaks`` fixture
    always switches it on. Ignore rules add up over every marker (module, class, test)."""
    markers = list(item.iter_markers("leak_check"))
    enabled = bool(item.config.getoption("leak_check") or item.config.getini("leak_check"))
    if markers:
        closest = markers[0]
        enabled = bool(closest.args[0] if closest.args else closest.kwargs.get("enabled", True))
    if item.stash.get(_ENABLED, False):
        enabled = True
    if not enabled:
        return None
    options: dict[str, Any] = {"ignore": [rule for m in markers
                                          for rule in m.kwargs.get("ignore", ())]}
    for key, parse in (("retries", int), ("max_sleep", float)):
        given = next((m.kwargs[key] for m in markers if key in m.kwargs), None)
        options[key] = parse(item.config.getini(f"leak_check_{key}")) if given is None else given
    return options


def _runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    options = _options(item)
    if options is None:
        return (yield)
    from . import leaks  # only now: a session that checks nothing does not import pyprof_http

    _hold_thread_hook(item.config)
    try:
        return (yield from _checked_call(item, options))
    except leaks.LeakError as exc:  # the report is the message: no traceback through asyncio
        report = f"{type(exc).__module__}.{type(exc).__name__}: {exc}"
    pytest.fail(report, pytrace=False)


if _WRAPPER is not None:
    pytest_runtest_call = _WRAPPER(_runtest_call)


def _checked_call(item: pytest.Item, options: dict[str, Any]) -> Generator[None, Any, Any]:
    from . import leaks

    testcase = getattr(item, "_testcase", None)
    if isinstance(testcase, unittest.IsolatedAsyncioTestCase):
        return (yield from _unittest_async(testcase, options))
    function = getattr(item, "obj", None)
    if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(function):
        assert function is not None
        item.obj = _checked_coroutine(function, options)
        try:
            return (yield)
        finally:
            item.obj = function
    with leaks.check(**options):
        return (yield)


def _hold_thread_hook(config: pytest.Config) -> None:
    if _SESSION_CLAIM not in config.stash:
        from .switches import Claims

        claims = Claims()
        claims.hook_thread_start(16)
        config.stash[_SESSION_CLAIM] = claims


def _checked_coroutine(function: Callable[..., Any], options: dict[str, Any]
                       ) -> Callable[..., Any]:
    """``function`` run inside ``async with check()``: on whatever loop runs the test."""

    from . import leaks

    @functools.wraps(function)
    async def checked(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        async with leaks.check(**options):
            return await function(*args, **kwargs)

    return checked


def _unittest_async(testcase: unittest.IsolatedAsyncioTestCase, options: dict[str, Any]
                    ) -> Generator[None, Any, Any]:
    """Baseline when ``asyncSetUp`` starts; the check is the test's first async cleanup, so it
    runs last, on the test's loop, after ``asyncTearDown``, ``tearDown`` and every cleanup the
    test added (``addAsyncCleanup``, ``enterAsyncContext``: what they stop is no leak).
    unittest reports a :class:`LeakError` raised there as this test's failure."""
    from . import leaks

    check = leaks.check(**options)
    set_up = testcase.asyncSetUp

    async def check_last() -> None:
        __tracebackhide__ = True
        outcome = getattr(testcase, "_outcome", None)
        if outcome is not None and not getattr(outcome, "success", True):
            check.abandon()  # the test failed: that is the report
            return
        await check.aend()

    async def async_set_up() -> None:
        check.begin()
        testcase.addAsyncCleanup(check_last)  # cleanups run last-in first-out
        await set_up()

    testcase.asyncSetUp = async_set_up  # type: ignore[method-assign]
    try:
        return (yield)
    finally:
        check.abandon()  # a check that never ran (or ran: abandoning twice is harmless)
        del testcase.asyncSetUp
