"""The FHIR store's use cases: create, read, update, delete, history, conditional interactions."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import parse_qsl

import orjson
from sqlalchemy import Connection

from dicomhub.context import RequestContext
from dicomhub.errors import Gone, InvalidInput, NotFound, PreconditionFailed
from dicomhub.fhir.references import rewrite_references
from dicomhub.fhir.search.extract import extract
from dicomhub.fhir.validation import check_id, known_type, validate_resource
from dicomhub.storage.engine import Database
from dicomhub.storage.fhir import resources as store
from dicomhub.storage.fhir.resources import NewVersion, ResourceRow, VersionRow

__all__ = [
    "FhirService",
    "Matcher",
    "ResourceRow",
    "VersionRow",
    "VersionSink",
    "Written",
    "format_instant",
    "parse_etag",
    "query_pairs",
]


_MAX_VERSION = 2**31 - 1


class VersionSink(Protocol):
    """Takes versions to write later, in a batch (see fhir/pending.py)."""

    def append(self, version: NewVersion, /) -> None: ...


class Matcher(Protocol):
    """Finds the current resources a search query matches, inside the caller's transaction."""

    def match(
        self, conn: Connection, res_type: str, query: Sequence[tuple[str, str]], limit: int
    ) -> list[ResourceRow]: ...


@dataclass(frozen=True, slots=True)
class Written:
    """The outcome of a write: the version now current and whether it was created."""

    res_type: str
    res_id: str
    version: int
    last_updated: datetime
    body: bytes | None  # None after a delete
    created: bool = False
    existing: bool = False  # a conditional create found a match and wrote nothing


