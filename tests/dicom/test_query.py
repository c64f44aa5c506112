"""dicomhub.dicom.query.parse_query: QIDO-RS parameters to a QuerySpec, and QueryError on bad input."""

from __future__ import annotations

import pytest

from dicomhub.dicom.attributes import MATCHABLE, Level
from dicomhub.dicom.query import (
    MAX_OFFSET,
    AnyOf,
    Exact,
    Fuzzy,
    Match,
    QueryError,
    QuerySpec,
    Range,
    Universal,
    Wildcard,
    parse_query,
)

STUDY, SERIES, INSTANCE = Level.STUDY, Level.SERIES, Level.INSTANCE
UID_A = "1.2.840.113619.2.55.3.1"
UID_B = "1.2.840.113619.2.55.3.2"
UID_C = "1.2.3"


def parse(
    level: Level, *items: tuple[str, str], default_limit: int = 100, max_limit: int = 1000
) -> QuerySpec:
    return parse_query(level, list(items), default_limit=default_limit, max_limit=max_limit)


def match_of(level: Level, key: str, value: str, *extra: tuple[str, str]) -> Match:
    spec = parse(level, (key, value), *extra)
    assert len(spec.filters) == 1
    return spec.filters[0].match


def error_of(level: Level, *items: tuple[str, str]) -> str:
    with pytest.raises(QueryError) as info:
        parse(level, *items)
    return str(info.value)


# --- defaults -----------------------------------------------------------------------------------


def test_empty_query() -> None:
    spec = parse(STUDY)
    assert spec == QuerySpec(level=STUDY)
    assert spec.filters == ()
    assert spec.include == frozenset()
    assert not spec.include_all
    assert spec.limit == 100
    assert spec.offset == 0
    assert not spec.fuzzy
    assert spec.warnings == ()
    assert spec.matched_tags == frozenset()


def test_url_uids_are_kept() -> None:
    spec = parse_query(INSTANCE, [], study_uid=UID_A, series_uid=UID_B)
    assert (spec.level, spec.study_uid, spec.series_uid) == (INSTANCE, UID_A, UID_B)


def test_default_limit_comes_from_the_caller() -> None:
    assert parse(STUDY, default_limit=25).limit == 25


# --- universal matching -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("PatientName", ""),
        ("PatientName", "*"),
        ("PatientName", "**"),
        ("PatientName", "  "),
        ("PatientID", ""),
        ("PatientID", "*"),
        ("StudyDescription", "*"),
        ("AccessionNumber", ""),
        ("StudyDate", ""),
        ("StudyTime", ""),
        ("StudyInstanceUID", ""),
        ("ModalitiesInStudy", ""),
        ("ModalitiesInStudy", "*"),
        ("PatientSex", "*"),
    ],
)
def test_universal(key: str, value: str) -> None:
    spec = parse(STUDY, (key, value))
    assert spec.filters[0].match == Universal()
    # A universal key still asks for the attribute to be returned (PS3.4 C.2.2.2.3).
    assert spec.matched_tags == {MATCHABLE[key].tag}


@pytest.mark.parametrize(
    ("key", "value"), [("SeriesNumber", ""), ("Modality", ""), ("Modality", "*")]
)
def test_universal_series_keys(key: str, value: str) -> None:
    assert match_of(SERIES, key, value) == Universal()


def test_universal_instance_number() -> None:
    assert match_of(INSTANCE, "InstanceNumber", "") == Universal()


