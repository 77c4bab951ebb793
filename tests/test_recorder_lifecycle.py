"""The flight recorder starts with an app's lifespan when its settings ask, and stops at its
shutdown; two apps share one; an app that does not ask never starts it."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from fastapi import FastAPI

import pyprof_http
from pyprof_http.collectors.recorder import RECORDER
from pyprof_http.collectors.sampling_hub import HUB

pytestmark = pytest.mark.usefixtures("request_path")  # both request paths

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


LOCAL: dict[str, Any] = {"base_url": "http://127.0.0.1", "client": ("127.0.0.1", 5000)}


def app_with(**settings: object) -> FastAPI:
    app = FastAPI()

    @app.get("/hello")
    def hello() -> dict[str, str]:
        return {"hello": "world"}

    pyprof_http.install(app, pyprof_http.Settings(**settings))  # type: ignore[arg-type]
    return app


def test_started_at_startup_and_stopped_at_shutdown() -> None:
    assert RECORDER.current is None
    with TestClient(app_with(recorder_hz=7, recorder_seconds=20), **LOCAL) as client:
        recorder = RECORDER.current
        assert recorder is not None and (recorder.hz, recorder.seconds) == (7, 20)
        response = client.get("/debug/pprof/profile?last=20&debug=1")
        assert response.status_code == 200, response.text
        assert "flight recorder" in response.text
    assert RECORDER.current is None and not HUB.running()


def test_two_apps_share_it_until_the_last_shuts_down() -> None:
    with TestClient(app_with(), **LOCAL):
        first = RECORDER.current
        with TestClient(app_with(recorder_hz=50), **LOCAL):
            assert RECORDER.current is first  # joined as is: one per process
        assert RECORDER.current is first  # the other app still holds it
    assert RECORDER.current is None


def test_an_app_that_does_not_ask_never_starts_it() -> None:
    for settings in ({"recorder_hz": 0},
                     {"profiles": frozenset({"goroutine"})}):  # nothing that reads it allowed
        with TestClient(app_with(**settings), **LOCAL) as client:
            assert RECORDER.current is None
            if "profiles" not in settings:
                response = client.get("/debug/pprof/profile?last=5")
                assert response.status_code == 412 and "recorder_hz" in response.text
    assert not HUB.running()


def test_the_profilers_own_endpoints_are_not_kept_as_slow_or_sampled(
        monkeypatch: Any) -> None:
    """A /profile?seconds=30 scrape is always "slow": kept, every scrape pushed a real slow
    request out of /requests (a scraper every minute filled the ring with its own requests).
    Only the app's requests are kept for being slow or sampled; asked for, ours are too."""
    from pyprof_http import request_profiles

    kept: list[tuple[str, str]] = []

    def keep(request_id: str, start_ns: int, meta: dict[str, Any], reason: str,
             recorder: Any, limit: int) -> None:
        kept.append((meta["route"], reason))

    monkeypatch.setattr(request_profiles, "keep", keep)
    with TestClient(app_with(request_sample_rate=1.0), **LOCAL) as client:
        for path in ("/hello", "/debug/pprof/goroutine?debug=1", "/debug/pprof/",
                     "/debug/pprof"):
            assert client.get(path, follow_redirects=False).status_code < 400
        client.get("/debug/pprof/goroutine?debug=1", headers={"X-Pprof-Profile": "1"})
    assert kept == [("/hello", "sampled"), ("/debug/pprof/goroutine", "asked")], kept


def test_the_link_of_an_asked_for_request_answers_while_its_profile_is_still_being_cut(
        monkeypatch: Any) -> None:
    """The response of an X-Pprof-Profile request points to its profile, which is cut off the
    loop after the response went out: a client following the link at once got a 404 about one
    time in ten (here the cut is held for a second, so it always did)."""
    import threading

    from pyprof_http import request_profiles

    cut, release = request_profiles.cut, threading.Event()

    def slow_cut(*args: Any) -> Any:
        release.wait(30)
        return cut(*args)

    monkeypatch.setattr(request_profiles, "cut", slow_cut)
    with TestClient(app_with(), **LOCAL) as client:
        asked = client.get("/hello", headers={"X-Pprof-Profile": "1", "X-Request-ID": "go-1"})
        link = asked.headers["x-pprof-request-profile"]
        assert link == "/debug/pprof/requests/go-1"
        timer = threading.Timer(1.0, release.set)
        timer.start()
        try:
            response = client.get(link + "?debug=1")
        finally:
            release.set()
            timer.join()
        assert response.status_code == 200, response.text
        assert "go-1" in response.text
