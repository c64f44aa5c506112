"""SQL of the DICOM -> FHIR sync: its cursor and lease, the changes after it, dead letters."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, delete, func, insert, or_, select, update

from dicomhub.storage.index.instances import metadata_page
from dicomhub.storage.schema import changefeed, partition, sync_dead_letter, sync_state

__all__ = [
    "Change",
    "DeadLetter",
    "SyncState",
    "acquire_lease",
    "advance",
    "changes_after",
    "clear_dead_letter",
    "dead_letters",
    "ensure_state",
    "latest_sequence",
    "record_failure",
    "release_lease",
    "state",
    "study_metadata",
]


@dataclass(frozen=True, slots=True)
class Change:
    sequence: int
    partition_key: int
    partition_name: str
    study_uid: str


@dataclass(frozen=True, slots=True)
class SyncState:
    target: str
    sequence: int
    lease_owner: str | None
    lease_until: datetime | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class DeadLetter:
    partition_key: int
    study_uid: str
    sequence: int
    attempts: int
    reason: str
    first_failed_at: datetime
    last_failed_at: datetime


def ensure_state(conn: Connection, target: str, now: datetime) -> None:
    """The target's row, starting before the first change (everything stored gets synced)."""
    found = conn.execute(select(sync_state.c.target).where(sync_state.c.target == target)).first()
    if found is None:
        conn.execute(insert(sync_state).values(target=target, sequence=0, updated_at=now))


def acquire_lease(
    conn: Connection, target: str, owner: str, until: datetime, now: datetime
) -> bool:
    """Take (or renew) the lease: free, expired or already ours. One worker works at a time."""
    result = conn.execute(
        update(sync_state)
        .where(
            sync_state.c.target == target,
            or_(
                sync_state.c.lease_owner.is_(None),
                sync_state.c.lease_owner == owner,
                sync_state.c.lease_until < now,
            ),
        )
        .values(lease_owner=owner, lease_until=until)
    )
    return result.rowcount == 1


def release_lease(conn: Connection, target: str, owner: str) -> None:
    conn.execute(
        update(sync_state)
        .where(sync_state.c.target == target, sync_state.c.lease_owner == owner)
        .values(lease_owner=None, lease_until=None)
    )


def advance(
    conn: Connection, target: str, owner: str, sequence: int, until: datetime, now: datetime
) -> bool:
    """Move the cursor forward and renew the lease; False when the lease was lost meanwhile."""
    result = conn.execute(
        update(sync_state)
        .where(sync_state.c.target == target, sync_state.c.lease_owner == owner)
        .values(
            sequence=func.max(sync_state.c.sequence, sequence)
            if conn.dialect.name == "sqlite"
            else func.greatest(sync_state.c.sequence, sequence),
            lease_until=until,
            updated_at=now,
        )
    )
    return result.rowcount == 1


def state(conn: Connection, target: str) -> SyncState | None:
    row = conn.execute(select(sync_state).where(sync_state.c.target == target)).first()
    if row is None:
        return None
    return SyncState(row.target, row.sequence, row.lease_owner, row.lease_until, row.updated_at)


def latest_sequence(conn: Connection) -> int:
    return int(conn.execute(select(func.max(changefeed.c.sequence))).scalar_one() or 0)


def changes_after(conn: Connection, sequence: int, limit: int) -> list[Change]:
    rows = conn.execute(
        select(
            changefeed.c.sequence,
            changefeed.c.partition_key,
            partition.c.name,
            changefeed.c.study_uid,
        )
        .select_from(
            changefeed.join(partition, partition.c.partition_key == changefeed.c.partition_key)
        )
        .where(changefeed.c.sequence > sequence)
        .order_by(changefeed.c.sequence)
        .limit(limit)
    )
    return [Change(r[0], r[1], r[2], r[3]) for r in rows]


def study_metadata(conn: Connection, partition_key: int, study_uid: str) -> list[tuple[int, bytes]]:
    """(instance key, stored DICOM JSON) of every current instance of the study, in storage order."""
    out: list[tuple[int, bytes]] = []
    after = 0
    while True:
        page = metadata_page(conn, partition_key, study_uid, None, None, after_key=after)
        out += [(row[0], row[4]) for row in page]
        if len(page) < 500:
            return out
        after = page[-1][0]


def record_failure(
    conn: Connection,
    target: str,
    partition_key: int,
    study_uid: str,
    sequence: int,
    reason: str,
    attempts: int,
    now: datetime,
) -> None:
    key = (
        sync_dead_letter.c.target == target,
        sync_dead_letter.c.partition_key == partition_key,
        sync_dead_letter.c.study_uid == study_uid,
    )
    found = conn.execute(select(sync_dead_letter.c.attempts).where(*key)).first()
    if found is None:
        conn.execute(
            insert(sync_dead_letter).values(
                target=target,
                partition_key=partition_key,
                study_uid=study_uid,
                sequence=sequence,
                attempts=attempts,
                reason=reason,
                first_failed_at=now,
                last_failed_at=now,
            )
        )
    else:
        conn.execute(
            update(sync_dead_letter)
            .where(*key)
            .values(
                sequence=sequence,
                attempts=found[0] + attempts,
                reason=reason,
                last_failed_at=now,
            )
        )


def clear_dead_letter(conn: Connection, target: str, partition_key: int, study_uid: str) -> None:
    conn.execute(
        delete(sync_dead_letter).where(
            sync_dead_letter.c.target == target,
            sync_dead_letter.c.partition_key == partition_key,
            sync_dead_letter.c.study_uid == study_uid,
        )
    )


def dead_letters(
    conn: Connection, target: str, study_uids: Sequence[str] | None = None
) -> list[DeadLetter]:
    stmt = select(sync_dead_letter).where(sync_dead_letter.c.target == target)
    if study_uids is not None:
        stmt = stmt.where(sync_dead_letter.c.study_uid.in_(study_uids))
    rows = conn.execute(stmt.order_by(sync_dead_letter.c.first_failed_at))
    return [
        DeadLetter(
            r.partition_key,
            r.study_uid,
            r.sequence,
            r.attempts,
            r.reason,
            r.first_failed_at,
            r.last_failed_at,
        )
        for r in rows
    ]
