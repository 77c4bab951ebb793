"""Run the official Pyroscope Python SDK (pyroscope-io) against a capture server: a child
process of tests/push/test_push_conformance.py, which records what it sends.

argv: server URL. Exits after the SDK's shutdown, which flushes what it sampled.
"""

from __future__ import annotations

import sys
import time

import pyroscope

pyroscope.configure(
    application_name="conformance.app",
    server_address=sys.argv[1],
    tags={"env": "test"},
    basic_auth_username="user",
    basic_auth_password="password",
    tenant_id="tenant-1",
    http_headers={"X-Extra": "1"},
)
deadline = time.monotonic() + 1.5
while time.monotonic() < deadline:
    sum(i * i for i in range(1000))
pyroscope.shutdown()
