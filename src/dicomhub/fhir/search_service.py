"""FHIR search (R4 3.1.1): parsed queries to SQL over the index tables, searchset Bundles.

Also the matcher of the conditional interactions (create / update / delete, conditional
references) and the reader of GET entries in transaction and batch Bundles.

Bundle.total (R4 3.1.1.2 leaves it optional) is given when `_total=accurate` or `estimate`
(both counted exactly), with `_summary=count` and `_count=0`, and otherwise whenever it is
known for free: on a page that reaches the end of the matches. `_total=none` never gives it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from sqlalchemy import Connection

from dicomhub.context import RequestContext
from dicomhub.errors import InvalidInput, NotFound
from dicomhub.fhir.search.expressions import SearchQuery
from dicomhub.fhir.search.parameters import ParamType, search_param
from dicomhub.fhir.search.parse import parse_search
from dicomhub.fhir.search.values import InvalidSearch
from dicomhub.fhir.searchset import Page, searchset
from dicomhub.fhir.validation import known_type
from dicomhub.storage.engine import Database
from dicomhub.storage.fhir import resources as store
from dicomhub.storage.fhir import search_sql
from dicomhub.storage.fhir.resources import ResourceRow

__all__ = ["FhirSearch", "plain_identifier"]


def _parse(
    res_type: str, query: Sequence[tuple[str, str]], base: str | None, strict: bool
) -> SearchQuery:
    if not known_type(res_type):
        raise NotFound(f"'{res_type}' is not a FHIR R4 resource type")
    try:
        q = parse_search(res_type, query, base=base)
    except InvalidSearch as exc:
        raise InvalidInput(str(exc)) from None
    if strict and q.unknown:
        raise InvalidInput(
            f"unknown search parameters on {res_type}: {', '.join(q.unknown)} "
            "(Prefer: handling=strict)"
        )
    return q


def plain_identifier(
    res_type: str, query: Sequence[tuple[str, str]]
) -> tuple[str | None, str] | None:
    """(system or None for any, value) of a query that is only `identifier=[system|]value`
    (no modifier, no list, no escape); None for anything else."""
    if len(query) != 1 or query[0][0] != "identifier" or not known_type(res_type):
        return None
    param = search_param(res_type, "identifier")
    text = query[0][1]
    if param is None or param.type is not ParamType.TOKEN or "," in text or "\\" in text:
        return None
    system, bar, value = text.partition("|")
    if not bar:
        return (None, text) if text else None
    return (system, value) if system and value else None


@dataclass
class FhirSearch:
    db: Database

    def match(
        self, conn: Connection, res_type: str, query: Sequence[tuple[str, str]], limit: int
    ) -> list[ResourceRow]:
        """Current resources matching a search, inside the caller's transaction.

        Strict: a parameter the server does not know is refused (InvalidInput) rather than
        ignored, because ignoring it would widen what a conditional write touches.
        """
        ident = plain_identifier(res_type, query)
        if ident is not None:  # the commonest condition, by a statement built once
            return store.find_by_identifier(conn, res_type, *ident, limit)
        q = _parse(res_type, query, None, strict=True)
        pks = search_sql.match(conn, res_type, q.filters, limit)
        found = store.load_by_pk(conn, pks)
        return [found[pk] for pk in pks]

    def search(
        self,
        ctx: RequestContext,
        res_type: str,
        query: Sequence[tuple[str, str]],
        base: str,
        url: str,
        prefer_strict: bool = False,
    ) -> dict[str, Any]:
        """The searchset Bundle of a type-level search. `url` is the request's, for logs;
        the links are rebuilt from the parameters understood (R4 3.1.1.2.1)."""
        q = _parse(res_type, query, base, prefer_strict)
        with self.db.read() as conn:
            return searchset(base, q, self._page(conn, q))

    def read_entry(self, conn: Connection, url: str) -> tuple[int, Any]:
        """A search GET entry of a Bundle (`Type?query` or `Type`); reads and vreads are
        answered by the Bundle processor itself.

        The answer is plain JSON; a search's fullUrls are relative (`Type/id`), as the
        entry does not say which base the client used.
        """
        parts = urlsplit(url)
        segments = [s for s in parts.path.split("/") if s]
        if not segments or not known_type(segments[0]):
            raise NotFound(f"'{url}' does not name a resource type")
        if len(segments) != 1:
            raise InvalidInput(f"GET {url}: expected Type/id, Type/id/_history/n or Type?query")
        q = _parse(segments[0], parse_qsl(parts.query, keep_blank_values=True), None, False)
        return 200, searchset("", q, self._page(conn, q), raw=False)

    def _page(self, conn: Connection, q: SearchQuery) -> Page:
        if q.summary == "count" or q.count == 0:
            return Page((), (), False, search_sql.count(conn, q))
        pks, has_more = search_sql.find_page(conn, q)
        total: int | None = None
        if q.total in ("accurate", "estimate"):
            total = search_sql.count(conn, q)
        elif q.total != "none" and not has_more and (pks or q.offset == 0):
            total = q.offset + len(pks)  # this page reaches the end: the total is known
        extra: list[int] = []
        if pks and (q.includes or q.revincludes):
            extra = search_sql.included(conn, pks, q.includes, q.revincludes)
        rows = store.load_by_pk(conn, pks + extra)
        return Page(
            [rows[pk] for pk in pks], [rows[pk] for pk in extra if pk in rows], has_more, total
        )
