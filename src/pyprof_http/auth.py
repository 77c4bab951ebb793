"""Who may read profiles: client CIDRs, a token, the app's own authorizer, and an audit line.

It wraps the whole sub-app, so every route — present and future — is covered by construction;
no handler can forget to check. Order: the client address first (403, before any credential is
looked at; :mod:`~pyprof_http.origin` establishes it), a browser's cross-site request (403),
then credentials (a valid token allows; a wrong or malformed one is 401), then the authorizer;
with neither a token nor an authorizer, only a ``Host`` no rebinding page can send (403).
Tokens are compared as bytes in constant time and never logged, not even the Basic user name
(people paste the token there).
"""

from __future__ import annotations

import base64
import binascii
import enum
import hmac
import inspect
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .config import Settings
from .errors import Forbidden, PprofError, Unauthorized, error_response
from .log_context import RequestContextFilter
from .origin import Client, cross_site_refusal, host_refusal, see_client, within
from .sanitize import printable

AUDIT = logging.getLogger("pyprof_http.audit")
if not any(isinstance(f, RequestContextFilter) for f in AUDIT.filters):  # not again on reload
    AUDIT.addFilter(RequestContextFilter())  # audit lines carry the request_id of their request
PRINCIPAL_KEY = "pyprof_http.principal"
CHALLENGE = 'Basic realm="pprof", Bearer realm="pprof"'
MAX_AUTHORIZATION_BYTES = 4096
"""Longer is no credential of ours (a 32-byte token in Basic is ~60 bytes): refused unread."""
_LOGGED_PARAMS = frozenset({"debug", "format", "seconds", "mode", "hz", "gc", "clock",
                            "worker", "workers"})


class Decision(enum.Enum):
    """What an authorizer may answer (``True``/``False``/a principal name work too)."""

    ALLOW = "allow"
    DENY = "deny"
    CHALLENGE = "challenge"


_DECISION_WORDS = frozenset(d.value for d in Decision) | {"true", "false", "none"}
"""Strings an authorizer may return by mistake for a Decision or a bool: never a principal."""


class AuthMiddleware:
    """Admit or refuse each request, then write its audit line."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        token = settings.token
        self._token = token.get_secret_value().encode("utf-8") if token is not None else None
        """The token as the bytes both schemes compare (a header carries bytes)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = "disconnected"  # what the line says if no response ever starts

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = str(int(message["status"]))
            await send(message)

        client = see_client(scope, self.settings.trusted_proxies)
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
            try:
                await self.app(scope, receive, send_status)
            except OSError:
                raise  # the client went away while we wrote: still "disconnected"
            except Exception:
                if status == "disconnected":
                    status = "error"
                raise
        finally:
            self._audit(scope, client.logged, principal, status, time.monotonic() - started)

    async def _admit(self, scope: Scope, client: Client) -> str:
        """The principal; raises Forbidden or Unauthorized. Address first, then credentials."""
        settings = self.settings
        if client.doubt is not None:
            raise Forbidden(client.doubt)
        if client.address is None or not within(client.address, settings.allow_clients):
            raise Forbidden(
                # the configured networks are not shown: they may map internal ranges
                f"client {client.shown} is not in allow_clients; to let it in, add it to "
                "PYPROF_ALLOW_CLIENTS, and for an address beyond loopback a token "
                "(PYPROF_TOKEN) or an authorizer is then required too"
            )
        refusal = cross_site_refusal(scope)
        if refusal is not None:
            raise Forbidden(refusal)
        authorize = settings.authorize
        if self._token is not None:
            try:
                supplied = credentials(scope)
            except Unauthorized:
                if authorize is None:
                    raise
                supplied = None  # not ours: perhaps the app's own scheme
            if supplied is not None and hmac.compare_digest(supplied, self._token):
                return "token"
            if authorize is None:
                if supplied is not None:
                    raise Unauthorized("invalid credentials")
                raise Unauthorized("credentials required: Authorization: Bearer <token>, "
                                   "or Basic with the token as password (curl -u :TOKEN)")
        if authorize is None:  # neither a token nor an authorizer: loopback, browsers aside
            refusal = host_refusal(scope, settings.allowed_hosts)
            if refusal is not None:
                raise Forbidden(refusal)
            return "anonymous"
        return await _ask(authorize, Request(scope))

    def _audit(self, scope: Scope, client: str, principal: str, status: str,
               seconds: float) -> None:
        if not AUDIT.isEnabledFor(logging.INFO):
            return
        request = Request(scope)
        redact = self._redact
        params = {}
        for k, v in request.query_params.items():
            # redacted as one "k=v": a token holding '=' (base64) is split across key and value
            key, _, value = redact(f"{k}={v}").partition("=")
            params[key[:64]] = value[:64] if k in _LOGGED_PARAMS else "<not logged>"
        # scope["path"], not request.url.path: building the URL decodes the query string as
        # strict UTF-8, and ASGI allows any bytes there (hypercorn passes them from HTTP/2).
        # The path and an authorizer's principal are foreign text: escaped so that a refused
        # client cannot forge audit lines (NEL, U+2028) or write terminal escapes into the log;
        # the params are JSON with ASCII escapes already.
        path = printable(redact(scope.get("path", ""))[:256])
        AUDIT.info(
            "client=%s principal=%s path=%s params=%s status=%s duration_ms=%.1f",
            printable(client or "-"), printable(principal), path,
            json.dumps(params, sort_keys=True), status, seconds * 1000,
        )

    def _redact(self, text: str) -> str:
        """A token pasted into a URL must not reach the log (redacted before any truncation),
        in either spelling: a query string reads each '+' of a base64 token as a space."""
        token = self.settings.token
        if token is None:
            return text
        secret = token.get_secret_value()
        for spelling in (secret, secret.replace("+", " ")):
            text = text.replace(spelling, "<redacted>")
        return text


