"""FHIR search over HTTP, on both engines: each parameter type, prefix and modifier; chains,
reverse chains, _include / _revinclude. The population is tests/fhir/search_support.py's;
each expectation below is worked out by hand from it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select

from dicomhub.context import RequestContext
from dicomhub.fhir.search.normalize import number_range
from dicomhub.fhir.search.parameters import ParamType, SearchParam
from dicomhub.fhir.search.rows import IndexRows, NumberRow
from dicomhub.fhir.search.values import parse_value
from dicomhub.storage.fhir import search_sql
from dicomhub.storage.fhir.resources import NewVersion, write_versions
from dicomhub.storage.schema import fhir_resource
from tests.fhir.search_support import US_CORE_PATIENT, Env, ids_of, population_server


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with population_server(str(request.param), tmp_path_factory) as found:
        yield found


# --- string ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("Patient?name=mul", {"p1"}),  # accents and case folded, starts-with
        ("Patient?name=MÜLLER", {"p1"}),
        ("Patient?family=smith", {"p2", "p3"}),
        ("Patient?given=ann", {"p1", "p3"}),
        ("Patient?name=ng", {"p4"}),  # HumanName.text
        ("Patient?name=ull", set()),  # not a prefix
        ("Patient?family:exact=Smith", {"p2"}),
        ("Patient?family:exact=smith", set()),
        ("Patient?family:exact=Müller", {"p1"}),
        ("Patient?name:contains=THS", {"p3"}),
        ("Patient?name:contains=ll", {"p1"}),
        ("Patient?family:missing=true", {"p4"}),
        ("Patient?family:missing=false", {"p1", "p2", "p3"}),
        ("Patient?name=smith,ng", {"p2", "p3", "p4"}),  # OR
        ("Patient?name=smith&given=john", {"p2"}),  # AND
        ("Organization?name=acme", {"org1"}),
        ("Patient?family=50%", set()),  # LIKE specials stay literal
        ("Patient?name:contains=_", set()),
    ],
)
def test_string(env: Env, url: str, expected: set[str]) -> None:
    assert env.ids(url) == expected


# --- token ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("Patient?gender=female", {"p1"}),
        ("Patient?gender=male,other", {"p2", "p3"}),
        ("Patient?gender:not=female", {"p2", "p3", "p4"}),  # p4 has no gender: not female
        ("Patient?gender:not=female,male", {"p3", "p4"}),
        ("Patient?gender:missing=true", {"p4"}),
        ("Patient?active=true", {"p1"}),
        ("Patient?active=false", {"p3"}),
        ("Condition?code=44054006", {"c1", "c3"}),
        ("Condition?code=http://snomed.info/sct|44054006", {"c1", "c3"}),
        ("Condition?code=http://snomed.info/sct|", {"c1", "c2", "c3"}),
        ("Condition?code=|44054006", set()),  # these codings have a system
        ("Condition?clinical-status=|active", {"c1", "c3"}),  # this one has none
        ("Condition?code=http://loinc.org|44054006", set()),
        ("Condition?code:not=44054006", {"c2", "c4"}),
        ("Condition?code:text=diab", {"c1"}),  # CodeableConcept.text
        ("Condition?code:text=HYPER", {"c2"}),  # Coding.display
        ("Patient?identifier=urn:mrn|MR-1", {"p1"}),
        ("Patient?identifier=MR-2", {"p2"}),
        ("Patient?identifier=urn:ssn|", {"p1"}),
        (
            "Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|MR-2",
            {"p2"},
        ),
        ("Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|SS|MR-2", set()),
        ("Patient?identifier:of-type=urn:other|MR|MR-2", set()),
        ("Patient?_id=p1,p3", {"p1", "p3"}),
        ("Patient?_id:not=p1", {"p2", "p3", "p4"}),
        ("Patient?_tag=urn:tags|vip", {"p1"}),
        ("Patient?_tag:missing=false", {"p1"}),
        ("Patient?_security:missing=true", {"p1", "p2", "p3", "p4"}),
        ("Encounter?class=http://terminology.hl7.org/CodeSystem/v3-ActCode|AMB", {"e1"}),
        ("ImagingStudy?identifier=urn:dicom:uid|urn:oid:1.2.3", {"s1"}),
        ("Patient?email=anna@example.org", {"p1"}),
    ],
)
def test_token(env: Env, url: str, expected: set[str]) -> None:
    assert env.ids(url) == expected


# --- date: R4 3.1.1.4.2's prefix table, against day, month and year precision, and Periods -------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        # p1 1975-03-15, p2 1980, p3 1965-07, p4 none
        ("Patient?birthdate=1975", {"p1"}),  # the search range contains the target's
        ("Patient?birthdate=eq1975-03-15", {"p1"}),
        ("Patient?birthdate=1980", {"p2"}),
        ("Patient?birthdate=1980-06", set()),  # June does not contain the whole of 1980
        ("Patient?birthdate=ne1980", {"p1", "p3"}),
        ("Patient?birthdate=gt1975-03-15", {"p2"}),
        ("Patient?birthdate=gt1980", set()),
        ("Patient?birthdate=gt1980-06", {"p2"}),  # 1980 reaches beyond June
        ("Patient?birthdate=lt1975-03-15", {"p3"}),
        ("Patient?birthdate=ge1975-03-15", {"p1", "p2"}),
        ("Patient?birthdate=le1975-03-15", {"p1", "p3"}),
        ("Patient?birthdate=le1980-06", {"p1", "p2", "p3"}),  # 1980 starts before
        ("Patient?birthdate=sa1970", {"p1", "p2"}),
        ("Patient?birthdate=sa1980-06", set()),
        ("Patient?birthdate=eb1970", {"p3"}),
        ("Patient?birthdate=ap1975-03-10", {"p1", "p2"}),  # ±10% of ~50 years
        ("Patient?birthdate=ge1965&birthdate=lt1976", {"p1", "p3"}),
        ("Patient?birthdate=1965-07,1980", {"p2", "p3"}),
        ("Patient?birthdate:missing=true", {"p4"}),
        # e1 2021-01-01T09:00Z..10:00Z, e2 2015-04-30..2015-05-02
        ("Encounter?date=2021-01-01", {"e1"}),
        ("Encounter?date=2021-01-01T09:30:00Z", set()),  # an instant cannot contain an hour
        ("Encounter?date=ap2021-01-01T09:30:00Z", {"e1"}),
        ("Encounter?date=ge2015-05-01", {"e1", "e2"}),  # e2 goes on after that day
        ("Encounter?date=lt2015-05-01", {"e2"}),  # e2 starts before it
        ("Encounter?date=eb2015-05-01", set()),
        ("Encounter?date=sa2015-05-02", {"e1"}),
        ("Encounter?date=2015", {"e2"}),
        # c1 2010-01-01T10:00Z, c2 2015-05-01..2016-05-01, c3 2020, c4 none
        ("Condition?onset-date=2010", {"c1"}),
        ("Condition?onset-date=ge2016", {"c3"}),
        ("Condition?onset-date=lt2011", {"c1"}),
        ("Condition?onset-date=gt2016-01-01", {"c2", "c3"}),
        ("Condition?onset-date=2010-01-01T11:00:00%2B01:00", {"c1"}),  # same instant, +01:00
        ("Patient?_lastUpdated=gt2000", {"p1", "p2", "p3", "p4"}),
        ("Patient?_lastUpdated=lt2000", set()),
    ],
)
def test_date(env: Env, url: str, expected: set[str]) -> None:
    assert env.ids(url.replace("%2B", "+")) == expected


# --- number (no R4 parameter of the indexed types is a number: a custom one, through the SQL) -----

NUMBERS = {
    "n1": "99.4",
    "n2": "99.5",
    "n3": "100",
    "n4": "100.4",
    "n5": "100.5",
    "n6": "150",
    "n7": "80",
}


@pytest.fixture(scope="module")
def numbers(env: Env) -> SearchParam:
    """Basic resources with rows of a custom number parameter `n`."""
    now = RequestContext().now()
    versions = [
        NewVersion(
            "Basic",
            res_id,
            1,
            now,
            "PUT",
            b'{"resourceType":"Basic","id":"' + res_id.encode() + b'"}',
            IndexRows(numbers=[NumberRow("n", *number_range(text))]),
        )
        for res_id, text in NUMBERS.items()
    ]
    env.services.db.write(lambda conn: write_versions(conn, versions))
    return SearchParam("n", ParamType.NUMBER, "Basic", "Basic.n")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("100", {"n2", "n3", "n4"}),  # [99.5, 100.5)
        ("eq100", {"n2", "n3", "n4"}),
        ("ne100", {"n1", "n5", "n6", "n7"}),
        ("gt100", {"n4", "n5", "n6"}),  # exactly 100, precision aside
        ("lt100", {"n1", "n2", "n7"}),
        ("ge100", {"n3", "n4", "n5", "n6"}),
        ("le100", {"n1", "n2", "n3", "n7"}),
        ("sa100", {"n6"}),  # the target's own range (149.5..150.5) starts after 100.5
        ("eb100", {"n1", "n7"}),
        ("ap100", {"n1", "n2", "n3", "n4", "n5"}),  # 90..110
        ("100.0", {"n3"}),  # [99.95, 100.05)
        ("80,150", {"n6", "n7"}),
    ],
)
def test_number(env: Env, numbers: SearchParam, value: str, expected: set[str]) -> None:
    f = parse_value(numbers, "n", None, value, base=None, now=0)
    assert f is not None
    with env.services.db.read() as conn:
        pks = search_sql.match(conn, "Basic", [f], 100)
        found = conn.execute(
            select(fhir_resource.c.res_id).where(fhir_resource.c.resource_pk.in_(pks))
        ).scalars()
        assert set(found) == expected


# --- quantity -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        # o1 72 /min, o2 5.4 mg, o3 100 kg, o4 80.5 "kilogram" (no code)
        ("Observation?value-quantity=72", {"o1"}),
        ("Observation?value-quantity=5.4|http://unitsofmeasure.org|mg", {"o2"}),
        ("Observation?value-quantity=5.4||mg", {"o2"}),
        ("Observation?value-quantity=5.4|urn:other|mg", set()),
        ("Observation?value-quantity=80.5||kilogram", {"o4"}),  # the unit when no code
        ("Observation?value-quantity=gt50", {"o1", "o3", "o4"}),
        ("Observation?value-quantity=lt100|http://unitsofmeasure.org|kg", set()),
        ("Observation?value-quantity=le100|http://unitsofmeasure.org|kg", {"o3"}),
        ("Observation?value-quantity=ap75", {"o1", "o4"}),
        ("Observation?value-quantity=ne72", {"o2", "o3", "o4"}),
        ("Observation?value-quantity=sa80", {"o3"}),
        ("Observation?value-quantity=eb10", {"o2"}),
        ("Observation?value-quantity=ge80.5", {"o3", "o4"}),
        ("Observation?value-quantity:missing=true", set()),
    ],
)
def test_quantity(env: Env, url: str, expected: set[str]) -> None:
    assert env.ids(url) == expected


# --- reference ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("Condition?subject=Patient/p1", {"c1", "c4"}),
        ("Condition?subject=p1", {"c1", "c4"}),
        ("Condition?patient=p2", {"c2"}),
        ("Condition?subject:Patient=p3", {"c3"}),
        ("Condition?subject=Patient/p1/_history/1", {"c1", "c4"}),
        ("Condition?subject=http://other.example/fhir/Patient/p1", set()),
        ("Condition?subject=Patient/p1,Patient/p2", {"c1", "c2", "c4"}),
        ("Condition?encounter:missing=true", {"c1", "c3", "c4"}),
        ("Condition?encounter:missing=false", {"c2"}),
        ("DiagnosticReport?performer:identifier=urn:npi|42", {"r2"}),
        ("DiagnosticReport?performer:identifier=42", {"r2"}),
        ("DiagnosticReport?performer:identifier=urn:other|42", set()),
        ("Encounter?participant=Practitioner/doc1", {"e1"}),
        ("Patient?general-practitioner:Practitioner=doc1", {"p2"}),
        # DiagnosticReport `study` (DiagnosticReport.imagingStudy): an extra, as in R5
        ("DiagnosticReport?study=ImagingStudy/s1", {"r1"}),
        ("DiagnosticReport?study=s2", {"r2"}),
    ],
)
def test_reference(env: Env, url: str, expected: set[str]) -> None:
    assert env.ids(url) == expected


def test_reference_by_this_servers_absolute_url(env: Env) -> None:
    assert env.ids(f"Condition?subject={env.base}/Patient/p1") == {"c1", "c4"}


# --- uri ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"Patient?_profile={US_CORE_PATIENT}", {"p1"}),
        ("Patient?_profile=http://hl7.org/fhir/us/core", set()),
        ("Patient?_profile:below=http://hl7.org/fhir/us/core", {"p1"}),
        ("Patient?_profile:below=http://hl7.org/fhir/us/corex", set()),
        (f"Patient?_profile:above={US_CORE_PATIENT}/_history/3", {"p1"}),
        ("Patient?_profile:above=http://hl7.org/fhir/us/core", set()),
        ("Patient?_source=urn:source:lab", {"p2"}),
        ("Procedure?instantiates-uri:below=http://example.org/protocols", {"pr1"}),
        ("Procedure?instantiates-uri=http://example.org/protocols/knee/v2", {"pr1"}),
        ("Patient?_profile:missing=true", {"p2", "p3", "p4"}),
    ],
)
def test_uri(env: Env, url: str, expected: set[str]) -> None:
    assert env.ids(url) == expected


# --- chains ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("Condition?patient.birthdate=lt1970", {"c3"}),
        ("Condition?patient.gender=female", {"c1", "c4"}),
        ("Condition?subject:Patient.name=smith", {"c2", "c3"}),
        ("Condition?subject.name=smith", {"c2", "c3"}),
        ("Condition?patient._id=p2", {"c2"}),
        ("Condition?patient.gender:missing=true", set()),
        ("Condition?patient.identifier=urn:mrn|MR-1", {"c1", "c4"}),
        # two levels
        ("Condition?patient.organization.name=acme", {"c1", "c4"}),
        ("Encounter?subject:Patient.organization.name=beta", {"e2"}),
        # three levels: DiagnosticReport → ImagingStudy → Patient → Organization
        ("DiagnosticReport?study.patient.organization.name=acme", {"r1"}),
        ("DiagnosticReport?study.patient.organization.name=beta", {"r2"}),
        ("Condition?patient.birthdate=lt1970&patient.gender=female", set()),
        ("Condition?patient.birthdate=lt1970,gt1979", {"c2", "c3"}),
    ],
)
def test_chain(env: Env, url: str, expected: set[str]) -> None:
    assert env.ids(url) == expected


# --- reverse chains -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("Patient?_has:Condition:patient:code=44054006", {"p1", "p3"}),
        ("Patient?_has:Condition:subject:code=38341003", {"p2"}),
        ("Patient?_has:Condition:patient:code:not=44054006", {"p1", "p2"}),  # p1 has c4
        ("Patient?_has:Observation:patient:value-quantity=gt90", {"p3"}),
        # nested: patients with an encounter that a hypertension condition names
        ("Patient?_has:Encounter:patient:_has:Condition:encounter:code=38341003", {"p2"}),
        ("Organization?_has:Patient:organization:_has:Condition:patient:code=38341003", {"org2"}),
        # a chain into a reverse chain, and a reverse chain holding a chain
        ("ImagingStudy?patient._has:Condition:patient:code=44054006", {"s1", "s3"}),
        ("Patient?_has:Condition:patient:encounter.class=IMP", {"p2"}),
        ("Patient?_has:Condition:patient:code=44054006&gender=other", {"p3"}),
    ],
)
def test_has(env: Env, url: str, expected: set[str]) -> None:
    assert env.ids(url) == expected


# --- _include / _revinclude -----------------------------------------------------------------------


def test_include(env: Env) -> None:
    bundle = env.bundle("Condition?code=38341003&_include=Condition:patient")
    assert ids_of(bundle) == ["Condition/c2"]
    assert ids_of(bundle, "include") == ["Patient/p2"]
    # a target type narrows what is followed
    assert env.ids("Encounter?_id=e1&_include=Encounter:participant:Practitioner", "include") == {
        "doc1"
    }
    assert (
        env.ids("Encounter?_id=e1&_include=Encounter:participant:RelatedPerson", "include") == set()
    )


def test_include_iterate(env: Env) -> None:
    url = (
        "Condition?_id=c2&_include=Condition:encounter&_include:iterate=Encounter:service-provider"
    )
    assert env.ids(url, "include") == {"e2", "org2"}
    # without :iterate, the second include has nothing to start from
    url = "Condition?_id=c2&_include=Condition:encounter&_include=Encounter:service-provider"
    assert env.ids(url, "include") == {"e2"}


def test_include_wildcards(env: Env) -> None:
    # every reference c2 makes: subject and patient (p2), encounter (e2)
    assert env.ids("Condition?_id=c2&_include=*", "include") == {"p2", "e2"}
    assert env.ids("Condition?_id=c2&_include=Condition:*", "include") == {"p2", "e2"}
    assert env.ids("Condition?_id=c2&_include=Encounter:*", "include") == set()
    assert env.ids("Patient?_id=p2&_revinclude=*", "include") == {"c2", "e2", "o2", "s2", "r2"}


def test_revinclude(env: Env) -> None:
    bundle = env.bundle("Patient?_id=p1&_revinclude=Condition:patient")
    assert ids_of(bundle) == ["Patient/p1"]
    assert set(ids_of(bundle, "include")) == {"Condition/c1", "Condition/c4"}
    url = (
        "Patient?_id=p1&_revinclude=ImagingStudy:patient&_revinclude:iterate=DiagnosticReport:study"
    )
    assert env.ids(url, "include") == {"s1", "s3", "r1"}
    # a match is never repeated as an include
    url = "Patient?_id=p1,p2&_include:iterate=*&_revinclude:iterate=*"
    bundle = env.bundle(url)
    assert len(set(ids_of(bundle))) == 2
    assert not set(ids_of(bundle)) & set(ids_of(bundle, "include"))
    assert len(ids_of(bundle, "include")) == len(set(ids_of(bundle, "include")))


def test_the_study_extra_with_includes(env: Env) -> None:
    assert env.ids("DiagnosticReport?_id=r1&_include=DiagnosticReport:study", "include") == {"s1"}
    assert env.ids("ImagingStudy?_id=s2&_revinclude=DiagnosticReport:study", "include") == {"r2"}
