"""Index rows that writes maintain and searches read: one row type per search parameter type.

Extraction (fhir/search/extract.py) turns a resource into these; storage writes them into the
fhir_idx_* tables; the search SQL reads those tables. All text is already normalized here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from operator import attrgetter
from typing import Any

__all__ = [
    "OF_TYPE",
    "DateRow",
    "IndexRows",
    "NumberRow",
    "QuantityRow",
    "ReferenceRow",
    "RowTuples",
    "StringRow",
    "TokenRow",
    "UriRow",
    "of_type_key",
]

# Token `:of-type` (R4 3.1.1.5.x) needs an Identifier's type coding next to its value: such
# rows go under the pseudo parameter `<code>:of-type` (no real code contains a colon) with
# system = of_type_key(type system, type code) and code = the identifier's value.
OF_TYPE = ":of-type"


def of_type_key(system: str | None, code: str | None) -> str:
    """The `system` column of an :of-type row: the type coding as `system|code`."""
    return f"{system or ''}|{code or ''}"


@dataclass(frozen=True, slots=True)
class StringRow:
    param: str
    norm: str  # case- and accent-folded, whitespace collapsed: default (starts-with) and :contains
    exact: str  # as written: :exact


@dataclass(frozen=True, slots=True)
class TokenRow:
    param: str
    system: str | None
    code: str | None
    text: str | None = None  # folded display / CodeableConcept.text / Identifier.type.text: :text


@dataclass(frozen=True, slots=True)
class DateRow:
    """The instant range a date, dateTime, instant or Period covers, in UTC epoch microseconds.

    Both ends inclusive: `2020` is 2020-01-01T00:00:00.000000 .. 2020-12-31T23:59:59.999999.
    An open Period end is the smallest / largest representable value.
    """

    param: str
    low: int
    high: int


@dataclass(frozen=True, slots=True)
class NumberRow:
    """A decimal and the range its precision implies (`100` is 99.5 .. 100.5, PS FHIR 3.1.1.4.3)."""

    param: str
    value: float
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class QuantityRow:
    param: str
    value: float
    low: float
    high: float
    system: str | None
    code: str | None
    unit: str | None


@dataclass(frozen=True, slots=True)
class UriRow:
    param: str
    uri: str


@dataclass(frozen=True, slots=True)
class ReferenceRow:
    """A Reference (or canonical) a resource makes.

    Relative or same-server absolute references give target_type and target_id; other
    absolute URLs and canonicals keep `url`. `Reference.identifier` fills the identifier_*
    columns (for `:identifier`).
    """

    param: str
    target_type: str | None
    target_id: str | None
    url: str | None = None
    identifier_system: str | None = None
    identifier_value: str | None = None


# Index rows as plain tuples in column order, by IndexRows attribute (= index table) name:
# what the storage writes, and cheap to send between processes.
RowTuples = dict[str, list[tuple[Any, ...]]]


@dataclass(slots=True)
class IndexRows:
    strings: list[StringRow] = field(default_factory=list)
    tokens: list[TokenRow] = field(default_factory=list)
    dates: list[DateRow] = field(default_factory=list)
    numbers: list[NumberRow] = field(default_factory=list)
    quantities: list[QuantityRow] = field(default_factory=list)
    uris: list[UriRow] = field(default_factory=list)
    references: list[ReferenceRow] = field(default_factory=list)

    def as_tuples(self) -> RowTuples:
        """Each non-empty kind of row as tuples of its fields, in declaration order."""
        out: RowTuples = {}
        for name, values in _TUPLE_OF.items():
            rows = getattr(self, name)
            if rows:
                out[name] = [values(r) for r in rows]
        return out


def _getter(cls: type) -> Any:
    names = [f.name for f in fields(cls)]
    return attrgetter(*names)


# The fields of every row class, in the order of the index tables' columns after
# (resource_pk, res_type).
_TUPLE_OF = {
    "strings": _getter(StringRow),
    "tokens": _getter(TokenRow),
    "dates": _getter(DateRow),
    "numbers": _getter(NumberRow),
    "quantities": _getter(QuantityRow),
    "uris": _getter(UriRow),
    "references": _getter(ReferenceRow),
}