async def admitted(settings: Settings, scope: Scope) -> str | None:
    """The principal if a request with ``scope``'s client, headers and credentials would be
    let in to the endpoints, else None: the same checks, in the same order (the
    ``X-Pprof-Profile`` header of an application request is honoured only then)."""
    guard = AuthMiddleware(_nothing, settings)
    try:
        return await guard._admit(scope, see_client(scope, settings.trusted_proxies))
    except PprofError:
        return None


async def _nothing(scope: Scope, receive: Receive, send: Send) -> None:
    """The app behind :func:`admitted`'s guard: never called."""


def credentials(scope: Scope) -> bytes | None:
    """The secret from ``Authorization`` as the bytes sent (Bearer token, or Basic password);
    None if absent. Any malformed header is Unauthorized, never an exception of another kind.

    Both schemes yield raw bytes so that one token matches the same way in either: a header is
    bytes, and a UTF-8 token sent by curl or a browser arrives as its UTF-8 bytes.
    """
    headers = [v for k, v in scope.get("headers", ()) if k == b"authorization"]
    if not headers:
        return None
    if len(headers) > 1:
        raise Unauthorized("more than one Authorization header")
    header: bytes = headers[0]
    if len(header) > MAX_AUTHORIZATION_BYTES:
        raise Unauthorized(f"Authorization header longer than {MAX_AUTHORIZATION_BYTES} bytes")
    scheme, _, value = header.strip().partition(b" ")
    value = value.strip(b" \t")
    if scheme.lower() == b"bearer":
        return value
    if scheme.lower() == b"basic":
        try:
            decoded = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise Unauthorized("malformed Basic credentials: not base64") from None
        _user, colon, password = decoded.partition(b":")
        if not colon:
            raise Unauthorized("malformed Basic credentials: no ':' between user and password")
        return password
    raise Unauthorized("unsupported authorization scheme; use Bearer or Basic")


async def _ask(authorize: Callable[[Request], Any], request: Request) -> str:
    try:
        answer = authorize(request)
        if inspect.isawaitable(answer):
            answer = await answer
    except HTTPException as exc:  # the app's own way to say 401 or 403: honoured, not logged
        if exc.status_code == 401:
            raise Unauthorized("credentials required by the application's authorizer") from None
        raise Forbidden("denied by the application's authorizer") from None
    except Exception:  # the app's bug must not become a 500 or an open door
        logging.getLogger("pyprof_http").exception("the authorize callable raised; denying")
        raise Forbidden("the application's authorizer failed; denied") from None
    if answer is True or answer is Decision.ALLOW:
        return "authorizer"
    if (isinstance(answer, str) and not isinstance(answer, Decision) and answer.strip()
            and answer.strip().lower() not in _DECISION_WORDS):
        return answer  # a principal name; a blank one or "deny" is no grant (fail closed)
    if answer is Decision.CHALLENGE:
        raise Unauthorized("credentials required by the application's authorizer")
    raise Forbidden("denied by the application's authorizer")
