"""worker= / workers= taken off the query; everything else kept byte for byte."""

from __future__ import annotations

import pytest

from pyprof_http.errors import BadRequest
from pyprof_http.workers.target import split


def test_worker_and_workers_are_taken_off() -> None:
    assert split(b"debug=1&worker=123&x=%ff") == split(b"debug=1&worker=123&x=%ff")
    target = split(b"debug=1&worker=123&x=%ff")
    assert (target.pid, target.everyone, target.rest) == (123, False, b"debug=1&x=%ff")
    target = split(b"workers=all&seconds=2")
    assert (target.pid, target.everyone, target.rest) == (None, True, b"seconds=2")
    assert split(b"").rest == b"" and split(b"").pid is None
    assert split(b"%77orker=5").pid == 5  # percent-encoded names are the same parameter


@pytest.mark.parametrize("query, reason", [
    (b"worker=abc", "worker"), (b"worker=0", "worker"), (b"worker=-1", "worker"),
    (b"worker=99999999", "worker"), (b"worker=%D9%A3", "worker"),
    (b"worker=" + b"9" * 5000, "worker"),  # int() refuses 4,301 digits: it was a 500
    (b"workers=some", "workers"), (b"workers=", "workers"),
    (b"worker=1&worker=2", "more than once"), (b"worker=1&workers=all", "not both"),
])
def test_bad_values_are_400_with_one_line(query: bytes, reason: str) -> None:
    with pytest.raises(BadRequest) as caught:
        split(query)
    assert reason in str(caught.value) and "\n" not in str(caught.value)
