"""Archive totals: how many studies, series and instances are indexed, and their bytes."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, func, select

from dicomhub.storage.schema import instance, series, study

__all__ = ["Totals", "totals"]


@dataclass(frozen=True, slots=True)
class Totals:
    studies: int
    series: int
    instances: int
    stored_bytes: int  # sum of the stored files' sizes


def totals(conn: Connection) -> Totals:
    """Totals over every partition, in one round trip."""
    files = select(
        func.count().label("instances"),
        func.coalesce(func.sum(instance.c.size), 0).label("stored_bytes"),
    ).subquery()
    row = conn.execute(
        select(
            select(func.count()).select_from(study).scalar_subquery(),
            select(func.count()).select_from(series).scalar_subquery(),
            files.c.instances,
            files.c.stored_bytes,
        )
    ).one()
    return Totals(int(row[0]), int(row[1]), int(row[2]), int(row[3]))
