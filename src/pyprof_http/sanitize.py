"""The one policy for putting foreign text (task, thread, function, file and type names, request
paths) into a text response or a log line.

Names come from the application and paths from the client: a newline, NEL (U+0085) or U+2028 in
one would forge a record or a whole audit line, and ESC, BEL or a bidi override would reach the
terminal of whoever curls a profile or tails a log. So every character that
:meth:`str.isprintable` rejects (C0 and C1 controls, DEL, line and paragraph separators, format
characters such as U+202E, lone surrogates from undecodable file names, unassigned code points)
is written as a visible escape, as Python's ``repr`` writes it: ``\\n``, ``\\r``, ``\\t``, else
``\\xNN`` below U+0100, ``\\uNNNN``, or ``\\UNNNNNNNN``. A backslash is written ``\\\\``, so an
escape in the output always means the character, never text that only looks like one. A tab is
escaped too (text views use real tabs as column separators); a space stays.

This module imports nothing from the package so that renderers, the auth middleware and the app
can all use it without layering problems. Formats with their own escaping (JSON, HTML, protobuf)
keep theirs.
"""

from __future__ import annotations

from typing import Final

__all__ = ["printable", "quoted"]

_BACKSLASH: Final = "\\"
_NAMED: Final = {_BACKSLASH: "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str, *, backslash: bool = True) -> str:
    """``text`` with every non-printable character and the backslash as a visible escape.

    The result holds only printable characters (and spaces), so it is one line in any reader,
    including those that split on U+2028 or NEL, and cannot move a terminal's cursor.
    ``backslash=False`` leaves backslashes alone, for text our own code already escaped (an
    error reason quoting a parameter with ``repr``), which escaping again would garble.
    """
    if text.isprintable() and (not backslash or _BACKSLASH not in text):
        return text  # the common case, without building a new string
    return "".join(
        char if char.isprintable() and (char != _BACKSLASH or not backslash) else _escape(char)
        for char in text
    )


def quoted(text: str) -> str:
    """``"text"`` for a name printed between double quotes: :func:`printable`, and ``\\"``."""
    return '"' + printable(text).replace('"', '\\"') + '"'
