"""The one Content-Security-Policy hash helper: ``'sha256-…'`` sources for inline code.

A browser hashes the bytes of an inline ``<script>`` or ``<style>`` as the page carries them, so
the hash is taken over exactly the bytes the response will send: :func:`pyprof_http.render.utf8`
of the text, which also copes with names holding lone surrogates (undecodable file names), where
a strict ``encode("utf-8")`` raises.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from importlib import resources

from . import utf8


def sha256_source(text: str) -> str:
    """The CSP source (``'sha256-<base64>'``, quotes included) allowing inline ``text``."""
    digest = hashlib.sha256(utf8(text)).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


def asset(name: str) -> str:
    """A file of ``_assets``, with line ends as the browser's HTML parser makes them."""
    text = (resources.files("pyprof_http") / "_assets" / name).read_text(encoding="utf-8")
    # The HTML parser turns CR LF and lone CR into LF before hashing: do the same (a checkout
    # with CRLF line endings must not break the hashes).
    return text.replace("\r\n", "\n").replace("\r", "\n")


@dataclass(frozen=True, slots=True)
class Page:
    """A self-contained page (``<stem>.html`` with ``<stem>.js`` and ``<stem>.css`` inlined)
    and the policy that allows exactly its inline code, nothing else."""

    template: str
    script: str
    style: str
    meta_policy: str
    """For the page's ``<meta>`` (which cannot carry ``frame-ancestors``), so a saved copy
    stays locked."""

    @property
    def content_security_policy(self) -> str:
        """What the HTTP layer sends with the page."""
        return self.meta_policy + "; frame-ancestors 'none'"


def page(stem: str) -> Page:
    """Read a page's assets and hash them; an asset holding its own closing tag would end
    its inline element early, so it is refused at import."""
    script, style = asset(f"{stem}.js"), asset(f"{stem}.css")
    if re.search(r"</script|<!--", script, re.IGNORECASE) or re.search(r"</style", style, re.I):
        raise RuntimeError(f"{stem} assets must not contain their own closing tag")
    policy = (f"default-src 'none'; script-src {sha256_source(script)}; "
              f"style-src {sha256_source(style)}; img-src data:; base-uri 'none'; "
              "form-action 'none'")
    return Page(asset(f"{stem}.html"), script, style, policy)
