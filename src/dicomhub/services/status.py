"""The archive at a glance, for the web UI: totals, storage used, the FHIR sync's progress."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dicomhub import __version__
from dicomhub.storage import sync as sync_store
from dicomhub.storage.engine import Database
from dicomhub.storage.index.stats import totals

__all__ = ["ArchiveStatus", "SyncProgress", "archive_status"]


@dataclass(frozen=True, slots=True)
class SyncProgress:
    target: str
    sequence: int  # the last change the sync has handled
    latest_sequence: int  # the newest change in the feed
    dead_letters: int

    @property
    def backlog(self) -> int:
        return max(self.latest_sequence - self.sequence, 0)


@dataclass(frozen=True, slots=True)
class ArchiveStatus:
    version: str
    database: str
    studies: int
    series: int
    instances: int
    stored_bytes: int
    free_bytes: int | None  # free space where the blobs are written
    sync: SyncProgress | None  # None: no sync runs in this process

    def as_json(self) -> dict[str, Any]:
        sync: dict[str, Any] = {"enabled": False}
        if self.sync is not None:
            sync = {
                "enabled": True,
                "target": self.sync.target,
                "sequence": self.sync.sequence,
                "latestSequence": self.sync.latest_sequence,
                "backlog": self.sync.backlog,
                "deadLetters": self.sync.dead_letters,
            }
        return {
            "version": self.version,
            "database": self.database,
            "studies": self.studies,
            "series": self.series,
            "instances": self.instances,
            "storage": {"usedBytes": self.stored_bytes, "freeBytes": self.free_bytes},
            "sync": sync,
        }


def archive_status(db: Database, blob_dir: Path, sync_target: str | None) -> ArchiveStatus:
    """Totals and sync progress read in one transaction, so they agree with each other."""
    with db.read() as conn:
        counted = totals(conn)
        progress = None
        if sync_target is not None:
            state = sync_store.state(conn, sync_target)
            progress = SyncProgress(
                target=sync_target,
                sequence=state.sequence if state else 0,
                latest_sequence=sync_store.latest_sequence(conn),
                dead_letters=len(sync_store.dead_letters(conn, sync_target)),
            )
    try:
        free: int | None = shutil.disk_usage(blob_dir).free
    except OSError:  # the folder is not there yet (nothing stored)
        free = None
    return ArchiveStatus(
        version=__version__,
        database=db.backend,
        studies=counted.studies,
        series=counted.series,
        instances=counted.instances,
        stored_bytes=counted.stored_bytes,
        free_bytes=free,
        sync=progress,
    )
