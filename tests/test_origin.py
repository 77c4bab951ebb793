"""origin: who the client is (direct peer, trusted proxy, rewritten by the server), and Host."""

from __future__ import annotations

import ipaddress

import pytest

from pyprof_http.origin import Client, host_accepted, see_client

PROXIES = (ipaddress.ip_network("10.0.0.1/32"),)


def _scope(peer, xff=None, port=1234, name=b"x-forwarded-for"):
    headers = [(name, xff.encode())] if xff is not None else []
    return {"client": (peer, port), "headers": headers}


def test_the_peer_is_the_client_without_forwarding_headers():
    assert see_client(_scope("127.0.0.1"), PROXIES) == Client(
        ipaddress.ip_address("127.0.0.1"), "127.0.0.1")
    assert str(see_client(_scope("::ffff:127.0.0.1"), ()).address) == "127.0.0.1"
    unknown = see_client({"client": None, "headers": []}, ())
    assert unknown.address is None and unknown.logged == "-"


def test_forwarded_for_believed_only_from_trusted_proxies():
    assert str(see_client(_scope("10.0.0.1", "127.0.0.1"), PROXIES).address) == "127.0.0.1"
    assert str(see_client(_scope("10.0.0.2", "127.0.0.1"), PROXIES).address) == "10.0.0.2"
    # the right-most untrusted hop is the client; anything left of it is attacker-supplied
    assert str(see_client(_scope("10.0.0.1", "127.0.0.1, 8.8.8.8"), PROXIES).address) == "8.8.8.8"
    assert str(see_client(_scope("10.0.0.1", "8.8.8.8, 10.0.0.1"), PROXIES).address) == "8.8.8.8"
    assert str(see_client(_scope("10.0.0.1", "8.8.8.8:4000"), PROXIES).address) == "8.8.8.8"
    garbage = see_client(_scope("10.0.0.1", "garbage"), PROXIES)
    assert garbage.address is None and "'garbage'" in garbage.shown


@pytest.mark.parametrize(("peer", "port", "xff", "name"), [
    ("127.0.0.1", 0, "127.0.0.1", b"x-forwarded-for"),
    ("127.0.0.1", 5000, "127.0.0.1:5000", b"x-forwarded-for"),
    ("127.0.0.1", 5000, "8.8.8.8, 127.0.0.1:5000", b"x-forwarded-for"),
    ("::1", 80, "[::1]:80", b"x-forwarded-for"),
    ("127.0.0.1", 0, 'for="127.0.0.1";proto=http', b"forwarded"),  # hypercorn, modern mode
    ("127.0.0.1", 7000, 'For="[::ffff:127.0.0.1]:7000"', b"forwarded"),
    ("127.0.0.1", 7000, "127.0.0.1:7000", b"x-real-ip"),
    ("127.0.0.1", 80, "127.0.0.1:+8_0", b"x-forwarded-for"),  # int() as uvicorn parses it
])
def test_a_client_rewritten_from_a_forwarding_header_is_doubted(peer, port, xff, name):
    seen = see_client(_scope(peer, xff, port, name), PROXIES)
    assert seen.doubt is not None and "replaced the client address" in seen.doubt
    assert seen.logged.startswith("unverified:")


def test_forwarding_headers_without_trusted_proxies_are_doubted():
    seen = see_client(_scope("127.0.0.1", "127.0.0.1"), ())
    assert seen.doubt is not None and "trusted_proxies is not set" in seen.doubt


def test_a_real_peer_is_not_doubted_even_when_a_hop_names_its_address():
    seen = see_client(_scope("10.0.0.1", "203.0.113.9", 51000), PROXIES)
    assert seen.doubt is None and str(seen.address) == "203.0.113.9"
    # two proxies on one host both append: the peer's address is a hop, but not with its port
    seen = see_client(_scope("10.0.0.1", "203.0.113.9, 10.0.0.1", 51000), PROXIES)
    assert seen.doubt is None and str(seen.address) == "203.0.113.9"


