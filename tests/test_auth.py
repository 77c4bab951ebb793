"""AuthMiddleware in-process: client checks, credentials, authorizer, audit line."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging

import httpx
import pytest
from starlette.responses import PlainTextResponse

from pyprof_http.auth import AuthMiddleware, Decision, client_address
from pyprof_http.config import Settings

TOKEN = "s3cret-token-0123456789"


async def _inner(scope, receive, send):
    await PlainTextResponse(f"ok {scope.get('pyprof_http.principal')}")(scope, receive, send)


def _get(settings: Settings, client: str = "127.0.0.1", headers=None, path="/x?debug=1"):
    app = AuthMiddleware(_inner, settings)

    async def go():
        transport = httpx.ASGITransport(app=app, client=(client, 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
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


def test_forwarded_for_believed_only_from_trusted_proxies():
    proxies = (ipaddress.ip_network("10.0.0.1/32"),)

    def scope(peer, xff):
        return {"client": (peer, 1), "headers": [(b"x-forwarded-for", xff.encode())]}

    assert str(client_address(scope("10.0.0.1", "127.0.0.1"), proxies)) == "127.0.0.1"
    assert str(client_address(scope("10.0.0.2", "127.0.0.1"), proxies)) == "10.0.0.2"
    # the right-most untrusted hop is the client; anything left of it is attacker-supplied
    assert str(client_address(scope("10.0.0.1", "127.0.0.1, 8.8.8.8"), proxies)) == "8.8.8.8"
    assert client_address(scope("10.0.0.1", "garbage"), proxies) is None
    assert str(client_address(scope("127.0.0.1", "8.8.8.8"), ())) == "127.0.0.1"


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
