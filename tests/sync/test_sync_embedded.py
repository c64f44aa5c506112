"""DICOM -> FHIR sync into the embedded store, end to end: STOW, then FHIR search sees it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.uid import generate_uid

from dicomhub.bootstrap import Services
from dicomhub.context import RequestContext
from dicomhub.fhir.bulk import BulkLoader, read_resources
from dicomhub.fhir.validation import validate_resource
from tests.conftest import LiveServer
from tests.dicomfiles import MR_IMAGE, make_instance, multipart_body

SYNTHEA = Path("/work/shared/data/synthea-10-patients")
DCM = "http://dicom.nema.org/resources/ontology/DCM"


@pytest.fixture
def fhir(live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url + "/fhir", timeout=30) as client:
        yield client


def stow(http: httpx.Client, parts: list[bytes]) -> None:
    body, content_type = multipart_body(parts)
    r = http.post("/studies", content=body, headers={"Content-Type": content_type})
    assert r.status_code == 200, r.text


def until(check: Callable[[], Any], what: str, seconds: float = 20.0) -> Any:
    """Wait for the sync (woken by the commit) to make `check` true; a wait, not a timing test."""
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"the sync did not reach this state in {seconds:.0f} s: {what}")
        time.sleep(0.05)


def search(fhir: httpx.Client, query: str) -> list[dict[str, Any]]:
    r = fhir.get(query)
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", []) if e["search"]["mode"] == "match"]


def imaging_study(fhir: httpx.Client, study_uid: str) -> dict[str, Any] | None:
    found = search(fhir, f"/ImagingStudy?identifier=urn:dicom:uid|urn:oid:{study_uid}")
    assert len(found) <= 1
    return found[0] if found else None


def series_uids(resource: dict[str, Any]) -> set[str]:
    return {s["uid"] for s in resource.get("series", [])}


def test_study_life_cycle(http: httpx.Client, fhir: httpx.Client, live_server: LiveServer) -> None:
    study = generate_uid()
    ct1, ct2 = generate_uid(), generate_uid()
    common = {
        "study_uid": study,
        "PatientID": "SYNC-1",
        "PatientName": "Doe^Jane",
        "PatientSex": "F",
        "PatientBirthDate": "19700203",
        "AccessionNumber": "ACC-77",
    }
    order = fhir.post(
        "/ServiceRequest",
        json={
            "resourceType": "ServiceRequest",
            "status": "active",
            "intent": "order",
            "identifier": [{"system": "urn:ris:accession", "value": "ACC-77"}],
            "subject": {"display": "Jane Doe"},
        },
    )
    assert order.status_code == 201, order.text
    stow(
        http,
        [make_instance(series_uid=ct1, InstanceNumber=i, **common) for i in (1, 2)]
        + [make_instance(series_uid=ct2, SeriesNumber=2, **common)],
    )

    created = until(lambda: imaging_study(fhir, study), "ImagingStudy created")
    validate_resource(created)
    assert created["status"] == "available"
    assert created["numberOfSeries"] == 2 and created["numberOfInstances"] == 3
    assert series_uids(created) == {ct1, ct2}
    assert {"system": DCM, "code": "CT"} in created["modality"]
    assert created["started"].startswith("2024-01-15")
    assert created["basedOn"] == [{"reference": f"ServiceRequest/{order.json()['id']}"}]
    patients = search(fhir, "/Patient?identifier=SYNC-1")
    assert len(patients) == 1
    patient = patients[0]
    assert created["subject"] == {"reference": f"Patient/{patient['id']}"}
    assert patient["gender"] == "female" and patient["birthDate"] == "1970-02-03"
    assert patient["name"][0]["family"] == "Doe"
    endpoints = search(fhir, "/Endpoint")
    assert len(endpoints) == 1
    assert created["endpoint"] == [{"reference": f"Endpoint/{endpoints[0]['id']}"}]
    assert endpoints[0]["address"].endswith("/dicom-web")
    # the searches the issue names
    assert search(fhir, "/ImagingStudy?patient.identifier=SYNC-1")[0]["id"] == created["id"]
    assert created["id"] in {s["id"] for s in search(fhir, "/ImagingStudy?modality=CT")}

    # a new MR series, with corrected demographics: the study grows, the Patient follows
    mr = generate_uid()
    stow(
        http,
        [
            make_instance(
                series_uid=mr,
                sop_class=MR_IMAGE,
                Modality="MR",
                SeriesNumber=3,
                **{**common, "PatientName": "Doe^Janet"},
            )
        ],
    )
    grown = until(
        lambda: (s := imaging_study(fhir, study)) and s["numberOfSeries"] == 3 and s,
        "third series synced",
    )
    assert {"system": DCM, "code": "MR"} in grown["modality"]
    assert int(grown["meta"]["versionId"]) > int(created["meta"]["versionId"])
    renamed = until(
        lambda: (
            (p := search(fhir, "/Patient?identifier=SYNC-1"))
            and p[0]["name"][0]["given"][0] == "Janet"
            and p
        ),
        "patient renamed",
    )
    assert len(renamed) == 1 and renamed[0]["id"] == patient["id"]

    # delete an instance, then a series, then the study
    first = grown["series"]
    ct1_instances = next(s for s in first if s["uid"] == ct1)["instance"]
    r = http.delete(f"/studies/{study}/series/{ct1}/instances/{ct1_instances[0]['uid']}")
    assert r.status_code == 204
    until(
        lambda: (s := imaging_study(fhir, study)) and s["numberOfInstances"] == 3,
        "instance removed",
    )
    assert http.delete(f"/studies/{study}/series/{ct2}").status_code == 204
    after = until(
        lambda: (s := imaging_study(fhir, study)) and s["numberOfSeries"] == 2 and s,
        "series removed",
    )
    assert series_uids(after) == {ct1, mr}
    assert http.delete(f"/studies/{study}").status_code == 204
    until(lambda: imaging_study(fhir, study) is None, "ImagingStudy deleted")
    # the Patient stays; nothing was ever duplicated
    assert [p["id"] for p in search(fhir, "/Patient?identifier=SYNC-1")] == [patient["id"]]
    status = httpx.get(live_server.url + "/admin/sync").json()
    assert status["backlog"] == 0 and status["deadLetters"] == []


def test_existing_clinical_patients_are_linked_not_duplicated(
    services: Services, http: httpx.Client, fhir: httpx.Client
) -> None:
    """Synthea patients loaded first; DICOM studies for them link to those Patients."""
    items = [
        item for path in sorted(SYNTHEA.glob("Patient*.ndjson")) for item in read_resources(path)
    ]
    report = BulkLoader(services.fhir.service, workers=1).load(RequestContext(), items)
    assert report.total == len(items) and not report.failed
    synthea = [r for _, r in items]
    studies = {}
    for p in synthea[:4]:
        mrn = next(
            i
            for i in p["identifier"]
            if i.get("type", {}).get("coding", [{}])[0].get("code") == "MR"
        )
        study = generate_uid()
        studies[study] = p["id"]
        stow(
            http,
            [
                make_instance(
                    study_uid=study,
                    PatientID=mrn["value"],
                    IssuerOfPatientID=mrn["system"],
                    PatientName="Other^Name",  # the clinical record keeps its own name
                )
            ],
        )
    for study, patient_id in studies.items():
        found = until(lambda s=study: imaging_study(fhir, s), f"ImagingStudy of {study}")
        assert found["subject"] == {"reference": f"Patient/{patient_id}"}
    all_patients = search(fhir, "/Patient?_count=100")
    assert len(all_patients) == len(items)  # none added
    untouched = {p["id"]: p for p in all_patients}
    for p in synthea[:4]:
        assert untouched[p["id"]]["name"] == p["name"]
        assert untouched[p["id"]]["meta"]["versionId"] == "1"
