"""AuthMiddleware in-process: client checks, credentials, authorizer, audit line."""

from __future__ import annotations

import asyncio
import base64
import logging

import httpx
import pytest
from starlette.responses import PlainTextResponse

from pyprof_http.auth import AuthMiddleware, Decision
from pyprof_http.config import Settings

TOKEN = "s3cret-token-0123456789"


async def _inner(scope, receive, send):
    await PlainTextResponse(f"ok {scope.get('pyprof_http.principal')}")(scope, receive, send)


def _get(settings: Settings, client: str = "127.0.0.1", headers=None, path="/x?debug=1"):
    app = AuthMiddleware(_inner, settings)

    async def go():
        transport = httpx.ASGITransport(app=app, client=(client, 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            return await http.get(path, headers=headers or {})

    return asyncio.run(go())


def _basic(user: str, password: str) -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def test_loopback_only_by_default():
    assert _get(Settings()).status_code == 200
    assert _get(Settings(), client="::1").status_code == 200
    assert _get(Settings(), client="127.0.0.2").status_code == 200
    refused = _get(Settings(), client="10.1.2.3")
    assert refused.status_code == 403
    assert refused.headers["X-Go-Pprof"] == "1"
    assert refused.text.count("\n") == 1 and "allow_clients" in refused.text


def test_non_ip_or_missing_client_is_refused():
    assert _get(Settings(), client="testclient").status_code == 403


def test_ipv4_mapped_ipv6_peer_counts_as_ipv4():
    assert _get(Settings(), client="::ffff:127.0.0.1").status_code == 200


@pytest.mark.parametrize(
    ("headers", "status", "principal"),
    [
        ({}, 401, None),
        ({"Authorization": f"Bearer {TOKEN}"}, 200, "token"),
        ({"Authorization": "Bearer wrong-token-0123456789"}, 401, None),
        (_basic("", TOKEN), 200, "token"),
        (_basic("alice", TOKEN), 200, "token"),
        (_basic(TOKEN, ""), 401, None),
        ({"Authorization": "Basic !!!notbase64"}, 401, None),
        ({"Authorization": f"Digest {TOKEN}"}, 401, None),
    ],
)
def test_token_credentials(headers, status, principal):
    response = _get(Settings(token=TOKEN), headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response.headers["WWW-Authenticate"] == 'Basic realm="pprof", Bearer realm="pprof"'
        assert response.headers["X-Go-Pprof"] == "1"
    else:
        assert response.text == f"ok {principal}"


def test_client_check_comes_before_credentials():
    response = _get(Settings(token=TOKEN), client="10.0.0.9",
                    headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 403


@pytest.mark.parametrize(
    ("answer", "status", "body"),
    [
        (True, 200, "ok authorizer"),
        (Decision.ALLOW, 200, "ok authorizer"),
        ("alice", 200, "ok alice"),
        (False, 403, None),
        (Decision.DENY, 403, None),
        (None, 403, None),
        (Decision.CHALLENGE, 401, None),
    ],
)
def test_authorizer_answers(answer, status, body):
    seen = []

    def authorize(request):
        seen.append(request.url.path)
        return answer

    response = _get(Settings(authorize=authorize))
    assert response.status_code == status
    assert seen == ["/x"]
    if body:
        assert response.text == body


def test_async_authorizer_and_one_that_raises():
    async def allow(request):
        await asyncio.sleep(0)
        return "bob"

    def broken(request):
        raise RuntimeError("boom")

    assert _get(Settings(authorize=allow)).text == "ok bob"
    assert _get(Settings(authorize=broken)).status_code == 403


def test_valid_token_allows_and_anything_else_goes_to_the_authorizer():
    seen = []

    def authorize(request):
        seen.append(request.headers.get("authorization"))
        return request.headers.get("authorization") == "Bearer app-own-jwt"

    settings = Settings(token=TOKEN, authorize=authorize)
    assert _get(settings, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert seen == []  # the token sufficed
    # the app's own credentials are not ours: its authorizer decides
    assert _get(settings, headers={"Authorization": "Bearer app-own-jwt"}).text == "ok authorizer"
    assert _get(settings, headers={"Authorization": "Bearer nope-nope-nope"}).status_code == 403
    assert _get(settings, headers={"Authorization": "Token abc"}).status_code == 403
    assert _get(settings).status_code == 403  # no credentials: the authorizer decides


def test_authorization_header_is_ignored_without_a_token():
    # browsers with single sign-on send Negotiate on their own: loopback default must not 401
    assert _get(Settings(), headers={"Authorization": "Negotiate abc"}).status_code == 200
    settings = Settings(authorize=lambda request: "carol")
    assert _get(settings, headers={"Authorization": "Token abc"}).text == "ok carol"


@pytest.mark.parametrize("header", ["X-Forwarded-For", "Forwarded", "X-Real-IP"])
def test_forwarded_requests_are_refused_without_trusted_proxies(header):
    # uvicorn --forwarded-allow-ips '*' would already have replaced the peer with this claim
    response = _get(Settings(), headers={header: "127.0.0.1"})
    assert response.status_code == 403
    assert "proxy" in response.text


def test_audit_never_logs_part_of_a_long_token(caplog):
    caplog.set_level(logging.INFO, logger="pyprof_http.audit")
    long_token = "T" * 80
    _get(Settings(token=long_token), headers={"Authorization": f"Bearer {long_token}"},
         path=f"/goroutine?debug={long_token}&format={long_token}")
    (record,) = [r for r in caplog.records if r.name == "pyprof_http.audit"]
    assert "T" * 16 not in record.getMessage()


def test_audit_line_has_fields_and_never_the_token(caplog):
    caplog.set_level(logging.DEBUG, logger="pyprof_http")
    settings = Settings(token=TOKEN)
    _get(settings, headers={"Authorization": f"Bearer {TOKEN}"}, path="/goroutine?debug=1")
    _get(settings, headers=_basic(TOKEN, "wrong-password-0000"),
         path=f"/{TOKEN}?format={TOKEN}&x={TOKEN}")
    _get(settings, headers={"Authorization": f"Bearer {TOKEN}x"})
    records = [r for r in caplog.records if r.name == "pyprof_http.audit"]
    assert len(records) == 3
    first = records[0].getMessage()
    for field in ("client=127.0.0.1", "principal=token", "path=/goroutine", '"debug": "1"',
                  "status=200", "duration_ms="):
        assert field in first
    assert "status=401" in records[1].getMessage() and "status=401" in records[2].getMessage()
    for record in caplog.records:
        assert TOKEN not in record.getMessage()
        assert TOKEN not in str(record.__dict__)


# --- raw ASGI requests: header values are bytes, exactly as a server hands them over ---------

async def _drive(app, headers, client=("127.0.0.1", 40000), path="/x", query=b""):
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query,
        "root_path": "", "headers": list(headers), "client": client,
        "server": ("127.0.0.1", 8000),
    }
    sent = []
    requested = False

    async def receive():
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body


def _raw(settings, headers, client=("127.0.0.1", 40000)):
    return asyncio.run(_drive(AuthMiddleware(_inner, settings), headers, client))


def _b64(raw: bytes) -> bytes:
    return base64.b64encode(raw)


def _assert_clean_refusal(status, headers, body, expected):
    assert status == expected, body
    assert headers["x-go-pprof"] == "1"
    assert body.count(b"\n") == 1 and body.endswith(b"\n")
    if expected == 401:
        assert headers["www-authenticate"] == 'Basic realm="pprof", Bearer realm="pprof"'


@pytest.mark.parametrize("value", [
    b"Basic \xc3\xa9",                              # non-ASCII (was an uncaught ValueError)
    b"Basic \xff\xfe\xfd",                          # lone bytes, not UTF-8 at all
    b"Basic " + _b64(b"user:\xff\xfe-not-utf-8"),   # a non-UTF-8 password
    b"Basic " + _b64(TOKEN.encode()),               # no colon: the token alone
    b"Basic !!!notbase64",
    b"Basic " + _b64(b":" + TOKEN.encode())[:-2],   # bad padding
    b"Basic",
    b"Basic ",
    b"Bearer",
    b"Bearer \x00",
    b"Bearer " + TOKEN.encode() + b"\x00",
    b"Bearer \xe2\x80\xa8" + TOKEN.encode(),        # U+2028 in front of the right token
    b"Bearer " + b"x" * 100_000,                    # huge
    b"Basic " + _b64(b":" + b"y" * 100_000),        # huge and well-formed
    b"\xff\xfe " + TOKEN.encode(),
    b"",
    b"Negotiate \x00\x01",
])
def test_every_malformed_authorization_is_a_clean_401(value):
    _assert_clean_refusal(*_raw(Settings(token=TOKEN), [(b"authorization", value)]), 401)


def test_two_authorization_headers_are_refused_even_if_one_is_right():
    right = b"Bearer " + TOKEN.encode()
    status, _, body = _raw(Settings(token=TOKEN), [(b"authorization", right),
                                                   (b"authorization", b"Bearer nope")])
    assert status == 401 and b"more than one" in body


def test_malformed_authorization_goes_to_the_authorizer_when_there_is_one():
    settings = Settings(token=TOKEN, authorize=lambda request: "app-user")
    status, _, body = _raw(settings, [(b"authorization", b"Basic \xc3\xa9")])
    assert (status, body) == (200, b"ok app-user")


NON_ASCII_TOKEN = "pässwört-ünïcødé-0123"


@pytest.mark.parametrize(("value", "status"), [
    (b"Bearer " + NON_ASCII_TOKEN.encode(), 200),                  # curl -H sends UTF-8 bytes
    (b"Basic " + _b64(b"u:" + NON_ASCII_TOKEN.encode()), 200),      # curl -u, browsers: UTF-8
    (b"Bearer " + NON_ASCII_TOKEN.encode("latin-1"), 401),          # other bytes never match
    (b"Basic " + _b64(b"u:" + NON_ASCII_TOKEN.encode("latin-1")), 401),
])
def test_a_non_ascii_token_is_the_same_bytes_in_both_schemes(value, status):
    answer, _, body = _raw(Settings(token=NON_ASCII_TOKEN), [(b"authorization", value)])
    assert answer == status, body
    if status == 200:
        assert body == b"ok token"


def test_403_names_the_client_seen_the_setting_and_that_a_token_is_then_needed():
    refused = _get(Settings(), client="10.1.2.3")
    assert refused.status_code == 403
    text = refused.text
    assert "10.1.2.3" in text and "PYPROF_ALLOW_CLIENTS" in text
    assert "127.0.0.0/8" not in text  # the configured networks may map internal ranges
    assert "token" in text and text.count("\n") == 1
    unknown = _get(Settings(), client="testclient")
    assert "'testclient'" in unknown.text and "not an IP address" in unknown.text


# --- Host (DNS rebinding) -----------------------------------------------------------------------

@pytest.mark.parametrize("host", [
    b"127.0.0.1", b"127.0.0.1:8000", b"[::1]", b"[::1]:8000", b"localhost", b"localhost:8000",
    b"LocalHost:6060", b"10.0.0.7:80", b"[::ffff:127.0.0.1]:80", b"127.0.0.1:",
])
def test_without_credentials_ip_literals_and_localhost_are_served(host):
    status, _, body = _raw(Settings(), [(b"host", host)])
    assert (status, body) == (200, b"ok anonymous")


def test_a_request_without_host_is_served():
    # HTTP/1.0 without Host: no browser sends that, so no rebinding page can
    assert _raw(Settings(), [])[0] == 200


@pytest.mark.parametrize("host", [
    b"evil.example", b"evil.example:8000", b"localhost.evil.example", b"localhost.evil.example:80",
    b"localhost.", b"my-laptop", b"[::1", b"[::1]x", b"::1", b"127.1", b"127.0.0.1:abc",
    b"127.0.0.1:123456", b"127.0.0.1:80:80", b"[evil.example]:80", b"", b"\xff\xfe",
    b"local\x00host", b"localhost\xe2\x80\xa8", b"x" * 100_000,
])
def test_without_credentials_any_other_host_is_403_saying_why(host):
    status, headers, body = _raw(Settings(), [(b"host", host)])
    _assert_clean_refusal(status, headers, body, 403)
    text = body.decode("ascii")  # attacker bytes come back escaped, never raw
    assert "PYPROF_ALLOWED_HOSTS" in text and "DNS rebinding" in text and "token" in text
    assert len(text) < 600


def test_the_403_quotes_the_host_seen_escaped():
    status, _, body = _raw(Settings(), [(b"host", b"evil.example:8000")])
    assert status == 403 and b"Host 'evil.example:8000' refused" in body
    _, _, body = _raw(Settings(), [(b"host", b"a\x00b\xe2\x80\xa8c")])
    assert b"'a\\x00b\\xe2\\x80\\xa8c'" in body


def test_two_host_headers_are_refused():
    status, _, body = _raw(Settings(), [(b"host", b"127.0.0.1"), (b"host", b"evil.example")])
    assert status == 403 and b"more than one Host" in body


def test_allowed_hosts_adds_names_and_star_serves_any():
    settings = Settings(allowed_hosts=["MyHost.internal"])
    assert _raw(settings, [(b"host", b"myhost.internal:8000")])[0] == 200
    assert _raw(settings, [(b"host", b"localhost")])[0] == 200  # still accepted
    assert _raw(settings, [(b"host", b"other.internal")])[0] == 403
    assert _raw(Settings(allowed_hosts=["*"]), [(b"host", b"evil.example")])[0] == 200


def test_with_a_token_or_an_authorizer_host_is_not_restricted():
    bearer = (b"authorization", b"Bearer " + TOKEN.encode())
    assert _raw(Settings(token=TOKEN), [(b"host", b"evil.example"), bearer])[0] == 200
    # and a rebinding page without the token meets the 401 as before
    assert _raw(Settings(token=TOKEN), [(b"host", b"evil.example")])[0] == 401
    settings = Settings(authorize=lambda request: "carol")
    assert _raw(settings, [(b"host", b"evil.example")])[:3:2] == (200, b"ok carol")


# --- cross-site requests from a browser ---------------------------------------------------------

@pytest.mark.parametrize(("site", "mode", "dest", "user", "status"), [
    (b"cross-site", b"no-cors", b"image", None, 403),
    (b"cross-site", b"cors", b"empty", None, 403),
    (b"cross-site", b"navigate", b"iframe", b"?1", 403),
    (b"cross-site", b"navigate", b"document", b"?1", 200),  # the user followed a link
    (b"cross-site", b"navigate", b"document", None, 403),   # a script re-navigating a popup
    (b"same-origin", b"cors", b"empty", None, 200),
    (b"same-site", b"no-cors", b"image", None, 403),  # another port of 127.0.0.1 is same-site
    (b"same-site", b"navigate", b"document", None, 403),
    (b"same-site", b"navigate", b"document", b"?1", 200),
    (b"none", b"navigate", b"document", b"?1", 200),       # typed in the address bar
])
def test_cross_site_browser_requests_are_refused(site, mode, dest, user, status):
    headers = [(b"host", b"127.0.0.1:6060"), (b"sec-fetch-site", site),
               (b"sec-fetch-mode", mode), (b"sec-fetch-dest", dest)]
    if user is not None:
        headers.append((b"sec-fetch-user", user))
    answer, _, body = _raw(Settings(), headers)
    assert answer == status, body
    bearer = (b"authorization", b"Bearer " + TOKEN.encode())  # cached credentials ride along
    assert _raw(Settings(token=TOKEN), [*headers, bearer])[0] == status
    if status == 403:
        assert b"another site" in body and site in body


# --- proxies (item 18) --------------------------------------------------------------------------

PROXIED = {"trusted_proxies": ["10.0.0.1/32"], "token": TOKEN}
BEARER = (b"authorization", b"Bearer " + TOKEN.encode())


def test_a_trusted_proxy_s_forwarded_client_is_believed():
    settings = Settings(**PROXIED)
    headers = [(b"x-forwarded-for", b"127.0.0.1"), BEARER]
    assert _raw(settings, headers, client=("10.0.0.1", 51000))[:3:2] == (200, b"ok token")
    headers = [(b"x-forwarded-for", b"203.0.113.9"), BEARER]
    status, _, body = _raw(settings, headers, client=("10.0.0.1", 51000))
    assert status == 403
    assert b"203.0.113.9 (X-Forwarded-For from trusted proxy 10.0.0.1)" in body


def test_an_untrusted_peer_s_forwarded_for_is_ignored():
    settings = Settings(**PROXIED)
    headers = [(b"x-forwarded-for", b"127.0.0.1"), BEARER]
    status, _, body = _raw(settings, headers, client=("203.0.113.9", 51000))
    assert status == 403 and b"not a trusted proxy" in body


@pytest.mark.parametrize(("client", "xff"), [
    (("127.0.0.1", 0), b"127.0.0.1"),              # uvicorn/hypercorn set port 0
    (("127.0.0.1", 4444), b"127.0.0.1:4444"),      # uvicorn >= 0.30 takes a port from the hop
    (("127.0.0.1", 0), b"127.0.0.1, 203.0.113.9"),
    (("10.0.0.1", 0), b"10.0.0.1"),                # claiming to be the trusted proxy itself
    (("::1", 0), b"[::1]:80"),
])
def test_a_client_the_server_rewrote_from_forwarding_headers_is_refused(client, xff):
    status, _, body = _raw(Settings(**PROXIED), [(b"x-forwarded-for", xff), BEARER], client)
    assert status == 403, body
    assert b"--forwarded-allow-ips ''" in body


def test_uvicorn_proxy_headers_trusting_everyone_cannot_spoof_loopback():
    # the attack of issue 10 item 18, through uvicorn's own middleware: a remote client claims
    # to be 127.0.0.1 and the server, told to trust anyone, rewrites scope["client"] to that
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    app = ProxyHeadersMiddleware(AuthMiddleware(_inner, Settings(**PROXIED)), trusted_hosts="*")
    for xff in (b"127.0.0.1", b"127.0.0.1:5000", b"[::1]:80", b"10.0.0.1, 127.0.0.1"):
        status, _, body = asyncio.run(_drive(app, [(b"x-forwarded-for", xff), BEARER],
                                             client=("203.0.113.9", 51000)))
        assert status == 403, (xff, body)


@pytest.mark.parametrize("header", [b"x-forwarded-for", b"forwarded", b"x-real-ip"])
def test_forwarding_headers_without_trusted_proxies_say_what_to_set(header):
    status, _, body = _raw(Settings(token=TOKEN), [(header, b"for=127.0.0.1"), BEARER])
    assert status == 403 and b"PYPROF_TRUSTED_PROXIES" in body


# --- audit: disconnected, errors, secrets ---------------------------------------------------------

async def _silent(scope, receive, send):
    return None  # what PprofApp does when the client went away before an answer


def _audit_lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "pyprof_http.audit"]


def test_a_request_cut_off_before_an_answer_is_audited_as_disconnected(caplog):
    caplog.set_level(logging.INFO, logger="pyprof_http.audit")
    asyncio.run(_drive(_Tolerant(AuthMiddleware(_silent, Settings())), []))
    (line,) = _audit_lines(caplog)
    assert "status=disconnected" in line and "status=0" not in line


def test_an_inner_failure_is_audited_as_error(caplog):
    async def broken(scope, receive, send):
        raise RuntimeError("boom")

    caplog.set_level(logging.INFO, logger="pyprof_http.audit")
    with pytest.raises(RuntimeError):
        asyncio.run(_drive(AuthMiddleware(broken, Settings()), []))
    (line,) = _audit_lines(caplog)
    assert "status=error" in line


class _Tolerant:
    """Drive an app that sends nothing: _drive expects a response, so give it a dummy one."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        await self.app(scope, receive, send)
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def test_neither_a_right_nor_a_wrong_token_is_ever_logged(caplog):
    caplog.set_level(logging.DEBUG)  # every logger, every level
    wrong = "wrong-token-but-still-a-secret-0123"
    settings = Settings(token=TOKEN)
    for value in (f"Bearer {TOKEN}", f"Bearer {wrong}"):
        _raw(settings, [(b"authorization", value.encode())])
    for user, password in ((TOKEN, TOKEN), (wrong, wrong)):
        _raw(settings, [(b"authorization", b"Basic " + _b64(f"{user}:{password}".encode()))])
    lines = _audit_lines(caplog)
    assert len(lines) == 4 and sum("status=200" in line for line in lines) == 2
    for record in caplog.records:
        text = record.getMessage() + str(record.__dict__)
        assert TOKEN not in text and wrong not in text


def test_200_concurrent_bad_credentials_are_all_clean_401s(caplog):
    caplog.set_level(logging.INFO, logger="pyprof_http.audit")
    app = AuthMiddleware(_inner, Settings(token=TOKEN))
    bad = [b"Bearer nope", b"Basic \xc3\xa9", b"Basic " + _b64(b"nocolon"), b"Basic !!",
           b"Bearer " + b"z" * 10_000, b"Bearer \x00\xff", b""]

    async def storm():
        return await asyncio.gather(*(
            _drive(app, [(b"authorization", bad[i % len(bad)]), (b"host", b"127.0.0.1")])
            for i in range(200)))

    answers = asyncio.run(storm())
    assert [status for status, _, _ in answers] == [401] * 200
    assert len(_audit_lines(caplog)) == 200
    assert all("status=401" in line for line in _audit_lines(caplog))


@pytest.mark.parametrize("xff", [b"\x00", b"127.0.0.1\xe2\x80\xa8", b"\xff\xfe", b"1" * 50_000,
                                 b"127.0.0.1, \x1b[2J"])
def test_hostile_forwarded_for_from_a_trusted_proxy_is_a_clean_403(xff):
    status, headers, body = _raw(Settings(**PROXIED), [(b"x-forwarded-for", xff), BEARER],
                                 client=("10.0.0.1", 51000))
    _assert_clean_refusal(status, headers, body, 403)
    assert body.isascii() and b"\x1b" not in body and len(body) < 600


def test_a_zone_id_in_a_forged_client_is_not_echoed_raw(caplog):
    # uvicorn trusting everyone takes "[::1%<ESC>...]:4444" from X-Forwarded-For as the client;
    # the refusal and the audit line named it with the zone's bytes as they came
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    caplog.set_level(logging.INFO, logger="pyprof_http.audit")
    app = ProxyHeadersMiddleware(AuthMiddleware(_inner, Settings(**PROXIED)), trusted_hosts="*")
    forged = (b"x-forwarded-for", b"[::1%\x1b[2J\xe2\x80\xa8]:4444")
    status, headers, body = asyncio.run(_drive(app, [forged, BEARER],
                                               client=("203.0.113.9", 51000)))
    _assert_clean_refusal(status, headers, body, 403)
    assert body.isascii() and b"\x1b" not in body and b"%" not in body
    (line,) = _audit_lines(caplog)
    assert "client=unverified:::1 " in line and "\x1b" not in line


@pytest.mark.parametrize("rewritten", [b"127.0.0.1", b"rebound.evil.example:6060"])
def test_a_host_that_may_come_from_x_forwarded_host_is_not_served_without_a_token(rewritten):
    # hypercorn's ProxyFixMiddleware (legacy mode, its default) replaces Host with
    # X-Forwarded-Host and keeps that header; after rebinding, the attacker's page is
    # same-origin, so its fetch() may set X-Forwarded-Host: 127.0.0.1 and pass the Host check
    headers = [(b"host", rewritten), (b"x-forwarded-host", b"127.0.0.1")]
    status, response_headers, body = _raw(Settings(), headers)
    _assert_clean_refusal(status, response_headers, body, 403)
    assert b"X-Forwarded-Host" in body and b"DNS rebinding" in body
    assert _raw(Settings(token=TOKEN), [*headers, BEARER])[0] == 200  # with a token Host is moot
    assert _raw(Settings(allowed_hosts=["*"]), headers)[0] == 200  # any Host, as configured


@pytest.mark.parametrize("settings", [Settings(), Settings(allow_clients=["127.0.0.2/32"])])
def test_a_query_string_that_is_not_utf_8_is_audited_not_raised(caplog, settings):
    # ASGI hands the query string over as bytes; hypercorn passes raw 0xff from an HTTP/2 :path.
    # The audit line read request.url, which decodes it as strict UTF-8: a UnicodeDecodeError
    # after the answer, i.e. the server's "Exception in ASGI application" traceback per request,
    # for any client, refused ones too
    caplog.set_level(logging.INFO, logger="pyprof_http.audit")
    app = AuthMiddleware(_inner, settings)
    status, _, _ = asyncio.run(_drive(app, [], path="/goroutine", query=b"debug=\xff&seconds=\xc3"))
    (line,) = _audit_lines(caplog)
    assert f"status={status}" in line and "path=/goroutine" in line


def test_daphne_proxy_headers_cannot_spoof_loopback_with_x_forwarded_port():
    # daphne --proxy-headers (no trusted-host list) sets scope["client"] to the left-most
    # X-Forwarded-For address and int(X-Forwarded-Port): a remote client became 127.0.0.1:4444,
    # neither port 0 nor a hop's port, and passed allow_clients (issue 10 item 18)
    headers = [(b"x-forwarded-for", b"127.0.0.1"), (b"x-forwarded-port", b"4444"), BEARER]
    status, _, body = _raw(Settings(**PROXIED), headers, client=("127.0.0.1", 4444))
    assert status == 403, body
    assert b"replaced the client address" in body and b"daphne" in body


def test_a_token_with_plus_signs_pasted_into_the_query_is_not_logged(caplog):
    # base64 tokens (openssl rand -base64 32) hold '+'; a query string decodes '+' as a space,
    # so the redaction, looking for the token as configured, let "abc def ..." through
    caplog.set_level(logging.INFO, logger="pyprof_http.audit")
    token = "Zm9v+YmFy/YmF6+cXV4+cXV1eA=="
    _get(Settings(token=token), headers={"Authorization": f"Bearer {token}"},
         path=f"/goroutine?seconds={token}&{token}=1")
    (line,) = _audit_lines(caplog)
    assert token.replace("+", " ") not in line and "YmFy/YmF6" not in line
    assert "<redacted>" in line


@pytest.mark.parametrize("answer", ["", "   ", "deny", "allow", "challenge", "False", "none"])
def test_an_authorizer_string_that_is_no_principal_denies(answer):
    """A blank string or a Decision's word returned by mistake must fail closed, not open."""
    status, _, _ = _raw(Settings(authorize=lambda request: answer), [])
    assert status == 403


@pytest.mark.parametrize(("raised", "status"), [(401, 401), (403, 403), (404, 403)])
def test_an_authorizer_raising_http_exception_keeps_its_meaning(raised, status):
    from starlette.exceptions import HTTPException

    def authorize(request):
        raise HTTPException(raised)

    assert _raw(Settings(authorize=authorize), [])[0] == status
