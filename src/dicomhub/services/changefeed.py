"""The change feed, with the Azure DICOM service's field names (v1 by sequence, v2 by time)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from dicomhub.context import RequestContext
from dicomhub.errors import InvalidInput
from dicomhub.services.urls import Urls, resolve_bulk_uris
from dicomhub.storage.engine import Database
from dicomhub.storage.index import changefeed as feed
from dicomhub.storage.index.changefeed import ChangeRow

__all__ = ["ChangeFeedService"]


def _timestamp(value: datetime) -> str:
    return value.isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass
class ChangeFeedService:
    db: Database

    def entry(self, row: ChangeRow, urls: Urls, include_metadata: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "Sequence": row.sequence,
            "PartitionName": row.partition_name,
            "StudyInstanceUid": row.study_uid,
            "SeriesInstanceUid": row.series_uid,
            "SopInstanceUid": row.sop_instance_uid,
            "Action": row.action,
            "Timestamp": _timestamp(row.timestamp),
            "State": row.state,
        }
        if include_metadata:
            out["Metadata"] = (
                orjson.loads(
                    resolve_bulk_uris(
                        row.metadata,
                        urls.instance(row.study_uid, row.series_uid, row.sop_instance_uid),
                    )
                )
                if row.metadata is not None
                else None
            )
        return out

    def by_sequence(
        self, ctx: RequestContext, urls: Urls, *, offset: int, limit: int, include_metadata: bool
    ) -> list[dict[str, Any]]:
        if offset < 0:
            raise InvalidInput(f"offset must be 0 or more, not {offset}")
        with self.db.read() as conn:
            rows = feed.by_sequence(conn, offset, limit, include_metadata)
        return [self.entry(r, urls, include_metadata) for r in rows]

    def by_time(
        self,
        ctx: RequestContext,
        urls: Urls,
        *,
        start: datetime | None,
        end: datetime | None,
        offset: int,
        limit: int,
        include_metadata: bool,
    ) -> list[dict[str, Any]]:
        if start is not None and end is not None and end <= start:
            raise InvalidInput("endTime must be after startTime")
        with self.db.read() as conn:
            rows = feed.by_time(conn, start, end, offset, limit, include_metadata)
        return [self.entry(r, urls, include_metadata) for r in rows]

    def latest(
        self, ctx: RequestContext, urls: Urls, *, include_metadata: bool, by_time: bool
    ) -> dict[str, Any] | None:
        with self.db.read() as conn:
            row = feed.latest(conn, include_metadata, by_time=by_time)
        return self.entry(row, urls, include_metadata) if row is not None else None
