"""fhirpy, a third-party FHIR client, against the live server: interoperability, not just our HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pytest
import requests
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import MultipleResourcesFound, OperationOutcome, ResourceNotFound
from fhirpy.lib import SyncFHIRResource

from tests.conftest import LiveServer

MRN = "http://hospital.example.org/mrn"
SNOMED = "http://snomed.info/sct"
ASTHMA = "195967001"
DIABETES = "44054006"


@dataclass
class Fhir:
    """A fhirpy client on the live server, with the (method, path, status) of each exchange."""

    base: str
    calls: list[tuple[str, str, int]] = field(default_factory=list)

    def client(self, **headers: str) -> SyncFHIRClient:
        return SyncFHIRClient(
            self.base,
            extra_headers=headers or None,
            requests_config={"timeout": 60, "hooks": {"response": [self._record]}},
        )

    def _record(self, r: requests.Response, *args: Any, **kwargs: Any) -> None:
        path = r.url.removeprefix(self.base)
        self.calls.append((r.request.method or "", path, r.status_code))

    @property
    def last(self) -> tuple[str, int]:
        method, _, status = self.calls[-1]
        return method, status


@pytest.fixture
def fhir(live_server: LiveServer) -> Fhir:
    return Fhir(f"{live_server.url}/fhir")


@pytest.fixture
def client(fhir: Fhir) -> Iterator[SyncFHIRClient]:
    yield fhir.client()


def _patient(
    client: SyncFHIRClient,
    family: str,
    given: str = "Peter",
    birth: str = "1974-12-25",
    *,
    mrn: str | None = None,
    gender: str = "male",
) -> SyncFHIRResource:
    body: dict[str, Any] = {
        "name": [{"family": family, "given": [given]}],
        "gender": gender,
        "birthDate": birth,
    }
    if mrn is not None:
        body["identifier"] = [{"system": MRN, "value": mrn}]
    return client.resource("Patient", **body)


def _condition(client: SyncFHIRClient, subject: SyncFHIRResource, code: str) -> SyncFHIRResource:
    condition = client.resource(
        "Condition",
        subject=subject.to_reference(),
        code={"coding": [{"system": SNOMED, "code": code}]},
    )
    condition.save()
    return condition


def _ids(resources: list[SyncFHIRResource]) -> list[str]:
    return [str(r.id) for r in resources]


def _outcome_code(exc: Exception) -> str:
    """The issue code of the OperationOutcome fhirpy put in the exception's message."""
    return str(json.loads(str(exc))["issue"][0]["code"])


# --- CRUD ------------------------------------------------------------------------------------


def test_create_then_read_three_ways(fhir: Fhir, client: SyncFHIRClient) -> None:
    p = _patient(client, "Chalmers", mrn="12345")
    p.save()
    assert fhir.last == ("POST", 201)
    assert p.id
    assert p["meta"]["versionId"] == "1"
    assert p["meta"]["lastUpdated"]
    assert p["name"] == [{"family": "Chalmers", "given": ["Peter"]}]

    by_reference = client.reference("Patient", p.id).to_resource()
    assert fhir.last == ("GET", 200)
    by_search = client.resources("Patient").search(_id=p.id).get()
    assert fhir.last == ("GET", 200)
    by_get = client.get("Patient", p.id)
    for read in (by_reference, by_search, by_get):
        assert read["id"] == p.id
        assert read["meta"]["versionId"] == "1"
        assert read["identifier"] == [{"system": MRN, "value": "12345"}]
        assert read["birthDate"] == "1974-12-25"
    assert dict(by_reference) == dict(p)


def test_update_makes_version_two_and_keeps_version_one(fhir: Fhir, client: SyncFHIRClient) -> None:
    p = _patient(client, "Chalmers")
    p.save()
    first_id = p.id
    p["gender"] = "female"
    p["name"][0]["given"] = ["Petra"]
    p.save()
    assert fhir.last == ("PUT", 200)
    assert p.id == first_id
    assert p["meta"]["versionId"] == "2"

    current = client.reference("Patient", p.id).to_resource()
    assert current["meta"]["versionId"] == "2"
    assert current["gender"] == "female"
    assert current["name"][0]["given"] == ["Petra"]
    old = client.reference("Patient", p.id).execute("_history/1", method="get")
    assert old["meta"]["versionId"] == "1"
    assert old["gender"] == "male"
    assert old["name"][0]["given"] == ["Peter"]


