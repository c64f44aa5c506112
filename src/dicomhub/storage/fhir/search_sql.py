"""FHIR search in SQL: a page of matches is ONE statement over the index tables.

    SELECT r.resource_pk FROM fhir_resource r
    WHERE r.res_type = :type AND r.deleted IS false AND <one condition per filter>
    ORDER BY <sort keys>, r.resource_pk LIMIT :count + 1 OFFSET :offset

Nothing is filtered in Python: the caller loads the bodies of the pks returned (and of the
included resources). The extra row of the LIMIT tells whether a next page exists; the
resource_pk tie-break makes paging by offset stable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Select, and_, func, select
from sqlalchemy.sql.selectable import NamedFromClause

from dicomhub.fhir.search.expressions import Filter, Include, SearchQuery, SortKey
from dicomhub.fhir.search.parameters import ParamType
from dicomhub.storage.fhir.search_predicates import TABLES, Predicates
from dicomhub.storage.schema import fhir_idx_reference, fhir_resource

__all__ = [
    "MAX_INCLUDED",
    "MAX_ITERATIONS",
    "count",
    "count_statement",
    "find_page",
    "included",
    "match",
    "page_statement",
]

# `_include:iterate` / `_revinclude:iterate` follow references until nothing new turns up,
# at most this many rounds and this many included resources per page (R4 3.1.1.5.4 lets the
# server limit the iteration; these keep a cyclic graph from running away).
MAX_ITERATIONS = 10
MAX_INCLUDED = 1000


def _matching(
    res_type: str, filters: Sequence[Filter], backend: str
) -> tuple[NamedFromClause, Select[Any]]:
    r = fhir_resource.alias("r")
    predicates = Predicates(backend)
    stmt = select(r.c.resource_pk).where(
        r.c.res_type == res_type,
        r.c.deleted.is_(False),
        *(predicates.condition(f, res_type, r.c.resource_pk, r.c.res_id) for f in filters),
    )
    return r, stmt


def _sort_value(key: SortKey, res_type: str, r: NamedFromClause) -> Any:
    """A resource's value for one sort key (R4 3.1.1.5.2): with several values, the lowest
    when ascending and the highest when descending; dates by their range's start / end."""
    code = key.param.code
    if code == "_id":
        return r.c.res_id
    if code == "_lastUpdated":
        return r.c.last_updated
    i = TABLES[key.param.type].alias()
    columns: dict[ParamType, Any] = {
        ParamType.STRING: i.c.get("norm"),
        ParamType.TOKEN: i.c.get("code"),
        ParamType.DATE: i.c.get("high") if key.descending else i.c.get("low"),
        ParamType.NUMBER: i.c.get("value"),
        ParamType.QUANTITY: i.c.get("value"),
        ParamType.URI: i.c.get("uri"),
    }
    if key.param.type is ParamType.REFERENCE:
        column = func.coalesce(i.c.target_id, i.c.url, i.c.identifier_value)
    else:
        column = columns[key.param.type]
    aggregate = func.max if key.descending else func.min
    return (
        select(aggregate(column))
        .where(i.c.resource_pk == r.c.resource_pk, i.c.res_type == res_type, i.c.param == code)
        .scalar_subquery()
    )


def page_statement(q: SearchQuery, backend: str) -> Select[Any]:
    """The pks of one page of matches, plus one more when a next page exists."""
    r, stmt = _matching(q.res_type, q.filters, backend)
    order = []
    for key in q.sort:
        value = _sort_value(key, q.res_type, r)
        # resources without a value come last either way
        order.append(value.desc().nulls_last() if key.descending else value.asc().nulls_last())
    return stmt.order_by(*order, r.c.resource_pk).limit(q.count + 1).offset(q.offset)


def count_statement(q: SearchQuery, backend: str) -> Select[Any]:
    _, stmt = _matching(q.res_type, q.filters, backend)
    return select(func.count()).select_from(stmt.subquery())


def find_page(conn: Connection, q: SearchQuery) -> tuple[list[int], bool]:
    """(pks of the page in order, whether more matches follow)."""
    pks = list(conn.execute(page_statement(q, conn.dialect.name)).scalars())
    return pks[: q.count], len(pks) > q.count


def count(conn: Connection, q: SearchQuery) -> int:
    return int(conn.execute(count_statement(q, conn.dialect.name)).scalar_one())


def match(conn: Connection, res_type: str, filters: Sequence[Filter], limit: int) -> list[int]:
    """Up to `limit` pks of matches, in pk order (conditional interactions)."""
    r, stmt = _matching(res_type, filters, conn.dialect.name)
    return list(conn.execute(stmt.order_by(r.c.resource_pk).limit(limit)).scalars())


def _include_statement(pks: Sequence[int], inc: Include) -> Select[Any]:
    """Targets of the references `inc` names, made by the resources at `pks`."""
    ref = fhir_idx_reference.alias()
    t = fhir_resource.alias()
    join = ref.join(t, and_(t.c.res_type == ref.c.target_type, t.c.res_id == ref.c.target_id))
    stmt = (
        select(t.c.resource_pk)
        .select_from(join)
        .where(ref.c.resource_pk.in_(pks), t.c.deleted.is_(False))
    )
    if inc.source_type is not None:
        stmt = stmt.where(ref.c.res_type == inc.source_type)
    if inc.param is not None:
        stmt = stmt.where(ref.c.param == inc.param.code)
    if inc.target_type is not None:
        stmt = stmt.where(ref.c.target_type == inc.target_type)
    return stmt.distinct()


def _revinclude_statement(pks: Sequence[int], inc: Include) -> Select[Any]:
    """Resources whose references `inc` names point at the resources at `pks`."""
    ref = fhir_idx_reference.alias()
    p = fhir_resource.alias()
    join = p.join(ref, and_(ref.c.target_type == p.c.res_type, ref.c.target_id == p.c.res_id))
    stmt = select(ref.c.resource_pk).select_from(join).where(p.c.resource_pk.in_(pks))
    if inc.source_type is not None:
        stmt = stmt.where(ref.c.res_type == inc.source_type)
    if inc.param is not None:
        stmt = stmt.where(ref.c.param == inc.param.code)
    if inc.target_type is not None:
        stmt = stmt.where(p.c.res_type == inc.target_type)
    return stmt.distinct()


def included(
    conn: Connection,
    matches: Sequence[int],
    includes: Sequence[Include],
    revincludes: Sequence[Include],
) -> list[int]:
    """pks of the resources `_include` / `_revinclude` add to a page of matches, in the order
    found; none of the matches, none twice. `:iterate` ones also run on what was included."""
    seen = set(matches)
    found: list[int] = []
    frontier = list(matches)
    for round_ in range(MAX_ITERATIONS):
        specs = [(_include_statement, inc) for inc in includes if round_ == 0 or inc.iterate] + [
            (_revinclude_statement, inc) for inc in revincludes if round_ == 0 or inc.iterate
        ]
        if not frontier or not specs:
            break
        new: list[int] = []
        for build, inc in specs:
            for pk in conn.execute(build(frontier, inc)).scalars():
                if pk not in seen and len(found) + len(new) < MAX_INCLUDED:
                    seen.add(pk)
                    new.append(pk)
        new.sort()  # a stable order: pk order within each round
        found.extend(new)
        frontier = new
    return found
