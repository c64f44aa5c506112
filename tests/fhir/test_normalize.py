"""The normalizers indexing and querying share: string folding, date ranges, number ranges."""

from __future__ import annotations

import itertools
import unicodedata
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dicomhub.fhir.search.normalize import (
    DATE_MAX,
    DATE_MIN,
    NUMBER_MAX,
    date_range,
    fold,
    number_range,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
US = timedelta(microseconds=1)


def micros(*args: int, tz: timezone = UTC) -> int:
    """Epoch microseconds of a datetime, computed by the standard library."""
    return (datetime(*args, tzinfo=tz) - EPOCH) // US  # type: ignore[misc]


# --- fold ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("Smith", "smith"),
        ("  Van   der\tBerg\n", "van der berg"),
        ("José Müller", "jose muller"),
        ("ÅSTRÖM", "astrom"),
        ("Straße", "strasse"),  # casefold, not lower
        ("ﬁnance", "finance"),  # compatibility ligature (NFKD)
        ("Ｔｏｋｙｏ", "tokyo"),  # fullwidth letters (NFKD)
        ("İstanbul", "istanbul"),
        ("Zoë\u00a0Ørsted", "zoe ørsted"),  # no-break space is whitespace; Ø has no decomposition
        ("Ἀθῆναι", "αθηναι"),
        ("", ""),
        ("   ", ""),
    ],
)
def test_fold(text: str, folded: str) -> None:
    assert fold(text) == folded


@given(st.text())
def test_fold_is_idempotent_and_normal(text: str) -> None:
    folded = fold(text)
    assert fold(folded) == folded
    assert folded == folded.strip()
    assert "  " not in folded
    assert not any(unicodedata.combining(c) for c in folded)
    assert folded.casefold() == folded


@given(st.text(alphabet=st.characters(max_codepoint=127)))
def test_fold_ignores_ascii_case(text: str) -> None:
    assert fold(text.upper()) == fold(text.lower()) == fold(text)


# --- date_range -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "low", "high"),
    [
        ("2020", micros(2020, 1, 1), micros(2021, 1, 1) - 1),
        ("2020-02", micros(2020, 2, 1), micros(2020, 3, 1) - 1),  # leap February
        ("2021-02", micros(2021, 2, 1), micros(2021, 3, 1) - 1),
        ("2020-12", micros(2020, 12, 1), micros(2021, 1, 1) - 1),
        ("2020-02-29", micros(2020, 2, 29), micros(2020, 3, 1) - 1),
        ("2020-03-01T10:15", micros(2020, 3, 1, 10, 15), micros(2020, 3, 1, 10, 16) - 1),
        ("2020-03-01T10:15Z", micros(2020, 3, 1, 10, 15), micros(2020, 3, 1, 10, 16) - 1),
        (
            "2020-03-01T10:15:30Z",
            micros(2020, 3, 1, 10, 15, 30),
            micros(2020, 3, 1, 10, 15, 31) - 1,
        ),
        ("2020-03-01T10:15:30", micros(2020, 3, 1, 10, 15, 30), micros(2020, 3, 1, 10, 15, 31) - 1),
        (
            "2020-03-01T10:15:30.5Z",
            micros(2020, 3, 1, 10, 15, 30, 500000),
            micros(2020, 3, 1, 10, 15, 30, 599999),
        ),
        (
            "2020-03-01T10:15:30.120Z",
            micros(2020, 3, 1, 10, 15, 30, 120000),
            micros(2020, 3, 1, 10, 15, 30, 120999),
        ),
        (
            "2020-03-01T10:15:30.123456Z",
            micros(2020, 3, 1, 10, 15, 30, 123456),
            micros(2020, 3, 1, 10, 15, 30, 123456),
        ),
        (  # beyond microseconds: the microsecond it falls in
            "2020-03-01T10:15:30.1234567Z",
            micros(2020, 3, 1, 10, 15, 30, 123456),
            micros(2020, 3, 1, 10, 15, 30, 123456),
        ),
        (
            "2020-03-01T00:30:00+01:00",
            micros(2020, 2, 29, 23, 30),
            micros(2020, 2, 29, 23, 30, 0, 999999),
        ),
        (
            "1976-01-19T22:58:16-05:00",
            micros(1976, 1, 20, 3, 58, 16),
            micros(1976, 1, 20, 3, 58, 17) - 1,
        ),
        ("2020-03-01T00:30+05:45", micros(2020, 2, 29, 18, 45), micros(2020, 2, 29, 18, 46) - 1),
        ("2016-12-31T23:59:60Z", micros(2017, 1, 1) - 1, micros(2017, 1, 1) - 1),  # leap second
        ("1969-12-31T23:59:59.999999Z", -1, -1),
        ("0001", micros(1, 1, 1), micros(2, 1, 1) - 1),
        ("9999-12-31", micros(9999, 12, 31), micros(9999, 12, 31, 23, 59, 59, 999999)),
    ],
)
def test_date_range(value: str, low: int, high: int) -> None:
    assert date_range(value) == (low, high)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "20",
        "20200",
        "2020-1",
        "2020-13",
        "2020-00",
        "2020-01-00",
        "2020-02-30",
        "2021-02-29",
        "1900-02-29",  # not a leap year
        "0000",
        "20200101",
        "2020-01-01T",
        "2020-01-01T10",
        "2020-01-01T24:00Z",
        "2020-01-01T10:60Z",
        "2020-01-01T10:00:61Z",
        "2020-01-01T10:00:00.Z",
        "2020-01-01T10:00:00+14:30",  # beyond the ±14:00 FHIR allows
        "2020-01-01T10:00:00+05:60",
        "2020-01-01T10:00:00+0500",
        "2020-01-01 10:00:00Z",
        "2020-01-01t10:00:00z",
        " 2020",
        "2020 ",
        "２０２０",  # non-ASCII digits
        "2020-01-01Z",  # a zone without a time
    ],
)
def test_invalid_dates(value: str) -> None:
    with pytest.raises(ValueError, match="invalid"):
        date_range(value)


