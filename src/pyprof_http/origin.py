"""Where a request comes from: its client address, its ``Host``, and the browser's fetch metadata.

The auth layer decides *whether* to serve; this module only establishes facts it can stand by,
and says in one line why when it cannot:

- **The client.** ``scope["client"]`` must be the direct TCP peer. Only when that peer is one of
  ``trusted_proxies`` is its ``X-Forwarded-For`` read (the right-most hop that is not a trusted
  proxy is the client). A server that rewrites ``scope["client"]`` itself from a forwarding
  header (uvicorn's ``ProxyHeadersMiddleware``, on by default for peers in
  ``--forwarded-allow-ips``; hypercorn's ``ProxyFixMiddleware``) leaves the real peer unknowable,
  and with ``--forwarded-allow-ips '*'`` anyone can claim to be ``127.0.0.1``. Such a rewrite is
  recognised by what those middlewares leave behind: the forwarding header stays in the scope,
  and the new client has port 0 (no TCP peer has; both set it when the hop names no port) or is
  exactly a hop's ``address:port`` (uvicorn >= 0.30 takes the port from the hop) or a hop's
  address with a port from ``X-Forwarded-Port`` (daphne ``--proxy-headers``). The request is
  then refused rather than guessed at. A server that rewrote the client *and* dropped the header
  could not be recognised: none known does.
- **The Host.** Without a token or an authorizer, a browser on the same machine is the threat: a
  page whose name is rebound to 127.0.0.1 (DNS rebinding) reaches the profiler with its own name
  in ``Host``. So only an IP literal, ``localhost`` or a configured name is served. A request
  without ``Host`` (HTTP/1.0) is not from a browser and is served. One with
  ``X-Forwarded-Host`` is not: hypercorn's ``ProxyFixMiddleware`` copies that into ``Host``,
  and the rebound page, being same-origin by then, may set it.
- **Requests from other sites.** A page on another site can make the browser fire
  ``profile?seconds=60`` at a loopback port (and send cached Basic credentials along) without
  reading the answer. Browsers label such requests ``Sec-Fetch-Site: cross-site``, or
  ``same-site`` when the page is another port of the same host (a notebook or dev server on
  127.0.0.1, whose pages may show anyone's content). Only a top-level navigation that a user
  made (``Sec-Fetch-User: ?1``: a click, not a script re-navigating a popup) is served then.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
from collections.abc import Iterable, Iterator

from starlette.types import Scope

from .config import Network

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
FORWARDING_HEADERS = frozenset({b"x-forwarded-for", b"forwarded", b"x-real-ip"})
SHOWN_BYTES = 80
"""How much of an attacker-supplied value a refusal quotes."""


@dataclasses.dataclass(frozen=True)
class Client:
    """Who sent the request, as far as the connection and any trusted proxy can tell."""

    address: IPAddress | None
    """The client to check against ``allow_clients``; None when nothing can be believed."""
    shown: str
    """How a refusal names it: ``10.1.2.3``, or where it came from and why it is unknown."""
    doubt: str | None = None
    """Why the request must be refused whatever the address (a forwarding header that cannot
    be trusted); None when the address is established."""

    @property
    def logged(self) -> str:
        """The audit line's ``client=`` field (one word)."""
        if self.address is None:
            return "-"
        return f"unverified:{self.address}" if self.doubt else str(self.address)


