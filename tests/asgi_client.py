"""A request whose client stays until told to leave, for tests of windows and disconnects.

Import it as ``import asgi_client`` (``tests`` is on pytest's ``pythonpath``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request

from pyprof_http._waiting import sleep_unless_disconnected


class FakeClient:
    """An ASGI ``receive``: the request's (empty) body, then a disconnect once :attr:`gone`."""

    def __init__(self) -> None:
        self.gone = asyncio.Event()
        self.sent_body = False

    async def receive(self) -> dict[str, Any]:
        if not self.sent_body:
            self.sent_body = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    def request(self) -> Request:
        return Request({"type": "http", "method": "GET", "path": "/", "headers": [],
                        "query_string": b""}, self.receive)

    def wait(self) -> Callable[[float], Awaitable[None]]:
        """A collector's ``wait`` as app.py builds it: until the time is up or the client left."""
        request = self.request()

        async def wait(seconds: float) -> None:
            await sleep_unless_disconnected(request, seconds)

        return wait
