"""The one CSP hash helper, and every HTML page of the app with names that are not Unicode.

A file name with an undecodable byte reaches Python as a lone surrogate (``\\udcff``); a task or
function name can hold one too. Hashing ``text.encode("utf-8")`` raised there, which made
``format=pyinstrument`` answer 500.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import threading
import time
from collections.abc import Iterator
from types import CodeType
from typing import Any

import httpx
import pytest

from pyprof_http import PprofApp, Settings
from pyprof_http.render import utf8
from pyprof_http.render.csp import sha256_source

ODD_FILE = "/srv/app/caf\udce9/handlers.py"  # latin-1 "café" read as UTF-8 by the OS layer
ODD_NAME = "handle_\udc80request"


def test_hash_is_over_the_bytes_the_response_carries() -> None:
    text = f"var name = '{ODD_NAME}';"
    digest = base64.b64encode(hashlib.sha256(utf8(text)).digest()).decode()
    assert sha256_source(text) == f"'sha256-{digest}'"
    plain = "var x = 'caf\u00e9';"  # valid text: the ordinary UTF-8 hash, as browsers take it
    expected = base64.b64encode(hashlib.sha256(plain.encode("utf-8")).digest()).decode()
    assert sha256_source(plain) == f"'sha256-{expected}'"


def _odd_spinner() -> Any:
    """A function whose file and (qualified) name hold lone surrogates, as an undecodable module
    path gives them."""
    source = "def spin(stop):\n    while not stop.is_set():\n        sum(range(100))\n"
    namespace: dict[str, Any] = {}
    exec(compile(source, ODD_FILE, "exec"), namespace)  # our own constant source
    spin = namespace["spin"]
    code: CodeType = spin.__code__
    renamed = {"co_name": ODD_NAME}
    if hasattr(code, "co_qualname"):
        renamed["co_qualname"] = ODD_NAME
    spin.__code__ = code.replace(**renamed)
    return spin


@pytest.fixture
def odd_thread() -> Iterator[None]:
    stop = threading.Event()
    thread = threading.Thread(target=_odd_spinner(), args=(stop,), name="odd-\udc80-thread")
    thread.start()
    time.sleep(0.05)
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _get(app: PprofApp, path: str) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return await client.get(path)

    return asyncio.run(go())


@pytest.mark.parametrize("path", [
    "/goroutine?format=flamegraph",
    "/profile?seconds=1&mode=wall&format=flamegraph",
    "/profile?seconds=1&mode=wall&format=pyinstrument",
    "/",
])
def test_every_html_page_copes_with_a_lone_surrogate(odd_thread: None, path: str) -> None:
    response = _get(PprofApp(Settings()), path)
    assert response.status_code == 200, response.text[:300]
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    body = response.content
    body.decode("utf-8")  # valid UTF-8 on the wire
    policy = response.headers["content-security-policy"]
    for kind in ("script", "style"):  # every inline block is allowed by a hash of its bytes
        allowed = re.search(kind + r"-src ([^;]*)", policy)
        assert allowed is not None
        for block in re.findall(rb"<" + kind.encode() + rb">(.*?)</" + kind.encode() + rb">",
                                body, re.DOTALL):
            digest = base64.b64encode(hashlib.sha256(block).digest()).decode()
            assert f"'sha256-{digest}'" in allowed[1].split()
    if "pyinstrument" in path or "goroutine" in path:
        assert b"handle_" in body  # the odd function is in the page
