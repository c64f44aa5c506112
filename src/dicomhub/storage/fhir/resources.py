"""FHIR resources in SQL: current rows, every version, and their index rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, bindparam, func, select

from dicomhub.fhir.search.rows import IndexRows, RowTuples
from dicomhub.storage.dialect import placeholder, timestamp_param
from dicomhub.storage.schema import (
    fhir_idx_date,
    fhir_idx_number,
    fhir_idx_quantity,
    fhir_idx_reference,
    fhir_idx_string,
    fhir_idx_token,
    fhir_idx_uri,
    fhir_resource,
    fhir_version,
)

__all__ = [
    "INDEX_TABLES",
    "NewVersion",
    "ResourceRow",
    "VersionRow",
    "count_versions",
    "find",
    "find_by_identifier",
    "find_many",
    "history",
    "load_by_pk",
    "write_versions",
]

# IndexRows field → its table; the row dataclass's fields are the table's value columns.
INDEX_TABLES: dict[str, Table] = {
    "strings": fhir_idx_string,
    "tokens": fhir_idx_token,
    "dates": fhir_idx_date,
    "numbers": fhir_idx_number,
    "quantities": fhir_idx_quantity,
    "uris": fhir_idx_uri,
    "references": fhir_idx_reference,
}


@dataclass(frozen=True, slots=True)
class ResourceRow:
    pk: int
    res_type: str
    res_id: str
    version: int
    last_updated: datetime
    deleted: bool
    body: bytes | None


@dataclass(frozen=True, slots=True)
class VersionRow:
    pk: int
    res_type: str
    res_id: str
    version: int
    last_updated: datetime
    method: str
    body: bytes | None


@dataclass(frozen=True, slots=True)
class NewVersion:
    """A version to write. `pk` None creates the logical resource (version 1)."""

    res_type: str
    res_id: str
    version: int
    last_updated: datetime
    method: str  # POST, PUT, DELETE
    body: bytes | None  # None for DELETE
    rows: IndexRows | RowTuples | None  # None for DELETE
    pk: int | None = None


_RESOURCE_COLUMNS = (
    fhir_resource.c.resource_pk,
    fhir_resource.c.res_type,
    fhir_resource.c.res_id,
    fhir_resource.c.version,
    fhir_resource.c.last_updated,
    fhir_resource.c.deleted,
    fhir_resource.c.body,
)


def _resource(row: Any) -> ResourceRow:
    return ResourceRow(row[0], row[1], row[2], row[3], row[4], bool(row[5]), row[6])


def find(conn: Connection, res_type: str, res_id: str) -> ResourceRow | None:
    row = conn.execute(
        select(*_RESOURCE_COLUMNS).where(
            fhir_resource.c.res_type == res_type, fhir_resource.c.res_id == res_id
        )
    ).first()
    return _resource(row) if row is not None else None


def find_many(conn: Connection, res_type: str, res_ids: Sequence[str]) -> dict[str, ResourceRow]:
    out: dict[str, ResourceRow] = {}
    for start in range(0, len(res_ids), 500):
        chunk = res_ids[start : start + 500]
        rows = conn.execute(
            select(*_RESOURCE_COLUMNS).where(
                fhir_resource.c.res_type == res_type, fhir_resource.c.res_id.in_(chunk)
            )
        )
        out.update({r[2]: _resource(r) for r in rows})
    return out


def _by_identifier(with_system: bool) -> Any:
    stmt = (
        select(*_RESOURCE_COLUMNS)
        .select_from(
            fhir_resource.join(
                fhir_idx_token, fhir_idx_token.c.resource_pk == fhir_resource.c.resource_pk
            )
        )
        .where(
            fhir_idx_token.c.res_type == bindparam("res_type"),
            fhir_idx_token.c.param == "identifier",
            fhir_idx_token.c.code == bindparam("value"),
            fhir_resource.c.deleted.is_(False),
        )
    )
    if with_system:
        stmt = stmt.where(fhir_idx_token.c.system == bindparam("system"))
    return stmt.distinct().order_by(fhir_resource.c.resource_pk).limit(bindparam("limit"))


# `Type?identifier=[system|]value` in statements built once: the sync asks it for every study
# and Patient it writes, and building a general search statement costs more than running it.
_BY_IDENTIFIER = _by_identifier(with_system=True)
_BY_IDENTIFIER_VALUE = _by_identifier(with_system=False)


def find_by_identifier(
    conn: Connection, res_type: str, system: str | None, value: str, limit: int
) -> list[ResourceRow]:
    """Current resources of `res_type` with the identifier `system|value` (system None: any
    system), in pk order."""
    params = {"res_type": res_type, "value": value, "limit": limit}
    if system is None:
        rows = conn.execute(_BY_IDENTIFIER_VALUE, params)
    else:
        rows = conn.execute(_BY_IDENTIFIER, {**params, "system": system})
    return [_resource(r) for r in rows]


def load_by_pk(conn: Connection, pks: Sequence[int]) -> dict[int, ResourceRow]:
    out: dict[int, ResourceRow] = {}
    for start in range(0, len(pks), 500):
        chunk = pks[start : start + 500]
        rows = conn.execute(
            select(*_RESOURCE_COLUMNS).where(fhir_resource.c.resource_pk.in_(chunk))
        )
        out.update({r[0]: _resource(r) for r in rows})
    return out


def write_versions(conn: Connection, versions: Sequence[NewVersion]) -> list[int]:
    """Write new versions (creating logical resources as needed); returns their resource pks.

    Index rows of the resources are replaced by those of the new versions (deletes drop them).
    Batched: one statement per table for the whole sequence, which is what makes bulk loads
    and the sync's chunks fast. Plain DB-API statements, as SQLAlchemy's per-statement and
    per-row processing cost more than the statements themselves.
    """
    mark = placeholder(conn.dialect)

    def when(v: NewVersion) -> Any:
        return timestamp_param(conn.dialect, v.last_updated)

    created = [v for v in versions if v.pk is None]
    # Multi-row VALUES with RETURNING: the rows come back in no promised order, so each
    # carries its type and id. (SQLAlchemy's insertmanyvalues goes row by row on SQLite when
    # asked to keep the order.)
    new: dict[tuple[str, str], int] = {}
    row = f"({mark}, {mark}, {mark}, {mark}, {mark}, {mark}, 1)"
    for start in range(0, len(created), 500):
        batch = created[start : start + 500]
        result = conn.exec_driver_sql(
            "INSERT INTO fhir_resource (res_type, res_id, version, last_updated, deleted, "
            f"body, index_version) VALUES {', '.join(row for _ in batch)} "
            "RETURNING resource_pk, res_type, res_id",
            tuple(
                p
                for v in batch
                for p in (v.res_type, v.res_id, v.version, when(v), v.body is None, v.body)
            ),
        )
        new.update({(r[1], r[2]): r[0] for r in result})
    pks = [v.pk if v.pk is not None else new[(v.res_type, v.res_id)] for v in versions]
    replaced = [(pk, v) for pk, v in zip(pks, versions, strict=True) if v.pk is not None]
    if replaced:
        conn.exec_driver_sql(
            f"UPDATE fhir_resource SET version = {mark}, last_updated = {mark}, "
            f"deleted = {mark}, body = {mark} WHERE resource_pk = {mark}",
            [(v.version, when(v), v.body is None, v.body, pk) for pk, v in replaced],
        )
        for start in range(0, len(replaced), 500):
            gone = [pk for pk, _ in replaced[start : start + 500]]
            marks = ", ".join(mark for _ in gone)
            for table in INDEX_TABLES.values():
                conn.exec_driver_sql(
                    f"DELETE FROM {table.name} WHERE resource_pk IN ({marks})", tuple(gone)
                )
    conn.exec_driver_sql(
        "INSERT INTO fhir_version (resource_pk, version, res_type, last_updated, method, body) "
        f"VALUES ({mark}, {mark}, {mark}, {mark}, {mark}, {mark})",
        [
            (pk, v.version, v.res_type, when(v), v.method, v.body)
            for pk, v in zip(pks, versions, strict=True)
        ],
    )
    by_table: dict[str, list[tuple[Any, ...]]] = {}
    for pk, v in zip(pks, versions, strict=True):
        if v.rows is None:
            continue
        rows = v.rows.as_tuples() if isinstance(v.rows, IndexRows) else v.rows
        head = (pk, v.res_type)
        for name, values in rows.items():
            by_table.setdefault(name, []).extend(head + t for t in values)
    for name, params in by_table.items():
        table = INDEX_TABLES[name]
        columns = ", ".join(c.name for c in table.columns)
        marks = ", ".join(mark for _ in table.columns)
        conn.exec_driver_sql(f"INSERT INTO {table.name} ({columns}) VALUES ({marks})", params)
    return pks


_VERSION_COLUMNS = (
    fhir_version.c.resource_pk,
    fhir_version.c.res_type,
    fhir_resource.c.res_id,
    fhir_version.c.version,
    fhir_version.c.last_updated,
    fhir_version.c.method,
    fhir_version.c.body,
)


def _version(row: Any) -> VersionRow:
    return VersionRow(row[0], row[1], row[2], row[3], row[4], row[5], row[6])


def history(
    conn: Connection,
    *,
    res_type: str | None = None,
    res_id: str | None = None,
    version: int | None = None,
    since: datetime | None = None,
    at: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[VersionRow]:
    """Versions newest first, optionally of one type, one resource, or one version of it."""
    stmt = select(*_VERSION_COLUMNS).select_from(
        fhir_version.join(fhir_resource, fhir_resource.c.resource_pk == fhir_version.c.resource_pk)
    )
    stmt = stmt.where(*_history_filter(res_type, res_id, version, since, at))
    stmt = stmt.order_by(fhir_version.c.last_updated.desc(), fhir_version.c.version.desc())
    return [_version(r) for r in conn.execute(stmt.limit(limit).offset(offset))]


def count_versions(
    conn: Connection,
    *,
    res_type: str | None = None,
    res_id: str | None = None,
    since: datetime | None = None,
    at: datetime | None = None,
) -> int:
    stmt = (
        select(func.count())
        .select_from(
            fhir_version.join(
                fhir_resource, fhir_resource.c.resource_pk == fhir_version.c.resource_pk
            )
        )
        .where(*_history_filter(res_type, res_id, None, since, at))
    )
    return int(conn.execute(stmt).scalar_one())


def _history_filter(
    res_type: str | None,
    res_id: str | None,
    version: int | None,
    since: datetime | None,
    at: datetime | None,
) -> list[Any]:
    where: list[Any] = []
    if res_type is not None:
        where.append(fhir_version.c.res_type == res_type)
    if res_id is not None:
        where.append(fhir_resource.c.res_id == res_id)
    if version is not None:
        where.append(fhir_version.c.version == version)
    if since is not None:
        where.append(fhir_version.c.last_updated >= since)
    if at is not None:
        where.append(fhir_version.c.last_updated <= at)
    return where