# --- single value and wildcards of strings -------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("PatientID", "PID-1", Exact("PID-1")),
        ("PatientID", " PID-1 ", Exact("PID-1")),
        ("PatientID", "pid-1", Exact("pid-1")),  # not folded: non-PN matching is case-sensitive
        ("AccessionNumber", "ACC 7", Exact("ACC 7")),
        ("StudyID", "S1", Exact("S1")),
        ("StudyDescription", "Brain, with contrast", Exact("Brain, with contrast")),
        ("StudyDescription", "Crâne", Exact("Crâne")),
        ("PatientSex", "F", Exact("F")),
        ("PatientID", "PID*", Wildcard("PID*")),
        ("PatientID", "P?D-1", Wildcard("P?D-1")),
        ("PatientID", "*-1", Wildcard("*-1")),
        ("StudyDescription", "Cr*ne", Wildcard("Cr*ne")),
    ],
)
def test_string_match(key: str, value: str, expected: Match) -> None:
    assert match_of(STUDY, key, value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Doe^John", Exact("doe^john")),
        ("DOE^JOHN", Exact("doe^john")),
        ("Doe^John^^", Exact("doe^john")),
        ("Dœ^Jöhn", Exact("dœ^john")),
        ("Müller^Jürgen", Exact("muller^jurgen")),
        ("Doe*", Wildcard("doe*")),
        ("DÖE^J?HN", Wildcard("doe^j?hn")),
        ("*^John", Wildcard("*^john")),
        ("Doe^John\\Roe^Jane", AnyOf(("doe^john", "roe^jane"))),
    ],
)
def test_person_name_is_folded(value: str, expected: Match) -> None:
    assert match_of(STUDY, "PatientName", value) == expected
    assert match_of(STUDY, "ReferringPhysicianName", value) == expected


@pytest.mark.parametrize(
    ("key", "level", "value", "expected"),
    [
        ("PatientSex", STUDY, "F,M", AnyOf(("F", "M"))),
        ("PatientSex", STUDY, "F\\M", AnyOf(("F", "M"))),
        ("ModalitiesInStudy", STUDY, "CT,MR", AnyOf(("CT", "MR"))),
        ("ModalitiesInStudy", STUDY, "CT\\MR\\US", AnyOf(("CT", "MR", "US"))),
        ("ModalitiesInStudy", STUDY, "CT, MR", AnyOf(("CT", "MR"))),
        ("ModalitiesInStudy", STUDY, "CT,", Exact("CT")),
        ("Modality", SERIES, "CT,MR", AnyOf(("CT", "MR"))),
        ("BodyPartExamined", SERIES, "HEAD\\CHEST", AnyOf(("HEAD", "CHEST"))),
        ("Modality", SERIES, "C?", Wildcard("C?")),
    ],
)
def test_code_string_lists(key: str, level: Level, value: str, expected: Match) -> None:
    assert match_of(level, key, value) == expected


def test_comma_is_not_a_separator_outside_code_strings() -> None:
    # LO can hold a comma, so only a backslash separates values there.
    assert match_of(STUDY, "StudyDescription", "Head,Neck") == Exact("Head,Neck")
    assert match_of(STUDY, "PatientID", "A\\B") == AnyOf(("A", "B"))


@pytest.mark.parametrize(
    ("key", "value"),
    [("ModalitiesInStudy", "C*,MR"), ("PatientID", "A*\\B"), ("PatientName", "D*\\R")],
)
def test_wildcards_cannot_be_combined_with_a_list(key: str, value: str) -> None:
    assert "wildcards cannot be combined" in error_of(STUDY, (key, value))


# --- UIDs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (UID_A, Exact(UID_A)),
        (f" {UID_A} ", Exact(UID_A)),
        (f"{UID_A},{UID_B}", AnyOf((UID_A, UID_B))),
        (f"{UID_A}\\{UID_B}", AnyOf((UID_A, UID_B))),
        (f"{UID_A}, {UID_B}\\{UID_C}", AnyOf((UID_A, UID_B, UID_C))),
        (f"{UID_A},", Exact(UID_A)),
    ],
)
def test_uid_matching(value: str, expected: Match) -> None:
    assert match_of(STUDY, "StudyInstanceUID", value) == expected
    assert match_of(SERIES, "SeriesInstanceUID", value) == expected
    assert match_of(INSTANCE, "SOPInstanceUID", value) == expected
    assert match_of(INSTANCE, "SOPClassUID", value) == expected
    assert match_of(STUDY, "SOPClassesInStudy", value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "1.2.*",
        "1.2.?",
        "*",
        "abc",
        "1..2",
        "1.2.",
        ".1.2",
        "1.2.3-4",
        "1." + "2" * 64,
        f"{UID_A},1.2.x",
        ",",
        "\\",
    ],
)
def test_bad_uids(value: str) -> None:
    message = error_of(STUDY, ("StudyInstanceUID", value))
    assert message.startswith("StudyInstanceUID")


