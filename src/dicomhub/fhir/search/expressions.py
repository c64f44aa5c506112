"""The parsed form of a FHIR search (R4 3.1.1): filters as a tree, result parameters as fields.

parse.py builds these from the query items; storage compiles the filters to SQL. Values are
already normalized exactly as write-time extraction normalizes index rows (normalize.py), so
the SQL only compares columns with constants.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from dicomhub.fhir.search.parameters import SearchParam

__all__ = [
    "AnyOf",
    "Chain",
    "DateValue",
    "Filter",
    "Has",
    "Include",
    "Missing",
    "NumberValue",
    "ParamFilter",
    "Prefix",
    "QuantityValue",
    "ReferenceValue",
    "SearchQuery",
    "SortKey",
    "StringValue",
    "TokenValue",
    "UriValue",
    "Value",
]


class Prefix(StrEnum):
    """Comparison prefixes of number, date and quantity values (R4 3.1.1.4.2 Prefixes)."""

    EQ = "eq"
    NE = "ne"
    GT = "gt"
    LT = "lt"
    GE = "ge"
    LE = "le"
    SA = "sa"
    EB = "eb"
    AP = "ap"


@dataclass(frozen=True, slots=True)
class StringValue:
    """Folded text for the default (starts-with) and :contains / token :text; as given for :exact."""

    text: str


@dataclass(frozen=True, slots=True)
class TokenValue:
    """`code` (system None: any system), `|code` (system "": no system), `system|code`,
    `system|` (code None: any code).

    For :of-type the system is the identifier type's `system|code` key (rows.of_type_key).
    """

    system: str | None
    code: str | None


@dataclass(frozen=True, slots=True)
class DateValue:
    """The search value's instant range, both ends inclusive (UTC epoch microseconds)."""

    prefix: Prefix
    low: int
    high: int


@dataclass(frozen=True, slots=True)
class NumberValue:
    """The number and the range its written precision implies (R4 3.1.1.4.1)."""

    prefix: Prefix
    value: float
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class QuantityValue:
    """`[prefix]number|system|code`; `number||code` matches code or unit (R4 3.1.1.4.6)."""

    prefix: Prefix
    value: float
    low: float
    high: float
    system: str | None = None
    code: str | None = None


@dataclass(frozen=True, slots=True)
class ReferenceValue:
    """One of: a local target (type None: any type the parameter allows), an absolute or
    canonical `url`, or (for :identifier) an identifier system|value."""

    target_type: str | None = None
    target_id: str | None = None
    url: str | None = None
    identifier_system: str | None = None  # with :identifier; None = any system
    identifier_value: str | None = None


@dataclass(frozen=True, slots=True)
class UriValue:
    uri: str


Value = (
    StringValue | TokenValue | DateValue | NumberValue | QuantityValue | ReferenceValue | UriValue
)


@dataclass(frozen=True, slots=True)
class ParamFilter:
    """One parameter on the searched type; `values` are ORed (comma-separated, R4 3.1.1.3).

    modifier: None, or exact / contains (string), not / text / of-type (token),
    identifier (reference), below / above (uri). A reference `:[type]` is in the values.
    """

    param: SearchParam
    modifier: str | None
    values: tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class Missing:
    """`:missing=true` (no value for the parameter) or `:missing=false` (some value)."""

    param: SearchParam
    missing: bool


@dataclass(frozen=True, slots=True)
class Chain:
    """`param.rest` with `param` a reference to `target_type` (R4 3.1.1.4.13 Chained parameters)."""

    param: SearchParam
    target_type: str
    inner: Filter


@dataclass(frozen=True, slots=True)
class Has:
    """`_has:source_type:param:rest`: some source_type resource whose reference `param` points
    at the resource matches `rest` (R4 3.1.1.4.14 Reverse chaining)."""

    source_type: str
    param: SearchParam
    inner: Filter


@dataclass(frozen=True, slots=True)
class AnyOf:
    """Alternatives, one of which must hold: a chain through a reference with several targets."""

    filters: tuple[Filter, ...]


Filter = ParamFilter | Missing | Chain | Has | AnyOf


@dataclass(frozen=True, slots=True)
class SortKey:
    param: SearchParam
    descending: bool


@dataclass(frozen=True, slots=True)
class Include:
    """`_include` / `_revinclude` = `source_type:param[:target_type]` (R4 3.1.1.5.4).

    source_type None with param None is `*`; param None alone is `Type:*` (every reference
    parameter of that type).
    """

    source_type: str | None
    param: SearchParam | None
    target_type: str | None
    iterate: bool


@dataclass(frozen=True, slots=True)
class SearchQuery:
    res_type: str
    filters: tuple[Filter, ...]  # ANDed
    sort: tuple[SortKey, ...] = ()
    count: int = 20
    offset: int = 0
    includes: tuple[Include, ...] = ()
    revincludes: tuple[Include, ...] = ()
    total: str | None = None  # none / estimate / accurate
    summary: str | None = None  # true / text / data / count / false
    elements: tuple[str, ...] | None = None
    unknown: tuple[str, ...] = ()  # parameter names ignored (lenient handling)
    accepted: tuple[tuple[str, str], ...] = ()  # the items understood, for the self link
