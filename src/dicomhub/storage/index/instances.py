"""Instance rows: insert a stored batch, look instances up, delete them; change-feed rows alongside."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

import orjson
from sqlalchemy import Connection, bindparam, delete, func, insert, literal, select, update
from sqlalchemy.sql.elements import ColumnElement

from dicomhub.dicom.attributes import Level
from dicomhub.dicom.normalize import (
    INDEX_VERSION,
    normalize_da,
    normalize_pn,
    normalize_tm,
    pn_words,
)
from dicomhub.dicom.read import ParsedInstance
from dicomhub.storage.dialect import insert_for
from dicomhub.storage.schema import (
    blob_deletion,
    changefeed,
    instance,
    instance_metadata,
    partition,
    series,
    study,
)

__all__ = [
    "DeletedInstance",
    "InsertResult",
    "NewInstance",
    "StoredInstance",
    "delete_instances",
    "existing",
    "find_instances",
    "forget_blob_deletions",
    "insert_instances",
    "metadata_page",
    "metadata_version",
    "partition_key",
    "pending_blob_deletions",
    "referenced_blobs",
]


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


@dataclass(frozen=True, slots=True)
class StoredInstance:
    instance_key: int
    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    blob_id: str
    size: int
    number_of_frames: int
    frames: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class DeletedInstance:
    study_uid: str
    series_uid: str
    sop_instance_uid: str
    blob_id: str


def partition_key(conn: Connection, name: str) -> int | None:
    return conn.execute(select(partition.c.partition_key).where(partition.c.name == name)).scalar()


def _words(name: str | None) -> str | None:
    # Leading and trailing spaces let a word-prefix match be written as '* word*'.
    return f" {' '.join(pn_words(name))} " if name else None


def _str(value: str | int | None) -> str | None:
    return None if value is None else str(value)


def _int(value: str | int | None) -> int | None:
    return value if isinstance(value, int) else None


def _study_values(p: ParsedInstance, now: datetime) -> dict[str, Any]:
    ix = p.index
    patient_name = _str(ix.get("PatientName"))
    referring = _str(ix.get("ReferringPhysicianName"))
    return {
        "patient_id": _str(ix.get("PatientID")),
        "patient_name_norm": normalize_pn(patient_name) if patient_name else None,
        "patient_name_words": _words(patient_name),
        "patient_birth_date": normalize_da(_str(ix.get("PatientBirthDate")) or ""),
        "patient_sex": _str(ix.get("PatientSex")),
        "study_date": normalize_da(_str(ix.get("StudyDate")) or ""),
        "study_time": normalize_tm(_str(ix.get("StudyTime")) or ""),
        "accession_number": _str(ix.get("AccessionNumber")),
        "referring_physician_norm": normalize_pn(referring) if referring else None,
        "referring_physician_words": _words(referring),
        "study_id": _str(ix.get("StudyID")),
        "study_description": _str(ix.get("StudyDescription")),
        "attributes": orjson.dumps(p.level_json[Level.STUDY]),
        "index_version": INDEX_VERSION,
        "updated_at": now,
    }


def _series_values(p: ParsedInstance, now: datetime) -> dict[str, Any]:
    ix = p.index
    return {
        "modality": _str(ix.get("Modality")),
        "series_number": _int(ix.get("SeriesNumber")),
        "series_description": _str(ix.get("SeriesDescription")),
        "body_part_examined": _str(ix.get("BodyPartExamined")),
        "manufacturer": _str(ix.get("Manufacturer")),
        "institution_name": _str(ix.get("InstitutionName")),
        "pps_start_date": normalize_da(_str(ix.get("PerformedProcedureStepStartDate")) or ""),
        "pps_start_time": normalize_tm(_str(ix.get("PerformedProcedureStepStartTime")) or ""),
        "attributes": orjson.dumps(p.level_json[Level.SERIES]),
        "index_version": INDEX_VERSION,
        "updated_at": now,
    }


def existing(conn: Connection, pk: int, sop_uids: Sequence[str]) -> set[str]:
    """Which of these SOP Instance UIDs are already stored."""
    if not sop_uids:
        return set()
    rows = conn.execute(
        select(instance.c.sop_instance_uid).where(
            instance.c.partition_key == pk, instance.c.sop_instance_uid.in_(sop_uids)
        )
    )
    return {r[0] for r in rows}


@dataclass(frozen=True, slots=True)
class _Statements:
    """Insert statements built once per backend: building Core statements per call costs more
    than executing them (the compiled form is cached by SQLAlchemy either way)."""

    precheck: Any
    study_upsert: Any
    series_upsert: Any
    instance_insert: Any
    metadata_insert: Any
    changefeed_insert: Any
    series_count: Any
    study_counts: Any
    study_modalities: Any
    study_sop_classes: Any
    drop_empty_study: Any


_STUDY_UPDATED = [
    c
    for c in study.c
    if c.name
    not in (
        "study_key",
        "partition_key",
        "study_uid",
        "num_series",
        "num_instances",
        "modalities",
        "sop_classes",
        "created_at",
    )
]
_SERIES_UPDATED = [
    c
    for c in series.c
    if c.name
    not in ("series_key", "study_key", "partition_key", "series_uid", "num_instances", "created_at")
]


@cache
def _statements(backend: str) -> _Statements:
    pk: Any = bindparam("pk")
    key: Any = bindparam("key")
    study_ins = insert_for(backend, study)
    series_ins = insert_for(backend, series)
    instance_ins = insert_for(backend, instance)
    return _Statements(
        # Does the series belong to another study? Is the instance stored already?
        precheck=select(
            select(study.c.study_uid)
            .join(series, series.c.study_key == study.c.study_key)
            .where(series.c.partition_key == pk, series.c.series_uid == bindparam("series_uid"))
            .scalar_subquery(),
            select(instance.c.instance_key)
            .where(instance.c.partition_key == pk, instance.c.sop_instance_uid == bindparam("sop"))
            .scalar_subquery(),
        ),
        # "Latest instance wins" for study- and series-level attributes, as in the Azure service.
        study_upsert=study_ins.on_conflict_do_update(
            index_elements=[study.c.partition_key, study.c.study_uid],
            set_={c.name: study_ins.excluded[c.name] for c in _STUDY_UPDATED},
        ).returning(study.c.study_key, study.c.modalities, study.c.sop_classes),
        series_upsert=series_ins.on_conflict_do_update(
            index_elements=[series.c.partition_key, series.c.series_uid],
            set_={c.name: series_ins.excluded[c.name] for c in _SERIES_UPDATED},
            where=series.c.study_key == series_ins.excluded.study_key,
        ).returning(series.c.series_key),
        instance_insert=instance_ins.on_conflict_do_nothing(
            index_elements=[instance.c.partition_key, instance.c.sop_instance_uid]
        ).returning(instance.c.instance_key),
        metadata_insert=insert(instance_metadata),
        changefeed_insert=insert(changefeed),
        series_count=update(series)
        .where(series.c.series_key == key)
        .values(
            num_instances=select(func.count()).where(instance.c.series_key == key).scalar_subquery()
        ),
        study_counts=update(study)
        .where(study.c.study_key == key)
        .values(
            num_series=select(func.count()).where(series.c.study_key == key).scalar_subquery(),
            num_instances=select(func.count()).where(instance.c.study_key == key).scalar_subquery(),
            modalities=bindparam("modalities"),
            sop_classes=bindparam("sop_classes"),
        ),
        study_modalities=select(series.c.modality).where(series.c.study_key == key).distinct(),
        study_sop_classes=select(instance.c.sop_class_uid)
        .where(instance.c.study_key == key)
        .distinct(),
        drop_empty_study=delete(study).where(
            study.c.study_key == key,
            ~select(series.c.series_key).where(series.c.study_key == key).exists(),
        ),
    )


@dataclass(slots=True)
class _Touched:
    """What a batch changed in one study: its computed lists are updated once, at the end."""

    modalities: set[str]
    sop_classes: set[str]


def _split(value: str | None) -> set[str]:
    return set(value.split("\\")) if value else set()


def insert_instances(
    conn: Connection, backend: str, pk: int, items: Sequence[NewInstance], now: datetime
) -> list[InsertResult]:
    """Insert a batch in the caller's transaction; duplicates and conflicts become results."""
    sql = _statements(backend)
    results: list[InsertResult] = []
    studies: dict[int, _Touched] = {}
    touched_series: set[int] = set()
    for item in items:
        p = item.parsed
        owner, existing_key = conn.execute(
            sql.precheck, {"pk": pk, "series_uid": p.series_uid, "sop": p.sop_instance_uid}
        ).one()
        if existing_key is not None:
            results.append(InsertResult(None, duplicate=True))
            continue
        if owner is not None and owner != p.study_uid:
            results.append(
                InsertResult(None, conflict=f"series {p.series_uid} belongs to study {owner}")
            )
            continue
        result, study_key, series_key, stored_lists = _insert_one(conn, sql, pk, item, now)
        results.append(result)
        if result.instance_key is None:
            if series_key is None:  # lost a race: the series went to another study meanwhile
                conn.execute(sql.drop_empty_study, {"key": study_key})
            continue
        touched = studies.get(study_key)
        if touched is None:
            touched = studies[study_key] = _Touched(
                _split(stored_lists[0]), _split(stored_lists[1])
            )
        modality = p.index.get("Modality")
        if modality:
            touched.modalities.add(str(modality))
        touched.sop_classes.add(p.sop_class_uid)
        assert series_key is not None
        touched_series.add(series_key)
    for key in touched_series:
        conn.execute(sql.series_count, {"key": key})
    for key, touched in studies.items():
        _update_study(conn, sql, key, touched.modalities, touched.sop_classes)
    return results