def test_delete_then_read_is_410(fhir: Fhir, client: SyncFHIRClient) -> None:
    p = _patient(client, "Chalmers")
    p.save()
    res_id = p.id
    assert client.delete(p) is None  # 204: no body
    assert fhir.last == ("DELETE", 204)

    with pytest.raises(ResourceNotFound) as gone:
        client.reference("Patient", res_id).to_resource()
    assert fhir.last == ("GET", 410)
    assert _outcome_code(gone.value) == "deleted"
    with pytest.raises(ResourceNotFound):
        client.get("Patient", res_id)
    assert fhir.last == ("GET", 410)
    # A search no longer finds it (an empty searchset, not an error).
    with pytest.raises(ResourceNotFound, match="No resources found"):
        client.resources("Patient").search(_id=res_id).get()
    assert fhir.last == ("GET", 200)
    # Never there at all: 404, which fhirpy reports the same way.
    with pytest.raises(ResourceNotFound) as unknown:
        client.get("Patient", "never-there")
    assert fhir.last == ("GET", 404)
    assert _outcome_code(unknown.value) == "not-found"


def test_invalid_resource_raises_operation_outcome_422(fhir: Fhir, client: SyncFHIRClient) -> None:
    bad = _patient(client, "Chalmers", birth="not-a-date")
    with pytest.raises(OperationOutcome) as raised:
        bad.save()
    assert fhir.last == ("POST", 422)
    outcome = raised.value.resource
    assert outcome["resourceType"] == "OperationOutcome"
    issue = outcome["issue"][0]
    assert issue["severity"] in ("error", "fatal")
    assert "Patient.birthDate" in issue.get("expression", [])
    assert bad.id is None
    assert client.resources("Patient").count() == 0


# --- conditional create ----------------------------------------------------------------------


def test_conditional_create_with_if_none_exist(fhir: Fhir, client: SyncFHIRClient) -> None:
    """fhirpy has no If-None-Exist API of its own; a client with that header does it (R4 3.1.0.8)."""
    conditional = fhir.client(**{"If-None-Exist": f"identifier={MRN}|777"})
    first = _patient(conditional, "First", mrn="777")
    first.save()
    assert fhir.last == ("POST", 201)
    assert first["meta"]["versionId"] == "1"

    second = _patient(conditional, "Second", mrn="777")
    second.save()
    assert fhir.last == ("POST", 200)
    # The existing resource comes back, untouched.
    assert second.id == first.id
    assert second["meta"]["versionId"] == "1"
    assert second["name"][0]["family"] == "First"

    matches = client.resources("Patient").search(identifier=f"{MRN}|777").fetch_all()
    assert _ids(matches) == [first.id]
    assert client.resources("Patient").count() == 1


def test_conditional_create_with_two_matches_is_412(fhir: Fhir, client: SyncFHIRClient) -> None:
    _patient(client, "Twin", mrn="888").save()
    _patient(client, "Twin", mrn="888").save()
    conditional = fhir.client(**{"If-None-Exist": f"identifier={MRN}|888"})
    with pytest.raises(MultipleResourcesFound):
        _patient(conditional, "Third", mrn="888").save()
    assert fhir.last == ("POST", 412)
    assert client.resources("Patient").search(identifier=f"{MRN}|888").count() == 2


def test_get_or_create_with_the_condition_in_the_url(fhir: Fhir, client: SyncFHIRClient) -> None:
    """fhirpy's get_or_create posts to `Patient?identifier=..`: the query is the condition."""
    patients = client.resources("Patient").search(identifier=f"{MRN}|555")
    first, created = patients.get_or_create(_patient(client, "Once", mrn="555"))
    assert created is True
    assert fhir.last == ("POST", 201)
    again, created = patients.get_or_create(_patient(client, "Twice", mrn="555"))
    assert fhir.last == ("POST", 200)
    assert created is False
    assert again.id == first.id
    assert again["name"][0]["family"] == "Once"
    assert client.resources("Patient").search(identifier=f"{MRN}|555").count() == 1