def test_date_range_rejects_non_strings() -> None:
    with pytest.raises(ValueError, match="invalid date"):
        date_range(20200101)  # type: ignore[arg-type]


def test_open_period_bounds_lie_beyond_every_date() -> None:
    assert date_range("0001-01-01T00:00:00+14:00")[0] > DATE_MIN
    assert date_range("9999-12-31T23:59:59.999999-14:00")[1] < DATE_MAX
    assert DATE_MIN > -(2**63) and DATE_MAX < 2**63 - 1 - (DATE_MAX - DATE_MIN)  # room for SQL


offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timedelta(minutes=m))
moments = st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31))


def _zone(offset: timedelta) -> str:
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


@given(moments, offsets)
def test_instants_agree_with_the_standard_library(moment: datetime, offset: timedelta) -> None:
    value = moment.isoformat(timespec="microseconds") + _zone(offset)
    aware = moment.replace(tzinfo=timezone(offset))
    expected = (aware - EPOCH) // US
    assert date_range(value) == (expected, expected)


@given(moments)
def test_each_precision_lies_inside_the_coarser_ones(moment: datetime) -> None:
    # Without a zone (taken as UTC) each finer value's range nests in the coarser one's.
    text = moment.isoformat(timespec="microseconds")
    prefixes = [text[:4], text[:7], text[:10], text[:16], text[:19], text[:22], text]
    ranges = [date_range(p) for p in prefixes]
    for (outer_low, outer_high), (inner_low, inner_high) in itertools.pairwise(ranges):
        assert outer_low <= inner_low <= inner_high <= outer_high
    assert ranges[-1][0] == ranges[-1][1]  # microsecond precision is a single instant


@given(moments, offsets)
def test_ranges_never_invert_and_stay_within_bounds(moment: datetime, offset: timedelta) -> None:
    text = moment.isoformat(timespec="seconds")
    for value in (text[:4], text[:7], text[:10], text[:16] + _zone(offset), text + "Z"):
        low, high = date_range(value)
        assert DATE_MIN < low <= high < DATE_MAX


@given(st.dates(min_value=datetime(1, 1, 1).date(), max_value=datetime(9999, 12, 30).date()))
def test_consecutive_days_tile_without_gaps(day: object) -> None:
    today = date_range(str(day))
    tomorrow = date_range(str(day + timedelta(days=1)))  # type: ignore[operator]
    assert tomorrow[0] == today[1] + 1
    assert today[1] - today[0] + 1 == 86_400_000_000


# --- number_range -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("100", (100.0, 99.5, 100.5)),
        ("100.0", (100.0, 99.95, 100.05)),
        ("100.00", (100.0, 99.995, 100.005)),
        ("1e2", (100.0, 50.0, 150.0)),  # one significant digit
        ("1.0e2", (100.0, 95.0, 105.0)),
        ("1.00E+2", (100.0, 99.5, 100.5)),
        ("0", (0.0, -0.5, 0.5)),
        ("-5.5", (-5.5, -5.55, -5.45)),
        ("+7", (7.0, 6.5, 7.5)),
        ("0.001", (0.001, 0.0005, 0.0015)),
        ("1E-3", (0.001, 0.0005, 0.0015)),
        ("007", (7.0, 6.5, 7.5)),
        ("3.14159", (3.14159, 3.141585, 3.141595)),
    ],
)
def test_number_range(text: str, expected: tuple[float, float, float]) -> None:
    assert number_range(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        " 1",
        "1 ",
        "abc",
        "1.",
        ".5",
        "1e",
        "--1",
        "1_000",
        "NaN",
        "Infinity",
        "inf",
        "0x10",
        "1e400",
        "１",
    ],
)
def test_invalid_numbers(text: str) -> None:
    with pytest.raises(ValueError, match="number"):
        number_range(text)


@given(st.decimals(allow_nan=False, allow_infinity=False, min_value=-(10**300), max_value=10**300))
def test_number_ranges_are_half_a_unit_of_the_last_digit(number: Decimal) -> None:
    text = str(number)
    value, low, high = number_range(text)
    assert low <= value <= high
    assert value == float(number)
    exponent = number.as_tuple().exponent
    assert isinstance(exponent, int)
    half = Fraction(5, 10) * Fraction(10) ** exponent  # half a unit of the last digit, exactly
    assert (low, high) == (float(Fraction(number) - half), float(Fraction(number) + half))
    assert abs(high) <= NUMBER_MAX


@given(st.integers(min_value=-(10**15), max_value=10**15), st.integers(min_value=0, max_value=6))
def test_more_decimals_narrow_the_range(units: int, places: int) -> None:
    text = str(Decimal(units).scaleb(-places))
    finer = text + "0" if "." in text else text + ".0"
    _, low, high = number_range(text)
    _, finer_low, finer_high = number_range(finer)
    assert low <= finer_low <= finer_high <= high
