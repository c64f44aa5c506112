"""Value normalizers shared by write-time indexing and query parsing (FHIR R4 search, 3.1.1.4).

Indexing and querying must agree exactly, so both sides go through these functions: string
folding, the instant range a date of any precision covers, the range a decimal's precision implies.
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from datetime import date
from decimal import MAX_EMAX, MIN_EMIN, Context, Decimal, InvalidOperation
from functools import lru_cache

__all__ = [
    "DATE_MAX",
    "DATE_MIN",
    "NUMBER_MAX",
    "NUMBER_MIN",
    "date_range",
    "fold",
    "number_range",
]

_SECOND = 1_000_000
_MINUTE = 60 * _SECOND
_DAY = 86_400 * _SECOND
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_MAX_OFFSET = 14 * 60 * _MINUTE  # FHIR zones run from -14:00 to +14:00 (datatypes 2.24.0.1)

# Open Period ends (search 3.1.1.4.4): strictly below / above anything date_range returns
# (0001-01-01 at +14:00 .. 9999-12-31 at -14:00), yet far from the int64 limits so that
# SQL arithmetic on them (e.g. for `ap`) cannot overflow.
DATE_MIN = (date(1, 1, 1).toordinal() - _EPOCH_ORDINAL - 1) * _DAY
DATE_MAX = (date(9999, 12, 31).toordinal() - _EPOCH_ORDINAL + 2) * _DAY

# Open ends of number and quantity ranges (a Range without low/high, a `<` comparator).
NUMBER_MIN = -1.7976931348623157e308
NUMBER_MAX = 1.7976931348623157e308


def fold(text: str) -> str:
    """Case-, accent- and whitespace-insensitive form of `text` (search 3.1.1.4.5, string).

    NFKD, combining marks dropped, casefolded, runs of whitespace collapsed to one space, stripped.
    """
    if text.isascii():
        return " ".join(text.lower().split())
    # Casefolding can produce new decomposable characters (e.g. "ẞ" -> "ss" is fine, but some
    # compatibility forms fold to letters with marks), so decompose after folding as well.
    decomposed = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", text).casefold())
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(stripped.split())


# FHIR date / dateTime / instant (datatypes 2.24.0.1); search values may also stop at minutes.
_DATE = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})"  # year, month, day
    r"(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?"  # hour, minute, second, fraction
    r"(Z|[+-]\d{2}:\d{2})?)?)?)?",  # zone
    re.ASCII,
)


def _days(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 (proleptic Gregorian); ValueError for a day the month lacks."""
    return date(year, month, day).toordinal() - _EPOCH_ORDINAL


def _zone_offset(zone: str | None, value: str) -> int:
    """The zone's offset from UTC in microseconds; no zone means UTC (documented choice)."""
    if zone is None or zone == "Z":
        return 0
    hours, minutes = int(zone[1:3]), int(zone[4:6])
    offset = (hours * 60 + minutes) * _MINUTE
    if minutes > 59 or offset > _MAX_OFFSET:
        raise ValueError(f"invalid time zone in date {value!r}")
    return -offset if zone[0] == "-" else offset


def date_range(value: str) -> tuple[int, int]:
    """Inclusive UTC epoch-microsecond bounds of the instants a FHIR date(Time) covers.

    Any precision: `2020` covers the whole year, `2020-03-01T10:00:00.5Z` a tenth of a second.
    A value without a time zone is taken as UTC (the spec leaves it to the server, 3.1.1.4.4).
    Raises ValueError for anything that is not a valid date, dateTime or instant.
    """
    if type(value) is not str:
        raise ValueError(f"invalid date {value!r}")
    return _date_range(value)


@lru_cache(maxsize=8192)  # resources repeat their dates (onset = recorded, period = event...)
def _date_range(value: str) -> tuple[int, int]:
    match = _DATE.fullmatch(value)
    if match is None:
        raise ValueError(f"invalid date {value!r}")
    year_text, month_text, day_text, hour_text, minute_text, second_text, fraction, zone = (
        match.groups()
    )
    year = int(year_text)
    try:
        if month_text is None:  # YYYY
            return _days(year, 1, 1) * _DAY, (_days(year, 12, 31) + 1) * _DAY - 1
        month = int(month_text)
        if day_text is None:  # YYYY-MM
            last = calendar.monthrange(year, month)[1]
            return _days(year, month, 1) * _DAY, (_days(year, month, last) + 1) * _DAY - 1
        start = _days(year, month, int(day_text)) * _DAY
    except (ValueError, calendar.IllegalMonthError):
        raise ValueError(f"invalid date {value!r}") from None
    if hour_text is None:  # YYYY-MM-DD
        return start, start + _DAY - 1
    hour, minute = int(hour_text), int(minute_text)
    if hour > 23 or minute > 59:
        raise ValueError(f"invalid time in date {value!r}")
    start += (hour * 60 + minute) * _MINUTE - _zone_offset(zone, value)
    if second_text is None:  # hh:mm
        return start, start + _MINUTE - 1
    second = int(second_text)
    if second > 60:
        raise ValueError(f"invalid time in date {value!r}")
    if second == 60:  # a leap second: epoch time has none, so it is the minute's last instant
        return start + _MINUTE - 1, start + _MINUTE - 1
    start += second * _SECOND
    if fraction is None:
        return start, start + _SECOND - 1
    # `.5` covers .500000 .. .599999; digits beyond microseconds narrow to one microsecond.
    start += int(fraction[:6].ljust(6, "0"))
    return start, start + (10 ** (6 - len(fraction)) - 1 if len(fraction) < 6 else 0)


# FHIR decimal (datatypes 2.24.0.1), tolerating a leading `+` and leading zeros from searches.
_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?", re.ASCII)


def number_range(text: str) -> tuple[float, float, float]:
    """(value, low, high) of a decimal and the range its precision implies (search 3.1.1.4.3).

    The range is half a unit of the last written digit either way: `100` is 99.5 .. 100.5,
    `100.0` is 99.95 .. 100.05, `1e2` (one significant digit) is 50 .. 150.
    Raises ValueError for anything that is not a finite decimal.
    """
    if _NUMBER.fullmatch(text) is None:
        raise ValueError(f"invalid number {text!r}")
    try:
        number = Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern only lets decimals through
        raise ValueError(f"invalid number {text!r}") from None
    _, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)  # finite: the pattern excludes NaN and Infinity
    half = Decimal(5).scaleb(exponent - 1)
    # Exact sums (one more digit than written, plus a carry), each rounded once to a float.
    exact = Context(prec=len(digits) + 2, Emax=MAX_EMAX, Emin=MIN_EMIN)
    value = float(number)
    low, high = float(exact.subtract(number, half)), float(exact.add(number, half))
    if not max(abs(value), abs(low), abs(high)) <= NUMBER_MAX:
        raise ValueError(f"number out of range {text!r}")
    return value, low, high
