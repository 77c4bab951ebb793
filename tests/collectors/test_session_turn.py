"""Back-to-back windows (collectors/session.py ``await_turn``): a CPU session about to end is
waited for, one with longer to go is a conflict at once. Sessions here are claimed and
released by the test, so nothing depends on timing except the grace bounds themselves."""

from __future__ import annotations

import asyncio
import threading

import pytest

from pyprof_http.collectors.errors import Busy
from pyprof_http.collectors.session import ProfilerSessions


async def _sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


def test_a_session_due_to_end_is_waited_for() -> None:
    sessions = ProfilerSessions()
    claimed = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with sessions.claim("cpu", "cpu", 0.0):  # due to end now: overdue from here on
            claimed.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    claimed.wait(30)

    async def next_window() -> str:
        asyncio.get_running_loop().call_later(0.2, release.set)  # it lets go a little late
        await sessions.await_turn("cpu", 30.0, _sleep)
        with sessions.claim("cpu", "cpu", 1.0):
            return "claimed"

    assert asyncio.run(next_window()) == "claimed"
    assert release.is_set()  # it did wait for the previous one to end
    holder.join(30)


def test_a_session_with_longer_to_go_is_not_waited_for() -> None:
    sessions = ProfilerSessions()

    async def go() -> None:
        with sessions.claim("cpu", "cpu", 3600.0):
            await sessions.await_turn("cpu", 2.0, _sleep)  # returns at once
            with pytest.raises(Busy, match="already running"), sessions.claim("cpu", "x", 1):
                pass

    asyncio.run(asyncio.wait_for(go(), 60))


def test_an_overdue_session_is_waited_for_at_most_the_grace() -> None:
    sessions = ProfilerSessions()

    async def go() -> None:
        with sessions.claim("cpu", "cpu", 0.0):  # never lets go while we wait
            await sessions.await_turn("cpu", 0.2, _sleep)
            assert sessions.ending_within("cpu", 0.2) == 0.0

    asyncio.run(asyncio.wait_for(go(), 60))


def test_no_session_means_no_wait() -> None:
    sessions = ProfilerSessions()
    assert sessions.ending_within("cpu", 2.0) is None
    asyncio.run(asyncio.wait_for(sessions.await_turn("cpu", 2.0, _sleep), 5))
