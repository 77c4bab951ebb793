"""The hop: a silent sibling is named, a disconnecting client cancels it, a dead one is 404."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from starlette.responses import PlainTextResponse

from pyprof_http.workers.hop import ForwardedResponse, NoAnswer, fetch


async def _silent_server(path: str, seen: list[str]) -> asyncio.AbstractServer:
    """Reads the request, never answers; records when the other end closed."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append("connected")
        while await reader.read(1024):
            pass
        seen.append("closed by the client")
        writer.close()

    return await asyncio.start_unix_server(handle, path)


def test_a_sibling_that_does_not_answer_is_named(tmp_path: Path) -> None:
    async def main() -> None:
        seen: list[str] = []
        server = await _silent_server(str(tmp_path / "s.sock"), seen)
        async with server:
            with pytest.raises(NoAnswer) as caught:
                await fetch(str(tmp_path / "s.sock"), 4321, b"/goroutine", 0.3)
            assert str(caught.value) == "worker 4321 did not answer within 0.3 s"

    asyncio.run(main())


def test_a_gone_sibling_gives_the_404(tmp_path: Path) -> None:
    sent: list[dict[str, Any]] = []

    async def gone() -> PlainTextResponse:
        return PlainTextResponse("no live worker", status_code=404)

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(3600)
        return {}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    response = ForwardedResponse(str(tmp_path / "none.sock"), 99, b"/", 5, gone)
    response.headers["X-Pyprof-Worker"] = "123"  # as the app sets them on every response
    response.headers["X-Content-Type-Options"] = "nosniff"
    asyncio.run(response({"type": "http"}, receive, send))
    assert sent[0]["status"] == 404 and sent[1]["body"] == b"no live worker"
    # the 404 (and 504) made here, not by the sibling, still say who answered: they lost
    # the app's headers before
    headers = dict(sent[0]["headers"])
    assert headers[b"x-pyprof-worker"] == b"123" and headers[b"x-content-type-options"] == (
        b"nosniff")


def test_a_client_disconnect_cancels_the_hop_and_closes_the_sibling_connection(
        tmp_path: Path) -> None:
    async def main() -> list[str]:
        seen: list[str] = []
        path = str(tmp_path / "s.sock")
        server = await _silent_server(path, seen)
        left = asyncio.Event()

        async def receive() -> dict[str, Any]:
            await left.wait()
            return {"type": "http.disconnect"}

        sent: list[Any] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        async def gone() -> PlainTextResponse:
            raise AssertionError("not gone")

        async with server:
            relay = asyncio.ensure_future(
                ForwardedResponse(path, os.getpid(), b"/profile?seconds=30", 60, gone)(
                    {"type": "http"}, receive, send))
            while "connected" not in seen:
                await asyncio.sleep(0.01)
            left.set()
            await asyncio.wait_for(relay, 10)
            while "closed by the client" not in seen:  # bounded by the wait_for below
                await asyncio.sleep(0.01)
        assert sent == []  # nothing sent to a client that left
        return seen

    assert asyncio.run(asyncio.wait_for(main(), 30)) == ["connected", "closed by the client"]


def test_a_sibling_that_dies_mid_answer_is_named_not_a_crash(tmp_path: Path) -> None:
    """The connection closed after part of the body: h11's RemoteProtocolError escaped
    ``fetch`` and turned ``workers=all`` into a 500 instead of naming the worker."""

    async def main() -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\npartial")
            await writer.drain()
            writer.close()

        path = str(tmp_path / "s.sock")
        async with await asyncio.start_unix_server(handle, path):
            with pytest.raises(NoAnswer) as caught:
                await fetch(path, 4321, b"/goroutine", 10)
        assert str(caught.value).startswith("worker 4321 answered garbage or stopped mid-answer")

    asyncio.run(main())