# --- dates and times ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20240115", Exact("20240115")),
        ("2024.01.15", Exact("20240115")),
        ("20240101-20241231", Range("20240101", "20241231")),
        ("20240101 - 20241231", Range("20240101", "20241231")),
        ("20240101-", Range("20240101", None)),
        ("-20241231", Range(None, "20241231")),
        ("20240115-20240115", Range("20240115", "20240115")),
        ("2024.01.01-2024.12.31", Range("20240101", "20241231")),
    ],
)
def test_dates(value: str, expected: Match) -> None:
    assert match_of(STUDY, "StudyDate", value) == expected
    assert match_of(STUDY, "PatientBirthDate", value) == expected
    assert match_of(SERIES, "PerformedProcedureStepStartDate", value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10", Exact("100000.000000")),
        ("1015", Exact("101500.000000")),
        ("101530.25", Exact("101530.250000")),
        ("10:15", Exact("101500.000000")),
        ("10-12", Range("100000.000000", "125959.999999")),
        ("1015-1030", Range("101500.000000", "103059.999999")),
        ("10-", Range("100000.000000", None)),
        ("-10", Range(None, "105959.999999")),
        ("101530.5-101530.5", Range("101530.500000", "101530.599999")),
        ("10-10", Range("100000.000000", "105959.999999")),
    ],
)
def test_times(value: str, expected: Match) -> None:
    assert match_of(STUDY, "StudyTime", value) == expected
    assert match_of(SERIES, "PerformedProcedureStepStartTime", value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "2024011",
        "2024-01-15",  # two dashes: neither a date nor a range
        "20240115-20240116-20240117",
        "-",
        " - ",
        "2024011-20240120",
        "20240101-2024123",
        "20241231-20240101",  # ends before it starts
        "*",
        "2024*",
        "yesterday",
        "20240115,20240116",
        "20241301",  # no 13th month
        "20240230",  # no 30th of February
        "20240100-",
    ],
)
def test_bad_dates(value: str) -> None:
    assert error_of(STUDY, ("StudyDate", value)).startswith("StudyDate:")


@pytest.mark.parametrize(
    "value",
    [
        "24",
        "1060",
        "101561",
        "1",
        "10h",
        "-",
        "12-10",
        "1030-1015",
        "10-25",  # an upper bound is a time as well
        "-2400",
        "25-",
        "*",
        "10*",
        "101530.1234567",
    ],
)
def test_bad_times(value: str) -> None:
    assert error_of(STUDY, ("StudyTime", value)).startswith("StudyTime:")


# --- integers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", Exact(1)),
        (" 7 ", Exact(7)),
        ("-3", Exact(-3)),
        ("+4", Exact(4)),
        ("1,2,3", AnyOf((1, 2, 3))),
        ("1\\2", AnyOf((1, 2))),
        ("2147483647", Exact(2147483647)),
        ("-2147483648", Exact(-2147483648)),
    ],
)
def test_integers(value: str, expected: Match) -> None:
    assert match_of(SERIES, "SeriesNumber", value) == expected
    assert match_of(INSTANCE, "InstanceNumber", value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "one",
        "1.5",
        "1e3",
        "1*",
        "*",
        "1-3",
        "1,",
        "1,,2",
        "1_0",  # Python's int() accepts it; DICOM IS does not
        "٣",  # nor non-ASCII digits
        "2147483648",  # outside the IS range (PS3.5 6.2)
        "99999999999999999999",
    ],
)
def test_bad_integers(value: str) -> None:
    assert error_of(SERIES, ("SeriesNumber", value)).startswith("SeriesNumber must be an integer")