def format_instant(moment: datetime) -> str:
    """FHIR instant with microseconds and a Z (R4 2.24.0.1: a zone is required)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_etag(value: str | None) -> int | None:
    """`W/"3"` or `"3"` or `3` (clients differ) → 3; None when absent."""
    if value is None:
        return None
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    if not text.isdigit():
        raise InvalidInput(f"If-Match '{value}' is not a version ETag such as W/\"3\"")
    return int(text)


def query_pairs(text: str) -> list[tuple[str, str]]:
    """The query part of a conditional URL or If-None-Exist header (`?` optional)."""
    text = text.split("?", 1)[1] if "?" in text else text
    items = parse_qsl(text, keep_blank_values=True)
    if not items:
        raise InvalidInput(f"'{text}' is not a search query")
    return items


@dataclass
class FhirService:
    db: Database
    matcher: Matcher

    # --- reads ---------------------------------------------------------------------------

    def read(self, ctx: RequestContext, res_type: str, res_id: str) -> ResourceRow:
        self.check_type(res_type)
        with self.db.read() as conn:
            return self.read_in(conn, res_type, res_id)

    def read_in(self, conn: Connection, res_type: str, res_id: str) -> ResourceRow:
        """Read inside `conn`'s transaction (also used by GET entries of Bundles)."""
        self.check_type(res_type)
        row = store.find(conn, res_type, res_id)
        if row is None:
            raise NotFound(f"{res_type}/{res_id} is not known")
        if row.deleted:
            raise Gone(f"{res_type}/{res_id} was deleted (version {row.version})")
        return row

    def vread(self, ctx: RequestContext, res_type: str, res_id: str, version: int) -> VersionRow:
        self.check_type(res_type)
        with self.db.read() as conn:
            return self.vread_in(conn, res_type, res_id, version)

    def vread_in(self, conn: Connection, res_type: str, res_id: str, version: int) -> VersionRow:
        self.check_type(res_type)
        if version > _MAX_VERSION:  # beyond the column's range: no such version (not a 500)
            raise NotFound(f"{res_type}/{res_id} has no version {version}")
        rows = store.history(conn, res_type=res_type, res_id=res_id, version=version, limit=1)
        if not rows:
            raise NotFound(f"{res_type}/{res_id} has no version {version}")
        if rows[0].body is None:
            raise Gone(f"version {version} of {res_type}/{res_id} is a deletion")
        return rows[0]

    def history(
        self,
        ctx: RequestContext,
        *,
        res_type: str | None = None,
        res_id: str | None = None,
        since: datetime | None = None,
        at: datetime | None = None,
        count: int = 100,
        offset: int = 0,
    ) -> tuple[list[VersionRow], int]:
        """Versions newest first and how many there are in all."""
        if res_type is not None:
            self.check_type(res_type)
        with self.db.read() as conn:
            if res_id is not None and store.find(conn, res_type or "", res_id) is None:
                raise NotFound(f"{res_type}/{res_id} is not known")
            rows = store.history(
                conn,
                res_type=res_type,
                res_id=res_id,
                since=since,
                at=at,
                limit=count,
                offset=offset,
            )
            total = store.count_versions(conn, res_type=res_type, res_id=res_id, since=since, at=at)
        return rows, total

    # --- writes --------------------------------------------------------------------------

    def create(
        self, ctx: RequestContext, resource: Any, *, if_none_exist: str | None = None
    ) -> Written:
        validate_resource(resource)
        return self.db.write(lambda conn: self.create_in(conn, ctx, resource, if_none_exist))

    def create_in(
        self,
        conn: Connection,
        ctx: RequestContext,
        resource: dict[str, Any],
        if_none_exist: str | None = None,
        res_id: str | None = None,
        into: VersionSink | None = None,
    ) -> Written:
        """Create inside `conn`'s transaction (also used by transaction Bundles); with `into`,
        the new version is appended there for the caller to write, instead of written now."""
        res_type = str(resource["resourceType"])
        if if_none_exist:
            found = self.matcher.match(conn, res_type, query_pairs(if_none_exist), limit=2)
            if len(found) > 1:
                raise PreconditionFailed(
                    f"If-None-Exist '{if_none_exist}' matches several {res_type} resources"
                )
            if found:
                row = found[0]
                return Written(
                    res_type, row.res_id, row.version, row.last_updated, row.body, existing=True
                )
        # The server chooses the id of a create (R4 3.1.0.7); a client-chosen id needs PUT.
        return self._write(
            conn, ctx, resource, res_type, res_id or str(uuid.uuid4()), None, "POST", into
        )

    def update(
        self,
        ctx: RequestContext,
        res_type: str,
        res_id: str,
        resource: Any,
        *,
        if_match: str | None = None,
    ) -> Written:
        self.check_type(res_type)
        check_id(res_type, res_id)
        validate_resource(resource, res_type)
        if resource.get("id") != res_id:
            raise InvalidInput(
                f"the resource's id '{resource.get('id')}' differs from '{res_id}' in the URL "
                "(an update must carry the id it updates)",
                locations=(f"{res_type}.id",),
            )
        expected = parse_etag(if_match)
        return self.db.write(
            lambda conn: self.update_in(conn, ctx, resource, res_type, res_id, expected)
        )

    def update_in(
        self,
        conn: Connection,
        ctx: RequestContext,
        resource: dict[str, Any],
        res_type: str,
        res_id: str,
        expected_version: int | None = None,
        into: VersionSink | None = None,
    ) -> Written:
        """Update inside `conn`'s transaction; `into` as for `create_in`."""
        current = store.find(conn, res_type, res_id)
        if expected_version is not None:
            if current is None or current.deleted:
                raise PreconditionFailed(
                    f"If-Match names version {expected_version} but {res_type}/{res_id} "
                    "has no current version"
                )
            if current.version != expected_version:
                raise PreconditionFailed(
                    f"{res_type}/{res_id} is at version {current.version}, "
                    f"not {expected_version} (If-Match)"
                )
        return self._write(conn, ctx, resource, res_type, res_id, current, "PUT", into)

    def conditional_update(
        self, ctx: RequestContext, res_type: str, query: str, resource: Any
    ) -> Written:
        self.check_type(res_type)
        validate_resource(resource, res_type)

        def work(conn: Connection) -> Written:
            found = self.matcher.match(conn, res_type, query_pairs(query), limit=2)
            if len(found) > 1:
                raise PreconditionFailed(f"'{query}' matches several {res_type} resources")
            if not found:
                res_id = resource.get("id") or str(uuid.uuid4())
                check_id(res_type, res_id)
                return self._write(conn, ctx, resource, res_type, res_id, None, "PUT")
            match = found[0]
            if resource.get("id") not in (None, match.res_id):
                raise InvalidInput(
                    f"'{query}' matches {res_type}/{match.res_id}, the resource says "
                    f"id '{resource['id']}'"
                )
            return self._write(conn, ctx, resource, res_type, match.res_id, match, "PUT")

        return self.db.write(work)

    def delete(
        self, ctx: RequestContext, res_type: str, res_id: str, *, if_match: str | None = None
    ) -> Written | None:
        """Delete; None when there was nothing to delete (FHIR answers success anyway)."""
        self.check_type(res_type)
        expected = parse_etag(if_match)
        return self.db.write(lambda conn: self.delete_in(conn, ctx, res_type, res_id, expected))

    def delete_in(
        self,
        conn: Connection,
        ctx: RequestContext,
        res_type: str,
        res_id: str,
        expected_version: int | None = None,
    ) -> Written | None:
        current = store.find(conn, res_type, res_id)
        if expected_version is not None and (
            current is None or current.deleted or current.version != expected_version
        ):
            raise PreconditionFailed(
                f"{res_type}/{res_id} is not at version {expected_version} (If-Match)"
            )
        if current is None or current.deleted:
            return None
        now = ctx.now()
        version = current.version + 1
        store.write_versions(
            conn,
            [NewVersion(res_type, res_id, version, now, "DELETE", None, None, pk=current.pk)],
        )
        return Written(res_type, res_id, version, now, None)

    def conditional_delete(self, ctx: RequestContext, res_type: str, query: str) -> Written | None:
        self.check_type(res_type)

        def work(conn: Connection) -> Written | None:
            found = self.matcher.match(conn, res_type, query_pairs(query), limit=2)
            if len(found) > 1:
                # R4 3.1.0.12.1 lets a server refuse to delete several: this one does.
                raise PreconditionFailed(
                    f"'{query}' matches several {res_type} resources; delete them one by one"
                )
            if not found:
                return None
            return self.delete_in(conn, ctx, res_type, found[0].res_id)

        return self.db.write(work)

    # --- shared --------------------------------------------------------------------------

    def check_type(self, res_type: str) -> None:
        if not known_type(res_type):
            raise NotFound(f"'{res_type}' is not a FHIR R4 resource type")

    def resolve_conditional_references(self, conn: Connection, resource: dict[str, Any]) -> None:
        """`Type?query` references become `Type/id` when exactly one resource matches."""

        def replace(ref: str) -> str | None:
            if "?" not in ref or ref.startswith(("http:", "https:", "urn:", "#")):
                return None
            target_type = ref.split("?", 1)[0]
            if not known_type(target_type):
                return None
            found = self.matcher.match(conn, target_type, query_pairs(ref), limit=2)
            if len(found) > 1:
                raise PreconditionFailed(f"the conditional reference '{ref}' matches several")
            if not found:
                raise InvalidInput(f"the conditional reference '{ref}' matches nothing")
            return f"{target_type}/{found[0].res_id}"

        rewrite_references(resource, replace)

    def _write(
        self,
        conn: Connection,
        ctx: RequestContext,
        resource: dict[str, Any],
        res_type: str,
        res_id: str,
        current: ResourceRow | None,
        method: str,
        into: VersionSink | None = None,
    ) -> Written:
        self.resolve_conditional_references(conn, resource)
        now = ctx.now()
        version = current.version + 1 if current is not None else 1
        meta = dict(resource.get("meta") or {})
        meta["versionId"] = str(version)
        meta["lastUpdated"] = format_instant(now)
        # resourceType, id and meta first, as servers conventionally write them.
        stamped = {"resourceType": res_type, "id": res_id, "meta": meta, **resource}
        stamped["id"], stamped["meta"] = res_id, meta
        body = orjson.dumps(stamped)
        try:
            rows = extract(stamped)
        except ValueError as exc:
            raise InvalidInput(f"{res_type}/{res_id} cannot be indexed: {exc}") from exc
        pk = current.pk if current is not None else None
        new = NewVersion(res_type, res_id, version, now, method, body, rows, pk=pk)
        if into is not None:
            into.append(new)
        else:
            store.write_versions(conn, [new])
        return Written(res_type, res_id, version, now, body, created=current is None)
