"""Alembic environment: runs on the connection Database.migrate() hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from dicomhub.storage.schema import metadata

config = context.config
connection = config.attributes.get("connection")


def _run(conn: Connection) -> None:
    context.configure(
        connection=conn,
        target_metadata=metadata,
        # SQLite cannot ALTER most things: batch mode copies the table instead.
        render_as_batch=conn.dialect.name == "sqlite",
        compare_type=True,
        # SQLite does run DDL in transactions; without this alembic commits between revisions
        # and a second process starting at the same moment applies the next one twice.
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if isinstance(connection, Connection):
    _run(connection)
else:
    # `alembic` on the command line (e.g. `alembic check`): the URL comes from the config.
    url = config.get_main_option("sqlalchemy.url")
    assert url, "set sqlalchemy.url or pass a connection"
    with create_engine(url).connect() as conn:
        _run(conn)
