"""Write-time index extraction: a resource's JSON to the index rows of its search parameters.

Each parameter's FHIRPath expression is compiled once per resource type into JSON paths typed
from the R4 definitions (the subset below), and each path gets the emitter its parameter type and
value type call for (FHIR R4 search, https://hl7.org/fhir/R4/search.html, 3.1.1.4).

FHIRPath subset: dotted paths (arrays flatten), union `|`, `X as T`, `X.as(T)`, `X.ofType(T)`,
`.where(resolve() is T)`, `.where(field = 'literal')` and `X.exists() and X != false`.
Anything else raises UnsupportedExpression at compile time, so nothing goes silently unindexed.
Deliberate omissions: the types of an un-narrowed choice a parameter type cannot index
(Procedure.performedString under `date`), and SampledData under `quantity` (R4 gives no rule).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from decimal import Decimal
from functools import cache, lru_cache
from typing import Any, NoReturn
from urllib.parse import unquote

from dicomhub.fhir.search._r4_definitions import ELEMENT_TYPES, RESOURCE_TYPES
from dicomhub.fhir.search.normalize import (
    DATE_MAX,
    DATE_MIN,
    NUMBER_MAX,
    NUMBER_MIN,
    date_range,
    fold,
    number_range,
)
from dicomhub.fhir.search.parameters import ParamType, SearchParam, search_params
from dicomhub.fhir.search.rows import (
    OF_TYPE,
    DateRow,
    IndexRows,
    NumberRow,
    QuantityRow,
    ReferenceRow,
    StringRow,
    TokenRow,
    UriRow,
    of_type_key,
)

__all__ = [
    "Branch",
    "ExistsNotFalse",
    "UnsupportedExpression",
    "compile_expression",
    "compile_param",
    "extract",
    "extract_param",
]


class UnsupportedExpression(ValueError):
    """An expression outside the supported FHIRPath subset, or a value type a parameter type
    cannot index: raised at compile time so that nothing is silently left unindexed."""


# ---------------------------------------------------------------------------------------------
# Compiling the FHIRPath subset into typed JSON paths


@dataclass(frozen=True, slots=True)
class Branch:
    """One JSON path a union operand reaches, with the FHIR type of the values found there."""

    keys: tuple[str, ...]  # JSON keys from the resource root; arrays flatten on the way
    type: str  # FHIR type code of the values ("CodeableConcept", "dateTime", ...)
    implicit: bool = False  # reached by expanding a choice no `as` narrowed (valueString...)
    resolve_is: str | None = None  # `.where(resolve() is T)`: references to T only
    where: tuple[str, str] | None = None  # `.where(field = 'literal')`


@dataclass(frozen=True, slots=True)
class ExistsNotFalse:
    """`X.exists() and X != false` over the choice element X (Patient.deceased): one boolean."""

    name: str  # the choice element's base name, e.g. "deceased"


@dataclass(frozen=True, slots=True)
class _Cursor:
    keys: tuple[str, ...]
    path: str  # where the children's definitions are ("Observation.component", "HumanName")
    type: str  # FHIR type code; "" while a choice is open
    choices: tuple[str, ...] = ()  # an open choice's types; its base name is keys[-1]
    implicit: bool = False
    resolve_is: str | None = None
    where: tuple[str, str] | None = None


Step = tuple[str, str, str]  # (op, argument, literal): name / as / resolve / eq
_TOKEN = re.compile(r"\s*(?:([A-Za-z_]\w*)|('[^'\\]*')|(!=|[.()|=]))", re.ASCII)
_EXISTS_NOT_FALSE = re.compile(r"(\w+)\.(\w+)\.exists\(\) and \1\.\2 != false", re.ASCII)
_INLINE = {"BackboneElement", "Element"}  # their children are defined under the element's path


class _Parser:
    """Recursive descent over the tokens of one expression."""

    def __init__(self, expression: str) -> None:
        self.expression = expression
        self.tokens: list[str] = []
        pos, end = 0, len(expression.rstrip())
        while pos < end:
            match = _TOKEN.match(expression, pos)
            if match is None:
                self.fail(f"unexpected text {expression[pos:]!r}")
            self.tokens.append(match.group(match.lastindex or 0))
            pos = match.end()
        self.pos = 0

    def fail(self, why: str) -> NoReturn:
        raise UnsupportedExpression(f"{why} in FHIRPath expression {self.expression!r}")

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            self.fail(f"expected {expected or 'more'}, found {token!r}")
        self.pos += 1
        return token

    def name(self) -> str:
        token = self.take()
        if not (token[0].isalpha() or token[0] == "_"):
            self.fail(f"expected a name, found {token!r}")
        return token

    def union(self) -> list[tuple[str, list[Step]]]:
        paths = [self.expr()]
        while self.peek() == "|":
            self.take("|")
            paths.append(self.expr())
        if self.peek() is not None:
            self.fail(f"unsupported {self.peek()!r}")
        return paths

    def expr(self) -> tuple[str, list[Step]]:
        root, steps = self.postfix()
        if self.peek() == "as":  # `X as T` binds looser than `.` (FHIRPath 6.3)
            self.take("as")
            steps.append(("as", self.name(), ""))
        return root, steps

    def postfix(self) -> tuple[str, list[Step]]:
        if self.peek() == "(":
            self.take("(")
            root, steps = self.expr()
            self.take(")")
        else:
            root, steps = self.name(), []
        while self.peek() == ".":
            self.take(".")
            steps.append(self.invocation())
        return root, steps

    def invocation(self) -> Step:
        name = self.name()
        if self.peek() != "(":
            return ("name", name, "")
        self.take("(")
        if name in ("as", "ofType"):
            step: Step = ("as", self.name(), "")
        elif name == "where" and self.peek() == "resolve":
            self.take("resolve")
            self.take("(")
            self.take(")")
            self.take("is")
            step = ("resolve", self.name(), "")
        elif name == "where":
            field = self.name()
            self.take("=")
            literal = self.take()
            if not literal.startswith("'"):
                self.fail("where() supports only field = 'string'")
            step = ("eq", field, literal[1:-1])
        else:
            self.fail(f"unsupported function {name}()")
        self.take(")")
        return step


def _child(cursor: _Cursor, name: str, expression: str) -> _Cursor:
    """The element `name` under `cursor`; an open choice when it is `name[x]`."""
    path = f"{cursor.path}.{name}"
    types = ELEMENT_TYPES.get(path)
    if types is None:
        choices = ELEMENT_TYPES.get(path + "[x]")
        if choices is None:
            raise UnsupportedExpression(f"no element {path} (in {expression!r})")
        return _Cursor((*cursor.keys, name), path, "", choices)
    kind = types[0]  # only [x] elements have several types in R4
    if kind.startswith("#"):  # contentReference: same content as the element named
        return _Cursor((*cursor.keys, name), kind[1:], "BackboneElement")
    return _Cursor((*cursor.keys, name), path if kind in _INLINE else kind, kind)


def _choose(cursor: _Cursor, kind: str, *, implicit: bool) -> _Cursor:
    """An open choice narrowed to `kind`: `onset` as dateTime is the JSON key `onsetDateTime`."""
    key = cursor.keys[-1] + kind[0].upper() + kind[1:]
    path = cursor.path if kind in _INLINE else kind
    return _Cursor((*cursor.keys[:-1], key), path, kind, implicit=implicit)


def _expand(cursors: list[_Cursor]) -> list[_Cursor]:
    """Open choices replaced by one cursor per type they allow."""
    out: list[_Cursor] = []
    for c in cursors:
        if c.choices:
            out.extend(_choose(c, kind, implicit=True) for kind in c.choices)
        else:
            out.append(c)
    return out


def _apply(cursors: list[_Cursor], step: Step, expression: str) -> list[_Cursor]:
    op, arg, literal = step
    if any(c.resolve_is or c.where for c in cursors):
        raise UnsupportedExpression(f"where() must be the last step in {expression!r}")
    if op == "name":
        return [_child(c, arg, expression) for c in _expand(cursors)]
    if op == "as":
        kept = [
            _choose(c, arg, implicit=False) if c.choices else c
            for c in cursors
            if (arg in c.choices if c.choices else c.type == arg)
        ]
        if not kept:
            raise UnsupportedExpression(f"nothing of type {arg} in {expression!r}")
        return kept
    cursors = _expand(cursors)
    if op == "resolve":
        if any(c.type != "Reference" for c in cursors):
            raise UnsupportedExpression(f"resolve() on a non-Reference in {expression!r}")
        return [replace(c, resolve_is=arg) for c in cursors]
    for c in cursors:  # op == "eq"
        if f"{c.path}.{arg}" not in ELEMENT_TYPES:
            raise UnsupportedExpression(f"{c.type} has no element {arg} in {expression!r}")
    return [replace(c, where=(arg, literal)) for c in cursors]


def compile_expression(resource_type: str, expression: str) -> list[Branch | ExistsNotFalse]:
    """The typed JSON branches of an expression on `resource_type` ("Resource": the common ones).

    Raises UnsupportedExpression outside the subset or for a path R4 does not define.
    """
    operands = [o.strip() for o in expression.split(" | ")]
    special = [_EXISTS_NOT_FALSE.fullmatch(o) for o in operands]
    if any(special):
        result: list[Branch | ExistsNotFalse] = []
        for match in special:
            if match is None or len(operands) != 1:
                raise UnsupportedExpression(f"exists() cannot be in a union: {expression!r}")
            root, name = match.groups()
            if root != resource_type or f"{root}.{name}[x]" not in ELEMENT_TYPES:
                raise UnsupportedExpression(f"exists() on a non-choice in {expression!r}")
            result.append(ExistsNotFalse(name))
        return result
    if not expression.strip():
        raise UnsupportedExpression(f"empty expression on {resource_type}")
    branches: list[Branch | ExistsNotFalse] = []
    for root, steps in _Parser(expression).union():
        if root != resource_type:
            raise UnsupportedExpression(f"{expression!r} does not start at {resource_type}")
        cursors = [_Cursor((), root, root)]
        for step in steps:
            cursors = _apply(cursors, step, expression)
        branches += [
            Branch(c.keys, c.type, c.implicit, c.resolve_is, c.where) for c in _expand(cursors)
        ]
    return branches


# ---------------------------------------------------------------------------------------------
# Emitters: one value of a known FHIR type to the rows of one parameter type (search 3.1.1.4.x)

Emit = Callable[[str, Any, IndexRows], None]

_TEXT_TYPES = {"string", "markdown", "code", "id", "uri", "url", "canonical", "oid", "uuid"}
_QUANTITY_TYPES = {
    "Quantity",
    "Age",
    "Duration",
    "Distance",
    "Count",
    "SimpleQuantity",
    "MoneyQuantity",
}
_NUMBER_TYPES = {"integer", "decimal", "positiveInt", "unsignedInt"}
_HUMAN_NAME_PARTS = ("family", "given", "prefix", "suffix", "text")
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")


def _fail(code: str, what: str, value: Any) -> NoReturn:
    raise ValueError(f"search parameter {code}: expected {what}, found {value!r}")


def _text(code: str, value: Any) -> str:
    if type(value) is not str:
        _fail(code, "a string", value)
    return value


def _folded(value: Any) -> str | None:
    return fold(value) if type(value) is str else None


def _string(code: str, value: Any, out: IndexRows) -> None:
    out.strings.append(StringRow(code, fold(_text(code, value)), value))


def _parts(names: tuple[str, ...]) -> Emit:
    """HumanName / Address: each listed part is a string value (search 3.1.1.4.5)."""

    def emit(code: str, value: Any, out: IndexRows) -> None:
        for name in names:
            part = value.get(name)
            for text in part if type(part) is list else (part,):
                if text is not None:
                    out.strings.append(StringRow(code, fold(_text(code, text)), text))

    return emit


def _token_text(code: str, value: Any, out: IndexRows) -> None:
    out.tokens.append(TokenRow(code, None, _text(code, value)))


def _token_boolean(code: str, value: Any, out: IndexRows) -> None:
    if type(value) is not bool:
        _fail(code, "a boolean", value)
    out.tokens.append(TokenRow(code, None, "true" if value else "false"))


def _token_coding(code: str, value: Any, out: IndexRows) -> None:
    row = TokenRow(code, value.get("system"), value.get("code"), _folded(value.get("display")))
    if row.system is not None or row.code is not None or row.text is not None:
        out.tokens.append(row)


def _token_concept(code: str, value: Any, out: IndexRows) -> None:
    """Each coding, its :text the concept's text (else the display); a display the text does
    not cover gets a text-only row so `:text` still finds it (search 3.1.1.5.x, :text)."""
    text = _folded(value.get("text"))
    codings = value.get("coding") or ()
    for coding in codings:
        display = _folded(coding.get("display"))
        out.tokens.append(TokenRow(code, coding.get("system"), coding.get("code"), text or display))
        if text and display and display != text:
            out.tokens.append(TokenRow(code, None, None, display))
    if text and not codings:
        out.tokens.append(TokenRow(code, None, None, text))


def _token_identifier(code: str, value: Any, out: IndexRows) -> None:
    kind = value.get("type")
    row = TokenRow(
        code, value.get("system"), value.get("value"), kind and _folded(kind.get("text"))
    )
    if row.system is not None or row.code is not None or row.text is not None:
        out.tokens.append(row)
    if kind and row.code is not None:  # `:of-type` rows (see rows.OF_TYPE)
        for coding in kind.get("coding") or ():
            if coding.get("code") is not None:
                key = of_type_key(coding.get("system"), coding["code"])
                out.tokens.append(TokenRow(code + OF_TYPE, key, row.code))


def _token_contact(code: str, value: Any, out: IndexRows) -> None:
    if value.get("value") is not None:  # the value only; ContactPoint.system is email/phone
        out.tokens.append(TokenRow(code, None, value["value"]))


def _date(code: str, value: Any, out: IndexRows) -> None:
    low, high = date_range(_text(code, value))
    out.dates.append(DateRow(code, low, high))


def _period(code: str, value: Any, out: IndexRows) -> None:
    """A Period covers start's first instant .. end's last; a missing end is open (3.1.1.4.4)."""
    start, end = value.get("start"), value.get("end")
    if start is None and end is None:
        return
    low = DATE_MIN if start is None else date_range(_text(code, start))[0]
    high = DATE_MAX if end is None else date_range(_text(code, end))[1]
    if low > high:
        _fail(code, "a Period whose start is not after its end (per-1)", value)
    out.dates.append(DateRow(code, low, high))


def _timing(code: str, value: Any, out: IndexRows) -> None:
    """Each event, and the repeat's boundsPeriod (the outer limits, search 3.1.1.4.4)."""
    for event in value.get("event") or ():
        if event is not None:
            _date(code, event, out)
    bounds = (value.get("repeat") or {}).get("boundsPeriod")
    if bounds:
        _period(code, bounds, out)