@pytest.mark.parametrize(("value", "accepted"), [
    (b"127.0.0.1", True), (b"127.0.0.1:8000", True), (b"[::1]:8000", True), (b"[::1]", True),
    (b"localhost", True), (b"LOCALHOST:1", True), (b"192.0.2.1:65535", True), (b"127.0.0.1:", True),
    (b"localhost.evil.example", False), (b"evil.example", False), (b"localhost.", False),
    (b"[::1]:", True), (b"[::1]:x", False), (b"[1.2.3.4]", False), (b"1.2.3.4.5", False),
    (b"127.0.0.1:999999", False), (b"\xc3\xa9", False), (b"localhost\x00", False),
])
def test_host_accepted(value, accepted):
    assert host_accepted(value, ()) is accepted


def test_host_accepted_with_names():
    assert host_accepted(b"Dev-Box:80", ("dev-box",))
    assert not host_accepted(b"dev-box.evil:80", ("dev-box",))


@pytest.mark.parametrize("name", [b"forwarded", b"x-real-ip"])
def test_a_trusted_proxy_without_x_forwarded_for_is_doubted_not_taken_as_the_client(name):
    value = "for=203.0.113.9" if name == b"forwarded" else "203.0.113.9"
    seen = see_client(_scope("10.0.0.1", value, 51000, name), PROXIES)
    assert seen.doubt is not None and "no X-Forwarded-For" in seen.doubt


@pytest.mark.parametrize(("peer", "port", "xff"), [
    ("10.0.0.1", 51000, "fe80::1%\x1b[2J"),              # a trusted proxy's hop
    ("10.0.0.1", 51000, "[::1%\x85evil]:80"),
    ("::1%\x1b[2J\u2028", 0, "[::1%\x1b[2J\u2028]:0"),    # uvicorn rewrote the client from it
    ("fe80::1%\x1b]0;pwned\x07", 4444, None),           # whatever the server reported
])
def test_an_ipv6_zone_id_never_reaches_what_is_shown_or_logged(peer, port, xff):
    # A zone id ("%eth0") is free text to ipaddress: ESC, BEL, NEL, U+2028 pass. It names a link
    # on the machine that saw the address, says nothing about allow_clients, and was echoed raw
    # into the 403 body and the audit line's client= field.
    seen = see_client(_scope(peer, xff, port), PROXIES)
    for text in (seen.shown, seen.logged, seen.doubt or ""):
        assert "%" not in text and text.isascii() and text.isprintable(), text
    assert seen.address is not None and getattr(seen.address, "scope_id", None) is None


def test_a_zone_id_does_not_change_which_network_an_address_is_in():
    assert str(see_client(_scope("fe80::1%eth0"), ()).address) == "fe80::1"
    assert str(see_client(_scope("10.0.0.1", "::1%lo"), PROXIES).address) == "::1"


@pytest.mark.parametrize(("xff", "port_header", "port"), [
    (b"127.0.0.1", b"4444", 4444),
    (b"127.0.0.1, 203.0.113.9", b" 4444", 4444),
    (b"::1", b"+4_444", 4444),
    (b"127.0.0.1", "\u0664\u0664\u0664\u0664".encode(), 4444),  # int() reads Arabic-Indic digits
])
def test_a_client_rewritten_with_a_port_from_x_forwarded_port_is_doubted(xff, port_header, port):
    # daphne --proxy-headers trusts anyone: the left-most X-Forwarded-For address becomes the
    # client, with int(X-Forwarded-Port) as its port, so neither port 0 nor a hop's port shows
    peer = xff.split(b",")[0].decode()
    scope = {"client": (peer, port),
             "headers": [(b"x-forwarded-for", xff), (b"x-forwarded-port", port_header)]}
    seen = see_client(scope, PROXIES)
    assert seen.doubt is not None and "replaced the client address" in seen.doubt


def test_x_forwarded_port_alone_does_not_doubt_a_real_peer():
    scope = {"client": ("10.0.0.1", 51000),
             "headers": [(b"x-forwarded-for", b"203.0.113.9"), (b"x-forwarded-port", b"443")]}
    seen = see_client(scope, PROXIES)
    assert seen.doubt is None and str(seen.address) == "203.0.113.9"
