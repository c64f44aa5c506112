"""QIDO-RS query parameters to a QuerySpec (PS3.18 8.3.4, matching per PS3.4 C.2.2.2)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date

from dicomhub.dicom.attributes import MATCHABLE, Level, QueryAttribute, attribute_for, resolve_tag
from dicomhub.dicom.normalize import (
    normalize_da,
    normalize_pn,
    normalize_tm,
    pn_words,
    tm_upper_bound,
)
from dicomhub.dicom.uid import uid_problem

__all__ = [
    "AnyOf",
    "Exact",
    "Filter",
    "Fuzzy",
    "Match",
    "QueryError",
    "QuerySpec",
    "Range",
    "Universal",
    "Wildcard",
    "parse_query",
]

# offset is an SQL OFFSET: keep it inside a signed 32-bit range so no engine overflows.
MAX_OFFSET = 2**31 - 1
# IS values (PS3.5 6.2) are signed 32-bit; a larger number would overflow the SQL column.
IS_MIN, IS_MAX = -(2**31), 2**31 - 1
# int() alone also takes "1_0" and non-ASCII digits, which no client means as a number.
_INTEGER = re.compile(r"[+-]?[0-9]+")
_WILDCARDS = re.compile(r"[*?]")


class QueryError(ValueError):
    """The query parameters are malformed; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Universal:
    """Zero-length value or `*`: every entity matches (PS3.4 C.2.2.2.3)."""


@dataclass(frozen=True, slots=True)
class Exact:
    value: str | int


@dataclass(frozen=True, slots=True)
class AnyOf:
    """UID list matching (C.2.2.2.2), also used for value lists of codes and numbers."""

    values: tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Wildcard:
    """`*` any run, `?` one character (C.2.2.2.4); the pattern is already normalized."""

    pattern: str


@dataclass(frozen=True, slots=True)
class Range:
    """Inclusive bounds in normalized form; None for an open end (C.2.2.2.5)."""

    low: str | None
    high: str | None


@dataclass(frozen=True, slots=True)
class Fuzzy:
    """Each word must begin a word of the name, in any component, ignoring case and accents."""

    words: tuple[str, ...]


Match = Universal | Exact | AnyOf | Wildcard | Range | Fuzzy


@dataclass(frozen=True, slots=True)
class Filter:
    attribute: QueryAttribute
    match: Match


@dataclass(frozen=True, slots=True)
class QuerySpec:
    level: Level
    study_uid: str | None = None
    series_uid: str | None = None
    filters: tuple[Filter, ...] = ()
    include: frozenset[int] = frozenset()
    include_all: bool = False
    limit: int = 100
    offset: int = 0
    fuzzy: bool = False
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def matched_tags(self) -> frozenset[int]:
        """Matching keys are returned too (PS3.18 10.6.3.3)."""
        return frozenset(f.attribute.tag for f in self.filters)


def parse_query(
    level: Level,
    items: Iterable[tuple[str, str]],
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    default_limit: int = 100,
    max_limit: int = 1000,
) -> QuerySpec:
    """Parse decoded (key, value) pairs; raises QueryError with a message fit for the client."""
    filters: dict[str, Filter] = {}
    include: set[int] = set()
    include_all = False
    fuzzy = False
    limit = default_limit
    offset = 0
    warnings: list[str] = []
    pending: list[tuple[QueryAttribute, str]] = []
    for key, value in items:
        if key == "limit":
            limit = _int_param("limit", value, 1, None)
            if limit > max_limit:
                warnings.append(
                    f"limit {limit} exceeds the maximum of {max_limit}; {max_limit} used"
                )
                limit = max_limit
        elif key == "offset":
            offset = _int_param("offset", value, 0, MAX_OFFSET)
        elif key == "fuzzymatching":
            if value.lower() not in ("true", "false"):
                raise QueryError(f"fuzzymatching must be true or false, not '{value}'")
            fuzzy = value.lower() == "true"
        elif key == "includefield":
            for raw_part in value.split(","):
                part = raw_part.strip()
                if not part:
                    continue
                if part.lower() == "all":
                    include_all = True
                    continue
                tag = resolve_tag(part)
                if tag is None:
                    raise QueryError(f"includefield: '{part}' is neither a DICOM keyword nor a tag")
                include.add(tag)
        else:
            attribute = _attribute(key)
            if attribute.level > level:
                raise QueryError(
                    f"{attribute.keyword} is a {attribute.level.name.lower()}-level attribute and "
                    f"cannot be matched in a {level.name.lower()}-level search"
                )
            if any(a is attribute for a, _ in pending):
                raise QueryError(f"{attribute.keyword} is given more than once")
            pending.append((attribute, value))
    for attribute, value in pending:
        filters[attribute.keyword] = Filter(attribute, _match(attribute, value, fuzzy))
    return QuerySpec(
        level=level,
        study_uid=study_uid,
        series_uid=series_uid,
        filters=tuple(filters.values()),
        include=frozenset(include),
        include_all=include_all,
        limit=limit,
        offset=offset,
        fuzzy=fuzzy,
        warnings=tuple(warnings),
    )