def _decimal(code: str, value: Any) -> tuple[float, float, float]:
    """number_range of a JSON number: its written precision survives only as int or Decimal."""
    kind = type(value)
    if kind is int or kind is Decimal or kind is str:
        return number_range(str(value))
    if kind is float:
        return number_range(repr(value))
    _fail(code, "a number", value)


def _number(code: str, value: Any, out: IndexRows) -> None:
    out.numbers.append(NumberRow(code, *_decimal(code, value)))


def _quantity(code: str, value: Any, out: IndexRows) -> None:
    """A Quantity's value range; a comparator opens the range on its side."""
    if value.get("value") is None:
        return
    number, low, high = _decimal(code, value["value"])
    comparator = value.get("comparator")
    if comparator in ("<", "<="):
        low = NUMBER_MIN
    elif comparator in (">", ">="):
        high = NUMBER_MAX
    unit = value.get("unit")
    out.quantities.append(
        QuantityRow(code, number, low, high, value.get("system"), value.get("code"), unit)
    )


def _range(code: str, value: Any, out: IndexRows) -> None:
    """low.value .. high.value, inclusive as written; the value column is low (else high)."""
    low_q, high_q = value.get("low") or {}, value.get("high") or {}
    low_v, high_v = low_q.get("value"), high_q.get("value")
    if low_v is None and high_v is None:
        return
    low = NUMBER_MIN if low_v is None else _decimal(code, low_v)[0]
    high = NUMBER_MAX if high_v is None else _decimal(code, high_v)[0]
    unit_from = low_q if low_v is not None else high_q
    out.quantities.append(
        QuantityRow(
            code,
            low if low_v is not None else high,
            low,
            high,
            unit_from.get("system"),
            unit_from.get("code"),
            unit_from.get("unit"),
        )
    )


