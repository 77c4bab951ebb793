"""The index names its process and lists the server's workers (render/index.py)."""

from __future__ import annotations

from pyprof_http.render.index import IndexRow, ProcessInfo, render_index

ROWS = [IndexRow("goroutine", "stacks", 3, ["text", "pprof"])]


def _page(process: ProcessInfo | None) -> str:
    return render_index("/debug/pprof/", ROWS, process).body.decode()


def test_a_single_process_names_itself_and_lists_no_workers() -> None:
    page = _page(ProcessInfo(42, "pid 42"))
    assert "Served by pid 42." in page and "Workers of this server" not in page
    assert "worker=" not in page
    assert "Served by" not in _page(None)  # callers that pass nothing get the page as it was


def test_siblings_are_linked_and_a_pinned_page_keeps_worker_in_every_link() -> None:
    page = _page(ProcessInfo(42, "pid 42 (worker 1 of 2)", [42, 43], via_worker=True))
    assert "<a href='./?worker=42'>42</a> (this one)" in page
    assert "<a href='./?worker=43'>43</a>" in page
    assert "href='goroutine?debug=1&worker=42'" in page
    assert "href='goroutine?debug=2&amp;worker=42'" in page


def test_a_refusal_is_shown_escaped() -> None:
    page = _page(ProcessInfo(42, "pid 42", refusal="/tmp/<script>x is a symlink"))
    assert "&lt;script&gt;x is a symlink" in page and "<script>x" not in page
