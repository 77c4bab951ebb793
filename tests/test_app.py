"""The ASGI app in-process: one handler matrix driven by the registry, integration shapes.

Requests go through ``httpx.ASGITransport`` (no server, no lifespan); the lifespan is tested in
test_lifecycle.py and real servers in tests/integration.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

import pprof_schema
from pyprof_http import PprofApp, Settings, install
from pyprof_http.collectors import locks
from pyprof_http.collectors.locks import thread_locks
from pyprof_http.collectors.loop import WATCHDOGS
from pyprof_http.collectors.recorder import RECORDER
from pyprof_http.lifecycle import LifecycleMiddleware
from pyprof_http.registry import PROFILES

TEXT = "text/plain; charset=utf-8"
HTML = "text/html; charset=utf-8"

# format -> (content type, Content-Disposition template or None); a new format must be added here
MEDIA: dict[str, tuple[str, str | None]] = {
    "pprof": ("application/octet-stream", 'attachment; filename="{name}.pb.gz"'),
    "text": (TEXT, None),
    "dump": (TEXT, None),
    "folded": (TEXT, None),
    "flamegraph": (HTML, None),
    "speedscope": ("application/json", 'attachment; filename="{name}.speedscope.json"'),
    "json": ("application/json", None),
    "pyinstrument": (HTML, None),
    "html": (HTML, None),
    "callgrind": ("application/octet-stream", 'attachment; filename="callgrind.out.{name}"'),
    "pstats": ("application/octet-stream", 'attachment; filename="{name}.pstats"'),
    "chrome": ("application/json", 'attachment; filename="{name}.json"'),
}


def request(app: Any, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """One request to an ASGI app, in-process, on a fresh event loop."""

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            response = await client.request(method, url, **kwargs)
            await response.aread()
            return response

    return asyncio.run(go())


def get(app: Any, url: str) -> httpx.Response:
    return request(app, "GET", url)


def _fastapi_app(settings: Settings | None = None) -> FastAPI:
    app = FastAPI()

    @app.get("/hello")
    def hello() -> dict[str, str]:
        return {"hello": "world"}

    install(app, settings)
    return app


APP = _fastapi_app()


# --- the matrix -----------------------------------------------------------------------------


def _matrix() -> list[tuple[str, str, int, str, str | None]]:
    """(path under the prefix, query, status, content type, Content-Disposition)."""
    rows: list[tuple[str, str, int, str, str | None]] = [("/", "", 200, HTML, None)]
    for spec in PROFILES:
        path = "/" + spec.name
        if spec.raw is not None:
            rows.append((path, "", 200, TEXT, None))
            for bad in ("debug=1", "seconds=1", "x=1"):
                rows.append((path, bad, 400, TEXT, None))
            continue
        # a duration profile records for real: one second, in wall mode unless the format
        # needs another (an idle test process has no CPU samples to show)
        # heap without tracing on answers 412 (tested below): ask it for a one-second window
        base = "seconds=1&" if spec.duration is not None or spec.name == "heap" else ""
        default_mode = "mode=wall&" if "mode" in spec.params else ""
        valid = {default_mode: spec.default_format}
        for name, fmt in spec.formats.items():
            mode = f"mode={sorted(fmt.modes)[0]}&" if fmt.modes is not None else default_mode
            valid[f"{mode}format={name}"] = name
        valid.update({f"{default_mode}debug={i}": f for i, f in enumerate(spec.debug_formats)})
        for query, fmt in valid.items():
            media, disposition = MEDIA[fmt]
            rows.append((path, (base + query).rstrip("&"), 200, media,
                         disposition.format(name=spec.name) if disposition else None))
        bad = [f"debug={len(spec.debug_formats)}", "debug=x", "format=nope", "seconds=abc",
               "seconds=0", "seconds=100000", "unknown=1", "debug=1&debug=1", "format="]
        if spec.delta:
            bad += [f"seconds=1&format={f}" for f, fmt in spec.formats.items() if not fmt.delta]
        if "mode" in spec.params:
            bad += ["mode=x", "hz=0", "hz=1001", "hz=1.5", "clock=cpu", "mode=tracing&clock=x",
                    "mode=tracing&hz=10", "format=callgrind", "mode=wall&format=pstats",
                    "mode=tracing&format=pyinstrument"]
        else:
            bad += ["mode=cpu", "hz=100"]
        bad += ["gc=2", "gc=x"] if "gc" in spec.params else ["gc=1"]
        for query in bad:
            rows.append((path, query, 400, TEXT, None))
    rows += [("/nope", "", 404, TEXT, None), ("/goroutine/", "", 404, TEXT, None),
             ("/GOROUTINE", "", 404, TEXT, None), ("//goroutine", "", 404, TEXT, None)]
    return rows


MATRIX = _matrix()


@pytest.mark.parametrize(("path", "query", "status", "media", "disposition"), MATRIX,
                         ids=[f"{p}?{q}" for p, q, *_ in MATRIX])
def test_handler_matrix(path: str, query: str, status: int, media: str,
                        disposition: str | None) -> None:
    # /mutex answers 412 while lock profiling is off (tested below): switch it on for the row
    profiling_locks = path == "/mutex" and locks.set_fraction(1) == 0
    # /recorder answers 412 without a lifespan to start the flight recorder: start it here
    recording = path == "/recorder" and RECORDER.current is None
    if recording:
        RECORDER.start(19, 10, 64)
    try:
        response = get(APP, f"/debug/pprof{path}" + (f"?{query}" if query else ""))
    finally:
        if profiling_locks:
            locks.set_fraction(0)
        if recording:
            RECORDER.stop()
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == media
    assert response.headers.get("content-disposition") == disposition
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    if media == HTML:
        csp = response.headers["content-security-policy"]
        assert "default-src 'none'" in csp
        assert "frame-ancestors 'none'" in csp
        assert response.headers["x-frame-options"] == "DENY"
    else:
        assert "content-security-policy" not in response.headers
        assert "x-frame-options" not in response.headers
    if status >= 400:
        assert response.headers["x-go-pprof"] == "1"
        body = response.text
        assert body.endswith("\n") and body.count("\n") == 1, body
        if status == 404:
            assert body == "Unknown profile\n"
    else:
        assert "x-go-pprof" not in response.headers
        # folded stacks of a profile with no samples (no contention yet) are rightly empty
        assert response.content or query.endswith("format=folded")


@pytest.mark.parametrize(("query", "reason"), [
    ("debug=7", 'invalid value for "debug": must be one of 0 (pprof), 1 (text), 2 (dump)'),
    ("seconds=abc",
     'invalid value for "seconds": must be a whole number of seconds from 1 to 60'),
    ("seconds=1&debug=2", '"seconds" cannot be combined with format dump: a delta has no '
     "per-task detail; use the pprof, text or flamegraph format"),
    ("foo=1", 'unknown parameter "foo"; allowed: debug, format, min_age, seconds'),
])
def test_bad_parameters_say_why(query: str, reason: str) -> None:
    response = get(APP, f"/debug/pprof/goroutine?{query}")
    assert response.status_code == 400
    assert response.text == reason + "\n"


def test_seconds_limit_follows_settings() -> None:
    app = _fastapi_app(Settings(max_profile_seconds=3))
    response = get(app, "/debug/pprof/goroutine?seconds=4")
    assert response.status_code == 400
    assert response.text.endswith("from 1 to 3\n")


# --- bodies ---------------------------------------------------------------------------------


def test_goroutine_pprof_decodes() -> None:
    response = get(APP, "/debug/pprof/goroutine")
    message = pprof_schema.decode(response.content)
    strings = list(message.string_table)
    assert [(strings[t.type], strings[t.unit]) for t in message.sample_type] == [
        ("goroutine", "count")]
    samples = pprof_schema.resolved_samples(message)
    kinds = {labels["kind"] for _, _, labels in samples}
    assert kinds == {"thread", "task"}
    # the request's own task is running, on the thread serving the loop
    running = [labels for _, _, labels in samples
               if labels["kind"] == "task" and labels["state"] == "running"]
    assert len(running) == 1
    assert running[0]["thread"] == threading.current_thread().name


def test_series_safe_labels_keep_only_what_a_backend_can_index() -> None:
    """Pyroscope makes a series of every pprof sample label: scraped answers keep thread and
    route only; the text views (people) keep every label."""
    app = _fastapi_app(Settings(series_safe_labels=True))
    samples = pprof_schema.resolved_samples(pprof_schema.decode(
        get(app, "/debug/pprof/goroutine").content))
    assert samples and {name for _, _, labels in samples for name in labels} <= {
        "thread", "route", "span_id"}
    assert '"kind":"task"' in get(app, "/debug/pprof/goroutine?debug=1").text


def test_goroutine_text_and_dump_bodies() -> None:
    text = get(APP, "/debug/pprof/goroutine?debug=1").text
    assert text.startswith("goroutine profile: total ")
    assert "\n# labels: " in text
    dump = get(APP, "/debug/pprof/goroutine?debug=2").text
    assert dump.startswith("goroutine dump: ")
    assert f'"{threading.current_thread().name}"' in dump
    assert "[running]:" in dump


def test_json_formats_parse() -> None:
    assert json.loads(get(APP, "/debug/pprof/goroutine?format=json").content)
    assert json.loads(get(APP, "/debug/pprof/goroutine?format=speedscope").content)


def test_cmdline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["server.py", "--port", "8000"])
    response = get(APP, "/debug/pprof/cmdline")
    assert response.content == b"server.py\x00--port\x008000"


def test_goroutine_seconds_returns_a_delta() -> None:
    park = threading.Event()
    parked = threading.Thread(target=park.wait, name="parked-for-delta", daemon=True)
    parked.start()
    try:
        full = get(APP, "/debug/pprof/goroutine")
        response = get(APP, "/debug/pprof/goroutine?seconds=1")
    finally:
        park.set()
        parked.join(5)
    assert response.status_code == 200
    assert response.headers["content-disposition"] == 'attachment; filename="goroutine.pb.gz"'
    message = pprof_schema.decode(response.content)
    assert 0.9e9 <= message.duration_nanos <= 3e9
    strings = list(message.string_table)
    assert [(strings[t.type], strings[t.unit]) for t in message.sample_type] == [
        ("goroutine", "count")]
    # a delta of two snapshots: a thread that did not change cancelled out
    def threads(body: bytes) -> set:
        return {labels.get("thread") for _, _, labels in
                pprof_schema.resolved_samples(pprof_schema.decode(body))
                if labels["kind"] == "thread"}

    assert "parked-for-delta" in threads(full.content)
    assert "parked-for-delta" not in threads(response.content)
    assert pprof_schema.decode(full.content).duration_nanos == 0


def test_concurrent_windows_are_capped() -> None:
    app = _fastapi_app(Settings(max_concurrent_windows=1))
    (pprof,) = [r.app for r in app.routes if isinstance(getattr(r, "app", None), PprofApp)]

    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            first = asyncio.ensure_future(c.get("/debug/pprof/goroutine?seconds=3&debug=1"))
            # until the first window is open (a fixed 0.2 s could pass on a loaded machine
            # before the first request got there: then the second one would have been first)
            deadline = time.monotonic() + 30
            while not pprof._windows["goroutine"]:
                assert time.monotonic() < deadline and not first.done(), "no window opened"
                await asyncio.sleep(0.01)
            second = await c.get("/debug/pprof/goroutine?seconds=1&debug=1")
            plain = await c.get("/debug/pprof/goroutine?debug=1")  # no window: not capped
            return [await first, second, plain]

    first, second, plain = asyncio.run(go())
    assert first.status_code == 200
    assert first.text.startswith("goroutine profile: total ")  # a text delta
    assert second.status_code == 429
    assert second.headers["x-go-pprof"] == "1"
    assert "max_concurrent_windows" in second.text and second.text.count("\n") == 1
    assert plain.status_code == 200


# --- index ----------------------------------------------------------------------------------


def test_index_lists_every_allowed_profile_with_relative_links() -> None:
    response = get(APP, "/debug/pprof/")
    body = response.text
    for spec in PROFILES:
        assert f">{spec.name}</a>" in body
    hrefs = [h.split("'")[0] for h in body.split("href='")[1:]]
    assert hrefs
    assert all(not urlsplit(h).scheme and not h.startswith("/") for h in hrefs), hrefs
    assert "goroutine?debug=1" in hrefs and "goroutine?debug=2" in hrefs
    assert "cmdline" in hrefs


def test_allowlist_hides_profiles_from_routes_and_index() -> None:
    app = _fastapi_app(Settings(profiles=frozenset({"cmdline"})))
    for path in ("/debug/pprof/goroutine", "/debug/pprof/goroutine?debug=1",
                 "/debug/pprof/goroutine?debug=99"):
        response = get(app, path)
        assert response.status_code == 404
        assert response.text == "Unknown profile\n"
        assert response.headers["x-go-pprof"] == "1"
    assert get(app, "/debug/pprof/cmdline").status_code == 200
    index = get(app, "/debug/pprof/").text
    assert "goroutine" not in index
    assert ">cmdline</a>" in index


def test_unknown_and_hidden_look_the_same() -> None:
    hidden = get(_fastapi_app(Settings(profiles=frozenset({"cmdline"}))),
                 "/debug/pprof/goroutine")
    unknown = get(APP, "/debug/pprof/doesnotexist")
    # each response echoes its own (new) request id: the only header that may differ
    del hidden.headers["x-request-id"], unknown.headers["x-request-id"]
    assert (hidden.status_code, hidden.text, dict(hidden.headers)) == (
        unknown.status_code, unknown.text, dict(unknown.headers))


# --- methods --------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
@pytest.mark.parametrize("path", ["/", "/goroutine", "/cmdline", "/nope"])
def test_other_methods_are_405(method: str, path: str) -> None:
    response = request(APP, method, f"/debug/pprof{path}")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"
    assert response.headers["x-go-pprof"] == "1"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    assert response.text == "method not allowed; use GET\n"


def test_head_is_allowed() -> None:
    response = request(APP, "HEAD", "/debug/pprof/goroutine?debug=1")
    assert response.status_code == 200
    assert response.headers["content-type"] == TEXT
    assert response.content == b""


# --- integration shapes ---------------------------------------------------------------------


def test_install_on_fastapi_keeps_the_app_routes() -> None:
    assert get(APP, "/hello").json() == {"hello": "world"}
    assert get(APP, "/debug/pprof/goroutine?debug=1").status_code == 200


def test_install_returns_the_same_starlette_app() -> None:
    async def home(request):
        return PlainTextResponse("home")

    app = Starlette(routes=[Route("/", home)])
    assert install(app) is app
    assert get(app, "/").text == "home"
    assert get(app, "/debug/pprof/goroutine?debug=1").text.startswith("goroutine profile:")
    assert get(app, "/debug/pprof/").headers["content-type"] == HTML


def test_install_with_a_custom_prefix() -> None:
    app = install(Starlette(), prefix="pp/")
    assert get(app, "/pp/goroutine?debug=1").status_code == 200
    assert get(app, "/debug/pprof/goroutine").status_code == 404


def test_index_title_follows_the_prefix() -> None:
    app = install(Starlette(), prefix="/pp")
    body = get(app, "/pp/").text
    assert "<title>/pp/</title>" in body
    assert "/debug/pprof" not in body


def test_bare_prefix_redirects_with_our_headers_on_fastapi() -> None:
    for url, location in (("/debug/pprof", "/debug/pprof/"),
                          ("/debug/pprof?debug=1", "/debug/pprof/?debug=1")):
        response = get(APP, url)
        assert response.status_code in (301, 307, 308)
        assert urlsplit(response.headers["location"]).path == "/debug/pprof/"
        assert response.headers["location"].endswith(location)
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-store"


async def _bare_app(scope, receive, send) -> None:
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"app saw " + scope["path"].encode()})


def test_install_on_a_bare_asgi_callable_wraps_it() -> None:
    wrapped = install(_bare_app)
    assert wrapped is not _bare_app
    assert isinstance(wrapped, LifecycleMiddleware)
    assert get(wrapped, "/x").text == "app saw /x"
    assert get(wrapped, "/").text == "app saw /"
    assert get(wrapped, "/debug/pprofx").text == "app saw /debug/pprofx"  # not the prefix
    response = get(wrapped, "/debug/pprof/goroutine?debug=1")
    assert response.status_code == 200
    assert response.text.startswith("goroutine profile:")
    index = get(wrapped, "/debug/pprof/")
    assert index.headers["content-type"] == HTML
    assert get(wrapped, "/debug/pprof/nope").status_code == 404


def test_bare_wrapper_redirects_the_prefix_to_its_slash_form() -> None:
    wrapped = install(_bare_app)
    response = get(wrapped, "/debug/pprof")
    assert response.status_code == 301
    assert response.headers["location"] == "/debug/pprof/"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    with_query = get(wrapped, "/debug/pprof?a=1&b=2")
    assert with_query.headers["location"] == "/debug/pprof/?a=1&b=2"


async def _asgi(app: Any, path: str, root_path: str = "") -> tuple[int, dict, bytes]:
    """Drive one GET by hand, with ``path`` as servers send it (it includes ``root_path``)."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"debug=1",
        "root_path": root_path, "headers": [(b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
    }
    sent: list[dict] = []
    requested = False

    async def receive() -> dict:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body


def test_bare_wrapper_under_a_root_path() -> None:
    # uvicorn --root-path /svc: scope["path"] is "/svc/debug/pprof/..." and root_path "/svc"
    wrapped = install(_bare_app)
    status, _, body = asyncio.run(
        _asgi(wrapped, "/svc/debug/pprof/goroutine", root_path="/svc"))
    assert status == 200, body
    assert body.startswith(b"goroutine profile:")
    status, _, body = asyncio.run(_asgi(wrapped, "/svc/other", root_path="/svc"))
    assert body == b"app saw /svc/other"


def test_starlette_install_under_a_root_path() -> None:
    app = install(Starlette())
    status, _, body = asyncio.run(
        _asgi(app, "/svc/debug/pprof/goroutine", root_path="/svc"))
    assert status == 200, body
    assert body.startswith(b"goroutine profile:")


def test_pprof_app_mounted_alone() -> None:
    app = Starlette()
    app.mount("/debug/pprof", PprofApp())
    assert get(app, "/debug/pprof/goroutine?debug=1").text.startswith("goroutine profile:")
    assert get(app, "/debug/pprof/").headers["content-type"] == HTML
    assert get(app, "/debug/pprof/nope").status_code == 404
    assert get(app, "/debug/pprof/goroutine?debug=9").status_code == 400


def test_pprof_app_in_a_mount_route() -> None:
    app = Starlette(routes=[Mount("/ops/pprof", app=PprofApp())])
    assert get(app, "/ops/pprof/cmdline").status_code == 200
    redirect = get(app, "/ops/pprof")
    assert redirect.status_code in (301, 307, 308)
    assert redirect.headers["location"].endswith("/ops/pprof/")
    assert "<title>/ops/pprof/</title>" in get(app, "/ops/pprof/").text


def test_pprof_app_served_at_the_root() -> None:
    app = PprofApp()
    assert get(app, "/goroutine?debug=1").text.startswith("goroutine profile:")
    assert get(app, "/").headers["content-type"] == HTML
    assert get(app, "/nope").status_code == 404


def test_pprof_app_uses_its_settings() -> None:
    app = PprofApp(Settings(profiles=frozenset({"goroutine"})))
    assert get(app, "/cmdline").status_code == 404
    assert get(app, "/goroutine?debug=1").status_code == 200


def test_starlette_install_bare_prefix_under_a_root_path() -> None:
    app = install(Starlette())
    status, headers, _ = asyncio.run(_asgi(app, "/svc/debug/pprof", root_path="/svc"))
    assert status in (301, 307, 308)
    assert urlsplit(headers["location"]).path == "/svc/debug/pprof/"


def test_mutex_while_lock_profiling_is_off_is_412_with_how_to() -> None:
    assert not locks.is_enabled()
    response = get(APP, "/debug/pprof/mutex?debug=1")
    assert response.status_code == 412
    assert "PYPROF_LOCK_PROFILE_FRACTION=N" in response.text
    assert response.text.count("\n") == 1
    index = get(APP, "/debug/pprof/").text
    assert "<tr><td class=count>off</td><td><a href='mutex?debug=1'>mutex</a>" in index


def _in_lock_wait(ident: int | None) -> bool:
    """Whether thread ``ident`` is in the lock wrapper's wait: the free-lock try has failed, so
    the acquire is a contention whatever the scheduler does next."""
    frame = sys._current_frames().get(ident or 0)
    return (frame is not None and frame.f_code.co_name == "_wait"
            and frame.f_globals.get("__name__") == thread_locks.__name__)


def test_mutex_with_the_setting_on_counts_contention() -> None:
    app = PprofApp(Settings(lock_profile_fraction=1))
    try:
        assert locks.fraction() == 1
        lock = threading.Lock()
        lock.acquire()
        waiter = threading.Thread(target=lambda: lock.acquire() and lock.release(),
                                  name="matrix-lock-waiter")
        waiter.start()
        # released only once the waiter is seen in the wrapper's blocking wait (a fixed sleep
        # let a starved waiter arrive after the release and find the lock free: no contention)
        deadline = time.monotonic() + 30
        while not _in_lock_wait(waiter.ident):
            assert time.monotonic() < deadline, "the waiter never blocked on the lock"
            time.sleep(0.001)
        lock.release()
        waiter.join()
        text = get(app, "/mutex?debug=1").text
        assert text.startswith("mutex profile: contentions/count ")
        assert "threading.Lock.acquire" in text and '"thread":"matrix-lock-waiter"' in text
    finally:
        locks.set_fraction(0)
        locks.reset()


def test_block_and_threadcreate_answer_without_a_lifespan() -> None:
    """Mount-only use: the first request starts the watchdog on the serving loop."""
    app = PprofApp()

    async def main() -> tuple[int, str, bool]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            block = await client.get("/block?debug=1")
            watching = WATCHDOGS.is_watching(asyncio.get_running_loop())
            threads = await client.get("/threadcreate?debug=1")
        WATCHDOGS.stop_all()
        return block.status_code, threads.text, watching

    status, threads_text, watching = asyncio.run(main())
    assert status == 200 and watching
    assert threads_text.startswith("threadcreate profile: total ")


def test_heap_without_tracing_is_412_with_how_to() -> None:
    import tracemalloc

    assert not tracemalloc.is_tracing()
    response = get(APP, "/debug/pprof/heap?debug=1&source=tracemalloc")  # else: the sampler
    assert response.status_code == 412
    assert response.headers["x-go-pprof"] == "1"
    assert "?seconds=N" in response.text and "PYPROF_HEAP_TRACE_AT_START" in response.text
    assert response.text.count("\n") == 1


def test_heap_window_then_tracing_is_off_again() -> None:
    import tracemalloc

    response = get(APP, "/debug/pprof/heap?seconds=1&gc=1&debug=1")
    assert response.status_code == 200, response.text
    assert response.text.startswith("heap profile: ")
    assert not tracemalloc.is_tracing()
    again = get(APP, "/debug/pprof/heap?seconds=1")  # the window's slot was released
    assert again.status_code == 200


def test_heap_trace_at_start_starts_tracemalloc_and_heap_answers_at_once() -> None:
    import tracemalloc

    assert not tracemalloc.is_tracing()
    try:
        app = PprofApp(Settings(heap_trace_at_start=True, heap_frames=5))
        assert tracemalloc.is_tracing() and tracemalloc.get_traceback_limit() == 5
        response = get(app, "/heap?debug=1&source=tracemalloc")
        assert response.status_code == 200
        assert "heap profile: " in response.text and "TracebackLimit" in response.text
        assert tracemalloc.is_tracing()  # a snapshot never stops tracing
    finally:
        tracemalloc.stop()


def test_cpu_mode_off_linux_is_412_with_the_alternative(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    response = get(APP, "/debug/pprof/profile?seconds=1&mode=cpu")
    assert response.status_code == 412
    assert "mode=wall" in response.text


@pytest.mark.parametrize(("path", "status"),
                         [("/debug/pprof", 301), ("/debug/pprof/goroutine", 400)])
def test_a_query_string_that_is_not_utf_8_is_never_a_500(path: str, status: int) -> None:
    # ASGI hands the query string over as bytes and hypercorn passes raw 0xff from an HTTP/2
    # :path; request.url decodes it as strict UTF-8, which the bare-prefix redirect and the
    # error handler's own log line both did: the host's 500 page and a traceback
    sent: list[dict[str, Any]] = []
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "2", "method": "GET",
             "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"debug=\xff", "root_path": "/debug/pprof",
             "headers": [(b"host", b"127.0.0.1")], "client": ("127.0.0.1", 40000),
             "server": ("127.0.0.1", 8000)}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(PprofApp()(scope, receive, send))
    assert sent[0]["status"] == status
    if status == 301:
        assert (b"location", b"/debug/pprof/?debug=%FF") in sent[0]["headers"]


def test_a_request_to_an_app_route_never_consults_the_pprof_routes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 11: install() appends its mount and prefix route after the app's own routes, so a
    request the app serves is matched before pprof's routes are looked at (they cost only
    requests no app route takes); the endpoints are still reached."""
    from starlette.testclient import TestClient

    app = FastAPI()

    @app.get("/items/{item_id}")
    async def read_item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    install(app)
    ours = [route for route in app.router.routes
            if getattr(route, "path", "").startswith("/debug/pprof")]
    assert len(ours) == 2
    consulted = 0
    for route in ours:
        real = route.matches

        def counting(scope: Any, real: Any = real) -> Any:
            nonlocal consulted
            consulted += 1
            return real(scope)

        monkeypatch.setattr(route, "matches", counting)
    with TestClient(app, base_url="http://127.0.0.1", client=("127.0.0.1", 5000)) as client:
        for i in range(5):
            assert client.get(f"/items/{i}").json() == {"item_id": i}
        assert consulted == 0
        assert client.get("/debug/pprof/").status_code == 200
        assert consulted > 0
