"""Start the demo in a container so that it answers from the host, without weakening defaults.

pyprof_http serves loopback clients only unless a token is set. In a container the host is not
loopback (its requests come from the bridge's gateway, e.g. 172.17.0.1), so a plain
``docker run -p 8000:8000`` answered 403 everywhere. This script, the image's entry point:

- uses ``PYPROF_TOKEN`` when given, else generates a random one for this run;
- unless ``PYPROF_ALLOW_CLIENTS`` is given, allows loopback and the networks the container is
  directly attached to (read from ``/proc/net/route`` and ``/proc/net/ipv6_route``): that is
  where the host and sibling containers connect from, and nothing beyond;
- prints the ``curl -u :TOKEN`` line and the browser login hint, then runs uvicorn (``execv``,
  so signals reach it directly). Arguments are uvicorn's (default ``--host 0.0.0.0 --port 8000``).

The token then stands in front of every endpoint, as the library requires for any client
beyond loopback (it refuses to start otherwise).
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import secrets
import shlex
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import NoReturn

DEFAULT_ARGS = ("--host", "0.0.0.0", "--port", "8000")
LOOPBACK = ("127.0.0.0/8", "::1/128")
_RTF_GATEWAY = 0x2
_IPv4_ROUTES = Path("/proc/net/route")
_IPv6_ROUTES = Path("/proc/net/ipv6_route")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def attached_networks(ipv4_routes: str = "", ipv6_routes: str = "") -> list[Network]:
    """The directly attached (no gateway, not default) networks in the kernel's route tables."""
    found: list[Network] = []
    for line in ipv4_routes.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8 or int(fields[3], 16) & _RTF_GATEWAY:
            continue
        destination = bytes.fromhex(fields[1])[::-1]  # little-endian hex
        mask = bytes.fromhex(fields[7])[::-1]
        network = ipaddress.IPv4Network((destination, bin(int.from_bytes(mask, "big")).count("1")))
        if network.prefixlen:
            found.append(network)
    for line in ipv6_routes.splitlines():
        fields = line.split()
        if len(fields) < 10 or int(fields[8], 16) & _RTF_GATEWAY:
            continue
        network6 = ipaddress.IPv6Network((bytes.fromhex(fields[0]), int(fields[1], 16)))
        if network6.prefixlen and not network6.is_multicast and not network6.is_loopback:
            found.append(network6)
    unique = list(dict.fromkeys(found))
    return [n for n in unique  # a host route inside an attached network adds nothing
            if not any(n != m and n.version == m.version and n.subnet_of(m)  # type: ignore[arg-type]
                       for m in unique)]


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def container_config(environ: Mapping[str, str], networks: Iterable[Network],
                     port: int = 8000) -> tuple[dict[str, str], list[str]]:
    """The settings to add to ``environ`` and the lines to print for the user.

    Whatever the user set wins; only what is missing is filled in.
    """
    added: dict[str, str] = {}
    token = environ.get("PYPROF_TOKEN")
    generated = not token
    if not token:
        token = added["PYPROF_TOKEN"] = secrets.token_urlsafe(24)
    if not environ.get("PYPROF_ALLOW_CLIENTS"):
        allowed = [*LOOPBACK, *(str(n) for n in networks)]
        added["PYPROF_ALLOW_CLIENTS"] = ",".join(dict.fromkeys(allowed))
    clients = added.get("PYPROF_ALLOW_CLIENTS") or environ["PYPROF_ALLOW_CLIENTS"]
    url = f"http://localhost:{port}/debug/pprof/"
    origin = ("generated for this run; pass -e PYPROF_TOKEN=... to choose one" if generated
              else "from PYPROF_TOKEN")
    lines = [
        f"pyprof_http demo: every profiler endpoint needs the token ({origin}):",
        f"  curl -u {shlex.quote(':' + token)} '{url}goroutine?debug=1'",
        f"  browser: open {url} and sign in with any user name and the token as password",
        f"  go tool pprof -http=: 'http://:{token}@localhost:{port}/debug/pprof/profile?seconds=10'",
        f"  clients allowed: {clients} (PYPROF_ALLOW_CLIENTS); use the port you published "
        "with -p if it is not the same",
    ]
    return added, lines


def _port(args: Sequence[str]) -> int:
    for flag, value in itertools.pairwise(args):
        if flag == "--port" and value.isdigit():
            return int(value)
    return 8000


def main(argv: Sequence[str] | None = None) -> NoReturn:
    args = list(argv if argv is not None else sys.argv[1:]) or list(DEFAULT_ARGS)
    networks = attached_networks(_read(_IPv4_ROUTES), _read(_IPv6_ROUTES))
    added, lines = container_config(os.environ, networks, _port(args))
    print("\n".join(lines), flush=True)
    env = {**os.environ, **added}
    os.execve(sys.executable, [sys.executable, "-m", "uvicorn", "demo_app.main:app", *args], env)


if __name__ == "__main__":
    main()
