"""The few places where SQLite and PostgreSQL need different SQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, literal
from sqlalchemy.dialects import postgresql, sqlite

__all__ = ["insert_for", "wildcard_match"]


def wildcard_match(column: ColumnElement[Any], pattern: str, backend: str) -> ColumnElement[bool]:
    """Case-sensitive DICOM wildcard match (`*` any run, `?` one character).

    SQLite's LIKE ignores ASCII case, so SQLite uses GLOB; PostgreSQL's LIKE is case-sensitive.
    """
    if backend == "sqlite":
        glob = "".join("[[]" if c == "[" else c for c in pattern)
        return column.op("GLOB")(literal(glob))
    like = []
    for c in pattern:
        if c == "*":
            like.append("%")
        elif c == "?":
            like.append("_")
        elif c in "%_\\":
            like.append("\\" + c)
        else:
            like.append(c)
    return column.like("".join(like), escape="\\")


def insert_for(backend: str, table: Any) -> sqlite.Insert | postgresql.Insert:
    """An INSERT that supports ON CONFLICT on both engines."""
    if backend == "sqlite":
        return sqlite.insert(table)
    return postgresql.insert(table)
