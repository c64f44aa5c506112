"""Index a stored batch: study, series and instance rows, metadata and change feed, in plain SQL.

The statements go straight to the driver's cursor with positional rows (storage.driver):
SQLAlchemy Core's per-statement compilation and per-column processing, and then even
`exec_driver_sql`'s bookkeeping, cost more than SQLite took to run them. The SQL is the same
on SQLite (≥ 3.35, for RETURNING) and PostgreSQL; only the placeholder differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

import orjson
from sqlalchemy import Connection

from dicomhub.dicom.attributes import Level
from dicomhub.dicom.normalize import (
    INDEX_VERSION,
    normalize_da,
    normalize_pn,
    normalize_tm,
    pn_words,
)
from dicomhub.dicom.read import ParsedInstance
from dicomhub.storage.dialect import placeholder, timestamp_param
from dicomhub.storage.driver import DriverCursor
from dicomhub.storage.schema import changefeed

__all__ = [
    "CHANGEFEED_COLUMNS",
    "InsertResult",
    "NewInstance",
    "insert_instances",
    "update_series_count",
    "update_study_counts",
]

# Keeps each IN (...) list well below every driver's limit on parameters.
_IN_CHUNK = 500


@dataclass(frozen=True, slots=True)
class NewInstance:
    parsed: ParsedInstance
    blob_id: str
    size: int


@dataclass(frozen=True, slots=True)
class InsertResult:
    instance_key: int | None
    duplicate: bool = False
    conflict: str | None = None


_STUDY_COLUMNS = (
    "partition_key",
    "study_uid",
    "patient_id",
    "patient_name_norm",
    "patient_name_words",
    "patient_birth_date",
    "patient_sex",
    "study_date",
    "study_time",
    "accession_number",
    "referring_physician_norm",
    "referring_physician_words",
    "study_id",
    "study_description",
    "attributes",
    "index_version",
    "created_at",
    "updated_at",
)
_SERIES_COLUMNS = (
    "partition_key",
    "study_key",
    "series_uid",
    "modality",
    "series_number",
    "series_description",
    "body_part_examined",
    "manufacturer",
    "institution_name",
    "pps_start_date",
    "pps_start_time",
    "attributes",
    "index_version",
    "created_at",
    "updated_at",
)
_INSTANCE_COLUMNS = (
    "series_key",
    "study_key",
    "partition_key",
    "sop_instance_uid",
    "sop_class_uid",
    "instance_number",
    "transfer_syntax_uid",
    "blob_id",
    "size",
    "number_of_frames",
    "frames",
    "attributes",
    "index_version",
    "created_at",
)
# Every column but the sequence, in table order (the rows below are built in that order).
CHANGEFEED_COLUMNS = tuple(c.name for c in changefeed.c if c.name != "sequence")
# Set on every store: "latest instance wins" for study- and series-level attributes, as in
# the Azure service. Keys, UIDs, counts and computed lists are not.
_NOT_UPDATED = {"partition_key", "study_key", "study_uid", "series_uid", "created_at"}


def _insert(table: str, columns: Sequence[str]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"


def _upsert(table: str, columns: Sequence[str], conflict: str, tail: str) -> str:
    updated = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in _NOT_UPDATED)
    return f"{_insert(table, columns)} ON CONFLICT ({conflict}) DO UPDATE SET {updated} {tail}"


@dataclass(frozen=True, slots=True)
class _Sql:
    mark: str  # the driver's placeholder
    existing: str
    owners: str
    study_upsert: str
    series_upsert: str
    instance_insert: str
    metadata_insert: str
    changefeed_insert: str
    series_count: str
    study_counts: str
    drop_empty_study: str


@cache
def _sql(mark: str) -> _Sql:
    def native(sql: str) -> str:
        return sql.replace("?", mark)

    return _Sql(
        mark=mark,
        existing=native(
            "SELECT sop_instance_uid FROM instance WHERE partition_key = ? "
            "AND sop_instance_uid IN ({marks})"
        ),
        owners=native(
            "SELECT series.series_uid, study.study_uid FROM series "
            "JOIN study ON study.study_key = series.study_key "
            "WHERE series.partition_key = ? AND series.series_uid IN ({marks})"
        ),
        study_upsert=native(
            _upsert(
                "study",
                _STUDY_COLUMNS,
                "partition_key, study_uid",
                "RETURNING study_key, modalities, sop_classes",
            )
        ),
        # The WHERE makes the upsert return no row when the series belongs to another study.
        series_upsert=native(
            _upsert(
                "series",
                _SERIES_COLUMNS,
                "partition_key, series_uid",
                "WHERE series.study_key = excluded.study_key RETURNING series_key",
            )
        ),
        instance_insert=native(
            f"{_insert('instance', _INSTANCE_COLUMNS)} "
            "ON CONFLICT (partition_key, sop_instance_uid) DO NOTHING RETURNING instance_key"
        ),
        metadata_insert=native(_insert("instance_metadata", ("instance_key", "json"))),
        changefeed_insert=native(_insert("changefeed", CHANGEFEED_COLUMNS)),
        series_count=native(
            "UPDATE series SET num_instances = "
            "(SELECT count(*) FROM instance WHERE instance.series_key = ?) WHERE series_key = ?"
        ),
        study_counts=native(
            "UPDATE study SET "
            "num_series = (SELECT count(*) FROM series WHERE series.study_key = ?), "
            "num_instances = (SELECT count(*) FROM instance WHERE instance.study_key = ?), "
            "modalities = ?, sop_classes = ? WHERE study_key = ?"
        ),
        drop_empty_study=native(
            "DELETE FROM study WHERE study_key = ? "
            "AND NOT EXISTS (SELECT 1 FROM series WHERE series.study_key = ?)"
        ),
    )


def _statements(conn: Connection) -> _Sql:
    return _sql(placeholder(conn.dialect))


def _words(name: str | None) -> str | None:
    # Leading and trailing spaces let a word-prefix match be written as '* word*'.
    return f" {' '.join(pn_words(name))} " if name else None


def _str(value: str | int | None) -> str | None:
    return None if value is None else str(value)


def _int(value: str | int | None) -> int | None:
    return value if isinstance(value, int) else None


def _study_row(pk: int, p: ParsedInstance, now: Any) -> tuple[Any, ...]:
    ix = p.index
    patient_name = _str(ix.get("PatientName"))
    referring = _str(ix.get("ReferringPhysicianName"))
    return (
        pk,
        p.study_uid,
        _str(ix.get("PatientID")),
        normalize_pn(patient_name) if patient_name else None,
        _words(patient_name),
        normalize_da(_str(ix.get("PatientBirthDate")) or ""),
        _str(ix.get("PatientSex")),
        normalize_da(_str(ix.get("StudyDate")) or ""),
        normalize_tm(_str(ix.get("StudyTime")) or ""),
        _str(ix.get("AccessionNumber")),
        normalize_pn(referring) if referring else None,
        _words(referring),
        _str(ix.get("StudyID")),
        _str(ix.get("StudyDescription")),
        orjson.dumps(p.level_json[Level.STUDY]),
        INDEX_VERSION,
        now,
        now,
    )


def _series_row(pk: int, study_key: int, p: ParsedInstance, now: Any) -> tuple[Any, ...]:
    ix = p.index
    return (
        pk,
        study_key,
        p.series_uid,
        _str(ix.get("Modality")),
        _int(ix.get("SeriesNumber")),
        _str(ix.get("SeriesDescription")),
        _str(ix.get("BodyPartExamined")),
        _str(ix.get("Manufacturer")),
        _str(ix.get("InstitutionName")),
        normalize_da(_str(ix.get("PerformedProcedureStepStartDate")) or ""),
        normalize_tm(_str(ix.get("PerformedProcedureStepStartTime")) or ""),
        orjson.dumps(p.level_json[Level.SERIES]),
        INDEX_VERSION,
        now,
        now,
    )


def _instance_row(
    pk: int, study_key: int, series_key: int, item: NewInstance, now: Any
) -> tuple[Any, ...]:
    p = item.parsed
    frames = p.frames.to_json() if p.frames is not None else None
    return (
        series_key,
        study_key,
        pk,
        p.sop_instance_uid,
        p.sop_class_uid,
        _int(p.index.get("InstanceNumber")),
        p.transfer_syntax,
        item.blob_id,
        item.size,
        p.number_of_frames,
        orjson.dumps(frames) if frames is not None else None,
        orjson.dumps(p.level_json[Level.INSTANCE]),
        INDEX_VERSION,
        now,
    )


def _matching(cur: DriverCursor, sql: str, mark: str, pk: int, values: list[str]) -> list[Any]:
    rows: list[Any] = []
    for start in range(0, len(values), _IN_CHUNK):
        chunk = values[start : start + _IN_CHUNK]
        marks = ", ".join(mark for _ in chunk)
        rows += cur.execute(sql.format(marks=marks), (pk, *chunk)).all()
    return rows


@dataclass(slots=True)
class _Study:
    """A study the batch stores into: its newest instance, then its key and computed lists."""

    last: ParsedInstance
    key: int = 0
    modalities: set[str] = field(default_factory=set)
    sop_classes: set[str] = field(default_factory=set)


def _split(value: str | None) -> set[str]:
    return set(value.split("\\")) if value else set()


def insert_instances(
    conn: Connection, pk: int, items: Sequence[NewInstance], now: datetime
) -> list[InsertResult]:
    """Insert a batch in the caller's transaction; duplicates and conflicts become results.

    Each study and series row is written once per batch, with the values of its last instance.
    """
    with DriverCursor(conn) as cur:
        return _insert_instances(
            cur, _statements(conn), pk, items, timestamp_param(conn.dialect, now)
        )


def _insert_instances(
    cur: DriverCursor, sql: _Sql, pk: int, items: Sequence[NewInstance], ts: Any
) -> list[InsertResult]:
    sop_uids = [i.parsed.sop_instance_uid for i in items]
    stored = {r[0] for r in _matching(cur, sql.existing, sql.mark, pk, sop_uids)}
    series_uids = list({i.parsed.series_uid: None for i in items})
    owner: dict[str, str] = dict(_matching(cur, sql.owners, sql.mark, pk, series_uids))
    results: list[InsertResult | None] = []
    accepted: list[tuple[int, NewInstance]] = []
    studies: dict[str, _Study] = {}
    series_last: dict[str, ParsedInstance] = {}
    for n, item in enumerate(items):
        p = item.parsed
        if p.sop_instance_uid in stored:
            results.append(InsertResult(None, duplicate=True))
            continue
        known = owner.setdefault(p.series_uid, p.study_uid)
        if known != p.study_uid:
            results.append(
                InsertResult(None, conflict=f"series {p.series_uid} belongs to study {known}")
            )
            continue
        results.append(None)
        accepted.append((n, item))
        studies.setdefault(p.study_uid, _Study(p)).last = p
        series_last[p.series_uid] = p

    for s in studies.values():
        s.key, modalities, sop_classes = cur.execute(
            sql.study_upsert, _study_row(pk, s.last, ts)
        ).one()
        s.modalities, s.sop_classes = _split(modalities), _split(sop_classes)
    series_keys: dict[str, int | None] = {}
    for uid, p in series_last.items():
        study_key = studies[p.study_uid].key
        series_keys[uid] = cur.execute(
            sql.series_upsert, _series_row(pk, study_key, p, ts)
        ).scalar()
        if series_keys[uid] is None:  # lost a race: the series went to another study meanwhile
            cur.execute(sql.drop_empty_study, (study_key, study_key))

    metadata: list[tuple[Any, ...]] = []
    feed: list[tuple[Any, ...]] = []
    for n, item in accepted:
        p = item.parsed
        target = studies[p.study_uid]
        series_key = series_keys[p.series_uid]
        if series_key is None:
            conflict = f"series {p.series_uid} was just stored under another study"
            results[n] = InsertResult(None, conflict=conflict)
            continue
        instance_key = cur.execute(
            sql.instance_insert, _instance_row(pk, target.key, series_key, item, ts)
        ).scalar()
        if instance_key is None:  # lost a race with a concurrent store of the same instance
            results[n] = InsertResult(None, duplicate=True)
            continue
        results[n] = InsertResult(instance_key)
        metadata.append((instance_key, orjson.dumps(p.metadata)))
        feed.append(
            (
                pk,
                p.study_uid,
                p.series_uid,
                p.sop_instance_uid,
                "create",
                "current",
                ts,
                instance_key,
            )
        )
        modality = p.index.get("Modality")
        if modality:
            target.modalities.add(str(modality))
        target.sop_classes.add(p.sop_class_uid)

    if metadata:
        cur.executemany(sql.metadata_insert, metadata)
        cur.executemany(sql.changefeed_insert, feed)
        for key in {k for k in series_keys.values() if k is not None}:
            cur.execute(sql.series_count, (key, key))
        for s in studies.values():
            _count_study(cur, sql, s.key, s.modalities, s.sop_classes)
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


def update_series_count(conn: Connection, series_key: int) -> None:
    with DriverCursor(conn) as cur:
        cur.execute(_statements(conn).series_count, (series_key, series_key))


def update_study_counts(
    conn: Connection, study_key: int, modalities: set[str], sop_classes: set[str]
) -> None:
    """Recount a study's series and instances and set its ModalitiesInStudy and SOP classes.

    Counting (rather than incrementing) stays right under concurrency: writers to a study hold
    its row locked from their upsert to their commit, so no other writer counts in between.
    """
    with DriverCursor(conn) as cur:
        _count_study(cur, _statements(conn), study_key, modalities, sop_classes)


def _count_study(
    cur: DriverCursor, sql: _Sql, study_key: int, modalities: set[str], sop_classes: set[str]
) -> None:
    cur.execute(
        sql.study_counts,
        (
            study_key,
            study_key,
            "\\".join(sorted(modalities)) or None,
            "\\".join(sorted(sop_classes)) or None,
            study_key,
        ),
    )
