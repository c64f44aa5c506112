"""Change-feed reads: by sequence (v1) and by time window (v2)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, select

from dicomhub.storage.schema import changefeed, instance_metadata, partition

__all__ = ["ChangeRow", "by_sequence", "by_time", "latest"]


@dataclass(frozen=True, slots=True)
class ChangeRow:
    sequence: int
    partition_name: str
    study_uid: str
    series_uid: str
    sop_instance_uid: str
    action: str
    state: str
    timestamp: datetime
    metadata: bytes | None


def _select(include_metadata: bool) -> Select[Any]:
    columns: list[Any] = [
        changefeed.c.sequence,
        partition.c.name,
        changefeed.c.study_uid,
        changefeed.c.series_uid,
        changefeed.c.sop_instance_uid,
        changefeed.c.action,
        changefeed.c.state,
        changefeed.c.timestamp,
    ]
    source = changefeed.join(partition, partition.c.partition_key == changefeed.c.partition_key)
    if include_metadata:
        # The instance's current metadata, as in the Azure service; none once it is deleted.
        columns.append(instance_metadata.c.json)
        source = source.outerjoin(
            instance_metadata,
            (instance_metadata.c.instance_key == changefeed.c.instance_key)
            & (changefeed.c.state == "current"),
        )
    return select(*columns).select_from(source)


def _rows(conn: Connection, stmt: Select[Any], include_metadata: bool) -> list[ChangeRow]:
    return [
        ChangeRow(
            sequence=r[0],
            partition_name=r[1],
            study_uid=r[2],
            series_uid=r[3],
            sop_instance_uid=r[4],
            action=r[5],
            state=r[6],
            timestamp=r[7],
            metadata=r[8] if include_metadata else None,
        )
        for r in conn.execute(stmt)
    ]


def by_sequence(
    conn: Connection, after: int, limit: int, include_metadata: bool
) -> list[ChangeRow]:
    stmt = (
        _select(include_metadata)
        .where(changefeed.c.sequence > after)
        .order_by(changefeed.c.sequence)
        .limit(limit)
    )
    return _rows(conn, stmt, include_metadata)


def by_time(
    conn: Connection,
    start: datetime | None,
    end: datetime | None,
    offset: int,
    limit: int,
    include_metadata: bool,
) -> list[ChangeRow]:
    """Entries with start <= Timestamp < end, ordered by (Timestamp, Sequence); offset skips rows."""
    stmt = _select(include_metadata)
    if start is not None:
        stmt = stmt.where(changefeed.c.timestamp >= start)
    if end is not None:
        stmt = stmt.where(changefeed.c.timestamp < end)
    stmt = stmt.order_by(changefeed.c.timestamp, changefeed.c.sequence).offset(offset).limit(limit)
    return _rows(conn, stmt, include_metadata)


def latest(conn: Connection, include_metadata: bool, by_time: bool = False) -> ChangeRow | None:
    order = (
        (changefeed.c.timestamp.desc(), changefeed.c.sequence.desc())
        if by_time
        else (changefeed.c.sequence.desc(),)
    )
    rows = _rows(conn, _select(include_metadata).order_by(*order).limit(1), include_metadata)
    return rows[0] if rows else None
