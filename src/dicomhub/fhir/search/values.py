"""Search values by parameter type (R4 3.1.1.4.x), escaping (3.1.1.6) and modifiers (3.1.1.5).

Each function turns the raw value of one parameter (already URL-decoded) into a filter whose
values are normalized the way write-time extraction normalizes index rows (normalize.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from dicomhub.fhir.search.expressions import (
    DateValue,
    Filter,
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
from dicomhub.fhir.search.normalize import date_range, fold, number_range
from dicomhub.fhir.search.parameters import ALL_RESOURCE_TYPES, ParamType, SearchParam
from dicomhub.fhir.search.rows import of_type_key

__all__ = ["MODIFIERS", "InvalidSearch", "escape", "parse_value", "split_escaped", "unescape"]


class InvalidSearch(ValueError):
    """A search the server cannot run as asked: the message names the parameter (HTTP 400)."""


# The modifiers each parameter type accepts (R4 3.1.1.5); "[type]" stands for a resource type
# on a reference (`subject:Patient=23`). The CapabilityStatement documents this same table.
MODIFIERS: dict[ParamType, tuple[str, ...]] = {
    ParamType.STRING: ("missing", "exact", "contains"),
    ParamType.TOKEN: ("missing", "not", "text", "of-type"),
    ParamType.DATE: ("missing",),
    ParamType.NUMBER: ("missing",),
    ParamType.QUANTITY: ("missing",),
    ParamType.URI: ("missing", "below", "above"),
    ParamType.REFERENCE: ("missing", "identifier", "[type]"),
}

_PREFIXED = (ParamType.NUMBER, ParamType.DATE, ParamType.QUANTITY)
_PREFIX = re.compile(r"([a-z]{2})?(.*)", re.DOTALL)
_ESCAPED = re.compile(r"\\([\\,$|])")
_TO_ESCAPE = re.compile(r"([\\,$|])")
_HISTORY = re.compile(r"/_history/[^/]*$")
# `ap` (R4 3.1.1.4.2): "10% of the stated value (or for a date, 10% of the gap between now
# and the date)" is the recommendation this server follows.
_APPROXIMATELY = 0.1


def split_escaped(text: str, separator: str) -> list[str]:
    """Split on `separator` where it is not escaped by a backslash (R4 3.1.1.6)."""
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            current.append(text[i : i + 2])
            i += 2
            continue
        if char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    parts.append("".join(current))
    return parts


def escape(text: str) -> str:
    """A literal value as a search value: `\\` `,` `$` `|` escaped (R4 3.1.1.6)."""
    return _TO_ESCAPE.sub(r"\\\1", text)


def unescape(text: str) -> str:
    """`\\,` `\\|` `\\$` `\\\\` to the character; any other backslash stays as it is."""
    return _ESCAPED.sub(r"\1", text)


def _prefix(name: str, text: str) -> tuple[Prefix, str]:
    match = _PREFIX.fullmatch(text)
    assert match is not None  # the pattern matches any text
    letters, rest = match.groups()
    if letters is None:
        return Prefix.EQ, text
    try:
        return Prefix(letters), rest
    except ValueError:
        raise InvalidSearch(
            f"{name}: '{letters}' in '{text}' is not a prefix (eq ne gt lt ge le sa eb ap)"
        ) from None


def _date(name: str, text: str, now: int) -> DateValue:
    prefix, rest = _prefix(name, text)
    try:
        low, high = date_range(rest)
    except ValueError:
        raise InvalidSearch(
            f"{name}: '{text}' is not a date (yyyy, yyyy-mm, yyyy-mm-dd or a dateTime)"
        ) from None
    if prefix is Prefix.AP:
        slack = int(abs(now - (low + high) // 2) * _APPROXIMATELY)
        low, high = low - slack, high + slack
    return DateValue(prefix, low, high)


def _number_parts(name: str, text: str) -> tuple[Prefix, float, float, float]:
    prefix, rest = _prefix(name, text)
    try:
        value, low, high = number_range(rest)
    except ValueError:
        raise InvalidSearch(f"{name}: '{text}' is not a number") from None
    if prefix is Prefix.AP:  # ±10%, and never narrower than the value's own precision
        slack = abs(value) * _APPROXIMATELY
        low, high = min(low, value - slack), max(high, value + slack)
    return prefix, value, low, high


def _number(name: str, text: str, now: int) -> NumberValue:
    return NumberValue(*_number_parts(name, text))


def _quantity(name: str, text: str, now: int) -> QuantityValue:
    parts = split_escaped(text, "|")
    if len(parts) not in (1, 3):
        raise InvalidSearch(f"{name}: '{text}' is not number, number|system|code or number||code")
    prefix, value, low, high = _number_parts(name, unescape(parts[0]))
    if len(parts) == 1:
        return QuantityValue(prefix, value, low, high)
    system, code = unescape(parts[1]) or None, unescape(parts[2]) or None
    return QuantityValue(prefix, value, low, high, system, code)


def _token(name: str, text: str, modifier: str | None) -> Value:
    if modifier == "text":
        return StringValue(fold(unescape(text)))
    parts = [unescape(p) for p in split_escaped(text, "|")]
    if modifier == "of-type":
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise InvalidSearch(f"{name}: '{text}' is not type-system|type-code|value")
        return TokenValue(of_type_key(parts[0] or None, parts[1]), parts[2])
    if len(parts) == 1:
        return TokenValue(None, parts[0])
    if len(parts) != 2 or parts == ["", ""]:
        raise InvalidSearch(f"{name}: '{text}' is not code, system|code, |code or system|")
    return TokenValue(parts[0], parts[1] or None)


def _reference(
    param: SearchParam, name: str, text: str, modifier: str | None, base: str | None
) -> ReferenceValue:
    value = unescape(text)
    if modifier == "identifier":
        parts = [unescape(p) for p in split_escaped(text, "|")]
        if len(parts) == 1:
            return ReferenceValue(identifier_value=parts[0])
        if len(parts) != 2 or not parts[1]:
            raise InvalidSearch(f"{name}: '{text}' is not system|value or value")
        return ReferenceValue(identifier_system=parts[0] or None, identifier_value=parts[1])
    wanted = modifier  # a resource type, or None
    if base and value.startswith(base.rstrip("/") + "/"):  # this server's URL: a local one
        value = value[len(base.rstrip("/")) + 1 :]
    if "://" in value or value.startswith(("urn:", "#")):
        return ReferenceValue(url=value)
    segments = _HISTORY.sub("", value).split("/")
    if len(segments) == 2 and segments[0] in ALL_RESOURCE_TYPES and segments[1]:
        target_type, target_id = segments
        if wanted is not None and wanted != target_type:
            raise InvalidSearch(f"{name}: '{text}' is not a {wanted}")
        if param.targets and target_type not in param.targets:
            raise InvalidSearch(
                f"{name}: {param.code} refers to {', '.join(param.targets)}, not {target_type}"
            )
        return ReferenceValue(target_type, target_id)
    if len(segments) == 1:
        return ReferenceValue(wanted, value)
    return ReferenceValue(url=value)  # a canonical or other relative URL, compared as written


def _string(text: str, modifier: str | None) -> StringValue:
    value = unescape(text)
    return StringValue(value if modifier == "exact" else fold(value))


def parse_value(
    param: SearchParam,
    name: str,
    modifier: str | None,
    raw: str,
    *,
    base: str | None,
    now: int,
) -> Filter | None:
    """The filter for `name=raw` (name is how the client wrote the parameter, for messages).

    modifier is the text after `:`; a resource type on a reference narrows its targets.
    None when every value is empty (an empty parameter is ignored).
    """
    kind = param.type
    allowed = MODIFIERS.get(kind)
    if allowed is None:
        raise InvalidSearch(f"{name}: {kind} parameters are not supported")
    if modifier is not None and modifier not in allowed:
        is_type = kind is ParamType.REFERENCE and modifier in ALL_RESOURCE_TYPES
        if not is_type:
            raise InvalidSearch(
                f"{name}: ':{modifier}' is not a modifier of {kind} parameters "
                f"(supported: {', '.join(':' + m for m in allowed)})"
            )
        if param.targets and modifier not in param.targets:
            raise InvalidSearch(
                f"{name}: {param.code} refers to {', '.join(param.targets)}, not {modifier}"
            )
    if modifier == "missing":
        if raw not in ("true", "false"):
            raise InvalidSearch(f"{name}: :missing takes true or false, not '{raw}'")
        return Missing(param, raw == "true")
    parsers: dict[ParamType, Callable[[str], Value]] = {
        ParamType.STRING: lambda t: _string(t, modifier),
        ParamType.TOKEN: lambda t: _token(name, t, modifier),
        ParamType.DATE: lambda t: _date(name, t, now),
        ParamType.NUMBER: lambda t: _number(name, t, now),
        ParamType.QUANTITY: lambda t: _quantity(name, t, now),
        ParamType.URI: lambda t: UriValue(unescape(t)),
        ParamType.REFERENCE: lambda t: _reference(param, name, t, modifier, base),
    }
    # OR is a comma (R4 3.1.1.3); an empty alternative means nothing and is dropped.
    texts = [t for t in split_escaped(raw, ",") if t]
    if not texts:
        return None
    values = tuple(parsers[kind](t) for t in texts)
    stored = modifier if modifier in allowed else None  # a [type] lives in the values
    if stored == "contains" or (kind is ParamType.STRING and stored is None):
        values = tuple(v for v in values if not (isinstance(v, StringValue) and not v.text))
        if not values:  # a string that folds to nothing matches everything: no filter
            return None
    return ParamFilter(param, stored, values)
