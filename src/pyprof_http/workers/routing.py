"""Serving ``worker=PID`` and ``workers=all`` for a :class:`~pyprof_http.app.PprofApp`.

The request was admitted (auth, allowlist, its parameters validated) by the worker the client
reached; only then does it go to a sibling, over the private channel, where it is served with
auth bypassed (:data:`~pyprof_http.workers.channel.INTERNAL_KEY`). This process's own part of
``workers=all`` is served in-process, through the same ASGI entry, without a socket.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from .._waiting import ClientDisconnected
from ..errors import NotFound, PprofError, error_response
from .channel import INTERNAL_KEY
from .hop import Answer, ForwardedResponse, NoAnswer, fetch
from .membership import WORKERS

_T = TypeVar("_T")
ASGI = Callable[[Scope, Receive, Send], Awaitable[None]]


class BadGateway(PprofError):
    status_code = 502


async def live_pids(probe: bool = True) -> list[int]:
    """Every live worker's pid (this process alone when it has no rendezvous). ``probe``:
    connect to each first (a stale socket is removed); without, a directory scan whose dead
    pids are removed, and a hop that finds a socket nobody listens on removes it then."""
    if not WORKERS.joined:
        return [os.getpid()]
    members = await WORKERS.live() if probe else WORKERS.members()
    pids = [m.pid for m in members]
    return pids if os.getpid() in pids else [os.getpid(), *pids]


async def unknown_worker_reason(pid: int) -> str:
    pids = ", ".join(str(p) for p in await live_pids())
    why = "" if WORKERS.joined or WORKERS.refusal is None else f" ({WORKERS.refusal})"
    return f"no live worker with pid {pid}; live workers: {pids}{why}"


async def unknown_worker(pid: int) -> Response:
    return error_response(404, await unknown_worker_reason(pid))


async def forward(path: str, pid: int, query: bytes, timeout: float,
                  root_path: str = "") -> Response:
    """The response of sibling ``pid`` to ``GET path?query``, relayed as it comes."""
    member = next((m for m in WORKERS.members() if m.pid == pid), None)
    if member is None:
        raise NotFound(await unknown_worker_reason(pid))
    # ``path`` is decoded (a request id may hold a space, '?' or any character): quoted
    # again, the sibling decodes the same path; as is, h11 refuses the request line
    target = quote(path, safe="/").encode("ascii") + (b"?" + query if query else b"")
    return ForwardedResponse(member.path, pid, target, timeout, lambda: unknown_worker(pid),
                             root_path)


def asker(serve: ASGI, path: str, timeout: float) -> Callable[[int, bytes], Awaitable[Answer]]:
    """How ``workers=all`` asks one worker (this one in-process, the others over the channel)."""
    paths = {m.pid: m.path for m in WORKERS.members()}

    async def ask(pid: int, query: bytes) -> Answer:
        if pid == os.getpid():
            return await ask_here(serve, path, query)
        target = path.encode() + (b"?" + query if query else b"")
        try:
            return await fetch(paths.get(pid, ""), pid, target, timeout)
        except NoAnswer as exc:
            if exc.gone and WORKERS.rendezvous is not None:
                WORKERS.rendezvous.remove(pid)  # nobody listens there: a stale socket
            raise

    return ask


async def ask_here(serve: ASGI, path: str, query: bytes) -> Answer:
    """Serve ``GET path?query`` in this process as an internal request; the whole answer."""
    scope: Scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": query, "headers": [], "client": None, "server": None,
        INTERNAL_KEY: True,
    }
    sent = False
    forever: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await forever  # cancelled with the request
        return {"type": "http.disconnect"}

    status, headers, body = 500, [], bytearray()

    async def send(message: Message) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status, headers = message["status"], list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    try:
        await serve(scope, receive, send)
    finally:
        forever.cancel()
    return Answer(os.getpid(), status, headers, bytes(body))


async def unless_disconnected(request: Request, work: Coroutine[Any, Any, _T]) -> _T:
    """``work``'s result; cancelled, and :class:`ClientDisconnected` raised, if the client
    goes away first (the siblings' connections close, which stops their profiles)."""
    task = asyncio.ensure_future(work)

    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watch = asyncio.ensure_future(gone())
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait({task})  # its hops close their connections before we go on
    if task.cancelled():
        raise ClientDisconnected
    return task.result()

