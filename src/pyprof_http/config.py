"""Settings, read once from the constructor and ``PYPROF_*`` environment variables.

Settings are immutable so that a running sub-app can never be loosened after its security
checks ran; build a new app to change them. :meth:`Settings.check_secure` is what makes the
default safe: reaching beyond loopback without a token or an authorizer refuses to start
(exposed pprof endpoints have leaked heaps and argv before: kubelet CVE-2019-11248).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK: tuple[Network, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)
MIN_TOKEN_LENGTH = 16
_HOST_NAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]{0,252})")

Authorizer = Callable[[Any], Any | Awaitable[Any]]
"""Takes the Starlette ``Request``; returns a :class:`~pyprof_http.auth.Decision`, a bool, or a
principal name (allowed), directly or as an awaitable."""


class ConfigError(ValueError):
    """The settings are unsafe or inconsistent; the message says how to fix them."""


def _split_list(value: Any) -> Any:
    """Env values may be JSON lists or comma-separated: ``PYPROF_PROFILES=goroutine,heap``."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Everything pyprof_http can be told. Every field can be set as ``PYPROF_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="PYPROF_", frozen=True, extra="forbid")

    allow_clients: Annotated[tuple[Network, ...], NoDecode] = Field(
        default=LOOPBACK, description="CIDRs of clients let in; anyone else gets 403."
    )
    trusted_proxies: Annotated[tuple[Network, ...], NoDecode] = Field(
        default=(),
        description="Peers whose X-Forwarded-For is believed, and only when such a peer is the "
        "one connected: the server must pass the real peer in scope['client'] (uvicorn "
        "--forwarded-allow-ips '', no hypercorn ProxyFixMiddleware, no daphne --proxy-headers); "
        "a request whose client the "
        "server already replaced from a forwarding header is refused.",
    )
    allowed_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Host names served without a token or an authorizer, besides IP literals "
        "and localhost (protection against DNS rebinding); '*' serves any Host.",
    )
    token: SecretStr | None = Field(
        default=None, description="Required as Bearer token or Basic password when set."
    )
    authorize: Authorizer | None = Field(
        default=None, exclude=True, description="The app's own auth: allow, deny or challenge."
    )
    profiles: Annotated[frozenset[str] | None, NoDecode] = Field(
        default=None,
        description="Allowlist of profile names served; None serves every profile. Others are 404.",
    )
    max_profile_seconds: int = Field(
        default=60, ge=1, le=3600, description="Upper bound for any seconds= parameter."
    )
    max_concurrent_windows: int = Field(
        default=2, ge=1, le=64, description="seconds=N requests that may run at once per profile."
    )
    max_stack_depth: int = Field(
        default=128, ge=1, le=4096, description="Frames kept per stack; deeper stacks are cut."
    )
    heap_trace_at_start: bool = Field(
        default=False,
        description="Start tracemalloc when the app is installed, so /heap answers at once "
        "(allocation-heavy code runs x3-x7 slower with 1 frame, x18-x33 with 32, for the "
        "whole run).",
    )
    heap_frames: int = Field(
        default=32, ge=1, le=256, description="Frames tracemalloc keeps per allocation."
    )
    heap_sample_bytes: int = Field(
        default=512 * 1024, ge=0, le=2**30,
        description="The always-on heap sampler (Go's MemProfileRate): about one allocation "
        "per this many allocated bytes is sampled with its stack, for /heap and /allocs; "
        "0 is off (nothing hooked). Needs the C extension built at install.",
    )
    lock_profile_fraction: int = Field(
        default=0, ge=0, le=1_000_000,
        description="Record 1 in N contended lock acquisitions for /mutex (Go's "
        "SetMutexProfileFraction); 0 is off: nothing patched, no cost.",
    )
    loop_stall_ms: int = Field(
        default=100, ge=5, le=60_000,
        description="An event loop that does not come back for this long is a stall in /block.",
    )

    _split = field_validator(
        "allow_clients", "trusted_proxies", "profiles", "allowed_hosts", mode="before"
    )(_split_list)

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        """Bare names, compared lower-case: a port or scheme here would silently never match."""
        for name in names:
            if name != "*" and not _HOST_NAME.fullmatch(name):
                raise ValueError(
                    f"allowed_hosts takes bare host names such as myhost.internal (no scheme, "
                    f"port, path or wildcard other than '*'), not {name!r}"
                )
        return tuple(name.lower() for name in names)

    def allows(self, profile: str) -> bool:
        """Whether ``profile`` is on the allowlist."""
        return self.profiles is None or profile in self.profiles

    def check_secure(self) -> None:
        """Refuse settings that would expose profiles to the network without authentication."""
        if self.token is not None:
            check_token(self.token.get_secret_value())
        if self.trusted_proxies and self.token is None and self.authorize is None:
            raise ConfigError(
                "trusted_proxies is set but neither a token nor an authorizer is: addresses "
                "from X-Forwarded-For can be forged, so proxied access needs PYPROF_TOKEN / "
                "Settings(token=...) or Settings(authorize=...)"
            )
        beyond = [str(n) for n in self.allow_clients if not is_loopback(n)]
        if beyond and self.token is None and self.authorize is None:
            raise ConfigError(
                f"allow_clients reaches beyond loopback ({', '.join(beyond)}) but neither a "
                "token nor an authorizer is set: set PYPROF_TOKEN / Settings(token=...), pass "
                "Settings(authorize=...), or keep allow_clients to 127.0.0.0/8 and ::1"
            )


def check_token(token: str) -> None:
    """Refuse a token that is short, or that no client could send as it is.

    Clients strip the spaces around a Bearer token and cannot put control characters in a
    header, so a token with surrounding or non-printing whitespace (a stray newline from a
    secrets file, 16 spaces) could never match as Bearer while it might as Basic: refuse it
    rather than strip it, so the secret in use is exactly the one configured. The message never
    shows the token.
    """
    how = "use a long random one, e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"
    if token != token.strip():
        raise ConfigError("token starts or ends with whitespace (a stray newline or space from "
                          f"the file or variable it came from?), which Bearer clients strip; {how}")
    if not token.isprintable():
        position = next(i for i, char in enumerate(token) if not char.isprintable())
        raise ConfigError(f"token has a control or non-printing character at position "
                          f"{position}, which an HTTP header cannot carry reliably; {how}")
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"token is shorter than {MIN_TOKEN_LENGTH} characters; {how}")


def is_loopback(network: Network) -> bool:
    """Whether every address of ``network`` is a loopback address."""
    return any(network.version == lo.version and network.subnet_of(lo)  # type: ignore[arg-type]
               for lo in LOOPBACK)
