"""pyprof_http: Go's ``net/http/pprof`` for Python ASGI services.

Mount it, then read every thread and asyncio task of the running service over HTTP::

    from fastapi import FastAPI
    import pyprof_http

    app = FastAPI()
    pyprof_http.install(app)            # serves /debug/pprof/ (loopback clients by default)
    # or: app.mount("/debug/pprof", pyprof_http.PprofApp())
    # or, on a side port of its own (any process; answers even while the main loop is blocked):
    #     pyprof_http.install(app, prefix=None); pyprof_http.serve_in_background(port=6060)

From a terminal, while the service runs::

    curl http://127.0.0.1:8000/debug/pprof/goroutine?debug=1   # stacks grouped, most common first
    curl http://127.0.0.1:8000/debug/pprof/goroutine?debug=2   # every thread and task, await chains
    go tool pprof -top http://127.0.0.1:8000/debug/pprof/goroutine
    go tool pprof -top -seconds=10 http://127.0.0.1:8000/debug/pprof/goroutine  # what changed

In a browser, open ``http://127.0.0.1:8000/debug/pprof/`` for the index and flamegraphs.

Under ``uvicorn --workers N`` or gunicorn, every response names its worker (``X-Pyprof-Worker``);
``?worker=PID`` asks one worker, ``?workers=all`` all of them (pprof merged, samples labelled
``pid``; text one section per worker)::

    go tool pprof -top -tagfocus=pid=4242 'http://127.0.0.1:8000/debug/pprof/goroutine?workers=all'

Lock contention (``/mutex``) is off until switched on, like Go's ``SetMutexProfileFraction``::

    pyprof_http.set_lock_profile_fraction(10)   # or PYPROF_LOCK_PROFILE_FRACTION=10

Why was a request slow when nothing was hot? Record the event loop's timeline for a few seconds
(task steps, requests, thread-pool work, GC, stalls, and your own markers)::

    pyprof_http.mark("db.query.start", table="users")    # one global check while not tracing
    async with pyprof_http.span("db.query", table="users"): ...
    curl 'http://127.0.0.1:8000/debug/pprof/trace?seconds=5&debug=1'   # per request: running,
                                                 # waiting for the loop (behind what), thread pool
    curl -o trace.json 'http://127.0.0.1:8000/debug/pprof/trace?seconds=5'   # open in Perfetto

Formats: ``debug=0`` (pprof, gzip protobuf), ``debug=1`` (text), ``debug=2`` (full dump), or
``format=pprof|text|dump|flamegraph|folded|speedscope|json``. Bad parameters are a 400 with a
one-line reason; nothing silently falls back to a default.
"""

from .app import PprofApp, install
from .auth import Decision
from .config import ConfigError, Settings
from .lifecycle import LifecycleMiddleware
from .log_context import RequestContextFilter
from .markers import mark, span
from .side_server import BackgroundServer, serve_in_background
from .switches import set_lock_profile_fraction

__all__ = [
    "BackgroundServer",
    "ConfigError",
    "Decision",
    "LifecycleMiddleware",
    "PprofApp",
    "RequestContextFilter",
    "Settings",
    "install",
    "mark",
    "serve_in_background",
    "set_lock_profile_fraction",
    "span",
]
__version__ = "0.1.0"
