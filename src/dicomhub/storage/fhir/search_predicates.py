"""Search filters (fhir.search.expressions) to SQL conditions over the fhir_idx_* tables.

Every filter becomes a condition on a resource's pk (or id) column. Positive filters are
`pk IN (SELECT resource_pk FROM fhir_idx_x WHERE res_type = .. AND param = .. AND <value>)`:
the subquery runs on the (res_type, param, ...) indexes and, being uncorrelated, drives the
search on both SQLite and PostgreSQL. Negative ones (:not, :missing=true) are NOT EXISTS,
which PostgreSQL runs as an anti-join and SQLite as one index probe per candidate.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    and_,
    exists,
    or_,
    select,
    true,
)
from sqlalchemy.sql.selectable import NamedFromClause

from dicomhub.fhir.search.expressions import (
    AnyOf,
    Chain,
    DateValue,
    Filter,
    Has,
    Missing,
    NumberValue,
    ParamFilter,
    Prefix,
    QuantityValue,
    ReferenceValue,
    StringValue,
    TokenValue,
    UriValue,
    Value,
)
from dicomhub.fhir.search.parameters import ParamType
from dicomhub.fhir.search.rows import OF_TYPE
from dicomhub.storage.schema import (
    fhir_idx_date,
    fhir_idx_number,
    fhir_idx_quantity,
    fhir_idx_reference,
    fhir_idx_string,
    fhir_idx_token,
    fhir_idx_uri,
    fhir_resource,
)

__all__ = ["TABLES", "Predicates", "starts_with"]

Condition = ColumnElement[bool]

TABLES: dict[ParamType, Table] = {
    ParamType.STRING: fhir_idx_string,
    ParamType.TOKEN: fhir_idx_token,
    ParamType.DATE: fhir_idx_date,
    ParamType.NUMBER: fhir_idx_number,
    ParamType.QUANTITY: fhir_idx_quantity,
    ParamType.URI: fhir_idx_uri,
    ParamType.REFERENCE: fhir_idx_reference,
}


def starts_with(column: ColumnElement[Any], text: str, backend: str) -> Condition:
    """`column` starts with `text`, index-friendly on each engine.

    SQLite compares TEXT bytewise (UTF-8 keeps code point order), so the prefix is exactly
    the half-open range [text, text with its last character bumped): a range the index serves,
    where LIKE would scan. PostgreSQL plans `LIKE 'text%'` as that range itself when the
    collation allows it, and stays correct under any collation.
    """
    last = ord(text[-1]) if text else 0
    if backend != "sqlite" or not text or last >= 0x10FFFF:
        return column.startswith(text, autoescape=True)
    bumped = 0xE000 if last == 0xD7FF else last + 1  # skip the surrogates UTF-8 cannot hold
    return and_(column >= text, column < text[:-1] + chr(bumped))


def _uri_ancestors(uri: str) -> list[str]:
    """`:above`: the URI and each of its parents by path segment (`http://a/b/c` → …/b, http://a)."""
    start = uri.find("://")
    start = start + 3 if start >= 0 else len(uri)
    out = [uri]
    cut = uri.rfind("/", start)
    while cut > start:
        out.append(uri[:cut])
        cut = uri.rfind("/", start, cut)
    return out


def _date(i: NamedFromClause, v: DateValue) -> Condition:
    """R4 3.1.1.4.2: the target's range [low, high] against the search value's [ql, qh].

    The redundant conjuncts (`low <= qh` under eq and le, `high >= ql` under ge) follow from
    low <= high and give each OR an indexed range to start from.
    """
    low, high, ql, qh = i.c.low, i.c.high, v.low, v.high
    match v.prefix:
        case Prefix.EQ:  # the search range fully contains the target's
            return and_(low >= ql, low <= qh, high <= qh)
        case Prefix.NE:
            return or_(low < ql, high > qh)
        case Prefix.GT:  # the range above the search value overlaps the target
            return high > qh
        case Prefix.LT:
            return low < ql
        case Prefix.GE:  # gt, or contained: simplifies to high > qh OR low >= ql
            return and_(high >= ql, or_(high > qh, low >= ql))
        case Prefix.LE:
            return and_(low <= qh, or_(low < ql, high <= qh))
        case Prefix.SA:  # no overlap, and the target lies above
            return low > qh
        case Prefix.EB:
            return high < ql
        case Prefix.AP:  # overlap with the widened search range (values.py)
            return and_(low <= qh, high >= ql)


def _number(i: NamedFromClause, v: NumberValue | QuantityValue) -> Condition:
    """R4 3.1.1.4.1: eq / ne use the search value's precision range [ql, qh); the other
    comparisons are exact; sa / eb compare the target's own precision range."""
    value = i.c.value
    match v.prefix:
        case Prefix.EQ:
            return and_(value >= v.low, value < v.high)
        case Prefix.NE:
            return or_(value < v.low, value >= v.high)
        case Prefix.GT:
            return value > v.value
        case Prefix.LT:
            return value < v.value
        case Prefix.GE:
            return value >= v.value
        case Prefix.LE:
            return value <= v.value
        case Prefix.SA:
            return i.c.low > v.high
        case Prefix.EB:
            return i.c.high < v.low
        case Prefix.AP:
            return and_(value >= v.low, value <= v.high)


class Predicates:
    """Compiles filters for one statement; `backend` is the SQLAlchemy dialect name."""

    def __init__(self, backend: str) -> None:
        self.backend = backend

    def condition(
        self, f: Filter, res_type: str, pk: ColumnElement[Any], res_id: ColumnElement[Any]
    ) -> Condition:
        """The condition that the resource of `res_type` at (pk, res_id) matches `f`."""
        if isinstance(f, AnyOf):
            return or_(*(self.condition(g, res_type, pk, res_id) for g in f.filters))
        if isinstance(f, Chain):
            return pk.in_(self._chain(f, res_type))
        if isinstance(f, Has):
            return res_id.in_(self._has(f, res_type))
        if isinstance(f, ParamFilter) and (ids := _plain_ids(f)) is not None:
            # _id is the resource's own column: the unique (res_type, res_id) index.
            return res_id.not_in(ids) if f.modifier == "not" else res_id.in_(ids)
        i, where = self._rows(f, res_type)
        if _negative(f):
            return ~exists().where(i.c.resource_pk == pk, *where)
        return pk.in_(select(i.c.resource_pk).where(*where))

    def pks(self, f: Filter, res_type: str) -> Select[Any]:
        """SELECT of the pks of the current `res_type` resources matching `f`."""
        if isinstance(f, ParamFilter | Missing) and not _negative(f) and _plain_ids(f) is None:
            i, where = self._rows(f, res_type)
            return select(i.c.resource_pk).where(*where)  # index rows are of current versions
        s = fhir_resource.alias()
        return select(s.c.resource_pk).where(
            s.c.res_type == res_type,
            s.c.deleted.is_(False),
            self.condition(f, res_type, s.c.resource_pk, s.c.res_id),
        )

    def _chain(self, f: Chain, res_type: str) -> Select[Any]:
        """Resources whose reference `param` points at a target_type resource matching inner."""
        ref = fhir_idx_reference.alias()
        t = fhir_resource.alias()
        targets = select(t.c.res_id).where(
            t.c.res_type == f.target_type,
            t.c.deleted.is_(False),
            self.condition(f.inner, f.target_type, t.c.resource_pk, t.c.res_id),
        )
        return select(ref.c.resource_pk).where(
            ref.c.res_type == res_type,
            ref.c.param == f.param.code,
            ref.c.target_type == f.target_type,
            ref.c.target_id.in_(targets),
        )

    def _has(self, f: Has, res_type: str) -> Select[Any]:
        """Ids of res_type resources that some matching source_type resource refers to."""
        ref = fhir_idx_reference.alias()
        return select(ref.c.target_id).where(
            ref.c.res_type == f.source_type,
            ref.c.param == f.param.code,
            ref.c.target_type == res_type,
            ref.c.resource_pk.in_(self.pks(f.inner, f.source_type)),
        )

    def _rows(self, f: Filter, res_type: str) -> tuple[NamedFromClause, list[Condition]]:
        """The index table (aliased) and the conditions on its rows that `f` looks for."""
        assert isinstance(f, ParamFilter | Missing)
        i = TABLES[f.param.type].alias()
        code = f.param.code
        if isinstance(f, Missing):
            return i, [i.c.res_type == res_type, i.c.param == code]
        if f.modifier == "of-type":
            code += OF_TYPE
        values = or_(*(self._value(i, f, v) for v in f.values))
        return i, [i.c.res_type == res_type, i.c.param == code, values]

    def _value(self, i: NamedFromClause, f: ParamFilter, v: Value) -> Condition:
        c = i.c
        if isinstance(v, StringValue):
            if f.modifier == "exact":
                return c.exact == v.text
            if f.modifier == "contains":
                return c.norm.contains(v.text, autoescape=True)
            column = c.text if f.param.type is ParamType.TOKEN else c.norm  # token :text
            return starts_with(column, v.text, self.backend)
        if isinstance(v, TokenValue):
            parts: list[Condition] = []
            if v.code is not None:
                parts.append(c.code == v.code)
            if v.system == "":
                parts.append(c.system.is_(None))
            elif v.system is not None:
                parts.append(c.system == v.system)
            return and_(true(), *parts)
        if isinstance(v, DateValue):
            return _date(i, v)
        if isinstance(v, QuantityValue):
            units: list[Condition] = []
            if v.system is not None:
                units.append(c.system == v.system)
            if v.code is not None:
                # `n||code` (no system) compares code or unit (R4 3.1.1.4.6)
                units.append(
                    c.code == v.code if v.system else or_(c.code == v.code, c.unit == v.code)
                )
            return and_(_number(i, v), *units)
        if isinstance(v, NumberValue):
            return _number(i, v)
        if isinstance(v, ReferenceValue):
            return _reference(i, f, v)
        assert isinstance(v, UriValue)
        if f.modifier == "below":
            return starts_with(c.uri, v.uri, self.backend)
        if f.modifier == "above":
            return c.uri.in_(_uri_ancestors(v.uri))
        return c.uri == v.uri


def _reference(i: NamedFromClause, f: ParamFilter, v: ReferenceValue) -> Condition:
    c = i.c
    if v.identifier_value is not None:
        same = c.identifier_value == v.identifier_value
        return (
            same
            if v.identifier_system is None
            else and_(same, c.identifier_system == v.identifier_system)
        )
    if v.url is not None:
        return c.url == v.url
    if v.target_type is not None:
        return and_(c.target_type == v.target_type, c.target_id == v.target_id)
    targets = f.param.targets  # a bare id: any type the parameter refers to (R4 3.1.1.4.12)
    kind = c.target_type.in_(targets) if targets else c.target_type.is_not(None)
    return and_(c.target_id == v.target_id, kind)


def _negative(f: Filter) -> bool:
    return (isinstance(f, Missing) and f.missing) or (
        isinstance(f, ParamFilter) and f.modifier == "not"
    )


def _plain_ids(f: Filter) -> list[str] | None:
    """The ids of `_id=a,b` (or `_id:not=`), None for any other filter."""
    if not isinstance(f, ParamFilter) or f.param.code != "_id" or f.modifier not in (None, "not"):
        return None
    ids = [v.code for v in f.values if isinstance(v, TokenValue) and v.system is None]
    return [i for i in ids if i is not None] if len(ids) == len(f.values) else None