def _ignore(code: str, value: Any, out: IndexRows) -> None:
    """SampledData under a quantity parameter: R4 defines no way to index it."""


def _uri(code: str, value: Any, out: IndexRows) -> None:
    out.uris.append(UriRow(code, _text(code, value)))


# A reference's own type, from its URL (references 2.3.0.x; search 3.1.1.4.12).
_HISTORY = re.compile(r"/_history/[^/]*$")


@lru_cache(maxsize=8192)  # the same patient / encounter is referred to over and over
def _parse_reference(code: str, reference: str) -> ReferenceRow | None:
    """The row for a Reference.reference string; None for a contained (`#id`) one."""
    if reference.startswith("#"):
        return None
    if reference.startswith("urn:"):  # urn:uuid / urn:oid: resolved by the bundle, not here
        return ReferenceRow(code, None, None, reference)
    head, query, _ = reference.partition("?")
    if query and head.isalpha():  # `Type?criteria`: a conditional reference
        return _conditional(code, reference)
    absolute = "://" in reference
    plain = _HISTORY.sub("", reference)  # a version-specific reference matches its resource
    segments = plain.rsplit("/", 2)
    if absolute:
        if len(segments) == 3 and segments[1] in RESOURCE_TYPES and segments[2]:
            return ReferenceRow(code, segments[1], segments[2], plain)
        return ReferenceRow(code, None, None, plain)
    if len(segments) == 2 and segments[0] in RESOURCE_TYPES and segments[1]:
        return ReferenceRow(code, segments[0], segments[1])
    return ReferenceRow(code, None, None, reference)


