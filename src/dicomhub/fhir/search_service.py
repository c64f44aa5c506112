"""FHIR search: parsed queries to SQL over the index tables, results as searchset Bundles.

Placeholder until the search implementation lands: conditional interactions match on `_id`
and on token parameters only; `search` answers "not supported".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from dicomhub.context import RequestContext
from dicomhub.errors import Unsupported
from dicomhub.storage.engine import Database
from dicomhub.storage.fhir import resources as store
from dicomhub.storage.fhir.resources import ResourceRow
from dicomhub.storage.schema import fhir_idx_token, fhir_resource

__all__ = ["FhirSearch"]


@dataclass
class FhirSearch:
    db: Database

    def match(
        self, conn: Connection, res_type: str, query: Sequence[tuple[str, str]], limit: int
    ) -> list[ResourceRow]:
        stmt = select(fhir_resource.c.resource_pk).where(
            fhir_resource.c.res_type == res_type, fhir_resource.c.deleted.is_(False)
        )
        for key, value in query:
            if key == "_id":
                stmt = stmt.where(fhir_resource.c.res_id == value)
                continue
            system, _, code = value.rpartition("|") if "|" in value else ("", "", value)
            sub = select(fhir_idx_token.c.resource_pk).where(
                fhir_idx_token.c.res_type == res_type,
                fhir_idx_token.c.param == key,
                fhir_idx_token.c.code == code,
            )
            if "|" in value:
                sub = sub.where(fhir_idx_token.c.system == system) if system else sub
            stmt = stmt.where(fhir_resource.c.resource_pk.in_(sub))
        pks = [r[0] for r in conn.execute(stmt.limit(limit))]
        found = store.load_by_pk(conn, pks)
        return [found[pk] for pk in pks]

    def search(
        self,
        ctx: RequestContext,
        res_type: str,
        query: Sequence[tuple[str, str]],
        base: str,
        url: str,
    ) -> dict[str, Any]:
        raise Unsupported("search is not implemented yet")

    def read_entry(self, conn: Connection, url: str) -> tuple[int, Any]:
        raise Unsupported("GET entries in Bundles are not implemented yet")
