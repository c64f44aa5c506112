"""Migrations: idempotent, equal to the schema module, safe when several processes start at once."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, inspect, select, text

from dicomhub.config import Settings
from dicomhub.context import DEFAULT_PARTITION
from dicomhub.storage.engine import Database
from dicomhub.storage.schema import metadata, partition


def _database(settings: Settings) -> Database:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return Database(settings.resolved_database_url)


@dataclass(frozen=True)
class _Snapshot:
    tables: list[str]
    indexes: dict[str, list[str]]
    versions: list[str]
    partitions: list[tuple[int, str]]


def _snapshot(db: Database) -> _Snapshot:
    with db.read() as conn:
        insp = inspect(conn)
        tables = sorted(insp.get_table_names())
        return _Snapshot(
            tables=tables,
            indexes={t: sorted(i["name"] or "" for i in insp.get_indexes(t)) for t in tables},
            versions=list(conn.execute(text("SELECT version_num FROM alembic_version")).scalars()),
            partitions=[
                (r.partition_key, r.name)
                for r in conn.execute(select(partition.c.partition_key, partition.c.name))
            ],
        )


def test_migrate_twice_is_a_no_op(settings: Settings) -> None:
    db = _database(settings)
    try:
        db.migrate()
        first = _snapshot(db)
        db.migrate()
        assert _snapshot(db) == first
        assert len(first.versions) == 1
        assert set(metadata.tables) <= set(first.tables)
    finally:
        db.dispose()


def test_migrated_schema_matches_the_schema_module(settings: Settings) -> None:
    db = _database(settings)
    try:
        db.migrate()
        with db.engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            diff = compare_metadata(context, metadata)
        assert diff == []
    finally:
        db.dispose()


def test_a_fresh_database_differs_from_the_schema_module(settings: Settings) -> None:
    """The comparison above can fail: before migrating, every table is reported missing."""
    db = _database(settings)
    try:
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
        added = {d[1].name for d in diff if d[0] == "add_table"}
        assert added == set(metadata.tables)
    finally:
        db.dispose()


def test_the_default_partition_exists(settings: Settings) -> None:
    db = _database(settings)
    try:
        db.migrate()
        db.migrate()
        with db.read() as conn:
            rows = conn.execute(select(partition.c.name, partition.c.created_at)).all()
        assert [r.name for r in rows] == [DEFAULT_PARTITION]
        assert rows[0].created_at.tzinfo is not None
    finally:
        db.dispose()


# Each child migrates once the parent says go, so that both race on the empty database.
MIGRATE_CHILD = """
import sys
from dicomhub.storage.engine import Database
db = Database(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
db.migrate()
db.dispose()
print("migrated", flush=True)
"""


@pytest.mark.parametrize("processes", [2, 4])
def test_processes_migrating_a_fresh_database_at_once_all_succeed(
    settings: Settings, processes: int
) -> None:
    url = settings.resolved_database_url
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    children = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATE_CHILD, url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        results = [child.communicate(timeout=120) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.communicate()
    for child, (out, err) in zip(children, results, strict=True):
        assert child.returncode == 0, err[-3000:]
        assert out.split() == ["migrated"]
    db = Database(url)
    try:
        with db.read() as conn:
            assert conn.execute(select(func.count()).select_from(partition)).scalar() == 1
            assert len(conn.execute(text("SELECT version_num FROM alembic_version")).all()) == 1
    finally:
        db.dispose()


def test_sqlite_index_lives_in_the_data_folder(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d")
    db = _database(settings)
    try:
        db.migrate()
    finally:
        db.dispose()
    assert (tmp_path / "d" / "index.sqlite").is_file()
