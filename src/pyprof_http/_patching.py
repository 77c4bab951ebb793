"""Monkey-patching that survives ``importlib.reload`` and never stacks on itself.

Every replacement we put on a stdlib attribute (``threading.Lock``, ``asyncio.Lock.acquire``,
``threading.Thread.start``, ...) carries what it replaced: ``__pyprof_http_original__`` is
``(original,)``, or ``()`` when the attribute was absent, and ``__pyprof_http_patch__`` is the
replacement itself. Both live on the patched-in object, not in a module, so a reloaded (or
freshly re-imported) module still finds the true original: reading the original from the
attribute itself would find our own replacement after a reload, and a replacement calling
itself is the ``RecursionError`` this module exists to prevent. Identity marks a replacement
as ours: ``functools.wraps`` copies ``__dict__``, so a wrapper someone put over ours carries the
same attributes but is not its own ``__pyprof_http_patch__``.

A wrapper someone put over ours is left in place when we restore (it is theirs to remove) and
remembered: switching on again while it is still there, a replacement made then calls the
original ours had, not that wrapper (which calls ours: a cycle). If the wrapper says it wraps
ours (``__wrapped__``, as ``functools.wraps`` sets: Sentry's ``Thread.start``), it is left in
place too: it still calls our earlier replacement, which works whether on or off, and putting
ours in its place would drop their hook for good. Anything else there (their own replacement,
or the original put back by a library that had patched before us) is replaced again.
"""

from __future__ import annotations

from typing import Any, Final

ORIGINAL: Final = "__pyprof_http_original__"
SELF: Final = "__pyprof_http_patch__"

_MISSING: Final = object()

_APPLIED: dict[tuple[object, str], object] = globals().get("_APPLIED", {})
"""(owner, name) -> our replacement last put there. Kept across a reload of this module."""
_LEFT: dict[tuple[object, str], tuple[object, tuple[Any, ...]]] = globals().get("_LEFT", {})
"""(owner, name) -> (a foreign wrapper left over ours when we restored, the original ours had)."""


def own_attribute(owner: object, name: str) -> object:
    """The attribute as set on ``owner`` itself (not inherited), or a private sentinel."""
    if isinstance(owner, type):
        return owner.__dict__.get(name, _MISSING)
    return getattr(owner, name, _MISSING)


def is_ours(obj: object) -> bool:
    """Whether ``obj`` is a replacement this library put somewhere (any module generation)."""
    try:
        return getattr(obj, SELF, None) is obj
    except Exception:  # an exotic object whose attribute lookup fails: not ours
        return False


def original_of(owner: object, name: str) -> tuple[Any, ...]:
    """What a replacement of ``owner.name`` must call: ``(original,)`` or ``()`` if absent.

    Our own replacements are looked through (however many generations a reload left), and a
    foreign wrapper we left over ours stands for the original ours had.
    """
    current = own_attribute(owner, name)
    left = _LEFT.get((owner, name))
    if left is not None and left[0] is current:
        return left[1]
    found: tuple[Any, ...] = () if current is _MISSING else (current,)
    while found and is_ours(found[0]):
        found = getattr(found[0], ORIGINAL)
    return found


def apply(owner: object, name: str, replacement: Any, original: tuple[Any, ...]) -> None:
    """Put ``replacement`` at ``owner.name``, marked as ours and as replacing ``original``;
    unless a wrapper someone put over our earlier replacement is still there (see above)."""
    setattr(replacement, ORIGINAL, original)
    setattr(replacement, SELF, replacement)
    key = (owner, name)
    left = _LEFT.get(key)
    current = own_attribute(owner, name)
    if left is None or left[0] is not current or not _wraps_ours(current):
        setattr(owner, name, replacement)
    _APPLIED[key] = replacement


def _wraps_ours(obj: object) -> bool:
    """Whether ``obj``'s ``__wrapped__`` chain (``functools.wraps``) reaches one of ours."""
    for _ in range(100):  # a chain that loops is not ours
        try:
            obj = getattr(obj, "__wrapped__", None)
        except Exception:  # an exotic object whose attribute lookup fails
            return False
        if obj is None:
            return False
        if is_ours(obj):
            return True
    return False


def applied(owner: object, name: str) -> bool:
    """Whether ours is in place at ``owner.name``: on top, or under a wrapper someone put
    over it (which calls it)."""
    current = own_attribute(owner, name)
    return is_ours(current) or ((owner, name) in _APPLIED and _wraps_ours(current))


def restore(owner: object, name: str) -> bool:
    """Put the original back if the attribute is still ours; else leave theirs (and remember
    it). Returns whether something of ours was removed."""
    key = (owner, name)
    current = own_attribute(owner, name)
    applied = _APPLIED.pop(key, None)
    if is_ours(current):
        original: tuple[Any, ...] = getattr(current, ORIGINAL)
        if original:
            setattr(owner, name, original[0])
        else:
            delattr(owner, name)
        _LEFT.pop(key, None)
        return True
    if applied is not None and current is not _MISSING:
        _LEFT[key] = (current, getattr(applied, ORIGINAL))
    return False