# --- fuzzy matching -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("joh", Fuzzy(("joh",))),
        ("Doe^John", Fuzzy(("doe", "john"))),
        ("JÖH DO", Fuzzy(("joh", "do"))),
        ("jo*", Fuzzy(("jo",))),
        ("j?hn", Fuzzy(("j", "hn"))),
        ("*", Universal()),
        ("^^", Universal()),
        ("", Universal()),
    ],
)
def test_fuzzy_person_names(value: str, expected: Match) -> None:
    spec = parse(STUDY, ("fuzzymatching", "true"), ("PatientName", value))
    assert spec.fuzzy
    assert spec.filters[0].match == expected


def test_fuzzymatching_applies_whatever_the_parameter_order() -> None:
    spec = parse(STUDY, ("ReferringPhysicianName", "smi"), ("fuzzymatching", "TRUE"))
    assert spec.filters[0].match == Fuzzy(("smi",))


def test_fuzzymatching_leaves_other_attributes_alone() -> None:
    spec = parse(
        STUDY, ("fuzzymatching", "true"), ("PatientID", "pid"), ("StudyDescription", "He*")
    )
    assert [f.match for f in spec.filters] == [Exact("pid"), Wildcard("He*")]


def test_fuzzymatching_false() -> None:
    spec = parse(STUDY, ("fuzzymatching", "false"), ("PatientName", "joh"))
    assert not spec.fuzzy
    assert spec.filters[0].match == Exact("joh")


@pytest.mark.parametrize("value", ["yes", "1", "", "on"])
def test_bad_fuzzymatching(value: str) -> None:
    assert "fuzzymatching must be true or false" in error_of(STUDY, ("fuzzymatching", value))


# --- includefield -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("items", "tags"),
    [
        ([("includefield", "StudyDescription")], {0x00081030}),
        ([("includefield", "00081030")], {0x00081030}),
        ([("includefield", "00081030"), ("includefield", "PatientAge")], {0x00081030, 0x00101010}),
        ([("includefield", "StudyDescription,00101010")], {0x00081030, 0x00101010}),
        ([("includefield", "StudyDescription, PatientAge,")], {0x00081030, 0x00101010}),
        ([("includefield", "0020000d")], {0x0020000D}),
        ([("includefield", "00091001")], {0x00091001}),  # a private tag can be asked for
        ([("includefield", "NumberOfStudyRelatedInstances")], {0x00201208}),
    ],
)
def test_includefield(items: list[tuple[str, str]], tags: set[int]) -> None:
    spec = parse(STUDY, *items)
    assert spec.include == tags
    assert not spec.include_all
    assert spec.filters == ()


@pytest.mark.parametrize("value", ["all", "ALL", "PatientAge,all"])
def test_includefield_all(value: str) -> None:
    spec = parse(INSTANCE, ("includefield", value))
    assert spec.include_all


@pytest.mark.parametrize("value", ["NoSuchKeyword", "0010001", "0010001G", "(0010,0010)", "all2"])
def test_bad_includefield(value: str) -> None:
    assert error_of(STUDY, ("includefield", value)).startswith("includefield:")


# --- limit and offset ---------------------------------------------------------------------------


def test_limit_and_offset() -> None:
    spec = parse(STUDY, ("limit", "10"), ("offset", "20"))
    assert (spec.limit, spec.offset, spec.warnings) == (10, 20, ())


def test_limit_at_the_maximum() -> None:
    spec = parse(STUDY, ("limit", "500"), max_limit=500)
    assert (spec.limit, spec.warnings) == (500, ())


def test_limit_above_the_maximum_is_clamped_with_a_warning() -> None:
    spec = parse(STUDY, ("limit", "501"), max_limit=500)
    assert spec.limit == 500
    assert len(spec.warnings) == 1
    assert "501" in spec.warnings[0]
    assert "500" in spec.warnings[0]