def _conditional(code: str, reference: str) -> ReferenceRow:
    """`Type?identifier=system|value` (what bulk exports write): the identifier, type, no id.

    Bulk import resolves these to ids later; any other criteria keep the reference as `url`.
    """
    target, _, query = reference.partition("?")
    kind = target if target in RESOURCE_TYPES else None
    criteria = [p.partition("=") for p in query.split("&")]
    identifiers = [unquote(v) for k, _, v in criteria if k == "identifier"]
    system: str | None = None
    value: str | None = None
    if identifiers:
        system, bar, value = identifiers[0].partition("|")
        if not bar:  # a bare value: any system
            system, value = None, system
    url = None if len(criteria) == 1 and identifiers and kind else reference
    return ReferenceRow(code, kind, None, url, system or None, value or None)


def _reference_emitter(targets: tuple[str, ...], resolve_is: str | None) -> Emit:
    """Reference values; with `.where(resolve() is T)` those known to be T, or untyped ones
    when the parameter has the single target T (an identifier-only reference, say)."""
    single = targets[0] if len(targets) == 1 else None

    def emit(code: str, value: Any, out: IndexRows) -> None:
        reference = value.get("reference")
        identifier = value.get("identifier")
        row = None if reference is None else _parse_reference(code, _text(code, reference))
        if row is None and not identifier:
            return  # display only, or contained
        declared = value.get("type")
        declared = declared.rsplit("/", 1)[-1] if type(declared) is str else None
        kind = (row.target_type if row else None) or declared
        if resolve_is is not None and (kind != resolve_is if kind else single != resolve_is):
            return
        if kind is None and reference is None:
            kind = single  # an identifier-only reference points at the parameter's target
        if row is None:
            row = ReferenceRow(code, None, None)
        if kind != row.target_type:
            row = replace(row, target_type=kind)
        if identifier:
            row = replace(
                row,
                identifier_system=identifier.get("system"),
                identifier_value=identifier.get("value"),
            )
        out.references.append(row)

    return emit