def _update_study(
    conn: Connection, sql: _Statements, key: int, modalities: set[str], sop_classes: set[str]
) -> None:
    conn.execute(
        sql.study_counts,
        {
            "key": key,
            "modalities": "\\".join(sorted(modalities)) or None,
            "sop_classes": "\\".join(sorted(sop_classes)) or None,
        },
    )


def _insert_one(
    conn: Connection, sql: _Statements, pk: int, item: NewInstance, now: datetime
) -> tuple[InsertResult, int, int | None, tuple[str | None, str | None]]:
    """(result, study key, series key, the study's stored ModalitiesInStudy and SOP classes)."""
    p = item.parsed
    study_key, modalities, sop_classes = conn.execute(
        sql.study_upsert,
        {"partition_key": pk, "study_uid": p.study_uid, "created_at": now, **_study_values(p, now)},
    ).one()
    lists = (modalities, sop_classes)
    series_key = conn.execute(
        sql.series_upsert,
        {
            "partition_key": pk,
            "study_key": study_key,
            "series_uid": p.series_uid,
            "created_at": now,
            **_series_values(p, now),
        },
    ).scalar()
    if series_key is None:
        conflict = f"series {p.series_uid} was just stored under another study"
        return InsertResult(None, conflict=conflict), study_key, None, lists
    frames = p.frames.to_json() if p.frames is not None else None
    instance_key = conn.execute(
        sql.instance_insert,
        {
            "series_key": series_key,
            "study_key": study_key,
            "partition_key": pk,
            "sop_instance_uid": p.sop_instance_uid,
            "sop_class_uid": p.sop_class_uid,
            "instance_number": _int(p.index.get("InstanceNumber")),
            "transfer_syntax_uid": p.transfer_syntax,
            "blob_id": item.blob_id,
            "size": item.size,
            "number_of_frames": p.number_of_frames,
            "frames": orjson.dumps(frames) if frames is not None else None,
            "attributes": orjson.dumps(p.level_json[Level.INSTANCE]),
            "index_version": INDEX_VERSION,
            "created_at": now,
        },
    ).scalar()
    if instance_key is None:  # lost a race with a concurrent store of the same instance
        return InsertResult(None, duplicate=True), study_key, series_key, lists
    conn.execute(
        sql.metadata_insert, {"instance_key": instance_key, "json": orjson.dumps(p.metadata)}
    )
    conn.execute(
        sql.changefeed_insert,
        {
            "partition_key": pk,
            "study_uid": p.study_uid,
            "series_uid": p.series_uid,
            "sop_instance_uid": p.sop_instance_uid,
            "action": "create",
            "state": "current",
            "timestamp": now,
            "instance_key": instance_key,
        },
    )
    return InsertResult(instance_key), study_key, series_key, lists