# --- search ----------------------------------------------------------------------------------


def test_search_string_is_a_case_insensitive_prefix(client: SyncFHIRClient) -> None:
    zebedee = _patient(client, "Zebedee")
    zebulon = _patient(client, "Zebulon", given="Anna")
    other = _patient(client, "Anzeb", given="Zed")
    for p in (zebedee, zebulon, other):
        p.save()
    patients = client.resources("Patient")
    assert set(_ids(patients.search(name="zeb").fetch())) == {zebedee.id, zebulon.id}
    assert set(_ids(patients.search(family="Zebu").fetch())) == {zebulon.id}
    assert set(_ids(patients.search(name="ann").fetch())) == {zebulon.id}
    assert _ids(patients.search(name__exact="Zebedee").fetch()) == [zebedee.id]
    assert patients.search(name__exact="zebedee").fetch() == []
    assert patients.search(name="ebedee").fetch() == []


def test_search_token_identifier(client: SyncFHIRClient) -> None:
    a = _patient(client, "A", mrn="1001")
    b = _patient(client, "B", mrn="1002")
    c = client.resource(
        "Patient", name=[{"family": "C"}], identifier=[{"system": "urn:other", "value": "1001"}]
    )
    for p in (a, b, c):
        p.save()
    patients = client.resources("Patient")
    assert _ids(patients.search(identifier=f"{MRN}|1001").fetch()) == [a.id]
    assert set(_ids(patients.search(identifier="1001").fetch())) == {a.id, c.id}
    assert set(_ids(patients.search(identifier=f"{MRN}|").fetch())) == {a.id, b.id}
    assert set(_ids(patients.search(identifier=f"{MRN}|1001,urn:other|1001").fetch())) == {
        a.id,
        c.id,
    }
    assert patients.search(identifier=f"{MRN}|9999").fetch() == []


def test_search_date_with_prefixes(client: SyncFHIRClient) -> None:
    born = {
        "1950": _patient(client, "Old", birth="1950-06-01"),
        "1980": _patient(client, "Mid", birth="1980-01-01"),
        "1990": _patient(client, "Young", birth="1990-12-31"),
        "2010": _patient(client, "Child", birth="2010-03-15"),
    }
    for p in born.values():
        p.save()
    patients = client.resources("Patient")

    def years(**params: Any) -> set[str]:
        found = set(_ids(patients.search(**params).fetch()))
        return {year for year, p in born.items() if p.id in found}

    assert years(birthdate__ge="1980-01-01") == {"1980", "1990", "2010"}
    assert years(birthdate__gt="1980-01-01") == {"1990", "2010"}
    assert years(birthdate__lt="1980-01-01") == {"1950"}
    assert years(birthdate__le=date(1980, 1, 1)) == {"1950", "1980"}
    assert years(birthdate="1990") == {"1990"}
    assert years(birthdate="1990-12") == {"1990"}
    assert years(birthdate__ne="1990-12-31") == {"1950", "1980", "2010"}
    assert years(birthdate=["ge1970", "lt2000"]) == {"1980", "1990"}


def test_paging_with_limit_and_fetch_all(fhir: Fhir, client: SyncFHIRClient) -> None:
    made = []
    for i in range(25):
        p = _patient(client, f"Page{i:02d}", birth=f"{1950 + i}-01-01")
        p.save()
        made.append(p.id)
    search = client.resources("Patient").search(family="Page").limit(10)
    assert len(search.fetch()) == 10
    fhir.calls.clear()
    everyone = _ids(search.fetch_all())
    assert len(everyone) == 25
    assert len(set(everyone)) == 25
    assert set(everyone) == set(made)
    # Three pages of 10, 10 and 5, each a successful GET.
    assert [(m, s) for m, _, s in fhir.calls] == [("GET", 200)] * 3
    # Paging with a sort keeps the order across pages.
    ordered = _ids(client.resources("Patient").sort("birthdate").limit(7).fetch_all())
    assert ordered == made


