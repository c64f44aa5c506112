"""The search parser (pure): query items to a SearchQuery, and every way a search is refused."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dicomhub.fhir.search.expressions import (
    AnyOf,
    Chain,
    DateValue,
    Has,
    Include,
    Missing,
    NumberValue,
    ParamFilter,
    Prefix,
    QuantityValue,
    ReferenceValue,
    SearchQuery,
    StringValue,
    TokenValue,
    UriValue,
)
from dicomhub.fhir.search.normalize import date_range
from dicomhub.fhir.search.parameters import ParamType, SearchParam, search_param
from dicomhub.fhir.search.parse import DEFAULT_COUNT, MAX_COUNT, InvalidSearch, parse_search
from dicomhub.fhir.search.values import escape, parse_value, split_escaped, unescape

NOW = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp() * 1_000_000)


def parse(res_type: str, *items: tuple[str, str], base: str | None = None) -> SearchQuery:
    return parse_search(res_type, list(items), base=base, now=NOW)


def only(res_type: str, name: str, value: str, base: str | None = None) -> ParamFilter:
    q = parse(res_type, (name, value), base=base)
    assert len(q.filters) == 1, q
    f = q.filters[0]
    assert isinstance(f, ParamFilter), f
    return f


def param(res_type: str, code: str) -> SearchParam:
    found = search_param(res_type, code)
    assert found is not None
    return found


def refused(res_type: str, *items: tuple[str, str]) -> str:
    with pytest.raises(InvalidSearch) as info:
        parse(res_type, *items)
    return str(info.value)


# --- escaping and OR / AND -----------------------------------------------------------------------


@pytest.mark.parametrize("text", ["a,b", "a|b", "a$b", "a\\b", "a\\,b", "plain", ""])
def test_an_escaped_value_is_one_value_that_unescapes_to_itself(text: str) -> None:
    escaped = escape(text)
    assert split_escaped(escaped, ",") == [escaped]
    assert split_escaped(f"system|{escaped}", "|") == ["system", escaped]
    assert unescape(escaped) == text


def test_split_on_unescaped_separators_only() -> None:
    assert split_escaped(r"a,b\,c,d", ",") == ["a", r"b\,c", "d"]
    assert split_escaped(r"a\\,b", ",") == [r"a\\", "b"]
    assert split_escaped("", ",") == [""]
    assert unescape(r"b\,c\|d\$e\\f\x") == r"b,c|d$e\f\x"


def test_comma_is_or_and_repetition_is_and() -> None:
    q = parse("Patient", ("gender", "male,female"), ("gender", "other"))
    assert [f.values for f in q.filters if isinstance(f, ParamFilter)] == [
        (TokenValue(None, "male"), TokenValue(None, "female")),
        (TokenValue(None, "other"),),
    ]


def test_escaped_comma_stays_in_the_value() -> None:
    assert only("Patient", "family", r"Smith\,Jr").values == (StringValue("smith,jr"),)


def test_empty_values_are_ignored() -> None:
    assert parse("Patient", ("family", ""), ("gender", ",")).filters == ()
    assert only("Patient", "gender", "male,").values == (TokenValue(None, "male"),)
    assert parse("Patient", ("name", "   ")).filters == ()  # folds to nothing


# --- one test per parameter type ----------------------------------------------------------------


def test_string_folds_except_exact() -> None:
    assert only("Patient", "name", "MÜLLER  Anna").values == (StringValue("muller anna"),)
    exact = only("Patient", "name:exact", "Müller")
    assert (exact.modifier, exact.values) == ("exact", (StringValue("Müller"),))
    contains = only("Patient", "family:contains", "ÜLL")
    assert (contains.modifier, contains.values) == ("contains", (StringValue("ull"),))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("abc", TokenValue(None, "abc")),
        ("http://snomed.info/sct|123", TokenValue("http://snomed.info/sct", "123")),
        ("|123", TokenValue("", "123")),
        ("http://loinc.org|", TokenValue("http://loinc.org", None)),
        (r"urn:x|a\|b", TokenValue("urn:x", "a|b")),
    ],
)
def test_token_forms(value: str, expected: TokenValue) -> None:
    assert only("Condition", "code", value).values == (expected,)


def test_token_modifiers() -> None:
    assert only("Condition", "code:not", "1").modifier == "not"
    text = only("Condition", "code:text", "Diabètes")
    assert (text.modifier, text.values) == ("text", (StringValue("diabetes"),))
    of_type = only("Patient", "identifier:of-type", "http://hl7.org/v2-0203|MR|123")
    assert of_type.modifier == "of-type"
    assert of_type.values == (TokenValue("http://hl7.org/v2-0203|MR", "123"),)
    assert only("Patient", "identifier:of-type", "|MR|123").values == (TokenValue("|MR", "123"),)


@pytest.mark.parametrize("prefix", list(Prefix))
def test_date_prefixes(prefix: Prefix) -> None:
    text = "2020-03" if prefix is Prefix.EQ else f"{prefix}2020-03"
    f = only("Patient", "birthdate", text)
    low, high = date_range("2020-03")
    (value,) = f.values
    assert isinstance(value, DateValue)
    assert value.prefix is prefix
    if prefix is Prefix.AP:  # widened by 10% of the distance to now on each side
        slack = int(abs(NOW - (low + high) // 2) * 0.1)
        assert (value.low, value.high) == (low - slack, high + slack)
    else:
        assert (value.low, value.high) == (low, high)


def test_date_precisions() -> None:
    for text in ("2020", "2020-03-04", "2020-03-04T10:00", "2020-03-04T10:00:00+02:00"):
        (value,) = only("Encounter", "date", f"ge{text}").values
        assert value == DateValue(Prefix.GE, *date_range(text))


def test_number_values() -> None:
    p = SearchParam("probability", ParamType.NUMBER, "Observation", "Observation.x")
    f = parse_value(p, "probability", None, "100,ap100,lt1e2", base=None, now=NOW)
    assert isinstance(f, ParamFilter)
    assert f.values == (
        NumberValue(Prefix.EQ, 100.0, 99.5, 100.5),
        NumberValue(Prefix.AP, 100.0, 90.0, 110.0),  # ±10%, wider than the precision
        NumberValue(Prefix.LT, 100.0, 50.0, 150.0),
    )
    with pytest.raises(InvalidSearch, match="probability: 'gtx' is not a number"):
        parse_value(p, "probability", None, "gtx", base=None, now=NOW)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("5.4", QuantityValue(Prefix.EQ, 5.4, 5.35, 5.45)),
        (
            "gt5.4|http://unitsofmeasure.org|mg",
            QuantityValue(Prefix.GT, 5.4, 5.35, 5.45, "http://unitsofmeasure.org", "mg"),
        ),
        ("le5.4||mg", QuantityValue(Prefix.LE, 5.4, 5.35, 5.45, None, "mg")),
    ],
)
def test_quantity_forms(value: str, expected: QuantityValue) -> None:
    assert only("Observation", "value-quantity", value).values == (expected,)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("subject", "Patient/123", ReferenceValue("Patient", "123")),
        ("subject", "Patient/123/_history/4", ReferenceValue("Patient", "123")),
        ("subject", "123", ReferenceValue(None, "123")),
        ("subject:Patient", "123", ReferenceValue("Patient", "123")),
        ("subject:Patient", "Patient/123", ReferenceValue("Patient", "123")),
        ("subject", "http://base.example/fhir/Patient/9", ReferenceValue("Patient", "9")),
        (
            "subject",
            "http://other.example/fhir/Patient/9",
            ReferenceValue(url="http://other.example/fhir/Patient/9"),
        ),
        ("subject", "urn:uuid:1234", ReferenceValue(url="urn:uuid:1234")),
        (
            "subject:identifier",
            "urn:mrn|42",
            ReferenceValue(identifier_system="urn:mrn", identifier_value="42"),
        ),
        ("subject:identifier", "42", ReferenceValue(identifier_value="42")),
        ("subject:identifier", "|42", ReferenceValue(identifier_value="42")),
    ],
)
def test_reference_forms(name: str, value: str, expected: ReferenceValue) -> None:
    f = only("Condition", name, value, base="http://base.example/fhir")
    assert f.values == (expected,)
    assert f.modifier == ("identifier" if name.endswith(":identifier") else None)


def test_uri_values_and_modifiers() -> None:
    url = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"
    assert only("Patient", "_profile", url).values == (UriValue(url),)
    assert only("Patient", "_profile:below", url).modifier == "below"
    assert only("Patient", "_profile:above", url).modifier == "above"


def test_missing_on_every_type() -> None:
    for res_type, code in [
        ("Patient", "name"),
        ("Patient", "gender"),
        ("Patient", "birthdate"),
        ("Observation", "value-quantity"),
        ("Patient", "_profile"),
        ("Condition", "subject"),
    ]:
        q = parse(res_type, (f"{code}:missing", "true"), (f"{code}:missing", "false"))
        assert q.filters == (
            Missing(param(res_type, code), True),
            Missing(param(res_type, code), False),
        )


def test_common_parameters() -> None:
    assert only("Patient", "_id", "a,b").values == (TokenValue(None, "a"), TokenValue(None, "b"))
    assert only("Device", "_lastUpdated", "gt2020").param.type is ParamType.DATE
    assert only("Patient", "_tag", "urn:t|x").values == (TokenValue("urn:t", "x"),)
    assert only("Patient", "_security", "|R").values == (TokenValue("", "R"),)
    assert only("Patient", "_source", "urn:s").values == (UriValue("urn:s"),)


# --- chains and reverse chains ------------------------------------------------------------------


def test_chain_over_several_levels() -> None:
    q = parse("Encounter", ("patient.organization.name", "acme"))
    (chain,) = q.filters
    assert isinstance(chain, Chain)
    assert (chain.param.code, chain.target_type) == ("patient", "Patient")
    assert isinstance(chain.inner, Chain)
    assert (chain.inner.param.code, chain.inner.target_type) == ("organization", "Organization")
    assert chain.inner.inner == ParamFilter(
        param("Organization", "name"), None, (StringValue("acme"),)
    )


def test_chain_with_a_type_and_a_modifier_at_the_end() -> None:
    (chain,) = parse("Condition", ("subject:Patient.name:exact", "Ann")).filters
    assert isinstance(chain, Chain) and chain.target_type == "Patient"
    assert chain.inner == ParamFilter(param("Patient", "name"), "exact", (StringValue("Ann"),))


def test_chain_through_several_targets_keeps_those_with_the_parameter() -> None:
    # Observation.subject: Group, Device, Patient, Location; only Patient and Location have
    # a `name` here (Group and Device are not indexed beyond the common parameters)
    (any_of,) = parse("Observation", ("subject.name", "x")).filters
    assert isinstance(any_of, AnyOf)
    assert [c.target_type for c in any_of.filters if isinstance(c, Chain)] == [
        "Patient",
        "Location",
    ]
    (single,) = parse("Condition", ("subject.name", "x")).filters  # Group, Patient
    assert isinstance(single, Chain) and single.target_type == "Patient"


def test_chain_into_has() -> None:
    q = parse("ImagingStudy", ("patient._has:Condition:patient:code", "http://snomed.info/sct|1"))
    (chain,) = q.filters
    assert isinstance(chain, Chain) and isinstance(chain.inner, Has)
    assert chain.inner.source_type == "Condition"


def test_nested_has() -> None:
    q = parse("Patient", ("_has:Encounter:patient:_has:Condition:encounter:code", "1"))
    (has,) = q.filters
    assert isinstance(has, Has) and has.source_type == "Encounter"
    assert isinstance(has.inner, Has) and has.inner.source_type == "Condition"
    assert has.inner.inner == ParamFilter(
        param("Condition", "code"), None, (TokenValue(None, "1"),)
    )


def test_has_with_a_chain_and_a_modifier_inside() -> None:
    q = parse("Patient", ("_has:Condition:patient:encounter.class", "AMB"))
    (has,) = q.filters
    assert isinstance(has, Has) and isinstance(has.inner, Chain)
    (has,) = parse("Patient", ("_has:Condition:patient:code:text", "diab")).filters
    assert isinstance(has, Has) and isinstance(has.inner, ParamFilter)
    assert has.inner.modifier == "text"


# --- result parameters --------------------------------------------------------------------------


def test_result_parameter_defaults() -> None:
    q = parse("Patient")
    assert (q.count, q.offset, q.sort, q.total, q.summary, q.elements) == (
        DEFAULT_COUNT,
        0,
        (),
        None,
        None,
        None,
    )


def test_sort_keys() -> None:
    q = parse("Patient", ("_sort", "family,-birthdate,_id"))
    assert [(k.param.code, k.descending) for k in q.sort] == [
        ("family", False),
        ("birthdate", True),
        ("_id", False),
    ]


def test_count_and_offset() -> None:
    q = parse("Patient", ("_count", "5"), ("_offset", "10"))
    assert (q.count, q.offset) == (5, 10)
    assert parse("Patient", ("_count", "100000")).count == MAX_COUNT
    assert parse("Patient", ("_count", "0")).count == 0


def test_includes() -> None:
    q = parse(
        "Encounter",
        ("_include", "Encounter:patient"),
        ("_include", "Encounter:participant:Practitioner"),
        ("_include:iterate", "Patient:organization"),
        ("_include", "*"),
        ("_include", "Encounter:*"),
        ("_revinclude", "Condition:encounter"),
        ("_revinclude:iterate", "*"),
    )
    assert q.includes == (
        Include("Encounter", param("Encounter", "patient"), None, False),
        Include("Encounter", param("Encounter", "participant"), "Practitioner", False),
        Include("Patient", param("Patient", "organization"), None, True),
        Include(None, None, None, False),
        Include("Encounter", None, None, False),
    )
    assert q.revincludes == (
        Include("Condition", param("Condition", "encounter"), None, False),
        Include(None, None, None, True),
    )


def test_total_summary_elements() -> None:
    q = parse(
        "Patient",
        ("_total", "accurate"),
        ("_summary", "data"),
        ("_elements", "name,Patient.gender"),
    )
    assert (q.total, q.summary, q.elements) == ("accurate", "data", ("name", "gender"))


def test_unknown_parameters_are_collected_and_left_out_of_the_accepted_items() -> None:
    q = parse(
        "Patient",
        ("gender", "male"),
        ("foo", "1"),
        ("_text", "x"),
        ("organization.nope", "y"),
        ("_has:Condition:patient:nope", "z"),
        ("_sort", "family,nope"),
        ("_format", "json"),
        ("_pretty", "true"),
    )
    assert q.unknown == (
        "foo",
        "_text",
        "organization.nope",
        "_has:Condition:patient:nope",
        "_sort=nope",
    )
    assert q.accepted == (("gender", "male"), ("_sort", "family"))


def test_types_without_indexed_parameters_know_the_common_ones() -> None:
    q = parse("Device", ("_id", "x"), ("type", "y"))
    assert q.unknown == ("type",)
    assert len(q.filters) == 1


# --- every error path ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("res_type", "items", "message"),
    [
        ("Nope", [], "'Nope' is not a FHIR R4 resource type"),
        ("Patient", [("birthdate", "1980-13")], "birthdate: '1980-13' is not a date"),
        ("Patient", [("birthdate", "xx1980")], "birthdate: 'xx' in 'xx1980' is not a prefix"),
        ("Patient", [("birthdate", "gt")], "birthdate: 'gt' is not a date"),
        ("Patient", [("name:text", "x")], "name:text: ':text' is not a modifier of string"),
        ("Patient", [("gender:exact", "x")], "gender:exact: ':exact' is not a modifier of token"),
        ("Patient", [("birthdate:above", "2000")], "':above' is not a modifier of date"),
        ("Condition", [("subject:below", "x")], "':below' is not a modifier of reference"),
        (
            "Condition",
            [("subject:Medication", "x")],
            "subject refers to Group, Patient, not Medication",
        ),
        ("Patient", [("name:", "x")], "name:: empty modifier"),
        ("Patient", [("name:missing", "yes")], ":missing takes true or false, not 'yes'"),
        ("Patient", [("gender", "|")], "gender: '|' is not code, system|code"),
        ("Patient", [("gender", "a|b|c")], "gender: 'a|b|c' is not code"),
        ("Patient", [("identifier:of-type", "sys|MR")], "is not type-system|type-code|value"),
        ("Patient", [("identifier:of-type", "sys||1")], "is not type-system|type-code|value"),
        ("Observation", [("value-quantity", "5|mg")], "is not number, number|system|code"),
        ("Observation", [("value-quantity", "5x")], "'5x' is not a number"),
        (
            "Condition",
            [("subject", "Medication/1")],
            "subject refers to Group, Patient, not Medication",
        ),
        ("Condition", [("subject:Patient", "Group/1")], "'Group/1' is not a Patient"),
        ("Condition", [("subject:identifier", "a|b|c")], "is not system|value or value"),
        ("Patient", [("gender.name", "x")], "cannot chain through gender, a token parameter"),
        ("Patient", [("organization.", "x")], "nothing after the '.' of the chain"),
        ("Condition", [("subject:Nope.name", "x")], "':Nope' is not a resource type to chain"),
        (
            "Condition",
            [("subject:Medication.code", "x")],
            "subject refers to Group, Patient, not Medication",
        ),
        (
            "Patient",
            [("_has:Condition:patient", "x")],
            "write _has:Type:reference-parameter:parameter",
        ),
        ("Patient", [("_has", "x")], "write _has:Type"),
        ("Patient", [("_has:Nope:patient:code", "x")], "'Nope' is not a resource type"),
        (
            "Patient",
            [("_has:Condition:code:code", "x")],
            "Condition.code is not a reference parameter",
        ),
        (
            "Patient",
            [("_has:Condition:encounter:code", "x")],
            "Condition.encounter does not refer to Patient",
        ),
        ("Patient", [("_sort", "-")], "_sort: empty key"),
        ("Patient", [("_sort", "organization.name")], "sorting by chained or modified parameters"),
        ("Patient", [("_count", "-1")], "_count: '-1' is not a whole number"),
        ("Patient", [("_offset", "x")], "_offset: 'x' is not a whole number"),
        (
            "Patient",
            [("_include:deep", "Patient:organization")],
            "_include:deep: ':deep' is not :iterate",
        ),
        ("Patient", [("_include", "organization")], "is not Type:parameter"),
        ("Patient", [("_include", "Nope:organization")], "'Nope' is not a resource type"),
        ("Patient", [("_include", "Patient:organization:Nope")], "'Nope' is not a resource type"),
        ("Patient", [("_include", "Patient:name")], "Patient has no reference parameter 'name'"),
        (
            "Patient",
            [("_include", "Patient:organization:Patient")],
            "Patient.organization does not refer to Patient",
        ),
        (
            "Patient",
            [("_revinclude", "Condition:encounter")],
            "Condition.encounter does not refer to Patient",
        ),
        ("Patient", [("_total", "some")], "_total: 'some' is not one of"),
        ("Patient", [("_summary", "yes")], "_summary: 'yes' is not one of"),
        ("Patient", [("_elements", "name,,gender")], "_elements: '' is not a top-level element"),
        ("Patient", [("_elements", "name.family")], "'name.family' is not a top-level element"),
    ],
)
def test_refused(res_type: str, items: list[tuple[str, str]], message: str) -> None:
    assert message in refused(res_type, *items)


def test_chain_without_targets_needs_a_type() -> None:
    p = SearchParam("thing", ParamType.REFERENCE, "Basic", "Basic.x")  # no targets declared
    assert parse_value(p, "thing", "Patient", "1", base=None, now=NOW) == ParamFilter(
        p, None, (ReferenceValue("Patient", "1"),)
    )


def test_composite_and_special_parameters_are_unsupported() -> None:
    p = SearchParam("near", ParamType.SPECIAL, "Location", "Location.position")
    with pytest.raises(InvalidSearch, match="special parameters are not supported"):
        parse_value(p, "near", None, "1", base=None, now=NOW)