def _refresh_counts(
    conn: Connection, backend: str, series_keys: Iterable[int], study_keys: Iterable[int]
) -> None:
    """Recount the computed attributes of the given series and studies (after deletes).

    Counting (rather than decrementing) stays right under concurrency: writers to a study hold
    its row locked from their upsert to their commit, so no other writer counts in between.
    """
    sql = _statements(backend)
    for key in series_keys:
        conn.execute(sql.series_count, {"key": key})
    for key in study_keys:
        modalities = {m for m in conn.execute(sql.study_modalities, {"key": key}).scalars() if m}
        sop_classes = set(conn.execute(sql.study_sop_classes, {"key": key}).scalars())
        _update_study(conn, sql, key, modalities, sop_classes)


def _scope(
    pk: int, study_uid: str, series_uid: str | None, sop_uid: str | None
) -> list[ColumnElement[bool]]:
    where = [study.c.partition_key == pk, study.c.study_uid == study_uid]
    if series_uid is not None:
        where.append(series.c.series_uid == series_uid)
    if sop_uid is not None:
        where.append(instance.c.sop_instance_uid == sop_uid)
    return where


_JOINED = instance.join(series, series.c.series_key == instance.c.series_key).join(
    study, study.c.study_key == instance.c.study_key
)


def _bound_scope(by_series: bool, by_sop: bool) -> list[ColumnElement[bool]]:
    """The scope as bound parameters (pk, study, series, sop), for statements built once."""
    where = [study.c.partition_key == bindparam("pk"), study.c.study_uid == bindparam("study")]
    if by_series:
        where.append(series.c.series_uid == bindparam("series"))
    if by_sop:
        where.append(instance.c.sop_instance_uid == bindparam("sop"))
    return where