def test_sort(client: SyncFHIRClient) -> None:
    a = _patient(client, "Alpha", birth="1990-01-01")
    b = _patient(client, "Bravo", birth="1970-01-01")
    c = _patient(client, "Charlie", birth="2000-01-01")
    d = _patient(client, "Alpha", given="Zoe", birth="1980-01-01")
    for p in (a, b, c, d):
        p.save()
    patients = client.resources("Patient")
    assert _ids(patients.sort("-birthdate").fetch()) == [c.id, a.id, d.id, b.id]
    assert _ids(patients.sort("birthdate").fetch()) == [b.id, d.id, a.id, c.id]
    assert _ids(patients.sort("family", "-birthdate").fetch()) == [a.id, d.id, b.id, c.id]


def test_include_and_revinclude(client: SyncFHIRClient) -> None:
    ann = _patient(client, "Ann")
    bob = _patient(client, "Bob")
    ann.save()
    bob.save()
    asthma = _condition(client, ann, ASTHMA)
    diabetes = _condition(client, ann, DIABETES)

    bundle = client.resources("Condition").search(code=ASTHMA).include("Condition", "subject")
    raw = bundle.fetch_raw()
    modes = {(e.resource.reference, e.search.mode) for e in raw.entry}
    assert modes == {(asthma.reference, "match"), (ann.reference, "include")}
    # fetch() keeps only the searched type.
    assert _ids(bundle.fetch()) == [asthma.id]

    rev = client.resources("Patient").search(name="Ann,Bob").revinclude("Condition", "subject")
    entries = rev.fetch_raw().entry
    assert {(e.resource.reference, e.search.mode) for e in entries} == {
        (ann.reference, "match"),
        (bob.reference, "match"),
        (asthma.reference, "include"),
        (diabetes.reference, "include"),
    }
    assert set(_ids(rev.fetch())) == {ann.id, bob.id}


def test_chained_search(client: SyncFHIRClient) -> None:
    ann = _patient(client, "Ann")
    bob = _patient(client, "Bob", birth="2001-05-05")
    ann.save()
    bob.save()
    ann_asthma = _condition(client, ann, ASTHMA)
    bob_asthma = _condition(client, bob, ASTHMA)
    bob_diabetes = _condition(client, bob, DIABETES)

    conditions = client.resources("Condition")
    assert _ids(conditions.search(subject__Patient__name="ann").fetch()) == [ann_asthma.id]
    assert set(_ids(conditions.search(subject__Patient__name="Bob").fetch())) == {
        bob_asthma.id,
        bob_diabetes.id,
    }
    found = conditions.search(subject__Patient__birthdate__ge="2000", code=DIABETES).fetch()
    assert _ids(found) == [bob_diabetes.id]
    assert conditions.search(subject__Patient__name="Nobody").fetch() == []


def test_has(client: SyncFHIRClient) -> None:
    ann = _patient(client, "Ann")
    bob = _patient(client, "Bob")
    cid = _patient(client, "Cid")
    for p in (ann, bob, cid):
        p.save()
    _condition(client, ann, ASTHMA)
    _condition(client, bob, DIABETES)
    _condition(client, bob, ASTHMA)

    patients = client.resources("Patient")
    raw = patients.search(**{"_has:Condition:subject:code": f"{SNOMED}|{DIABETES}"}).fetch()
    assert _ids(raw) == [bob.id]
    with_asthma = patients.has("Condition", "subject", code=ASTHMA).fetch()
    assert set(_ids(with_asthma)) == {ann.id, bob.id}
    assert patients.has("Condition", "subject", code="0000").fetch() == []


def test_count(fhir: Fhir, client: SyncFHIRClient) -> None:
    for i in range(12):
        _patient(
            client, "Counted" if i % 3 else "Other", gender="female" if i < 5 else "male"
        ).save()
    patients = client.resources("Patient")
    assert patients.count() == 12
    assert fhir.last == ("GET", 200)
    assert patients.search(family="Counted").count() == 8
    assert patients.search(family="Counted", gender="female").count() == 3
    assert patients.search(family="Nobody").count() == 0
    # count() asks for no entries: the total is still the whole match, beyond a page.
    assert patients.limit(5).count() == 12
