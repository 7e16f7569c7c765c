"""Plain-text helpers with no dependency (the terminal output imports them at start-up)."""

from __future__ import annotations


def shorten(text: object, limit: int = 160) -> str:
    """``text`` on one line, cut at a word boundary to at most ``limit`` characters (with an
    ellipsis); a single word longer than ``limit`` is cut inside it only as a last resort.

    >>> shorten("OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", 40)
    'OutOfMemoryError: CUDA out of memory.…'
    """
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    head = text[:limit - 1]
    cut = head.rsplit(" ", 1)[0] if " " in head else head
    return cut.rstrip(" ,;:") + "…"
