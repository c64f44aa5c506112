"""Query items of a type-level search to a SearchQuery (FHIR R4 search, 3.1.1).

Pure: no I/O. Parameters are ANDed by repetition and ORed by commas (3.1.1.3); chains
(`patient.birthdate`, `subject:Patient.name`, several levels, 3.1.1.4.13) and reverse chains
(`_has:Observation:patient:code`, nested, 3.1.1.4.14) become Chain / Has nodes; the result
parameters (3.1.1.5) become fields. Parameters the server does not know are collected in
`unknown` (the caller ignores them, or refuses them under `Prefer: handling=strict`);
values it cannot understand raise InvalidSearch naming the parameter.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from dicomhub.fhir.search.expressions import (
    AnyOf,
    Chain,
    Filter,
    Has,
    Include,
    SearchQuery,
    SortKey,
)
from dicomhub.fhir.search.parameters import (
    ALL_RESOURCE_TYPES,
    ParamType,
    SearchParam,
    search_param,
    search_params,
)
from dicomhub.fhir.search.values import InvalidSearch, parse_value

__all__ = ["DEFAULT_COUNT", "MAX_COUNT", "InvalidSearch", "parse_search"]

# Page size when the client gives no _count, and the most one page holds (as Azure's FHIR
# service: a larger _count is lowered to it).
DEFAULT_COUNT = 20
MAX_COUNT = 1000
MAX_OFFSET = 2**31 - 1
# Parameters that shape the HTTP answer, handled before search: neither filters nor unknown.
_TRANSPORT = frozenset({"_format", "_pretty"})
_TOTALS = ("none", "estimate", "accurate")
_SUMMARIES = ("true", "text", "data", "count", "false")


class _Unknown(Exception):
    """A parameter (or a chain's last link) this server does not know on the type."""


def _known(res_type: str, code: str) -> SearchParam:
    param = search_param(res_type, code)
    if param is None or param.type in (ParamType.COMPOSITE, ParamType.SPECIAL):
        raise _Unknown
    return param


def _filter(
    res_type: str, key: str, raw: str, name: str, base: str | None, now: int
) -> Filter | None:
    """The filter of `key=raw` on `res_type`; `name` is the whole parameter, for messages."""
    if key.startswith("_has:") or key == "_has":
        return _has(res_type, key, raw, name, base, now)
    head, dot, rest = key.partition(".")
    code, colon, modifier = head.partition(":")
    if colon and not modifier:
        raise InvalidSearch(f"{name}: empty modifier")
    param = _known(res_type, code)
    if not dot:
        return parse_value(param, name, modifier or None, raw, base=base, now=now)
    if param.type is not ParamType.REFERENCE:
        raise InvalidSearch(f"{name}: cannot chain through {code}, a {param.type} parameter")
    if not rest:
        raise InvalidSearch(f"{name}: nothing after the '.' of the chain")
    if modifier:
        if modifier not in ALL_RESOURCE_TYPES:
            raise InvalidSearch(f"{name}: ':{modifier}' is not a resource type to chain through")
        if param.targets and modifier not in param.targets:
            raise InvalidSearch(
                f"{name}: {code} refers to {', '.join(param.targets)}, not {modifier}"
            )
        targets: Sequence[str] = (modifier,)
    else:
        targets = param.targets
    if not targets:
        raise InvalidSearch(f"{name}: say which type {code} refers to ({code}:Type.{rest})")
    chains: list[Filter] = []
    for target in targets:
        try:
            inner = _filter(target, rest, raw, name, base, now)
        except _Unknown:
            continue  # a target type without the parameter cannot match: leave it out
        if inner is None:
            return None
        chains.append(Chain(param, target, inner))
    if not chains:
        raise _Unknown
    return chains[0] if len(chains) == 1 else AnyOf(tuple(chains))


def _has(res_type: str, key: str, raw: str, name: str, base: str | None, now: int) -> Filter | None:
    parts = key.split(":", 3)
    if len(parts) < 4 or not all(parts):
        raise InvalidSearch(f"{name}: write _has:Type:reference-parameter:parameter=value")
    _, source_type, code, rest = parts
    if source_type not in ALL_RESOURCE_TYPES:
        raise InvalidSearch(f"{name}: '{source_type}' is not a resource type")
    param = search_param(source_type, code)
    if param is None:
        raise _Unknown
    if param.type is not ParamType.REFERENCE:
        raise InvalidSearch(f"{name}: {source_type}.{code} is not a reference parameter")
    if param.targets and res_type not in param.targets:
        raise InvalidSearch(f"{name}: {source_type}.{code} does not refer to {res_type}")
    inner = _filter(source_type, rest, raw, name, base, now)
    return None if inner is None else Has(source_type, param, inner)


def _int(name: str, raw: str, high: int) -> int:
    if not raw.isdigit():
        raise InvalidSearch(f"{name}: '{raw}' is not a whole number >= 0")
    return min(int(raw), high)


def _sort(res_type: str, raw: str, unknown: list[str]) -> tuple[SortKey, ...]:
    keys: list[SortKey] = []
    for item in raw.split(","):
        descending = item.startswith("-")
        code = item[1:] if descending else item
        if not code:
            raise InvalidSearch(f"_sort: empty key in '{raw}'")
        if "." in code or ":" in code:
            raise InvalidSearch(f"_sort: '{code}': sorting by chained or modified parameters")
        try:
            keys.append(SortKey(_known(res_type, code), descending))
        except _Unknown:
            unknown.append(f"_sort={code}")
    return tuple(keys)


def _include(res_type: str, name: str, raw: str, reverse: bool) -> Include:
    """`Type:param[:Target]`, `Type:*` or `*` (R4 3.1.1.5.4); `:iterate` (or R3 `:recurse`)."""
    _, _, modifier = name.partition(":")
    if modifier not in ("", "iterate", "recurse"):
        raise InvalidSearch(f"{name}: ':{modifier}' is not :iterate")
    iterate = bool(modifier)
    if raw == "*":
        return Include(None, None, None, iterate)
    parts = raw.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise InvalidSearch(f"{name}: '{raw}' is not Type:parameter or Type:parameter:TargetType")
    source_type, code = parts[0], parts[1]
    if source_type not in ALL_RESOURCE_TYPES:
        raise InvalidSearch(f"{name}: '{source_type}' is not a resource type")
    target = parts[2] if len(parts) == 3 else None
    if target is not None and target not in ALL_RESOURCE_TYPES:
        raise InvalidSearch(f"{name}: '{target}' is not a resource type")
    if code == "*":
        return Include(source_type, None, target, iterate)
    param = search_param(source_type, code)
    if param is None or param.type is not ParamType.REFERENCE:
        raise InvalidSearch(f"{name}: {source_type} has no reference parameter '{code}'")
    if target is not None and param.targets and target not in param.targets:
        raise InvalidSearch(f"{name}: {source_type}.{code} does not refer to {target}")
    if reverse and not iterate and param.targets and res_type not in param.targets:
        raise InvalidSearch(f"{name}: {source_type}.{code} does not refer to {res_type}")
    return Include(source_type, param, target, iterate)


def _elements(raw: str, res_type: str) -> tuple[str, ...]:
    names = []
    for given in raw.split(","):
        item = given.strip()
        if item.startswith(res_type + "."):  # `Patient.name` names the element `name`
            item = item[len(res_type) + 1 :]
        if not item or not item.replace("_", "a").isalnum():
            raise InvalidSearch(f"_elements: '{item}' is not a top-level element name")
        names.append(item)
    return tuple(names)


def parse_search(
    res_type: str,
    items: Sequence[tuple[str, str]],
    *,
    base: str | None = None,
    now: int | None = None,
) -> SearchQuery:
    """The search `items` (decoded name/value pairs, in order) ask for on `res_type`.

    base: this server's FHIR base, so that its absolute URLs in reference values are local.
    now: UTC epoch microseconds, for date `ap` (defaults to the clock).
    """
    if res_type not in ALL_RESOURCE_TYPES:
        raise InvalidSearch(f"'{res_type}' is not a FHIR R4 resource type")
    if now is None:
        now = time.time_ns() // 1000
    search_params(res_type)  # the registry is loaded before any item is looked at
    filters: list[Filter] = []
    unknown: list[str] = []
    accepted: list[tuple[str, str]] = []
    sort: tuple[SortKey, ...] = ()
    count, offset = DEFAULT_COUNT, 0
    includes: list[Include] = []
    revincludes: list[Include] = []
    total: str | None = None
    summary: str | None = None
    elements: tuple[str, ...] | None = None
    for name, raw in items:
        code = name.partition(":")[0]
        if name in _TRANSPORT:
            continue
        if name == "_sort":
            sort = _sort(res_type, raw, unknown)
            if sort:  # the self link shows the keys understood
                keys = ",".join(("-" if k.descending else "") + k.param.code for k in sort)
                accepted.append((name, keys))
            continue
        accepted.append((name, raw))
        if name == "_count":
            count = _int(name, raw, MAX_COUNT)
        elif name == "_offset":
            offset = _int(name, raw, MAX_OFFSET)
        elif code in ("_include", "_revinclude"):
            found = _include(res_type, name, raw, code == "_revinclude")
            (includes if code == "_include" else revincludes).append(found)
        elif name == "_total":
            if raw not in _TOTALS:
                raise InvalidSearch(f"_total: '{raw}' is not one of {', '.join(_TOTALS)}")
            total = raw
        elif name == "_summary":
            if raw not in _SUMMARIES:
                raise InvalidSearch(f"_summary: '{raw}' is not one of {', '.join(_SUMMARIES)}")
            summary = raw
        elif name == "_elements":
            elements = _elements(raw, res_type)
        else:
            try:
                found_filter = _filter(res_type, name, raw, name, base, now)
            except _Unknown:
                accepted.pop()
                unknown.append(name)
                continue
            if found_filter is not None:
                filters.append(found_filter)
    return SearchQuery(
        res_type=res_type,
        filters=tuple(filters),
        sort=sort,
        count=count,
        offset=offset,
        includes=tuple(includes),
        revincludes=tuple(revincludes),
        total=total,
        summary=summary,
        elements=elements,
        unknown=tuple(unknown),
        accepted=tuple(accepted),
    )