def _scope_values(
    pk: int, study_uid: str, series_uid: str | None, sop_uid: str | None
) -> dict[str, Any]:
    values: dict[str, Any] = {"pk": pk, "study": study_uid}
    if series_uid is not None:
        values["series"] = series_uid
    if sop_uid is not None:
        values["sop"] = sop_uid
    return values


# The look-ups below run on every retrieve, frame and metadata request; each statement is
# built once per scope shape, since building one costs more than running it.
@cache
def _find_statement(by_series: bool, by_sop: bool) -> Any:
    return (
        select(
            instance.c.instance_key,
            study.c.study_uid,
            series.c.series_uid,
            instance.c.sop_instance_uid,
            instance.c.sop_class_uid,
            instance.c.transfer_syntax_uid,
            instance.c.blob_id,
            instance.c.size,
            instance.c.number_of_frames,
            instance.c.frames,
        )
        .select_from(_JOINED)
        .where(*_bound_scope(by_series, by_sop))
        .order_by(
            series.c.series_key,
            instance.c.instance_number.asc().nulls_last(),
            instance.c.instance_key,
        )
    )


def find_instances(
    conn: Connection,
    pk: int,
    study_uid: str,
    series_uid: str | None = None,
    sop_uid: str | None = None,
) -> list[StoredInstance]:
    rows = conn.execute(
        _find_statement(series_uid is not None, sop_uid is not None),
        _scope_values(pk, study_uid, series_uid, sop_uid),
    )
    return [
        StoredInstance(
            instance_key=r.instance_key,
            study_uid=r.study_uid,
            series_uid=r.series_uid,
            sop_instance_uid=r.sop_instance_uid,
            sop_class_uid=r.sop_class_uid,
            transfer_syntax_uid=r.transfer_syntax_uid,
            blob_id=r.blob_id,
            size=r.size,
            number_of_frames=r.number_of_frames,
            frames=orjson.loads(r.frames) if r.frames is not None else None,
        )
        for r in rows
    ]


@cache
def _version_statement(by_series: bool, by_sop: bool) -> Any:
    return (
        select(func.max(instance.c.instance_key), func.count(), func.max(instance.c.created_at))
        .select_from(_JOINED)
        .where(*_bound_scope(by_series, by_sop))
    )


def metadata_version(
    conn: Connection, pk: int, study_uid: str, series_uid: str | None, sop_uid: str | None
) -> tuple[int, int, int]:
    """(newest instance key, instance count, newest store time in microseconds) in scope.

    Together they change whenever the scope's content does. The key and count alone do not:
    SQLite hands the key of a deleted newest row to the next insert.
    """
    row = conn.execute(
        _version_statement(series_uid is not None, sop_uid is not None),
        _scope_values(pk, study_uid, series_uid, sop_uid),
    ).one()
    stamp = round(row[2].timestamp() * 1_000_000) if row[2] is not None else 0
    return int(row[0] or 0), int(row[1]), stamp


@cache
def _page_statement(by_series: bool, by_sop: bool) -> Any:
    return (
        select(
            instance.c.instance_key,
            study.c.study_uid,
            series.c.series_uid,
            instance.c.sop_instance_uid,
            instance_metadata.c.json,
        )
        .select_from(
            _JOINED.join(
                instance_metadata, instance_metadata.c.instance_key == instance.c.instance_key
            )
        )
        .where(*_bound_scope(by_series, by_sop), instance.c.instance_key > bindparam("after"))
        .order_by(instance.c.instance_key)
        .limit(bindparam("limit"))
    )


