"""The index database: engine set-up, typed read/write transactions, migrations."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from dicomhub.errors import Conflict, Unavailable

__all__ = ["Database"]

log = logging.getLogger(__name__)

_MIGRATIONS = Path(__file__).parent / "migrations"
_WRITE = "dicomhub_write"
_RETRIES = 5
T = TypeVar("T")


class Database:
    """One engine per process; SQLite and PostgreSQL differences stay in this module and dialect.py."""

    def __init__(self, url: str, *, sqlite_synchronous: str = "FULL", pool_size: int = 8) -> None:
        self.url = make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            database = self.url.database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30}
            kwargs["pool_size"] = pool_size
            kwargs["max_overflow"] = 2 * pool_size
        else:
            kwargs["pool_size"] = pool_size
            kwargs["max_overflow"] = 2 * pool_size
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = create_engine(self.url, **kwargs)
        if self.is_sqlite:
            self._configure_sqlite(sqlite_synchronous.upper())

    def _configure_sqlite(self, synchronous: str) -> None:
        @event.listens_for(self.engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Take transaction control from pysqlite so that BEGIN IMMEDIATE is possible.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout=30000")
            _enable_wal(cur)
            cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA cache_size=-32768")
            cur.execute("PRAGMA temp_store=MEMORY")
            cur.close()

        @event.listens_for(self.engine, "begin")
        def _on_begin(conn: Connection) -> None:
            # Writers take the lock up front: a deferred BEGIN that later writes can deadlock.
            write = conn.get_execution_options().get(_WRITE, False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    @property
    def backend(self) -> str:
        return "sqlite" if self.is_sqlite else "postgresql"

    def describe(self) -> str:
        """The URL without its password, for logs."""
        return self.url.render_as_string(hide_password=True)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn, conn.begin():
                yield conn
        except OperationalError as exc:
            raise Unavailable(f"the index database is unavailable: {exc.orig}") from exc

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        try:
            with self.engine.connect().execution_options(**{_WRITE: True}) as conn, conn.begin():
                yield conn
        except OperationalError as exc:
            if _is_transient(exc):
                raise _Transient(str(exc.orig)) from exc
            raise Unavailable(f"the index database is unavailable: {exc.orig}") from exc

    def write(self, work: Callable[[Connection], T], *, attempts: int = _RETRIES) -> T:
        """Run `work` in one write transaction, again from the start if it loses a race.

        A unique-constraint violation is a concurrent writer that got there first: Conflict.
        """
        for attempt in range(attempts):
            try:
                with self._write() as conn:
                    return work(conn)
            except IntegrityError as exc:
                raise Conflict(
                    f"a concurrent write got there first; read again and retry ({exc.orig})"
                ) from exc
            except _Transient as exc:
                if attempt == attempts - 1:
                    raise Unavailable(f"the index database stayed busy: {exc}") from exc
                log.info("write transaction retried after: %s", exc)
                time.sleep(min(0.05 * 2**attempt, 1.0))
        raise AssertionError("unreachable")

    def migrate(self) -> None:
        """Bring the schema to the newest revision; safe to call from several processes at once."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(_MIGRATIONS))
        # On SQLite the write lock is taken up front (BEGIN IMMEDIATE): with a deferred BEGIN a
        # second process that read the empty schema fails with "database is locked" on its write.
        with self.engine.connect().execution_options(**{_WRITE: self.is_sqlite}) as conn:
            if not self.is_sqlite:
                # Two processes starting together must not both create the tables.
                conn.execute(text("SELECT pg_advisory_lock(724011)"))
                conn.commit()
            try:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
                conn.commit()
            finally:
                if not self.is_sqlite:
                    conn.execute(text("SELECT pg_advisory_unlock(724011)"))
                    conn.commit()

    def analyze(self) -> None:
        """Refresh the planner's statistics. SQLite has none until ANALYZE runs, and without
        them it may drive a FHIR `_has` search from the wrong index (5× slower on 1,000
        Synthea patients); the sampled form (analysis_limit) takes well under a second."""
        with self.engine.connect() as conn:
            if self.is_sqlite:
                conn.exec_driver_sql("PRAGMA analysis_limit=1000")
            conn.exec_driver_sql("ANALYZE")
            conn.commit()

    def dispose(self) -> None:
        self.engine.dispose()


def _enable_wal(cursor: Any) -> None:
    """WAL mode, once per database file (it persists). Switching needs the database to itself,
    and SQLite answers "locked" at once instead of waiting when processes start together."""
    for attempt in range(100):
        try:
            (mode,) = cursor.execute("PRAGMA journal_mode").fetchone()
            if str(mode).lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 99:
                raise
            time.sleep(0.05)


class _Transient(Exception):
    """A write lost a race (lock timeout, serialization failure); trying again may succeed."""


def _is_transient(exc: DBAPIError) -> bool:
    message = str(exc.orig).lower()
    return (
        "database is locked" in message or "could not serialize" in message or "deadlock" in message
    )
