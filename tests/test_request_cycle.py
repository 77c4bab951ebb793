"""The request cycle's C half (``_requestcycle``) on its own: what it hands back to the Python
path, what it does with odd input, and that it works on a Request type without plain slots.

The middleware's behaviour through both halves is in ``test_lifecycle_requests.py`` (every
test there runs on the C path and on the Python path)."""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import itertools
from typing import Any

import pytest

from pyprof_http import request_labels

ext = importlib.import_module("pyprof_http._requestcycle")


class LooseRequest:
    """A request class whose attributes are not ``__slots__``: the C half must fall back to
    setting them as attributes."""

    live = True

    @property
    def request_id(self) -> str:
        return str(self._request_id)


def cycles(request_type: Any = request_labels.Request, prefix: str = "p0") -> Any:
    return ext.Cycles(request_type, contextvars.ContextVar("req", default=None), {}, {},
                      [prefix], itertools.count(1))


async def _sent_to(send_log: list[Any], message: Any) -> None:
    send_log.append(message)


def run(cycle_maker: Any, scope: Any, messages: list[Any]) -> tuple[Any, list[Any]]:
    """begin(), the app's messages through the cycle's send, end(); on a running loop."""
    log: list[Any] = []

    async def send(message: Any) -> None:
        await _sent_to(log, message)

    async def main() -> Any:
        cycle = cycle_maker.begin(scope, asyncio.get_running_loop(), send)
        if cycle is None:
            return None
        for message in messages:
            await cycle(message)
        assert cycle.end() >= 0 and cycle.end() >= 0  # a second end() undoes nothing twice
        return cycle

    return asyncio.run(main()), log


START = {"type": "http.response.start", "status": 200, "headers": ((b"a", b"1"),)}


@pytest.mark.parametrize("scope", [
    ["not", "a", "dict"],
    {"type": "http", "headers": (h for h in [(b"x-request-id", b"gen")])},
    {"type": "http", "headers": [(b"x-request-id",)]},
    {"type": "http", "headers": [("x-request-id", "str")]},
    {"type": "http", "headers": [(b"x-request-id", "str")]},
    {"type": "http", "headers": [(b"x-pprof-profile", b"1")]},
    {"type": "http", "headers": [(b"x-pprof-profile", b"0")]},
], ids=["list scope", "generator", "short pair", "str name", "str value", "asked", "asked 0"])
def test_what_the_c_half_leaves_to_the_python_path(scope: Any) -> None:
    cycle, log = run(cycles(), scope, [START])
    assert cycle is None and log == []


def test_the_echo_copies_and_passes_everything_else_through() -> None:
    scope = {"type": "http", "path": "/x", "headers": [(b"x-request-id", b"id-7")]}
    other = {"type": "http.response.body", "body": b"!"}
    cycle, log = run(cycles(), scope, [START, other, "not a dict"])
    assert cycle.request_id == "id-7" and cycle.status == 200 and cycle.path == "/x"
    assert log[0]["headers"] == [(b"a", b"1"), (b"x-request-id", b"id-7")]
    assert START["headers"] == ((b"a", b"1"),) and log[1] is other and log[2] == "not a dict"
    assert not cycle.request.live and cycle.request.route == "/x"


def test_new_ids_follow_the_prefix_a_fork_renews() -> None:
    prefix = ["aa"]
    made = ext.Cycles(request_labels.Request, contextvars.ContextVar("r", default=None), {}, {},
                      prefix, itertools.count(254))
    first, _ = run(made, {"type": "http"}, [])
    prefix[0] = "bb"
    second, _ = run(made, {"type": "http"}, [])
    assert (first.request_id, second.request_id) == ("aa-fe", "bb-ff")
    prefix[0] = "caf\u00e9"
    with pytest.raises(RuntimeError, match="ASCII"):
        run(made, {"type": "http"}, [])


def test_a_request_class_without_slots_is_set_by_attribute() -> None:
    cycle, _ = run(cycles(LooseRequest), {"type": "http", "path": "/loose"}, [START])
    request = cycle.request
    assert isinstance(request, LooseRequest) and request.request_id.startswith("p0-")
    assert request.live is False and request.scope["path"] == "/loose"


def test_a_response_header_that_is_not_a_pair_is_refused_like_python_would() -> None:
    bad = {"type": "http.response.start", "status": 200, "headers": [(b"a", b"1", b"2")]}
    with pytest.raises(ValueError, match="pair"):
        run(cycles(), {"type": "http"}, [bad])