def see_client(scope: Scope, trusted_proxies: tuple[Network, ...]) -> Client:
    """Establish the client of ``scope``; see the module docstring for what is believed."""
    raw = scope.get("client")
    host = raw[0] if raw else None
    port = raw[1] if raw and len(raw) > 1 else None
    peer = parse_ip(host)
    if peer is None:
        return Client(None, f"unknown (the server reported {_quote(host)}, not an IP address)")
    forwarding = [(name, value) for name, value in scope.get("headers", ())
                  if name in FORWARDING_HEADERS]
    if not forwarding:
        return Client(peer, str(peer))
    if not trusted_proxies:
        return Client(peer, str(peer), doubt=(
            "request carries a forwarding header (X-Forwarded-For, Forwarded or X-Real-IP) but "
            "trusted_proxies is not set, so its client cannot be established; a proxy in front "
            "needs PYPROF_TRUSTED_PROXIES and a token"))
    hops = set(_hops(forwarding))
    if (port == 0 or (peer, port) in hops
            or (port in _forwarded_ports(scope) and any(peer == hop for hop, _ in hops))):
        return Client(peer, str(peer), doubt=(
            f"the server replaced the client address ({peer}) with one from a forwarding "
            "header, so the connecting peer is unknown; with trusted_proxies the server must "
            "leave that to pyprof_http: run uvicorn with --forwarded-allow-ips '' (or "
            "--no-proxy-headers), hypercorn without ProxyFixMiddleware, daphne without "
            "--proxy-headers"))
    if not within(peer, trusted_proxies):
        return Client(peer, f"{peer} (not a trusted proxy, so its X-Forwarded-For is ignored)")
    chain = _forwarded_for(forwarding)
    if not chain:
        return Client(peer, str(peer), doubt=(
            f"trusted proxy {peer} sent Forwarded or X-Real-IP but no X-Forwarded-For, which "
            "is the header pyprof_http reads; have it set X-Forwarded-For"))
    address = peer
    for hop in reversed(chain):
        parsed = _hop_ip(hop)
        if parsed is None:  # an unparsable chain is not evidence of anything
            return Client(None, f"unknown (X-Forwarded-For from trusted proxy {peer} has "
                                f"{_quote(hop)}, not an IP address)")
        address = parsed
        if not within(parsed, trusted_proxies):
            break
    if address == peer:
        return Client(peer, str(peer))
    return Client(address, f"{address} (X-Forwarded-For from trusted proxy {peer})")


def host_refusal(scope: Scope, allowed_hosts: tuple[str, ...]) -> str | None:
    """Why the ``Host`` of ``scope`` may not be served without credentials; None if it may."""
    headers = scope.get("headers", ())
    if "*" not in allowed_hosts and any(name == b"x-forwarded-host" for name, _ in headers):
        return ("request carries X-Forwarded-Host, from which Host may have been rewritten "
                "(hypercorn's ProxyFixMiddleware does), so Host cannot be checked against DNS "
                "rebinding; without a token only direct requests are served: set a token")
    hosts = [value for name, value in headers if name == b"host"]
    if not hosts:
        return None  # HTTP/1.0 without Host: not a browser, so not a rebinding page
    if len(hosts) > 1:
        return "more than one Host header"
    if "*" in allowed_hosts or host_accepted(hosts[0], allowed_hosts):
        return None
    return (f"Host {_quote(hosts[0])} refused: without a token only an IP address or localhost "
            "is served, so that a web page cannot reach the profiler by rebinding its name "
            "(DNS rebinding); add the name to PYPROF_ALLOWED_HOSTS, or set a token")


def host_accepted(value: bytes, allowed_hosts: Iterable[str]) -> bool:
    """Whether ``value`` is an IP literal or ``localhost`` or a name in ``allowed_hosts``,
    with or without a port. Strict: anything unusual is refused, never guessed at."""
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return False
    if text.startswith("["):
        name, bracket, port = text[1:].partition("]")
        if not bracket or not _is_port(port):
            return False
        try:
            ipaddress.IPv6Address(name)
        except ValueError:
            return False
        return True
    name, colon, port = text.partition(":")
    if not _is_port(colon + port):
        return False
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return name.lower() in ("localhost", *allowed_hosts)
    return True


_SEC_FETCH = (b"sec-fetch-site", b"sec-fetch-mode", b"sec-fetch-dest", b"sec-fetch-user")


