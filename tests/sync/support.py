"""Helpers shared by the sync tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from dicomhub.bootstrap import Services


@contextmanager
def statements(services: Services) -> Iterator[list[str]]:
    """The SQL statements the index runs meanwhile, from every connection."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(services.db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(services.db.engine, "before_cursor_execute", record)
