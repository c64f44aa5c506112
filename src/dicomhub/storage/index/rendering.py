"""Index look-up for rendered images and thumbnails: the instances of a scope in the order
that picks a representative one."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import Connection, bindparam, select

from dicomhub.storage.schema import instance, series, study

__all__ = ["Candidate", "candidates"]

_JOINED = instance.join(series, series.c.series_key == instance.c.series_key).join(
    study, study.c.study_key == instance.c.study_key
)


@dataclass(frozen=True, slots=True)
class Candidate:
    """What choosing a representative instance needs, without the frame index."""

    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    has_pixels: bool


@cache
def _candidates_statement(with_series: bool) -> Any:
    stmt = (
        select(
            series.c.series_uid,
            instance.c.sop_instance_uid,
            instance.c.sop_class_uid,
            instance.c.transfer_syntax_uid,
            instance.c.frames.is_not(None).label("has_pixels"),
        )
        .select_from(_JOINED)
        .where(study.c.partition_key == bindparam("pk"), study.c.study_uid == bindparam("study"))
    )
    if with_series:
        stmt = stmt.where(series.c.series_uid == bindparam("series"))
    return stmt.order_by(
        series.c.series_number.asc().nulls_last(),
        series.c.series_key,
        instance.c.instance_number.asc().nulls_last(),
        instance.c.instance_key,
    )


def candidates(
    conn: Connection, pk: int, study_uid: str, series_uid: str | None
) -> list[Candidate]:
    """The instances of a study or series, by SeriesNumber, then InstanceNumber."""
    params: dict[str, Any] = {"pk": pk, "study": study_uid}
    if series_uid is not None:
        params["series"] = series_uid
    rows = conn.execute(_candidates_statement(series_uid is not None), params)
    return [Candidate(r[0], r[1], r[2], r[3], bool(r[4])) for r in rows]
