"""The error hierarchy and the single error response."""

from __future__ import annotations

import pytest

from pyprof_http.collectors.errors import Busy, CollectorError, NeedsSwitch
from pyprof_http.errors import (
    SECURITY_HEADERS,
    BadRequest,
    Conflict,
    NotFound,
    PprofError,
    PreconditionFailed,
    TooManyRequests,
    error_response,
    from_collector,
)


@pytest.mark.parametrize(("cls", "status"), [
    (PprofError, 500), (BadRequest, 400), (NotFound, 404), (Conflict, 409),
    (PreconditionFailed, 412), (TooManyRequests, 429),
])
def test_status_codes(cls: type[PprofError], status: int) -> None:
    error = cls("why")
    assert error.status_code == status
    assert isinstance(error, PprofError)
    assert error.reason == str(error) == "why"


def test_reason_is_always_one_line() -> None:
    error = BadRequest("  bad\nvalue\r\n\tfor   seconds \n")
    assert error.reason == "bad value for seconds"


def test_security_headers() -> None:
    assert SECURITY_HEADERS == {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


def test_error_response() -> None:
    response = error_response(404, "Unknown profile")
    assert response.status_code == 404
    assert response.body == b"Unknown profile\n"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["x-go-pprof"] == "1"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"


def test_error_response_does_not_change_shared_headers() -> None:
    error_response(400, "x")
    assert "X-Go-Pprof" not in SECURITY_HEADERS


@pytest.mark.parametrize(("error", "status"), [
    (Busy("a wall profile is already running"), 409),
    (NeedsSwitch("heap tracing is off"), 412),
    (CollectorError("something new"), 500),
])
def test_collector_errors_map_to_statuses_with_their_reason(error: CollectorError,
                                                            status: int) -> None:
    mapped = from_collector(error)
    assert mapped.status_code == status
    assert mapped.reason == str(error)


def test_collector_reason_is_cleaned_like_any_other() -> None:
    # the collector's text reaches the client only through PprofError's one-line, escaped form
    assert from_collector(Busy("busy\n\x1b[2J now")).reason == "busy \\x1b[2J now"


def test_a_subclass_maps_like_its_kind() -> None:
    class YappiBusy(Busy):
        pass

    assert from_collector(YappiBusy("x")).status_code == 409
