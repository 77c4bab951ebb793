"""Settings: defaults, bounds, PYPROF_ environment, immutability, the allowlist, safety."""

from __future__ import annotations

import ipaddress
import os

import pytest
from pydantic import ValidationError

from pyprof_http import ConfigError, PprofApp, Settings
from pyprof_http.config import LOOPBACK, MIN_TOKEN_LENGTH, is_loopback

TOKEN = "t" * MIN_TOKEN_LENGTH


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("PYPROF_"):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    settings = Settings()
    assert settings.profiles is None
    assert settings.max_profile_seconds == 60
    assert settings.max_stack_depth == 128
    assert settings.max_concurrent_windows == 2
    assert settings.allow_clients == LOOPBACK
    assert settings.trusted_proxies == ()
    assert settings.token is None
    assert settings.authorize is None
    assert settings.lock_profile_fraction == 0  # off: nothing patched
    assert settings.loop_stall_ms == 100
    settings.check_secure()  # closed by default, and so safe


def test_allows_everything_by_default() -> None:
    settings = Settings()
    assert settings.allows("goroutine")
    assert settings.allows("anything")


def test_allowlist() -> None:
    settings = Settings(profiles=frozenset({"cmdline"}))
    assert settings.allows("cmdline")
    assert not settings.allows("goroutine")
    assert not Settings(profiles=frozenset()).allows("cmdline")


def test_profiles_accepts_any_iterable_of_names() -> None:
    assert Settings(profiles=["goroutine", "goroutine"]).profiles == frozenset({"goroutine"})