def metadata_page(
    conn: Connection,
    pk: int,
    study_uid: str,
    series_uid: str | None,
    sop_uid: str | None,
    *,
    after_key: int = 0,
    limit: int = 500,
) -> list[tuple[int, str, str, str, bytes]]:
    """(instance key, study, series, SOP UID, stored JSON) in key order, after `after_key`."""
    values = _scope_values(pk, study_uid, series_uid, sop_uid)
    values.update(after=after_key, limit=limit)
    rows = conn.execute(_page_statement(series_uid is not None, sop_uid is not None), values)
    return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]


def referenced_blobs(conn: Connection, blob_ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(blob_ids), 500):
        chunk = blob_ids[start : start + 500]
        found.update(
            conn.execute(select(instance.c.blob_id).where(instance.c.blob_id.in_(chunk))).scalars()
        )
    return found


def delete_instances(
    conn: Connection,
    backend: str,
    pk: int,
    study_uid: str,
    series_uid: str | None,
    sop_uid: str | None,
    now: datetime,
) -> list[DeletedInstance]:
    """Remove the instances in scope, empty series and studies, and record the deletes in the feed."""
    scope = (
        select(instance.c.instance_key)
        .select_from(_JOINED)
        .where(*_scope(pk, study_uid, series_uid, sop_uid))
    )
    rows = conn.execute(
        select(
            instance.c.instance_key,
            instance.c.series_key,
            instance.c.study_key,
            series.c.series_uid,
            instance.c.sop_instance_uid,
            instance.c.blob_id,
        )
        .select_from(_JOINED)
        .where(*_scope(pk, study_uid, series_uid, sop_uid))
        .order_by(instance.c.instance_key)
    ).all()
    if not rows:
        return []
    keys = scope
    conn.execute(
        update(changefeed)
        .where(
            changefeed.c.partition_key == pk,
            changefeed.c.state != "deleted",
            changefeed.c.instance_key.in_(keys),
        )
        .values(state="deleted")
    )
    conn.execute(
        insert(changefeed).from_select(
            [
                "partition_key",
                "study_uid",
                "series_uid",
                "sop_instance_uid",
                "action",
                "state",
                "timestamp",
                "instance_key",
            ],
            select(
                literal(pk),
                study.c.study_uid,
                series.c.series_uid,
                instance.c.sop_instance_uid,
                literal("delete"),
                literal("deleted"),
                literal(now, changefeed.c.timestamp.type),
                literal(None, changefeed.c.instance_key.type),
            )
            .select_from(_JOINED)
            .where(*_scope(pk, study_uid, series_uid, sop_uid))
            .order_by(instance.c.instance_key),
        )
    )
    conn.execute(
        insert(blob_deletion).from_select(
            ["blob_id", "requested_at"],
            select(instance.c.blob_id, literal(now, blob_deletion.c.requested_at.type)).where(
                instance.c.instance_key.in_(keys)
            ),
        )
    )
    conn.execute(delete(instance_metadata).where(instance_metadata.c.instance_key.in_(keys)))
    conn.execute(delete(instance).where(instance.c.instance_key.in_(keys)))

    series_keys = {r.series_key for r in rows}
    study_keys = {r.study_key for r in rows}
    empty_series = _drop_childless(
        conn, series, series.c.series_key, instance.c.series_key, series_keys
    )
    empty_studies = _drop_childless(conn, study, study.c.study_key, series.c.study_key, study_keys)
    _refresh_counts(conn, backend, series_keys - empty_series, study_keys - empty_studies)
    return [DeletedInstance(study_uid, r.series_uid, r.sop_instance_uid, r.blob_id) for r in rows]


def _drop_childless(
    conn: Connection, table: Any, key: Any, child_link: Any, keys: set[int]
) -> set[int]:
    """Delete the rows of `table` among `keys` that no child row points to any more."""
    childless = set(
        conn.execute(
            select(key).where(key.in_(keys), ~select(child_link).where(child_link == key).exists())
        ).scalars()
    )
    if childless:
        conn.execute(delete(table).where(key.in_(childless)))
    return childless


def pending_blob_deletions(conn: Connection, limit: int = 1000) -> list[str]:
    return list(
        conn.execute(
            select(blob_deletion.c.blob_id).order_by(blob_deletion.c.requested_at).limit(limit)
        ).scalars()
    )


def forget_blob_deletions(conn: Connection, blob_ids: Sequence[str]) -> None:
    if blob_ids:
        conn.execute(delete(blob_deletion).where(blob_deletion.c.blob_id.in_(blob_ids)))
