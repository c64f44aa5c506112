"""Versions written at the end of a unit of work, in one batch, instead of one at a time.

Writing a version costs about seven statements (resource, history, index tables); the sync
writes two new resources per study, twenty studies per transaction. Kept here, they go in with
one statement per table. Before anything reads what they could change, they are written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import Connection

from dicomhub.fhir.search.rows import IndexRows
from dicomhub.fhir.search_service import plain_identifier
from dicomhub.storage.fhir import resources as store
from dicomhub.storage.fhir.resources import NewVersion

__all__ = ["PendingVersions"]


@dataclass
class PendingVersions:
    versions: list[NewVersion] = field(default_factory=list)
    # What a search could find among them, kept as they come (the checks run per search):
    _ids: set[tuple[str, str]] = field(default_factory=set)  # (type, id)
    _identifiers: set[tuple[str, str | None, str | None]] = field(default_factory=set)
    _types: set[str] = field(default_factory=set)
    # types with a pending update, or with rows that cannot be looked into: any search flushes
    _opaque: set[str] = field(default_factory=set)

    def append(self, version: NewVersion, /) -> None:
        self.versions.append(version)
        self._ids.add((version.res_type, version.res_id))
        self._types.add(version.res_type)
        if version.pk is not None or not isinstance(version.rows, IndexRows):
            self._opaque.add(version.res_type)
            return
        for t in version.rows.tokens:
            if t.param == "identifier":
                self._identifiers.add((version.res_type, t.system, t.code))
                self._identifiers.add((version.res_type, None, t.code))

    def before_search(
        self, conn: Connection, res_type: str, query: Sequence[tuple[str, str]]
    ) -> None:
        """Write what is pending if the search could see any of it.

        A plain `identifier=[system|]value` search of new resources is checked against their
        identifiers (the sync's searches); any other search of a type with pending versions
        writes them first, as does any search of a type with a pending update (its stored
        index rows are stale).
        """
        if res_type not in self._types:
            return
        ident = plain_identifier(res_type, query)
        if ident is None or res_type in self._opaque or (res_type, *ident) in self._identifiers:
            self.flush(conn)

    def before_read(self, conn: Connection, res_type: str, res_id: str) -> None:
        """Write what is pending if it holds a version of `res_type/res_id`."""
        if (res_type, res_id) in self._ids:
            self.flush(conn)

    def flush(self, conn: Connection) -> None:
        if self.versions:
            store.write_versions(conn, self.versions)
        self.clear()

    def clear(self) -> None:
        self.versions = []
        self._ids.clear()
        self._identifiers.clear()
        self._types.clear()
        self._opaque.clear()
