"""The internal hop: one GET over a sibling's private socket (HTTP/1.1 spoken with h11).

:class:`ForwardedResponse` relays a sibling's answer to the client as it arrives (status and
headers first, then the body), cancels the hop when the client disconnects (the sibling sees
its connection close, which stops its profile like any client's disconnect), and names the
worker that did not answer in time. :func:`fetch` reads a whole answer, for ``workers=all``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import h11
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..errors import error_response

_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"date", b"server"})
_READ = 65536
ROOT_HEADER = b"x-pyprof-root-path"
"""Where the client reached the app (its mount prefix), so a sibling's index titles itself the
same; ``/`` for none."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A sibling's whole answer."""

    pid: int
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode("latin-1")
        return None


class NoAnswer(Exception):
    """The sibling did not answer; ``str()`` says which and why."""

    def __init__(self, pid: int, why: str, gone: bool = False) -> None:
        super().__init__(f"worker {pid} {why}")
        self.pid, self.why, self.gone = pid, why, gone


@contextlib.asynccontextmanager
async def _exchange(path: str, pid: int, target: bytes, timeout: float, root_path: str = ""
                    ) -> AsyncIterator[tuple[h11.Response, AsyncIterator[bytes]]]:
    """Send the GET; yield the response head and an iterator over the body's chunks."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), timeout)
    except (ConnectionRefusedError, FileNotFoundError):
        raise NoAnswer(pid, "is gone (its socket refused the connection)", gone=True) from None
    except (OSError, asyncio.TimeoutError) as exc:
        raise NoAnswer(pid, f"could not be reached ({type(exc).__name__})") from None
    conn = h11.Connection(h11.CLIENT)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout

    async def next_event() -> h11.Event:
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:  # e.g. it died mid-body: named, not a 500
                raise NoAnswer(pid, f"answered garbage or stopped mid-answer ({exc})") from None
            if event is not h11.NEED_DATA:
                return event  # type: ignore[return-value]
            left = deadline - loop.time()
            if left <= 0:
                raise NoAnswer(pid, f"did not answer within {timeout:g} s")
            try:
                data = await asyncio.wait_for(reader.read(_READ), left)
            except asyncio.TimeoutError:
                raise NoAnswer(pid, f"did not answer within {timeout:g} s") from None
            except OSError as exc:
                raise NoAnswer(pid, f"closed the connection ({exc})") from None
            conn.receive_data(data)

    async def body() -> AsyncIterator[bytes]:
        while True:
            event = await next_event()
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                return

    try:
        writer.write(conn.send(h11.Request(method="GET", target=target, headers=[
            (b"host", b"pyprof-http-worker"), (b"connection", b"close"),
            (ROOT_HEADER, root_path.encode("utf-8", "replace") or b"/")])))
        writer.write(conn.send(h11.EndOfMessage()))
        head = await next_event()
        if not isinstance(head, h11.Response):
            raise NoAnswer(pid, "closed the connection without an answer")
        yield head, body()
    finally:
        writer.close()


async def fetch(path: str, pid: int, target: bytes, timeout: float) -> Answer:
    """The sibling's whole answer to ``GET target``; raises :class:`NoAnswer`."""
    async with _exchange(path, pid, target, timeout) as (head, chunks):
        body = b"".join([chunk async for chunk in chunks])
    return Answer(pid, head.status_code, list(head.headers), body)


class ForwardedResponse(Response):
    """Relay a sibling's answer; ``gone`` makes the 404 for a worker that died meanwhile."""

    def __init__(self, path: str, pid: int, target: bytes, timeout: float,
                 gone: Callable[[], Awaitable[Response]], root_path: str = "") -> None:
        super().__init__()
        self._path, self._pid, self._target, self._timeout = path, pid, target, timeout
        self._root_path = root_path
        self._gone = gone

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        relay = asyncio.ensure_future(self._relay(scope, receive, send))
        watch = asyncio.ensure_future(_disconnected(receive))
        try:
            await asyncio.wait({relay, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (relay, watch):
                if not task.done():
                    task.cancel()
            await asyncio.wait({relay, watch})  # the hop's connection is closed before we return
        if not relay.cancelled():
            relay.result()  # an error after the head was sent: the server closes the response

    async def _relay(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False
        try:
            async with _exchange(self._path, self._pid, self._target, self._timeout,
                                 self._root_path) as (head, chunks):
                headers = [(k.lower(), v) for k, v in head.headers
                           if k.lower() not in _HOP_BY_HOP]
                await send({"type": "http.response.start", "status": head.status_code,
                            "headers": headers})
                started = True
                async for chunk in chunks:
                    await send({"type": "http.response.body", "body": chunk,
                                "more_body": True})
                await send({"type": "http.response.body", "body": b""})
        except NoAnswer as exc:
            if started:  # too late for a status: the client sees the body cut short
                raise
            response = await self._gone() if exc.gone else error_response(504, str(exc))
            for key, value in self.headers.items():  # X-Pyprof-Worker, nosniff, no-store
                if key not in ("content-length", "content-type"):
                    response.headers.setdefault(key, value)
            await response(scope, receive, send)


async def _disconnected(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