@pytest.mark.parametrize(("field", "value"), [
    ("max_profile_seconds", 0),
    ("max_profile_seconds", 3601),
    ("max_profile_seconds", "abc"),
    ("max_stack_depth", 0),
    ("max_stack_depth", 4097),
    ("max_concurrent_windows", 0),
    ("max_concurrent_windows", 65),
    ("allow_clients", ["not-a-network"]),
    ("trusted_proxies", ["10.0.0.300/8"]),
    ("lock_profile_fraction", -1),
    ("lock_profile_fraction", 1_000_001),
    ("lock_profile_fraction", 1.5),
    ("loop_stall_ms", 4),
    ("loop_stall_ms", 60_001),
])
def test_bounds(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        Settings(**{field: value})


@pytest.mark.parametrize(("field", "value"), [
    ("max_profile_seconds", 1), ("max_profile_seconds", 3600),
    ("max_stack_depth", 1), ("max_stack_depth", 4096),
    ("lock_profile_fraction", 0), ("lock_profile_fraction", 1_000_000),
    ("loop_stall_ms", 5), ("loop_stall_ms", 60_000),
])
def test_bounds_inclusive(field: str, value: int) -> None:
    assert getattr(Settings(**{field: value}), field) == value


def test_unknown_setting_is_refused() -> None:
    with pytest.raises(ValidationError):
        Settings(tokn="x")  # type: ignore[call-arg]


def test_immutable() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.max_profile_seconds = 5  # type: ignore[misc]
    assert settings.max_profile_seconds == 60


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYPROF_MAX_PROFILE_SECONDS", "15")
    monkeypatch.setenv("PYPROF_MAX_STACK_DEPTH", "7")
    monkeypatch.setenv("PYPROF_PROFILES", '["cmdline", "goroutine"]')
    settings = Settings()
    assert settings.max_profile_seconds == 15
    assert settings.max_stack_depth == 7
    assert settings.profiles == frozenset({"cmdline", "goroutine"})


def test_lock_and_loop_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYPROF_LOCK_PROFILE_FRACTION", "10")
    monkeypatch.setenv("PYPROF_LOOP_STALL_MS", "250")
    settings = Settings()
    assert (settings.lock_profile_fraction, settings.loop_stall_ms) == (10, 250)


def test_constructor_beats_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYPROF_MAX_PROFILE_SECONDS", "15")
    assert Settings(max_profile_seconds=20).max_profile_seconds == 20


def test_invalid_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYPROF_MAX_PROFILE_SECONDS", "0")
    with pytest.raises(ValidationError):
        Settings()


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_profiles_from_a_comma_separated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYPROF_PROFILES", " goroutine, cmdline ,")
    assert Settings().profiles == frozenset({"goroutine", "cmdline"})


def test_networks_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYPROF_ALLOW_CLIENTS", "10.0.0.0/8, ::1")
    monkeypatch.setenv("PYPROF_TRUSTED_PROXIES", '["192.168.1.1"]')
    monkeypatch.setenv("PYPROF_TOKEN", TOKEN)
    settings = Settings()
    assert settings.allow_clients == (ipaddress.ip_network("10.0.0.0/8"),
                                      ipaddress.ip_network("::1"))
    assert settings.trusted_proxies == (ipaddress.ip_network("192.168.1.1/32"),)
    assert settings.token is not None and settings.token.get_secret_value() == TOKEN
    settings.check_secure()


def test_token_is_never_shown() -> None:
    settings = Settings(token=TOKEN)
    assert TOKEN not in repr(settings)
    assert TOKEN not in str(settings)
    assert TOKEN not in settings.model_dump_json()


@pytest.mark.parametrize(("network", "loopback"), [
    ("127.0.0.0/8", True), ("127.0.0.1", True), ("127.1.2.0/24", True), ("::1", True),
    ("0.0.0.0/0", False), ("126.0.0.0/7", False), ("10.0.0.1", False), ("::/0", False),
    ("::ffff:127.0.0.1/128", False), ("::2", False),
])
def test_is_loopback(network: str, loopback: bool) -> None:
    assert is_loopback(ipaddress.ip_network(network)) is loopback


def test_beyond_loopback_without_credentials_refuses_to_start() -> None:
    settings = Settings(allow_clients=["127.0.0.1", "10.0.0.0/8"])
    with pytest.raises(ConfigError) as info:
        settings.check_secure()
    message = str(info.value)
    assert "10.0.0.0/8" in message and "127.0.0.1" not in message.split("(")[1].split(")")[0]
    assert "token" in message and "authorize" in message
    with pytest.raises(ConfigError):
        PprofApp(settings)


def test_beyond_loopback_with_a_token_or_an_authorizer_is_allowed() -> None:
    Settings(allow_clients=["0.0.0.0/0"], token=TOKEN).check_secure()
    Settings(allow_clients=["0.0.0.0/0"], authorize=lambda request: True).check_secure()
    PprofApp(Settings(allow_clients=["0.0.0.0/0"], token=TOKEN))


def test_short_token_is_refused_even_on_loopback() -> None:
    settings = Settings(token="t" * (MIN_TOKEN_LENGTH - 1))
    with pytest.raises(ConfigError, match=f"shorter than {MIN_TOKEN_LENGTH}"):
        settings.check_secure()
    with pytest.raises(ConfigError):
        PprofApp(settings)


def test_empty_allow_clients_is_safe() -> None:
    Settings(allow_clients=[]).check_secure()


def test_trusted_proxies_need_a_token_or_an_authorizer() -> None:
    settings = Settings(trusted_proxies=["10.0.0.5/32"])
    with pytest.raises(ConfigError, match="X-Forwarded-For can be forged"):
        settings.check_secure()
    Settings(trusted_proxies=["10.0.0.5/32"], token=TOKEN).check_secure()
    Settings(trusted_proxies=["10.0.0.5/32"], authorize=lambda request: True).check_secure()


def test_unknown_profile_names_in_the_allowlist_refuse_to_start() -> None:
    with pytest.raises(ConfigError, match="unknown names: gorutine"):
        PprofApp(Settings(profiles=frozenset({"gorutine"})))


@pytest.mark.parametrize(("token", "says"), [
    (" " * MIN_TOKEN_LENGTH, "whitespace"),             # passed the length check before
    (" " * 40, "whitespace"),
    ("\t" * 20, "whitespace"),
    (TOKEN + "\n", "whitespace"),                       # a stray newline from a secrets file
    (" " + TOKEN, "whitespace"),
    (TOKEN + "\u00a0", "whitespace"),                   # no-break space: Unicode whitespace
    (TOKEN[:8] + "\x00" + TOKEN[8:], "position 8"),
    (TOKEN[:3] + "\u2028" + TOKEN[3:], "position 3"),
    (TOKEN[:5] + "\u00a0" + TOKEN[5:], "position 5"),
    (TOKEN[:5] + "\x1b[2J" + TOKEN[5:], "position 5"),
])
def test_tokens_no_client_could_send_refuse_to_start(token: str, says: str) -> None:
    settings = Settings(token=token)
    with pytest.raises(ConfigError, match=says) as info:
        settings.check_secure()
    assert "secrets.token_urlsafe" in str(info.value)
    assert not token.strip() or token.strip()[:8] not in str(info.value)  # never shown
    with pytest.raises(ConfigError):
        PprofApp(settings)


def test_a_token_from_the_environment_with_a_trailing_newline_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYPROF_TOKEN", TOKEN + "\n")
    with pytest.raises(ConfigError, match="whitespace"):
        Settings().check_secure()


@pytest.mark.parametrize("token", [
    "correct horse battery staple",        # inner spaces reach the server as sent
    "pässwört-ünïcødé-0123",
    "a:b:c:d:e:f:g:h:i",                    # a colon: Basic splits at the first one only
])
def test_printable_tokens_are_accepted(token: str) -> None:
    Settings(token=token).check_secure()


def test_allowed_hosts_default_and_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().allowed_hosts == ()
    monkeypatch.setenv("PYPROF_ALLOWED_HOSTS", "MyHost.Internal, dev-box")
    assert Settings().allowed_hosts == ("myhost.internal", "dev-box")
    monkeypatch.setenv("PYPROF_ALLOWED_HOSTS", "*")
    assert Settings().allowed_hosts == ("*",)


@pytest.mark.parametrize("name", [
    "myhost:8000", "http://myhost", "myhost/x", "*.example.com", "", " ", "my host", "[::1]",
])
def test_allowed_hosts_takes_bare_names_only(name: str) -> None:
    with pytest.raises(ValidationError, match="bare host names"):
        Settings(allowed_hosts=[name])
