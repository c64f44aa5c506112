"""The few places where SQLite and PostgreSQL need different SQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import ColumnElement, literal
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from dicomhub.storage.schema import UtcDateTime

__all__ = ["insert_for", "placeholder", "timestamp_param", "wildcard_match"]

_UTC = UtcDateTime()


def placeholder(dialect: Dialect) -> str:
    """The driver's parameter marker, for statements sent through `exec_driver_sql`."""
    return "?" if dialect.paramstyle == "qmark" else "%s"


def timestamp_param(dialect: Dialect, value: datetime) -> Any:
    """`value` as a UTC timestamp column stores it on this database (naive UTC on SQLite), for
    statements sent through `exec_driver_sql`, which skip SQLAlchemy's type processing."""
    process = _utc_processor(dialect)
    return process(value) if process is not None else value


@cache
def _utc_processor(dialect: Dialect) -> Callable[[Any], Any] | None:
    return _UTC.bind_processor(dialect)


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
