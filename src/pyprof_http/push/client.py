"""Send one batch to the configured server, with the standard library only.

Credentials go to ``push_url``'s scheme, host and port only: ``http.client`` follows no
redirect, and a 3xx answer is a failure (a redirect to another host would otherwise receive the
Authorization header). Each request has its own connection and a timeout, so a server that
hangs costs the pusher thread at most ``push_timeout`` and never the application.
"""

from __future__ import annotations

import base64
import http.client
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlencode, urlsplit

from ..config import Settings
from ..sanitize import printable
from .labels import ingest_name
from .request import Series, connect_body, multipart

CONNECT_PATH: Final = "/push.v1.PusherService/Push"
INGEST_PATH: Final = "/ingest"
FALLBACK_STATUSES: Final = frozenset({404, 405, 415, 501})
"""Answers meaning "no Connect push API here" (older servers, proxies): use ``/ingest``."""
SPY_NAME: Final = "pyprof_http"
USER_AGENT: Final = "pyprof_http-push"


class PushFailed(Exception):
    """One attempt failed; the message is safe to log: no header, no credential, and what the
    server said (a bad status line) escaped to one printable line of at most 200 characters."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(printable(reason)[:200])
        self.status = status


@dataclass(frozen=True)
class Target:
    """Where and how to push; ``headers`` may hold secrets: never logged, never repr'd."""

    scheme: str
    host: str
    port: int | None
    base_path: str
    timeout: float
    headers: tuple[tuple[str, str], ...]

    def __repr__(self) -> str:
        return f"Target({self.url!r})"

    @property
    def url(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.scheme}://{self.host}{port}{self.base_path}"

    @classmethod
    def from_settings(cls, settings: Settings) -> Target:
        if settings.push_url is None:
            raise ValueError("push_url is not set")
        parts = urlsplit(settings.push_url)
        headers = [("User-Agent", USER_AGENT)]
        for name, secret in settings.push_headers.items():
            headers.append((name, secret.get_secret_value()))
        if settings.push_basic_auth_user is not None or settings.push_basic_auth_password:
            user = settings.push_basic_auth_user or ""
            password = (settings.push_basic_auth_password.get_secret_value()
                        if settings.push_basic_auth_password is not None else "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            headers.append(("Authorization", f"Basic {token}"))
        elif settings.push_token is not None:
            headers.append(("Authorization", f"Bearer {settings.push_token.get_secret_value()}"))
        if settings.push_tenant_id:
            headers.append(("X-Scope-OrgID", settings.push_tenant_id))
        return cls(parts.scheme, parts.hostname or "", parts.port, parts.path.rstrip("/"),
                   settings.push_timeout, tuple(headers))


def post(target: Target, path: str, body: bytes, headers: dict[str, str],
         timeout: float | None = None) -> int:
    """POST to ``target``; the status, or :class:`PushFailed` for no answer or a non-2xx."""
    connection: http.client.HTTPConnection
    wait = target.timeout if timeout is None else timeout
    if target.scheme == "https":
        connection = http.client.HTTPSConnection(target.host, target.port, timeout=wait)
    else:
        connection = http.client.HTTPConnection(target.host, target.port, timeout=wait)
    try:
        all_headers = dict(target.headers)
        all_headers.update(headers)
        all_headers["Content-Length"] = str(len(body))
        connection.request("POST", target.base_path + path, body=body, headers=all_headers)
        response = connection.getresponse()
        response.read(64 * 1024)
        status = response.status
    except (OSError, http.client.HTTPException) as exc:
        raise PushFailed(f"{type(exc).__name__}: {exc}") from None
    except ValueError as exc:  # a header http.client refuses: its message quotes the value
        raise PushFailed(f"{type(exc).__name__}: a request header was refused") from None
    finally:
        connection.close()
    if 300 <= status < 400:
        raise PushFailed(f"HTTP {status}: redirects are not followed (credentials stay with "
                         "push_url's host)", status)
    if not 200 <= status < 300:
        raise PushFailed(f"HTTP {status}", status)
    return status


def push_connect(target: Target, batch: Sequence[Series], timeout: float | None = None) -> None:
    """One ``PushRequest`` with every series of the batch."""
    post(target, CONNECT_PATH, connect_body(batch),
         {"Content-Type": "application/proto", "Content-Encoding": "gzip"}, timeout)


def push_ingest(target: Target, batch: Sequence[Series], base: dict[str, str],
                timeout: float | None = None) -> None:
    """One ``/ingest`` request per series (the form holds one profile)."""
    for item in batch:
        boundary = uuid.uuid4().hex
        query = urlencode({
            "name": ingest_name({**base, **{k: v for k, v in item.labels if k != "__name__"}}),
            "from": item.start_ns // 1_000_000_000,
            "until": max(item.end_ns // 1_000_000_000, item.start_ns // 1_000_000_000 + 1),
            "spyName": SPY_NAME,
            "sampleRate": item.sample_rate or 100,
            "format": "pprof",
        })
        post(target, f"{INGEST_PATH}?{query}", multipart(item.pprof, boundary),
             {"Content-Type": f"multipart/form-data; boundary={boundary}"}, timeout)
