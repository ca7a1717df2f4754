"""An exception (or any message) as one short line for a user: a status bar, a job row, a CLI error.

Library errors often span lines (a traceback-like dump, a C library's log) or are empty; every place that shows
one used to cut it by hand, each a little differently. The rule, once: the first non-blank line, stripped, at
most ``limit`` characters; an empty message becomes the exception's type name, so something is always said.
"""

from __future__ import annotations

from typing import Optional

__all__ = ["first_line", "one_line"]


def first_line(text: object, limit: Optional[int] = 300) -> str:
    """The first non-blank line of ``str(text)``, stripped and cut to ``limit`` characters; "" when blank."""
    for line in str(text).splitlines():
        if line.strip():
            line = line.strip()
            return line if limit is None else line[:limit]
    return ""


def one_line(exc: BaseException, limit: Optional[int] = 300, *, typed: bool = False) -> str:
    """``exc`` as one line: its message's first line, or its type name when the message is empty.

    ``typed`` prefixes the type name (``ValueError: bad value``) — for errors that are not the engine's own
    one-line :class:`~dnd_engine.errors.DnDError`, where the type says what kind of failure it was.
    """
    detail = first_line(exc, limit)
    name = type(exc).__name__
    if typed:
        return f"{name}: {detail}" if detail else name
    return detail or name
