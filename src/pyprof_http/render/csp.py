"""The one Content-Security-Policy hash helper: ``'sha256-…'`` sources for inline code.

A browser hashes the bytes of an inline ``<script>`` or ``<style>`` as the page carries them, so
the hash is taken over exactly the bytes the response will send: :func:`pyprof_http.render.utf8`
of the text, which also copes with names holding lone surrogates (undecodable file names), where
a strict ``encode("utf-8")`` raises.
"""

from __future__ import annotations

import base64
import hashlib

from . import utf8


def sha256_source(text: str) -> str:
    """The CSP source (``'sha256-<base64>'``, quotes included) allowing inline ``text``."""
    digest = hashlib.sha256(utf8(text)).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"
