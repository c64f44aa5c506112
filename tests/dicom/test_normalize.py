"""dicomhub.dicom.normalize: the values the index holds and the query builder compares against."""

from __future__ import annotations

import pytest

from dicomhub.dicom.normalize import (
    normalize_da,
    normalize_pn,
    normalize_tm,
    pn_words,
    tm_upper_bound,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Doe^John", "doe^john"),
        ("DOE^JOHN", "doe^john"),
        ("doe^john", "doe^john"),
        ("Doe^John^^", "doe^john"),
        ("Doe^John^^^^", "doe^john"),
        ("Doe^John^ ^ ", "doe^john"),
        ("  Doe^John  ", "doe^john"),
        ("Doe ^ John", "doe^john"),
        ("Müller^Jürgen", "muller^jurgen"),
        ("MÜLLER^JÜRGEN", "muller^jurgen"),
        ("Ñúñez^José", "nunez^jose"),
        ("Straße", "strasse"),
        # Decomposed input (e + combining acute) folds like the precomposed form.
        ("Jose\u0301", "jose"),
        # An empty middle component is kept: only trailing empties are insignificant.
        ("Doe^^Mr", "doe^^mr"),
        ("^John", "^john"),
        # Component groups: trailing empty groups go, and so do their trailing empty components.
        ("Yamada^Tarou=", "yamada^tarou"),
        ("Yamada^Tarou==", "yamada^tarou"),
        ("Yamada^Tarou=^=", "yamada^tarou"),
        ("Yamada^Tarou=山田^太郎", "yamada^tarou=山田^太郎"),
        ("=山田^太郎^^", "=山田^太郎"),
        ("", ""),
        ("^^^", ""),
    ],
)
def test_normalize_pn(value: str, expected: str) -> None:
    assert normalize_pn(value) == expected


def test_normalize_pn_is_idempotent() -> None:
    for value in ("Doe^John^^", "Ñúñez^José", "Yamada^Tarou=山田^太郎=", "Straße^Ö"):
        once = normalize_pn(value)
        assert normalize_pn(once) == once


def test_normalize_pn_keeps_wildcards() -> None:
    # Query patterns go through the same normalizer: * and ? must survive folding.
    assert normalize_pn("DÖ*^J?hn") == "do*^j?hn"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Doe^John", ["doe", "john"]),
        ("DOE^JOHN^Q^Dr^Jr", ["doe", "john", "q", "dr", "jr"]),
        ("Doe^John^^", ["doe", "john"]),
        ("Ñúñez^José María", ["nunez", "jose", "maria"]),
        ("O'Brien-Smith^Ann", ["o", "brien", "smith", "ann"]),
        ("St. John, Mary", ["st", "john", "mary"]),
        ("Yamada^Tarou=山田^太郎", ["yamada", "tarou", "山田", "太郎"]),
        ("", []),
        ("^^ ^", []),
    ],
)
def test_pn_words(value: str, expected: list[str]) -> None:
    assert pn_words(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20240115", "20240115"),
        (" 20240115 ", "20240115"),
        ("2024.01.15", "20240115"),  # ACR-NEMA form
        ("19000101", "19000101"),
        ("2024-01-15", None),
        ("202401", None),
        ("2024011", None),
        ("202401150", None),
        ("2024/01/15", None),
        ("abcdefgh", None),
        ("", None),
        ("*", None),
    ],
)
def test_normalize_da(value: str, expected: str | None) -> None:
    assert normalize_da(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10", "100000.000000"),
        ("1015", "101500.000000"),
        ("101530", "101530.000000"),
        ("101530.5", "101530.500000"),
        ("101530.123456", "101530.123456"),
        ("000000", "000000.000000"),
        ("235959.999999", "235959.999999"),
        ("235960", "235960.000000"),  # a leap second is a valid SS
        (" 101530 ", "101530.000000"),
        ("10:15:30", "101530.000000"),  # ACR-NEMA form
        ("10:15", "101500.000000"),
        ("24", None),
        ("2400", None),
        ("1060", None),
        ("101561", None),
        ("1", None),
        ("101", None),
        ("10153", None),
        ("101530.1234567", None),
        ("101530.", None),
        ("10h15", None),
        ("", None),
        ("*", None),
    ],
)
def test_normalize_tm(value: str, expected: str | None) -> None:
    assert normalize_tm(value) == expected


def test_normalized_times_order_as_strings() -> None:
    times = ["10", "095959.999999", "1000", "100000.000001", "1001", "23", "00"]
    by_string = sorted(times, key=lambda t: normalize_tm(t) or "")
    assert by_string == ["00", "095959.999999", "10", "1000", "100000.000001", "1001", "23"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10", "105959.999999"),
        ("1015", "101559.999999"),
        ("101530", "101530.999999"),
        ("101530.5", "101530.599999"),
        ("101530.123456", "101530.123456"),
        ("10:15", "101559.999999"),
        ("23", "235959.999999"),
    ],
)
def test_tm_upper_bound(value: str, expected: str) -> None:
    assert tm_upper_bound(value) == expected


@pytest.mark.parametrize(
    "value", ["24", "2400", "1060", "101561", "1", "abc", "", "101530.1234567"]
)
def test_tm_upper_bound_rejects_what_is_not_a_time(value: str) -> None:
    assert tm_upper_bound(value) is None


def test_tm_upper_bound_is_not_below_the_exact_value() -> None:
    for value in ("10", "1015", "101530", "101530.5", "101530.123456", "000000"):
        low = normalize_tm(value)
        high = tm_upper_bound(value)
        assert low is not None
        assert high is not None
        assert low <= high
