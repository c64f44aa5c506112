"""DriverCursor: statements straight to the driver, errors as SQLAlchemy reports them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError, NoResultFound

from dicomhub.bootstrap import Services
from dicomhub.errors import Conflict
from dicomhub.storage.dialect import placeholder, timestamp_param
from dicomhub.storage.driver import DriverCursor


def _sql(conn: Connection, sql: str) -> str:
    return sql.replace("?", placeholder(conn.dialect))


def _row(conn: Connection, name: str) -> tuple[Any, ...]:
    return (name, timestamp_param(conn.dialect, datetime.now(UTC)))


INSERT = "INSERT INTO partition (name, created_at) VALUES (?, ?)"
SELECT = "SELECT name FROM partition WHERE name = ?"


def test_rows_come_back_as_tuples(services: Services) -> None:
    def work(conn: Connection) -> tuple[Any, ...]:
        with DriverCursor(conn) as cur:
            cur.execute(_sql(conn, INSERT), _row(conn, "p-one"))
            cur.executemany(_sql(conn, INSERT), [_row(conn, "p-two"), _row(conn, "p-three")])
            one = cur.execute(_sql(conn, SELECT), ("p-one",)).one()
            scalar = cur.execute(_sql(conn, SELECT), ("p-two",)).scalar()
            missing = cur.execute(_sql(conn, SELECT), ("absent",)).scalar()
            every = cur.execute("SELECT name FROM partition ORDER BY name").all()
            with pytest.raises(NoResultFound):
                cur.execute(_sql(conn, SELECT), ("absent",)).one()
            return one, scalar, missing, every

    one, scalar, missing, every = services.db.write(work)
    assert one == ("p-one",)
    assert scalar == "p-two"
    assert missing is None
    assert {("p-one",), ("p-two",), ("p-three",)} <= set(every)


def test_driver_errors_are_sqlalchemy_errors_and_a_duplicate_is_a_conflict(
    services: Services,
) -> None:
    services.db.write(
        lambda conn: DriverCursor(conn).execute(_sql(conn, INSERT), _row(conn, "dup"))
    )

    def again(conn: Connection) -> None:
        with DriverCursor(conn) as cur:
            cur.execute(_sql(conn, INSERT), _row(conn, "dup"))

    def again_many(conn: Connection) -> None:
        with DriverCursor(conn) as cur:
            cur.executemany(_sql(conn, INSERT), [_row(conn, "fresh"), _row(conn, "dup")])

    for work in (again, again_many):
        with pytest.raises(IntegrityError), services.db.engine.connect() as conn, conn.begin():
            work(conn)
        # Database.write maps it as it maps SQLAlchemy's own statements: 409, not 500.
        with pytest.raises(Conflict):
            services.db.write(work)
    with services.db.read() as conn:
        names = [r[0] for r in conn.exec_driver_sql("SELECT name FROM partition").all()]
    assert names.count("dup") == 1
    assert "fresh" not in names  # the failed transaction left nothing


def test_a_statement_outside_a_transaction_is_refused(services: Services) -> None:
    # The driver would commit it on its own (SQLite's connections are in autocommit mode here).
    with services.db.engine.connect() as conn, pytest.raises(RuntimeError, match="transaction"):
        DriverCursor(conn)
