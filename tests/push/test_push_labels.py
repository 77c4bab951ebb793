"""Series labels and the sample labels a pushed profile keeps (push/labels.py)."""

from __future__ import annotations

import os
import socket

import pytest
from pydantic import ValidationError

from pyprof_http.config import Settings
from pyprof_http.model import Frame, Profile, Sample, ValueType
from pyprof_http.push import labels

URL = "http://127.0.0.1:4040"


def _profile(sample_labels: dict[str, str | int]) -> Profile:
    vt = ValueType("cpu", "nanoseconds")
    return Profile((vt,), (Sample((Frame("f", "a.py", 1),), (5,), sample_labels),), vt, 1,
                   1, 0, (), "cpu")


def test_request_id_becomes_span_id_and_unbounded_labels_are_dropped() -> None:
    pushed = labels.pushable(_profile({"thread": "MainThread", "route": "/items/{id}",
                                       "task": "worker-17", "request_id": "abc-123",
                                       "kind": "task"}))
    (sample,) = pushed.samples
    assert set(sample.labels) == {"thread", "route", "span_id"}
    assert "request_id" not in sample.labels
    assert sample.labels["span_id"] == labels.span_id("abc-123")


def test_span_id_is_sixteen_hex_digits_and_stable() -> None:
    assert labels.span_id("00f067aa0ba902b7") == "00f067aa0ba902b7"  # already one: kept
    hashed = labels.span_id("req-\udcff-ü")  # any text, even a lone surrogate
    assert len(hashed) == 16 and int(hashed, 16) >= 0
    assert labels.span_id("req-\udcff-ü") == hashed
    assert labels.span_id("other") != hashed


def test_long_label_values_are_cut_to_what_pyroscope_takes() -> None:
    (sample,) = labels.pushable(_profile({"thread": "t" * 5000})).samples
    assert sample.labels["thread"] == "t" * labels.MAX_VALUE


def test_base_labels_name_the_process() -> None:
    settings = Settings(push_url=URL, push_service_name="shop", push_version="1.2.3",
                        push_labels={"env": "prod", "region": "eu"})
    base = labels.base_labels(settings)
    assert base == {"service_name": "shop", "pid": str(os.getpid()),
                    "host": socket.gethostname(), "version": "1.2.3",
                    "env": "prod", "region": "eu"}
    assert labels.base_labels(settings, pid=7)["pid"] == "7"  # each worker its own series
    assert "version" not in labels.base_labels(Settings(push_url=URL))


def test_series_puts_the_profile_type_first_and_sorts_the_rest() -> None:
    assert labels.series("process_cpu", {"b": "2", "a": "1"}) == (
        ("__name__", "process_cpu"), ("a", "1"), ("b", "2"))


def test_ingest_name_escapes_its_own_syntax() -> None:
    name = labels.ingest_name({"service_name": "my app", "env": "a,b=c}", "pid": "3"})
    assert name == "my_app{env=a_b_c_,pid=3}"


@pytest.mark.parametrize("bad", [{"1x": "v"}, {"__name__": "v"}, {"pid": "1"}, {"a-b": "v"},
                                 # Pyroscope refuses the whole series for these two
                                 {f"l{n}": "v" for n in range(24)}, {"a" * 1025: "v"}])
def test_label_names_pyroscope_would_refuse_are_a_config_error(bad: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match="push_labels"):
        Settings(push_url=URL, push_labels=bad)


def test_labels_and_headers_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYPROF_PUSH_URL", URL + "/")
    monkeypatch.setenv("PYPROF_PUSH_LABELS", "env=prod, region=eu")
    monkeypatch.setenv("PYPROF_PUSH_HEADERS", '{"X-Api-Key": "s3cret-header-value"}')
    monkeypatch.setenv("PYPROF_PUSH_BASIC_AUTH_PASSWORD", "s3cret-password")
    settings = Settings()
    assert settings.push_url == URL
    assert settings.push_labels == {"env": "prod", "region": "eu"}
    assert settings.push_headers["X-Api-Key"].get_secret_value() == "s3cret-header-value"
    shown = repr(settings) + str(settings)
    assert "s3cret" not in shown


@pytest.mark.parametrize("url", ["ftp://h", "http://", "http://u:p@h:4040",
                                 "http://h:4040/?x=1"])
def test_push_url_must_be_a_plain_http_url(url: str) -> None:
    with pytest.raises(ValidationError, match="push_url"):
        Settings(push_url=url)


@pytest.mark.parametrize("value", ["é" * 3000, "\U0001f600" * 1500, "\udcff" * 1500,
                                   "a" * 1023 + "\u4e2d" * 10])
def test_label_values_are_cut_in_bytes_as_pyroscope_counts_them(value: str) -> None:
    """Cut at 1024 characters, a CJK, emoji or undecodable route/thread/version was up to
    6 KiB on the wire: over Pyroscope's 2048-byte limit, the whole profile refused."""
    (sample,) = labels.pushable(_profile({"route": value})).samples
    route = sample.labels["route"]
    assert isinstance(route, str)
    assert len(route.encode("utf-8", "backslashreplace")) <= labels.MAX_VALUE
    assert value.startswith(route[:10]) or route.startswith("\\udcff")
    base = labels.base_labels(Settings(push_url=URL, push_version=value, push_service_name=value,
                                       push_labels={"env": value}), host=value)
    for name in ("version", "service_name", "env", "host"):
        assert len(base[name].encode("utf-8", "backslashreplace")) <= labels.MAX_VALUE, name
