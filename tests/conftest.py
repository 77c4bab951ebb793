"""Fixtures shared across test modules."""

from __future__ import annotations

import pytest

from pyprof_http import request_labels


@pytest.fixture(params=["C request cycle", "Python request cycle"])
def request_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The lifecycle middleware's two paths for an ordinary request: the C one (built by
    ``pip install``) and the Python one it stands in for (no compiler; asked-for profiles and
    /trace windows always take it). Middlewares built in the test take the path asked for."""
    if request.param == "Python request cycle":
        monkeypatch.setattr(request_labels, "fast_cycles", lambda: None)
    else:
        assert request_labels.fast_cycles() is not None, "the C request cycle was not built"
    return str(request.param)
