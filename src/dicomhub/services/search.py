"""QIDO-RS search: a parsed query to DICOM JSON results, from the index alone."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from pydicom.datadict import dictionary_VR

from dicomhub.context import RequestContext
from dicomhub.dicom.attributes import COMPUTED, DEFAULT_RETURN, Level, level_of_tag
from dicomhub.dicom.json_model import tag_key
from dicomhub.dicom.query import QueryError, QuerySpec, parse_query
from dicomhub.errors import InvalidInput
from dicomhub.services.store import StoreService
from dicomhub.services.urls import Urls, resolve_bulk_uris
from dicomhub.storage.engine import Database
from dicomhub.storage.index.query import SearchRow, search

__all__ = ["SearchResult", "SearchService"]

_RETRIEVE_URL = 0x00081190
_AVAILABILITY = 0x00080056
_NUM_STUDY_SERIES = 0x00201206
_NUM_STUDY_INSTANCES = 0x00201208
_NUM_SERIES_INSTANCES = 0x00201209
_MODALITIES = 0x00080061
_SOP_CLASSES = 0x00080062
_UIDS = {Level.STUDY: 0x0020000D, Level.SERIES: 0x0020000E, Level.INSTANCE: 0x00080018}
_RETRIEVE_URL_KEY = tag_key(_RETRIEVE_URL)


@dataclass(frozen=True, slots=True)
class SearchResult:
    items: list[dict[str, Any]]
    has_more: bool
    warnings: tuple[str, ...]


def _vr(tag: int) -> str:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return "UN"


@dataclass
class SearchService:
    db: Database
    store: StoreService
    default_limit: int = 100
    max_limit: int = 1000

    def parse(
        self,
        level: Level,
        params: Iterable[tuple[str, str]],
        *,
        study_uid: str | None = None,
        series_uid: str | None = None,
    ) -> QuerySpec:
        try:
            return parse_query(
                level,
                params,
                study_uid=study_uid,
                series_uid=series_uid,
                default_limit=self.default_limit,
                max_limit=self.max_limit,
            )
        except QueryError as exc:
            raise InvalidInput(str(exc)) from exc

    def search(self, ctx: RequestContext, spec: QuerySpec, urls: Urls) -> SearchResult:
        pk = self.store.partition_key(ctx.partition)
        plan = _Plan.for_spec(spec)
        with self.db.read() as conn:
            rows = search(conn, self.db.backend, pk, spec, with_metadata=plan.needs_metadata)
        has_more = len(rows) > spec.limit
        items = [plan.item(row, urls) for row in rows[: spec.limit]]
        return SearchResult(items, has_more, spec.warnings)

    @staticmethod
    def _held_in_index(tag: int, level: Level) -> bool:
        held = level_of_tag(tag)
        return held is not None and held <= level

    @staticmethod
    def _wanted(spec: QuerySpec) -> set[int]:
        wanted: set[int] = set()
        for level in Level:
            if level > spec.level:
                break
            # Parent levels are described only when the URL does not fix them.
            fixed = (level is Level.STUDY and spec.study_uid is not None) or (
                level is Level.SERIES and spec.series_uid is not None
            )
            if level is spec.level or not fixed:
                wanted |= DEFAULT_RETURN[level]
            wanted.add(_UIDS[level])
        wanted |= spec.matched_tags | spec.include
        return wanted


def _computed_value(tag: int, row: SearchRow) -> dict[str, Any]:
    if tag == _AVAILABILITY:
        return {"vr": "CS", "Value": ["ONLINE"]}
    if tag == _NUM_STUDY_SERIES:
        return {"vr": "IS", "Value": [row.study_num_series]}
    if tag == _NUM_STUDY_INSTANCES:
        return {"vr": "IS", "Value": [row.study_num_instances]}
    if tag == _NUM_SERIES_INSTANCES:
        return {"vr": "IS", "Value": [row.series_num_instances]}
    if tag == _MODALITIES:
        return {"vr": "CS", "Value": row.modalities.split("\\")} if row.modalities else {"vr": "CS"}
    if tag == _SOP_CLASSES:
        return (
            {"vr": "UI", "Value": row.sop_classes.split("\\")} if row.sop_classes else {"vr": "UI"}
        )
    raise AssertionError(f"no computed value for {tag:08X}")


@dataclass(frozen=True, slots=True)
class _Plan:
    """What each result holds, worked out once per search rather than once per row."""

    level: Level
    include_all: bool
    fields: tuple[tuple[str, dict[str, Any]], ...]  # (tag key, the empty value when absent)
    computed: tuple[tuple[str, int], ...]
    retrieve_url: bool
    needs_metadata: bool

    @classmethod
    def for_spec(cls, spec: QuerySpec) -> _Plan:
        wanted = SearchService._wanted(spec)
        level = spec.level
        computed_tags = {t for t in COMPUTED if t != _RETRIEVE_URL}
        if level is Level.STUDY:
            computed_tags.discard(_NUM_SERIES_INSTANCES)
        if not spec.include_all:
            computed_tags &= wanted
        fields = tuple((tag_key(t), {"vr": _vr(t)}) for t in sorted(wanted) if t not in COMPUTED)
        needs_metadata = (spec.include_all and level is Level.INSTANCE) or any(
            t not in COMPUTED and not SearchService._held_in_index(t, level) for t in wanted
        )
        return cls(
            level=level,
            include_all=spec.include_all,
            fields=fields,
            computed=tuple((tag_key(t), t) for t in sorted(computed_tags)),
            retrieve_url=spec.include_all or _RETRIEVE_URL in wanted,
            needs_metadata=needs_metadata,
        )

    def item(self, row: SearchRow, urls: Urls) -> dict[str, Any]:
        level = self.level
        held: dict[str, Any] = orjson.loads(row.study_attributes)
        if level >= Level.SERIES and row.series_attributes is not None:
            held.update(orjson.loads(row.series_attributes))
        if level is Level.INSTANCE and row.instance_attributes is not None:
            held.update(orjson.loads(row.instance_attributes))
        extra: dict[str, Any] = {}
        if row.metadata is not None:
            url = urls.instance(row.study_uid, row.series_uid or "", row.sop_instance_uid or "")
            extra = orjson.loads(resolve_bulk_uris(row.metadata, url))

        out: dict[str, Any] = {}
        if self.include_all:
            # Private and other attributes not kept at this level are not invented for "all".
            out.update(extra if level is Level.INSTANCE and extra else held)
        for key, empty in self.fields:
            if key not in out:
                out[key] = held.get(key) or extra.get(key) or empty
        for key, tag in self.computed:
            out[key] = _computed_value(tag, row)
        if self.retrieve_url:
            if level is Level.STUDY:
                url = urls.study(row.study_uid)
            elif level is Level.SERIES:
                url = urls.series(row.study_uid, row.series_uid or "")
            else:
                url = urls.instance(row.study_uid, row.series_uid or "", row.sop_instance_uid or "")
            out[_RETRIEVE_URL_KEY] = {"vr": "UR", "Value": [url]}
        return dict(sorted(out.items()))