def cross_site_refusal(scope: Scope) -> str | None:
    """Why a browser request from another site is refused; None for anything else."""
    fetch = {name: value for name, value in scope.get("headers", ()) if name in _SEC_FETCH}
    site = fetch.get(b"sec-fetch-site")
    if site not in (b"cross-site", b"same-site"):
        return None
    if (fetch.get(b"sec-fetch-mode") == b"navigate" and fetch.get(b"sec-fetch-dest") == b"document"
            and fetch.get(b"sec-fetch-user") == b"?1"):
        return None  # the user followed a link: what they see is what they asked for
    return (f"request from another site's web page refused (Sec-Fetch-Site: {site.decode()}); "
            "open the URL directly")


def parse_ip(text: object) -> IPAddress | None:
    """An address from ``text``, IPv4-mapped IPv6 as IPv4, without an IPv6 zone id; None for
    anything else.

    The zone (``fe80::1%eth0``) names a link on the machine that saw the address and has no
    bearing on ``allow_clients``; to :mod:`ipaddress` it is free text (ESC, NEL, U+2028 pass),
    and a forwarding header or a server that believed one can put it here, so it is dropped
    before the address is ever shown in a refusal or the audit line.
    """
    if not isinstance(text, str):
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped  # dual-stack sockets report IPv4 peers as ::ffff:a.b.c.d
        if address.scope_id is not None:
            return ipaddress.IPv6Address(int(address))
    return address


def within(address: IPAddress, networks: tuple[Network, ...]) -> bool:
    """Whether ``address`` is in any of ``networks``."""
    return any(address.version == n.version and address in n for n in networks)


def _is_port(text: str) -> bool:
    """``""``, or ``:`` and up to five digits (RFC 3986 allows an empty port)."""
    if not text:
        return True
    digits = text[1:]
    return text[0] == ":" and len(digits) <= 5 and (not digits or digits.isdigit())


def _forwarded_for(forwarding: list[tuple[bytes, bytes]]) -> list[str]:
    return [part.strip() for name, value in forwarding if name == b"x-forwarded-for"
            for part in value.decode("latin-1").split(",")]


def _hops(forwarding: list[tuple[bytes, bytes]]) -> Iterator[tuple[IPAddress, int | None]]:
    """Every ``(address, port)`` any forwarding header names (X-Forwarded-For hops, X-Real-IP,
    ``for=`` of Forwarded); port None when the hop has none."""
    for name, value in forwarding:
        for part in value.decode("latin-1").replace(";", ",").split(","):
            text = part.strip()
            if name == b"forwarded":
                key, _, text = text.partition("=")
                if key.strip().lower() != "for":
                    continue
                text = text.strip().strip('"')
            address, port = _hop(text)
            if address is not None:
                yield address, port


def _forwarded_ports(scope: Scope) -> set[int]:
    """The ports ``X-Forwarded-Port`` names, read as daphne ``--proxy-headers`` reads them
    (UTF-8, ``int()``) when it pairs one with the left-most X-Forwarded-For address."""
    ports: set[int] = set()
    for name, value in scope.get("headers", ()):
        if name == b"x-forwarded-port":
            with contextlib.suppress(ValueError):
                ports.add(int(value.decode("utf-8", "replace")))
    return ports


def _hop_ip(text: str) -> IPAddress | None:
    """The address of one hop: ``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80`` or ``::1``."""
    return _hop(text)[0]


def _hop(text: str) -> tuple[IPAddress | None, int | None]:
    """Address and port of one hop, split as uvicorn splits it (so a port it took matches)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    try:
        number: int | None = int(port) if port else None
    except ValueError:
        number = None
    return parse_ip(host), number


def _quote(value: object) -> str:
    """An attacker-supplied value for a one-line reason: printable ASCII, the rest as ``\\xNN``,
    at most :data:`SHOWN_BYTES` of it."""
    if value is None:
        return "nothing"
    raw = value if isinstance(value, bytes) else str(value).encode("utf-8", "backslashreplace")
    body = "".join(chr(b) if 0x20 <= b < 0x7F and b not in b"'\\" else f"\\x{b:02x}"
                   for b in raw[:SHOWN_BYTES])
    return f"'{body}'" + (f"... ({len(raw)} bytes)" if len(raw) > SHOWN_BYTES else "")
