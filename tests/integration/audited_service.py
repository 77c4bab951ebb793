"""``sample_service`` with pyprof_http's loggers (the audit line included) on stderr, so a test
can read from the server's log what was logged, and what was not."""

from __future__ import annotations

import logging
import sys

from sample_service import app

__all__ = ["app"]

_handler = logging.StreamHandler(sys.stderr)
_handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
_logger = logging.getLogger("pyprof_http")
_logger.setLevel(logging.DEBUG)
_logger.addHandler(_handler)
