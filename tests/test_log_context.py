"""RequestContextFilter: request_id, route and task on every record made while serving a
request, on the loop and in thread-pool code; "-" outside one."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from pyprof_http import RequestContextFilter, auth, thread_labels
from pyprof_http.request_labels import enter, leave

pytestmark = pytest.mark.usefixtures("request_path")  # both request paths

SCOPE = {"type": "http", "path": "/orders/<7>\u2028", "headers": [(b"x-request-id", b"log-1")]}


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def kept() -> Iterator[tuple[logging.Logger, Kept]]:
    logger = logging.getLogger("test_log_context")
    handler = Kept()
    handler.addFilter(RequestContextFilter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    was = thread_labels.installed()
    thread_labels.install()
    yield logger, handler
    logger.removeHandler(handler)
    if not was:
        thread_labels.uninstall()


def fields(record: logging.LogRecord) -> tuple[str, str, str]:
    return record.request_id, record.route, record.task  # type: ignore[attr-defined]


def test_records_on_the_loop_and_in_thread_pool_code(kept: tuple[logging.Logger, Kept]) -> None:
    logger, handler = kept

    async def main() -> None:
        entered = enter(SCOPE)
        try:
            logger.info("on the loop")
            await asyncio.to_thread(logger.info, "to_thread")
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, logger.info, "executor, no context copy")
        finally:
            leave(entered)
        logger.info("after")

    asyncio.run(asyncio.wait_for(main(), 30), debug=False)
    by_message = {r.getMessage(): fields(r) for r in handler.records}
    route = "/orders/<7>\\u2028"  # one line in any log reader
    assert by_message["on the loop"][:2] == ("log-1", route)
    assert by_message["on the loop"][2] != "-"  # the task running the request
    assert by_message["to_thread"] == ("log-1", route, "-")
    assert by_message["executor, no context copy"] == ("log-1", route, "-")
    assert by_message["after"][:2] == ("-", "-")


def test_outside_a_request_and_with_extra(kept: tuple[logging.Logger, Kept]) -> None:
    logger, handler = kept
    logger.info("plain")
    logger.info("mine", extra={"request_id": "given", "route": "r", "task": "t"})
    assert [fields(r) for r in handler.records] == [("-", "-", "-"), ("given", "r", "t")]


def test_the_audit_logger_uses_it() -> None:
    assert any(isinstance(f, RequestContextFilter) for f in auth.AUDIT.filters)