def _canonical_reference(code: str, value: Any, out: IndexRows) -> None:
    out.references.append(ReferenceRow(code, None, None, _text(code, value)))


def _with_where(emit: Emit, field: str, literal: str) -> Emit:
    def filtered(code: str, value: Any, out: IndexRows) -> None:
        if value.get(field) == literal:
            emit(code, value, out)

    return filtered


_EMITTERS: dict[ParamType, dict[str, Emit]] = {
    ParamType.STRING: {
        "string": _string,
        "markdown": _string,
        "HumanName": _parts(_HUMAN_NAME_PARTS),
        "Address": _parts(_ADDRESS_PARTS),
    },
    ParamType.TOKEN: {
        **dict.fromkeys(_TEXT_TYPES, _token_text),
        "boolean": _token_boolean,
        "Coding": _token_coding,
        "CodeableConcept": _token_concept,
        "Identifier": _token_identifier,
        "ContactPoint": _token_contact,
    },
    ParamType.DATE: {
        "date": _date,
        "dateTime": _date,
        "instant": _date,
        "Period": _period,
        "Timing": _timing,
    },
    ParamType.NUMBER: dict.fromkeys(_NUMBER_TYPES, _number),
    ParamType.QUANTITY: {
        **dict.fromkeys(_QUANTITY_TYPES, _quantity),
        "Range": _range,
        "SampledData": _ignore,
    },
    ParamType.URI: dict.fromkeys(("uri", "url", "canonical", "oid", "uuid"), _uri),
    ParamType.REFERENCE: {"canonical": _canonical_reference},  # Reference: per parameter
}


