"""``worker=PID`` and ``workers=all``: taken off the query before the profile's own parameters
are validated, so every profile accepts them and none of its rules changes.

The rest of the query is kept byte for byte (it is what the sibling validates and serves).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from ..errors import BadRequest

PID_MAX = 4_194_304
"""Linux's largest pid_max."""
_KEYS = (b"worker", b"workers")


@dataclass(frozen=True, slots=True)
class Target:
    """Who should answer: ``pid`` (one worker), ``everyone`` (all of them), or neither (here)."""

    pid: int | None
    everyone: bool
    rest: bytes
    """The query string without ``worker``/``workers``."""


def split(query_string: bytes) -> Target:
    """Parse and remove ``worker``/``workers``; :class:`BadRequest` with one line if invalid."""
    found: dict[bytes, bytes] = {}
    kept: list[bytes] = []
    for part in query_string.split(b"&"):
        raw_key, _, raw_value = part.partition(b"=")
        key = unquote_to_bytes(raw_key.replace(b"+", b" "))
        if key in _KEYS:
            if key in found:
                raise BadRequest(f'parameter "{key.decode()}" given more than once')
            found[key] = unquote_to_bytes(raw_value.replace(b"+", b" "))
        elif part:
            kept.append(part)
    if b"worker" in found and b"workers" in found:
        raise BadRequest('give either "worker" (one worker) or "workers=all", not both')
    pid: int | None = None
    if b"worker" in found:
        value = found[b"worker"]
        # the length first: int() of 4,301 digits raises ValueError (a 500), not a 400
        if not (value.isdigit() and len(value) <= 7 and 1 <= int(value) <= PID_MAX):
            raise BadRequest(f'invalid value for "worker": must be the pid of a worker '
                             f"(1 to {PID_MAX}); the index lists them")
        pid = int(value)
    everyone = False
    if b"workers" in found:
        if found[b"workers"] != b"all":
            raise BadRequest('invalid value for "workers": must be all')
        everyone = True
    return Target(pid, everyone, b"&".join(kept))
