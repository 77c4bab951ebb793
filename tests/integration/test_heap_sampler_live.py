"""The always-on heap sampler under a real uvicorn with default settings (512 KiB): /heap and
/allocs answer at once with no tracing started, ``go tool pprof`` reads both sample indexes,
freed memory leaves inuse, the app's own tracemalloc works alongside, 200 concurrent requests
while threads allocate; and the same app with the extension hidden falls back to tracemalloc."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from live_server import Server, run_server
from test_go_pprof import go_pprof, ok

MIB = 2**20


@pytest.fixture(scope="module")
def heap_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server("/debug/pprof", tmp_path_factory.mktemp("heap-sampler"),
                    app="heap_service:app") as running:
        yield running


@pytest.fixture(scope="module")
def fallback_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server("/debug/pprof", tmp_path_factory.mktemp("heap-fallback"),
                    extra_env={"HEAP_SERVICE_HIDE_EXTENSION": "1"},
                    app="heap_service:app") as running:
        yield running


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "saved").mkdir()
    return tmp_path


def get(server: Server, path: str, timeout: float = 60) -> httpx.Response:
    return httpx.get(server.base_url + path, timeout=timeout)


def inuse_at(text: str, function: str) -> int:
    """In-use bytes of the debug=1 records whose stack has ``function``."""
    total = 0
    for record in text.split("\n\n"):
        head = re.search(r"^(\d+): (-?\d+) \[(\d+): (\d+)\] @", record, re.MULTILINE)
        if head and f"\t{function}\t" in record:
            total += int(head.group(2))
    return total


def test_heap_answers_at_once_from_the_sampler(heap_server: Server) -> None:
    get(heap_server, "/release")
    assert get(heap_server, "/sampler").json() == {"available": True, "running": True}
    get(heap_server, "/hoard?kib=32768")  # 32 MiB: ~64 samples at 512 KiB
    response = get(heap_server, "/debug/pprof/heap?debug=1")
    assert response.status_code == 200, response.text
    text = response.text
    assert text.startswith("heap profile: ")
    assert "# heap sampler" in text and "# SampleRate = 524288" in text
    first = text.split("\n\n")[0]  # the header and the heaviest record
    assert "\thoarding_route\t" in first, text[:3000]
    # the estimate: 32 MiB of 1 KiB blocks (+ headers); 64 samples: +-12 % is 1 sigma, 50 % is 4
    assert 0.5 * 33 * MIB < inuse_at(text, "hoarding_route") < 1.5 * 33 * MIB
    assert get(heap_server, "/debug/pprof/heap?debug=1&gc=1").status_code == 200


def test_go_tool_pprof_reads_inuse_and_alloc_space(go_binary: str, home: Path,
                                                   heap_server: Server) -> None:
    get(heap_server, "/hoard?kib=16384")
    get(heap_server, "/churn?kib=65536")  # 64 MiB allocated and freed at once
    inuse = ok(go_pprof(go_binary, home, "-top", "-sample_index=inuse_space",
                        heap_server.url("/heap")))
    assert "Type: inuse_space" in inuse and "hoarding_route" in inuse, inuse
    alloc = ok(go_pprof(go_binary, home, "-top", "-sample_index=alloc_space",
                        heap_server.url("/heap")))
    assert "Type: alloc_space" in alloc and "churning_route" in alloc, alloc
    default = ok(go_pprof(go_binary, home, "-top", heap_server.url("/allocs")))
    assert "Type: alloc_space" in default and "churning_route" in default, default
    objects = ok(go_pprof(go_binary, home, "-top", "-sample_index=alloc_objects",
                          heap_server.url("/allocs")))
    assert "Type: alloc_objects" in objects
    get(heap_server, "/release")


def test_freed_objects_leave_inuse(heap_server: Server) -> None:
    get(heap_server, "/hoard?kib=32768")
    before = inuse_at(get(heap_server, "/debug/pprof/heap?debug=1").text, "hoarding_route")
    assert before > 10 * MIB
    get(heap_server, "/release")
    text = get(heap_server, "/debug/pprof/heap?debug=1").text
    assert inuse_at(text, "hoarding_route") < 2 * MIB  # one stray sample at most
    allocs = get(heap_server, "/debug/pprof/allocs?debug=1").text
    assert allocs.startswith("allocs profile: ")
    assert "\thoarding_route\t" in allocs  # allocated since start, even though freed


def test_the_apps_own_tracemalloc_works_alongside(heap_server: Server) -> None:
    get(heap_server, "/release")
    assert get(heap_server, "/tracemalloc/start").status_code == 200
    try:
        get(heap_server, "/hoard?kib=16384")
        assert get(heap_server, "/tracemalloc/sees").json() > 16 * 2**20  # tracemalloc sees all
        text = get(heap_server, "/debug/pprof/heap?debug=1").text
        assert inuse_at(text, "hoarding_route") > 4 * MIB  # and so does the sampler
        traced = get(heap_server, "/debug/pprof/heap?source=tracemalloc&debug=1")
        assert traced.status_code == 200 and "# tracemalloc" in traced.text
    finally:
        assert get(heap_server, "/tracemalloc/stop").status_code == 200
    get(heap_server, "/release")
    get(heap_server, "/hoard?kib=16384")  # the sampler is still hooked after tracemalloc stops
    assert inuse_at(get(heap_server, "/debug/pprof/heap?debug=1").text,
                    "hoarding_route") > 4 * MIB
    get(heap_server, "/release")


def test_tracemalloc_window_stays_available(heap_server: Server) -> None:
    response = get(heap_server, "/debug/pprof/heap?source=tracemalloc&seconds=1&debug=1")
    assert response.status_code == 200
    assert "pyprof_http heap window" in response.text
    window = get(heap_server, "/debug/pprof/heap?seconds=1&debug=1")
    assert window.status_code == 200 and "# Mode = window" in window.text
    bad = get(heap_server, "/debug/pprof/heap?source=memray")
    assert bad.status_code == 400 and "source" in bad.text


def test_200_concurrent_requests_while_threads_allocate(heap_server: Server) -> None:
    def one(i: int) -> int:
        path = ("/churn?kib=512" if i % 4 == 0 else
                "/debug/pprof/allocs" if i % 4 == 1 else "/debug/pprof/heap?debug=1")
        return get(heap_server, path, timeout=120).status_code

    with ThreadPoolExecutor(max_workers=200) as pool:
        statuses = list(pool.map(one, range(200)))
    assert statuses == [200] * 200
    assert get(heap_server, "/healthz").status_code == 200


def test_without_the_extension_heap_falls_back_to_tracemalloc(
        go_binary: str, home: Path, fallback_server: Server) -> None:
    assert get(fallback_server, "/sampler").json() == {"available": False, "running": False}
    response = get(fallback_server, "/debug/pprof/heap")
    assert response.status_code == 412 and "seconds=N" in response.text
    asked = get(fallback_server, "/debug/pprof/heap?source=sampler")
    assert asked.status_code == 412 and "extension is not available" in asked.text
    window = get(fallback_server, "/debug/pprof/heap?seconds=1&debug=1")
    assert window.status_code == 200 and "pyprof_http heap window" in window.text
    index = get(fallback_server, "/debug/pprof/").text
    assert "heap?debug=1&seconds=10" in index  # the index links a window, as before
    out = ok(go_pprof(go_binary, home, "-top", fallback_server.url("/allocs?seconds=1")))
    assert "Type: inuse_space" in out  # tracemalloc has no allocation totals


def test_server_log_is_clean(heap_server: Server) -> None:
    log = heap_server.log_text()
    assert "Traceback" not in log and "Fatal Python error" not in log, log
    assert subprocess.run(["true"], check=False).returncode == 0