def _emitter(param: SearchParam, branch: Branch) -> Emit | None:
    """How values on `branch` become rows of `param`'s type; None to leave them out."""
    if param.type is ParamType.REFERENCE and branch.type == "Reference":
        emit: Emit | None = _reference_emitter(param.targets, branch.resolve_is)
    else:
        emit = _EMITTERS.get(param.type, {}).get(branch.type)
    if emit is None:
        if branch.implicit:
            return None  # e.g. Immunization.occurrenceString under a date parameter
        raise UnsupportedExpression(
            f"{param.resource_type}.{param.code}: a {param.type} parameter cannot index "
            f"{branch.type} ({'.'.join(branch.keys)})"
        )
    if branch.where:
        emit = _with_where(emit, *branch.where)
    return emit


def _exists_not_false(name: str) -> Emit:
    """`X.exists() and X != false`: true for X = true or any non-boolean X, else false."""

    def emit(code: str, resource: Any, out: IndexRows) -> None:
        present = [k for k in resource if k.startswith(name) and k[len(name) :][:1].isupper()]
        value = bool(present) and all(resource[k] is not False for k in present)
        out.tokens.append(TokenRow(code, None, "true" if value else "false"))

    return emit


# ---------------------------------------------------------------------------------------------
# Evaluation

# (first JSON key or None for the resource itself, further keys, parameter code, emitter,
# whether the values are objects: complex FHIR types are capitalized, primitives are not)
Compiled = tuple[str | None, tuple[str, ...], str, Emit, bool]
Entry = tuple[tuple[str, ...], str, Emit, bool]  # a Compiled under its first key


