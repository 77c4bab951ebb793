"""Our pushes have the shape of the official Pyroscope SDK's (pyroscope-io, a dev dependency),
recorded from it by a capture server: path, method headers, content type and encoding, series
label layout, raw profile layout. Both are decoded with the real protobuf package from the
hand-written tests/proto/*.proto; both profiles pass Pyroscope's checks and ``go tool pprof``.

pyroscope-io ships wheels for CPython 3.10-3.13 on Linux x86_64; where it cannot be imported
(another platform) the SDK half is skipped with that reason, and our half still runs.
"""

from __future__ import annotations

import base64
import gzip
import importlib.util
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pprof_schema
import proto_schema
import pyroscope_rules
from capture_server import CaptureServer, Recorded
from pyprof_http.config import Settings
from pyprof_http.push import pusher as push

HERE = Path(__file__).resolve().parent
HAVE_SDK = importlib.util.find_spec("pyroscope") is not None


def _ours() -> Recorded:
    with CaptureServer() as server:
        settings = Settings(push_url=server.url, push_interval=0.3,
                            push_service_name="conformance.app", push_labels={"env": "test"},
                            push_basic_auth_user="user", push_basic_auth_password="password",
                            push_tenant_id="tenant-1", push_headers={"X-Extra": "1"})
        pusher = push.Pusher(settings, None)
        pusher.start()
        try:
            deadline = time.monotonic() + 60
            while True:  # the first batch with CPU samples in it (an idle tick has none)
                requests = server.wait_for(len(server.requests) + 1)
                sum(i * i for i in range(200_000))
                body = requests[-1]
                message = proto_schema.push_request(body.payload())
                cpu = [s for s in message.series
                       if dict((p.name, p.value) for p in s.labels)["__name__"] == "process_cpu"]
                if cpu and pprof_schema.decode(cpu[0].samples[0].raw_profile).sample:
                    return body
                assert time.monotonic() < deadline, "no CPU samples were pushed"
        finally:
            pusher.stop()


def _sdk() -> Recorded:
    with CaptureServer() as server:
        subprocess.run([sys.executable, str(HERE / "sdk_pusher.py"), server.url], check=True,
                       timeout=120, capture_output=True)
        return server.wait_for(1)[0]


@pytest.fixture(scope="module")
def recorded() -> dict[str, Recorded]:
    out = {"ours": _ours()}
    if HAVE_SDK:
        out["sdk"] = _sdk()
    return out


def _shape(request: Recorded) -> dict[str, object]:
    message = proto_schema.push_request(request.payload())
    series = next(s for s in message.series
              if dict((p.name, p.value) for p in s.labels)["__name__"] == "process_cpu")
    labels = dict((p.name, p.value) for p in series.labels)
    (sample,) = series.samples
    profile = pprof_schema.decode(sample.raw_profile)
    strings = profile.string_table
    return {
        "path": request.path,
        "content-type": request.headers["content-type"],
        "content-encoding": request.headers["content-encoding"],
        "authorization": request.headers["authorization"],
        "x-scope-orgid": request.headers["x-scope-orgid"],
        "x-extra": request.headers["x-extra"],
        "series labels": {k: labels[k] for k in ("__name__", "service_name", "env")},
        "raw profile is plain pprof": sample.raw_profile[:1] == b"\x0a",
        "id is a uuid": len(sample.ID) == 36 and sample.ID.count("-") == 4,
        "has cpu/nanoseconds": ("cpu", "nanoseconds") in [
            (strings[t.type], strings[t.unit]) for t in profile.sample_type],
        "period type": (strings[profile.period_type.type], strings[profile.period_type.unit]),
        "time_nanos set": profile.time_nanos > 0 and profile.duration_nanos > 0,
    }


EXPECTED = {
    "path": "/push.v1.PusherService/Push",
    "content-type": "application/proto",
    "content-encoding": "gzip",
    "authorization": "Basic " + base64.b64encode(b"user:password").decode(),
    "x-scope-orgid": "tenant-1",
    "x-extra": "1",
    "series labels": {"__name__": "process_cpu", "service_name": "conformance.app",
                      "env": "test"},
    "raw profile is plain pprof": True,
    "id is a uuid": True,
    "has cpu/nanoseconds": True,
    "period type": ("cpu", "nanoseconds"),
    "time_nanos set": True,
}


@pytest.mark.skipif(not HAVE_SDK, reason="pyroscope-io cannot be imported on this platform")
def test_the_sdk_sends_what_we_recorded_it_sending(recorded: dict[str, Recorded]) -> None:
    # the reference itself: if a new SDK changes shape, this says so before the comparison
    assert _shape(recorded["sdk"]) == EXPECTED


def test_our_push_matches_the_sdk_field_by_field(recorded: dict[str, Recorded]) -> None:
    ours = _shape(recorded["ours"])
    assert ours == EXPECTED
    if "sdk" in recorded:
        assert ours == _shape(recorded["sdk"])


def test_our_extra_series_labels(recorded: dict[str, Recorded]) -> None:
    message = proto_schema.push_request(recorded["ours"].payload())
    for series in message.series:
        names = [p.name for p in series.labels]
        assert names[0] == "__name__" and names[1:] == sorted(names[1:])
        assert {"service_name", "pid", "host", "env"} <= set(names)


def test_both_profiles_pass_pyroscope_checks_and_go_pprof(
        recorded: dict[str, Recorded], tmp_path: Path) -> None:
    go = shutil.which("go")
    for who, request in recorded.items():
        for series in proto_schema.push_request(request.payload()).series:
            raw = series.samples[0].raw_profile
            assert pyroscope_rules.violations(raw) == [], who
            if go is None:
                continue
            path = tmp_path / f"{who}.pb.gz"
            path.write_bytes(gzip.compress(raw))
            shown = subprocess.run([go, "tool", "pprof", "-raw", str(path)], check=True,
                                   capture_output=True, text=True, timeout=120).stdout
            assert "Samples:" in shown, who