def _int_param(name: str, value: str, low: int, high: int | None) -> int:
    if not _INTEGER.fullmatch(value.strip()):
        raise QueryError(f"{name} must be an integer, not '{value}'")
    number = int(value.strip())
    if number < low or (high is not None and number > high):
        bound = f" and at most {high}" if high is not None else ""
        raise QueryError(f"{name} must be at least {low}{bound}, not {number}")
    return number


def _attribute(key: str) -> QueryAttribute:
    tag = resolve_tag(key)
    if tag is None:
        raise QueryError(f"'{key}' is not a query parameter, a DICOM keyword or a tag")
    attribute = attribute_for(tag)
    if attribute is None:
        supported = ", ".join(sorted(MATCHABLE))
        raise QueryError(f"'{key}' is not supported for matching; supported: {supported}")
    return attribute


def _values(raw: str, separators: str) -> list[str]:
    return [v.strip() for v in re.split(f"[{re.escape(separators)}]", raw)]


def _match(attribute: QueryAttribute, raw: str, fuzzy: bool) -> Match:
    value = raw.strip()
    if value == "":
        return Universal()
    vr = attribute.vr
    name = attribute.keyword
    if vr == "UI":
        uids = [u for u in _values(value, ",\\") if u]
        if not uids:  # "," would otherwise be an empty list that silently matches nothing
            raise QueryError(f"{name}: '{value}' holds no UID")
        for uid in uids:
            problem = uid_problem(uid)
            if problem:
                raise QueryError(f"{name}: '{uid}' is not a UID: it {problem}")
        return Exact(uids[0]) if len(uids) == 1 else AnyOf(tuple(uids))
    if vr in ("DA", "TM"):
        return _date_or_time(name, vr, value)
    if vr == "IS":
        numbers = []
        for part in _values(value, ",\\"):
            if not _INTEGER.fullmatch(part) or not IS_MIN <= int(part) <= IS_MAX:
                raise QueryError(
                    f"{name} must be an integer (or a list of them) from {IS_MIN} to {IS_MAX}, "
                    f"not '{value}'"
                )
            numbers.append(int(part))
        return Exact(numbers[0]) if len(numbers) == 1 else AnyOf(tuple(numbers))
    if vr == "PN":
        if fuzzy:
            words = pn_words(_WILDCARDS.sub(" ", value))
            return Fuzzy(tuple(words)) if words else Universal()
        return _text_match(name, value, normalize_pn, "\\")
    # CS cannot hold a comma, so a comma-separated list is unambiguous there.
    return _text_match(name, value, str.strip, ",\\" if vr == "CS" else "\\")


def _text_match(name: str, value: str, norm: Callable[[str], str], separators: str) -> Match:
    parts = [p for p in _values(value, separators) if p]
    if len(parts) > 1:
        if any(_WILDCARDS.search(p) for p in parts):
            raise QueryError(f"{name}: wildcards cannot be combined with a list of values")
        return AnyOf(tuple(norm(p) for p in parts))
    single = parts[0] if parts else ""
    if single.strip("*") == "":
        return Universal()
    if _WILDCARDS.search(single):
        return Wildcard(norm(single))
    return Exact(norm(single))


def _calendar_date(value: str) -> str | None:
    """normalize_da, limited to real days: `20241301` is a typing error, not a date to search for."""
    text = normalize_da(value)
    if text is None:
        return None
    try:
        date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None
    return text


def _date_or_time(name: str, vr: str, value: str) -> Match:
    low_norm = _calendar_date if vr == "DA" else normalize_tm
    high_norm = _calendar_date if vr == "DA" else tm_upper_bound
    kind = "date (YYYYMMDD)" if vr == "DA" else "time (HHMMSS.FFFFFF)"
    if "-" not in value:
        exact = low_norm(value)
        if exact is None:
            raise QueryError(f"{name}: '{value}' is not a valid {kind}")
        return Exact(exact)
    if value.count("-") != 1 or value == "-":
        raise QueryError(f"{name}: '{value}' is not a valid range (use a-b, a- or -b)")
    low_text, high_text = (p.strip() for p in value.split("-"))
    low = low_norm(low_text) if low_text else None
    high = high_norm(high_text) if high_text else None
    if (low_text and low is None) or (high_text and high is None):
        raise QueryError(f"{name}: '{value}' is not a valid {kind} range")
    if low is not None and high is not None and low > high:
        raise QueryError(f"{name}: the range '{value}' ends before it starts")
    return Range(low, high)
