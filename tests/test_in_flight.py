"""InFlight: one computation per key, shared by the callers that arrive while it runs."""

from __future__ import annotations

import asyncio

from pyprof_http.in_flight import InFlight


def test_a_leader_closed_without_a_cancel_hands_over_to_its_waiters() -> None:
    """A leader whose coroutine is closed (its loop dropped with the task pending: the task is
    collected and its coroutine gets GeneratorExit) will never deliver. Its waiters take over,
    as after a cancel; they used to get GeneratorExit raised in their own request."""
    flight: InFlight[str] = InFlight(other_loop_wait_s=30)
    gate_loop = asyncio.new_event_loop()
    never: asyncio.Future[str] = gate_loop.create_future()

    async def stuck() -> str:
        return await never

    async def lead() -> asyncio.Task[str]:
        task = asyncio.create_task(flight.run("k", stuck))
        await asyncio.sleep(0)  # it is the leader now, in flight
        return task

    leader = gate_loop.run_until_complete(lead())  # the loop stops with it pending
    assert len(flight) == 1

    async def mine() -> str:
        return "waiter's own"

    async def waiter() -> str:
        # closed while the waiter waits on it
        asyncio.get_running_loop().call_soon(leader.get_coro().close)
        return await flight.run("k", mine)

    try:
        assert asyncio.run(waiter()) == "waiter's own"
    finally:
        never.cancel()
        gate_loop.close()
    assert len(flight) == 0