def compile_param(param: SearchParam) -> list[Compiled]:
    """Everything needed to extract one parameter; raises UnsupportedExpression."""
    compiled: list[Compiled] = []
    for branch in compile_expression(param.resource_type, param.expression):
        if isinstance(branch, ExistsNotFalse):
            if param.type is not ParamType.TOKEN:
                raise UnsupportedExpression(f"{param.code}: exists() gives a token only")
            compiled.append((None, (), param.code, _exists_not_false(branch.name), True))
            continue
        emit = _emitter(param, branch)
        if emit is None:
            continue
        is_object = branch.type[0].isupper()
        compiled.append((branch.keys[0], branch.keys[1:], param.code, emit, is_object))
    if not compiled:
        raise UnsupportedExpression(f"{param.resource_type}.{param.code}: nothing to index")
    return compiled


@dataclass(frozen=True, slots=True)
class _Plan:
    """A type's compiled parameters, keyed by the top-level JSON key each starts at."""

    by_key: dict[str, tuple[Entry, ...]]
    whole: tuple[tuple[str, Emit], ...]  # emitters that read the resource itself


@cache
def _plan(resource_type: str) -> _Plan:
    if resource_type not in RESOURCE_TYPES:
        raise ValueError(f"unknown resource type {resource_type!r}")
    by_key: dict[str, list[Entry]] = {}
    whole: list[tuple[str, Emit]] = []
    for param in search_params(resource_type).values():
        for first, rest, code, emit, is_object in compile_param(param):
            if first is None:
                whole.append((code, emit))
            else:
                by_key.setdefault(first, []).append((rest, code, emit, is_object))
    return _Plan({k: tuple(v) for k, v in by_key.items()}, tuple(whole))


def _walk(nodes: Iterable[Any], keys: tuple[str, ...], code: str) -> Iterable[Any]:
    """The values `keys` reach from `nodes`, arrays flattened (FHIRPath path navigation)."""
    for key in keys:
        found: list[Any] = []
        for node in nodes:
            if type(node) is not dict:
                _fail(code, f"an object holding {key!r}", node)
            child = node.get(key)
            if type(child) is list:
                found.extend(child)
            elif child is not None:
                found.append(child)
        if not found:
            return found
        nodes = found
    return nodes


def extract(resource: dict[str, Any]) -> IndexRows:
    """The index rows of every search parameter of the resource's type (and the common ones).

    Raises ValueError for an unknown type or a value its element type does not allow.
    """
    resource_type = resource.get("resourceType")
    if type(resource_type) is not str:
        raise ValueError("not a resource: no resourceType")
    plan = _plan(resource_type)
    out = IndexRows()
    for code, emit in plan.whole:
        emit(code, resource, out)
    # A resource has fewer keys than its type has parameters: look each key up once.
    entries_for = plan.by_key.get
    for key, value in resource.items():
        entries = entries_for(key)
        if entries is not None and value is not None:
            _emit_all(value, entries, out)
    _dedupe(out)
    return out


def extract_param(param: SearchParam, resource: dict[str, Any]) -> IndexRows:
    """The rows of one parameter, which need not be in the registry (a custom one, say)."""
    out = IndexRows()
    for first, rest, code, emit, is_object in compile_param(param):
        if first is None:
            emit(code, resource, out)
        elif resource.get(first) is not None:
            _emit_all(resource[first], ((rest, code, emit, is_object),), out)
    _dedupe(out)
    return out


def _emit_all(value: Any, entries: tuple[Entry, ...], out: IndexRows) -> None:
    top: Iterable[Any] = value if type(value) is list else (value,)
    for rest, code, emit, is_object in entries:
        for item in _walk(top, rest, code) if rest else top:
            if item is None:  # a null in a primitive array (its extension holds the data)
                continue
            if is_object and type(item) is not dict:
                _fail(code, "an object", item)
            emit(code, item, out)


def _dedupe(out: IndexRows) -> None:
    """Drop repeated string rows (the same given name in the official and the maiden name):
    on the Synthea sample the other row kinds never repeat, so they are not worth hashing."""
    if len(out.strings) > 1:
        out.strings = list(dict.fromkeys(out.strings))