def test_offset_upper_bound() -> None:
    assert parse(STUDY, ("offset", str(MAX_OFFSET))).offset == MAX_OFFSET
    assert "offset" in error_of(STUDY, ("offset", str(MAX_OFFSET + 1)))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("limit", "0"),
        ("limit", "-1"),
        ("limit", "ten"),
        ("limit", ""),
        ("limit", "1.5"),
        ("limit", "1_0"),
        ("offset", "-1"),
        ("offset", "x"),
        ("offset", ""),
        ("offset", "2.0"),
        ("offset", "٣"),
    ],
)
def test_bad_limit_or_offset(key: str, value: str) -> None:
    assert error_of(STUDY, (key, value)).startswith(key)


# --- keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["00100020", "00100020".lower(), "PatientID"])
def test_key_as_keyword_or_tag(key: str) -> None:
    spec = parse(STUDY, (key, "PID-1"))
    assert spec.filters[0].attribute is MATCHABLE["PatientID"]
    assert spec.matched_tags == {0x00100020}


def test_several_keys() -> None:
    spec = parse(
        INSTANCE,
        ("PatientID", "PID-1"),
        ("Modality", "CT"),
        ("InstanceNumber", "3"),
        ("StudyDate", "20240101-"),
    )
    assert [f.attribute.keyword for f in spec.filters] == [
        "PatientID",
        "Modality",
        "InstanceNumber",
        "StudyDate",
    ]
    assert spec.matched_tags == {0x00100020, 0x00080060, 0x00200013, 0x00080020}


@pytest.mark.parametrize(
    "items",
    [
        [("PatientID", "a"), ("PatientID", "b")],
        [("PatientID", "a"), ("00100020", "a")],
        [("PatientID", ""), ("PatientID", "")],
    ],
)
def test_repeated_attribute(items: list[tuple[str, str]]) -> None:
    assert "more than once" in error_of(STUDY, *items)


@pytest.mark.parametrize("key", ["NoSuchKeyword", "patientid", "0010002", "ZZZZZZZZ", "_"])
def test_unknown_key(key: str) -> None:
    assert "is not a query parameter" in error_of(STUDY, (key, "x"))


@pytest.mark.parametrize("key", ["PatientAge", "00101010", "Rows", "ImageType", "00091001"])
def test_unsupported_attribute(key: str) -> None:
    message = error_of(INSTANCE, (key, "x"))
    assert "not supported for matching" in message
    assert "PatientName" in message  # the message lists what is supported


@pytest.mark.parametrize(
    ("level", "key"),
    [
        (STUDY, "Modality"),
        (STUDY, "SeriesInstanceUID"),
        (STUDY, "SeriesNumber"),
        (STUDY, "SOPInstanceUID"),
        (STUDY, "InstanceNumber"),
        (SERIES, "SOPClassUID"),
        (SERIES, "00200013"),
    ],
)
def test_lower_level_attribute_at_a_higher_level(level: Level, key: str) -> None:
    message = error_of(level, (key, "1"))
    assert f"cannot be matched in a {level.name.lower()}-level search" in message


@pytest.mark.parametrize(
    ("level", "key", "value"),
    [
        (SERIES, "PatientID", "PID-1"),
        (SERIES, "StudyInstanceUID", UID_A),
        (INSTANCE, "Modality", "CT"),
        (INSTANCE, "StudyDate", "20240101"),
        (SERIES, "ModalitiesInStudy", "CT"),
    ],
)
def test_higher_level_attribute_at_a_lower_level(level: Level, key: str, value: str) -> None:
    spec = parse(level, (key, value))
    assert spec.filters[0].attribute.keyword == key


def test_every_matchable_attribute_parses_a_universal_key_at_instance_level() -> None:
    spec = parse(INSTANCE, *((keyword, "") for keyword in MATCHABLE))
    assert {f.attribute.keyword for f in spec.filters} == set(MATCHABLE)
    assert all(f.match == Universal() for f in spec.filters)
