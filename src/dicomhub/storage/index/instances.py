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

from dicomhub.storage.index.inserts import (
    CHANGEFEED_COLUMNS,
    update_series_count,
    update_study_counts,
)
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
    "StoredInstance",
    "delete_instances",
    "existing",
    "find_instances",
    "forget_blob_deletions",
    "metadata_page",
    "metadata_version",
    "partition_key",
    "pending_blob_deletions",
    "referenced_blobs",
]


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


_STUDY_MODALITIES = (
    select(series.c.modality).where(series.c.study_key == bindparam("key")).distinct()
)
_STUDY_SOP_CLASSES = (
    select(instance.c.sop_class_uid).where(instance.c.study_key == bindparam("key")).distinct()
)


def _refresh_counts(
    conn: Connection, series_keys: Iterable[int], study_keys: Iterable[int]
) -> None:
    """Recount the computed attributes of the given series and studies (after deletes)."""
    for key in series_keys:
        update_series_count(conn, key)
    for key in study_keys:
        modalities = {m for m in conn.execute(_STUDY_MODALITIES, {"key": key}).scalars() if m}
        sop_classes = set(conn.execute(_STUDY_SOP_CLASSES, {"key": key}).scalars())
        update_study_counts(conn, key, modalities, sop_classes)


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
            list(CHANGEFEED_COLUMNS),
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
    _refresh_counts(conn, series_keys - empty_series, study_keys - empty_studies)
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
