"""Who may read profiles: client CIDRs, a token, the app's own authorizer, and an audit line.

It wraps the whole sub-app, so every route — present and future — is covered by construction;
no handler can forget to check. Order: the client address first (403, before any credential is
looked at), then credentials (a valid token allows; a wrong one is 401), then the authorizer.
Tokens are compared in constant time and never logged, not even the Basic user name (people
paste the token there).
"""

from __future__ import annotations

import base64
import binascii
import enum
import hmac
import inspect
import ipaddress
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .config import Network, Settings
from .errors import Forbidden, PprofError, Unauthorized, error_response
from .sanitize import printable

AUDIT = logging.getLogger("pyprof_http.audit")
PRINCIPAL_KEY = "pyprof_http.principal"
CHALLENGE = 'Basic realm="pprof", Bearer realm="pprof"'
_LOGGED_PARAMS = frozenset({"debug", "format", "seconds", "mode", "hz", "gc", "clock"})


class Decision(enum.Enum):
    """What an authorizer may answer (``True``/``False``/a principal name work too)."""

    ALLOW = "allow"
    DENY = "deny"
    CHALLENGE = "challenge"


class AuthMiddleware:
    """Admit or refuse each request, then write its audit line."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        client = client_address(scope, self.settings.trusted_proxies)
        principal = "anonymous"
        try:
            principal = await self._admit(scope, client)
        except PprofError as exc:
            response = error_response(exc.status_code, exc.reason)
            if exc.status_code == 401:
                response.headers["WWW-Authenticate"] = CHALLENGE
            await response(scope, receive, send_status)
        else:
            scope[PRINCIPAL_KEY] = principal
            await self.app(scope, receive, send_status)
        finally:
            self._audit(scope, client, principal, status, time.monotonic() - started)

    async def _admit(self, scope: Scope, client: ipaddress.IPv4Address | ipaddress.IPv6Address |
                     None) -> str:
        if client is None or not _within(client, self.settings.allow_clients):
            raise Forbidden("client address not allowed; see the allow_clients setting")
        if not self.settings.trusted_proxies and _forwarded(scope):
            # A server told to trust forwarding headers (uvicorn --forwarded-allow-ips) has
            # already replaced the peer with whatever X-Forwarded-For claimed, so the address
            # above may be spoofed: proxied requests need trusted_proxies (and so a token).
            raise Forbidden("request came through a proxy (forwarding headers present); "
                            "set trusted_proxies and a token to allow proxied access")
        token = self.settings.token
        authorize = self.settings.authorize
        if token is not None:
            try:
                supplied = _credentials(scope)
            except Unauthorized:
                if authorize is None:
                    raise
                supplied = None  # not ours: perhaps the app's own scheme
            if supplied is not None and hmac.compare_digest(
                supplied.encode("utf-8", "surrogateescape"), token.get_secret_value().encode()
            ):
                return "token"
            if authorize is None:
                if supplied is not None:
                    raise Unauthorized("invalid credentials")
                raise Unauthorized("credentials required: Authorization: Bearer <token>, "
                                   "or Basic with the token as password (curl -u :TOKEN)")
        if authorize is not None:
            return await _ask(authorize, Request(scope))
        return "anonymous"

    def _audit(self, scope: Scope, client: object, principal: str, status: int,
               seconds: float) -> None:
        if not AUDIT.isEnabledFor(logging.INFO):
            return
        request = Request(scope)
        redact = self._redact
        params = {redact(k)[:64]: (redact(v)[:64] if k in _LOGGED_PARAMS else "<not logged>")
                  for k, v in request.query_params.items()}
        # The path and an authorizer's principal are foreign text: escaped so that a refused
        # client cannot forge audit lines (NEL, U+2028) or write terminal escapes into the log;
        # the params are JSON with ASCII escapes already.
        AUDIT.info(
            "client=%s principal=%s path=%s params=%s status=%d duration_ms=%.1f",
            client or "-", printable(principal), printable(redact(request.url.path)[:256]),
            json.dumps(params, sort_keys=True), status, seconds * 1000,
        )

    def _redact(self, text: str) -> str:
        """A token pasted into a URL must not reach the log (redacted before any truncation)."""
        token = self.settings.token
        return text.replace(token.get_secret_value(), "<redacted>") if token is not None else text


def client_address(
    scope: Scope, trusted_proxies: tuple[Network, ...]
) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The peer, or for a trusted proxy the right-most untrusted X-Forwarded-For address."""
    peer = _parse_ip((scope.get("client") or (None,))[0])
    if peer is None or not trusted_proxies or not _within(peer, trusted_proxies):
        return peer
    forwarded: list[str] = []
    for name, value in scope.get("headers", ()):
        if name == b"x-forwarded-for":
            forwarded.extend(part.strip() for part in value.decode("latin-1").split(","))
    address = peer
    for hop in reversed(forwarded):
        parsed = _parse_ip(hop)
        if parsed is None:
            return None  # an unparsable chain is not evidence of anything
        address = parsed
        if not _within(parsed, trusted_proxies):
            break
    return address


def _parse_ip(text: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not isinstance(text, str):
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # dual-stack sockets report IPv4 peers as ::ffff:a.b.c.d
    return address


def _within(address: ipaddress.IPv4Address | ipaddress.IPv6Address,
            networks: tuple[Network, ...]) -> bool:
    return any(address.version == n.version and address in n for n in networks)


_FORWARDING_HEADERS = frozenset({b"x-forwarded-for", b"forwarded", b"x-real-ip"})


def _forwarded(scope: Scope) -> bool:
    return any(name in _FORWARDING_HEADERS for name, _ in scope.get("headers", ()))


def _credentials(scope: Scope) -> str | None:
    """The secret from ``Authorization`` (Bearer token, or Basic password); None if absent."""
    header: bytes | None = next(
        (v for k, v in scope.get("headers", ()) if k == b"authorization"), None
    )
    if header is None:
        return None
    scheme, _, value = header.decode("latin-1").strip().partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized("malformed Basic credentials") from None
        return decoded.partition(":")[2]
    raise Unauthorized("unsupported authorization scheme; use Bearer or Basic")


async def _ask(authorize: Callable[[Request], Any], request: Request) -> str:
    try:
        answer = authorize(request)
        if inspect.isawaitable(answer):
            answer = await answer
    except Exception:  # the app's bug must not become a 500 or an open door
        logging.getLogger("pyprof_http").exception("the authorize callable raised; denying")
        raise Forbidden("the application's authorizer failed; denied") from None
    if answer is True or answer is Decision.ALLOW:
        return "authorizer"
    if isinstance(answer, str) and answer and not isinstance(answer, Decision):
        return answer
    if answer is Decision.CHALLENGE:
        raise Unauthorized("credentials required by the application's authorizer")
    raise Forbidden("denied by the application's authorizer")
