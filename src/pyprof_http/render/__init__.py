"""Renderers: pure functions from a :class:`~pyprof_http.model.Profile` (or a snapshot) to bytes.

Each returns a :class:`Rendered` so the HTTP layer never needs to know a format's media type,
download name or, for HTML, the Content-Security-Policy its inline code needs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Rendered:
    """A response body and what the HTTP layer must say about it."""

    body: bytes
    media_type: str
    filename: str | None = None
    """When set, the response is a download (``Content-Disposition: attachment``)."""
    content_security_policy: str | None = None
    """For HTML: the policy that allows exactly this page's inline script and style."""


def page_title(name: str) -> str:
    """A page's title for the profile ``name``: "goroutine profile", but not "profile profile"
    (``/profile`` serves cpu, wall and tracing profiles; the page's comments say which)."""
    return name if name.endswith("profile") else f"{name} profile"


def utf8(text: str) -> bytes:
    """Encode text that may hold undecodable file names or task names (lone surrogates).

    Paths from the OS and names from the app are not guaranteed to be valid Unicode; a strict
    encode would turn one odd file name into a failed request.
    """
    return text.encode("utf-8", "backslashreplace")
