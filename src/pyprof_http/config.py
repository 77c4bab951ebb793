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
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
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


def _header_value_ok(value: str) -> bool:
    """One HTTP header line's value: Latin-1, no CR, LF or NUL (what http.client sends)."""
    return not any(c in value for c in "\r\n\0") and all(ord(c) < 256 for c in value)


def _split_pairs(value: Any) -> Any:
    """``k=v,k2=v2`` or a JSON object, for the push labels and headers."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            import json

            return json.loads(text)
        pairs = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, sep, val = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"expected key=value pairs separated by commas, got {key!r}")
            pairs[key.strip()] = val.strip()
        return pairs
    return value


class Settings(BaseSettings):
    """Everything pyprof_http can be told. Every field can be set as ``PYPROF_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="PYPROF_", frozen=True, extra="forbid",
                                      hide_input_in_errors=True)  # secrets never echoed

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
    recorder_hz: int = Field(
        default=19, ge=0, le=100,
        description="Flight recorder: CPU samples per second taken all the time, so "
        "/profile?last=N answers at once with the last N seconds and slow requests keep their "
        "samples; 0 is off. 19 Hz cost under 1% of throughput (benchmarks/recorder.py).",
    )
    recorder_seconds: int = Field(
        default=300, ge=10, le=3600,
        description="How many seconds the flight recorder keeps (one aggregate per second).",
    )
    slow_request_ms: int = Field(
        default=1000, ge=0, le=3_600_000,
        description="A request slower than this keeps its profile in /requests (cut from the "
        "flight recorder when it ends); 0 keeps none for being slow.",
    )
    request_sample_rate: float = Field(
        default=0.0, ge=0.0, le=1.0,
        description="Share of request ids whose profile is kept in /requests, chosen by a "
        "hash of the X-Request-ID (every service seeing the same id decides the same way).",
    )
    request_profiles_kept: int = Field(
        default=100, ge=1, le=10_000,
        description="How many profiled requests /requests keeps (the most recent).",
    )

    series_safe_labels: bool = Field(
        default=False,
        description="pprof answers keep only sample labels a continuous-profiling backend can "
        "index (thread, route; request ids as span_id): Pyroscope makes a series of every "
        "other label, and one per request id or task name would explode its series count. "
        "Turn on where Alloy or Parca scrape the endpoints.",
    )
    push_url: str | None = Field(
        default=None,
        description="Pyroscope server to push profiles to (e.g. http://pyroscope:4040); None: "
        "no pusher. Credentials below go to this URL's host only.",
    )
    push_interval: float = Field(
        default=15.0, ge=0.05, le=3600, description="Seconds between pushes (Go SDKs: 15)."
    )
    push_service_name: str | None = Field(
        default=None, description="The service_name series label (default: the program name)."
    )
    push_version: str | None = Field(
        default=None, description="The version series label (left out when unset)."
    )
    push_labels: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="Extra series labels: JSON or k=v,k2=v2 (e.g. env=prod,region=eu).",
    )
    push_basic_auth_user: str | None = Field(
        default=None, description="User for HTTP Basic auth to push_url (Grafana Cloud: the id)."
    )
    push_basic_auth_password: SecretStr | None = Field(
        default=None, description="Password for HTTP Basic auth to push_url; never logged."
    )
    push_token: SecretStr | None = Field(
        default=None, description="Bearer token for push_url; never logged."
    )
    push_tenant_id: str | None = Field(
        default=None, description="X-Scope-OrgID for multi-tenant Pyroscope servers."
    )
    push_headers: Annotated[dict[str, SecretStr], NoDecode] = Field(
        default_factory=dict, repr=False,
        description="Extra request headers for push_url (JSON or k=v,...); values never logged.",
    )
    push_timeout: float = Field(
        default=5.0, gt=0, le=60, description="Seconds one push may take before it is abandoned."
    )
    push_queue_size: int = Field(
        default=8, ge=1, le=1024,
        description="Batches kept while the server is unreachable; the oldest is dropped.",
    )
    workers_rendezvous: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Join the private rendezvous of a multi-worker server's workers (worker=PID, "
        "workers=all): auto detects uvicorn --workers and gunicorn workers; on forces it (keyed "
        "by the parent pid); off never.",
    )
    worker_timeout_seconds: int = Field(
        default=10, ge=1, le=600,
        description="How long a sibling worker may take to answer beyond the seconds= it was "
        "asked to record, before it is named as not answering.",
    )

    _split = field_validator(
        "allow_clients", "trusted_proxies", "profiles", "allowed_hosts", mode="before"
    )(_split_list)
    _pairs = field_validator("push_labels", "push_headers", mode="before")(
        lambda value: _split_pairs(value))

    @field_validator("push_labels")
    @classmethod
    def _push_label_names(cls, labels: dict[str, str]) -> dict[str, str]:
        """Names Pyroscope accepts, and not one the pusher sets itself."""
        if len(labels) > 23:  # Pyroscope's default: 30 names a series, 7 are the pusher's
            raise ValueError(f"push_labels: {len(labels)} labels; Pyroscope refuses a series "
                             "of more than 30 label names, and the pusher sets 7: at most 23")
        for name in labels:
            if len(name) > 1024:
                raise ValueError("push_labels: a label name longer than 1024 characters")
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", name) or name.startswith("__"):
                raise ValueError(f"push_labels: {name!r} is not a label name (letters, digits, "
                                 "_ and ., not starting with a digit or __)")
            if name in ("service_name", "pid", "host", "version"):
                raise ValueError(f"push_labels: {name!r} is set by the pusher (use "
                                 "push_service_name / push_version)")
        return labels

    @field_validator("push_headers")
    @classmethod
    def _push_header_fields(cls, headers: dict[str, SecretStr]) -> dict[str, SecretStr]:
        """Names HTTP allows and values one header line can carry: http.client refuses anything
        else at send time, which would fail every push (its message quoting the secret)."""
        for name, value in headers.items():
            if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
                raise ValueError(f"push_headers: {name!r} is not an HTTP header name")
            if not _header_value_ok(value.get_secret_value()):
                raise ValueError(f"push_headers: the value of {name} is not one header line "
                                 "(no CR, LF or NUL; Latin-1 characters only)")
        return headers

    @field_validator("push_token", "push_tenant_id")
    @classmethod
    def _push_header_value(cls, value: SecretStr | str | None, info: ValidationInfo
                           ) -> SecretStr | str | None:
        """Sent as a header value (see :meth:`_push_header_fields`); the secret never quoted."""
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if raw is not None and not _header_value_ok(raw):
            raise ValueError(f"{info.field_name} must fit in one header line (no CR, LF or NUL; "
                             "Latin-1 characters only)")
        return value

    @field_validator("push_url")
    @classmethod
    def _push_url(cls, url: str | None) -> str | None:
        """http(s) with a host and nothing after the path: the API paths are appended to it."""
        if url is None or url == "":
            return None
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("push_url must be an http:// or https:// URL with a host, e.g. "
                             "http://pyroscope:4040")
        try:
            parts.port  # noqa: B018 - raises for a port out of range
        except ValueError:
            raise ValueError("push_url has an invalid port") from None
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError("push_url takes no query, fragment or credentials (use "
                             "push_basic_auth_user/push_basic_auth_password or push_token)")
        return url.rstrip("/")

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
