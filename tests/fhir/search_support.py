"""A store per backend that lives as long as a test module: search tests load their data once.

The same set-up as the `settings` / `services` / `live_server` fixtures of tests/conftest.py,
at module scope (those are per test, and loading data per test would multiply the run time).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg

from dicomhub.bootstrap import Services, build_services, prepare_storage
from dicomhub.config import Settings
from dicomhub.context import RequestContext
from tests.conftest import PG_ADMIN, LiveServer, require_postgres

__all__ = ["POPULATION", "Env", "ids_of", "load_population", "population_server", "store_for"]


@contextmanager
def store_for(backend: str, tmp: Path) -> Iterator[tuple[Settings, Services]]:
    """Settings and services over a fresh, migrated store on `backend`."""
    database_url: str | None = None
    name = f"dicomhub_test_{uuid.uuid4().hex[:12]}"
    if backend == "postgresql":
        require_postgres()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        database_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        settings = Settings(
            data_dir=tmp / "data", database_url=database_url, sqlite_synchronous="OFF"
        )
        prepare_storage(settings)
        services = build_services(settings)
        try:
            yield settings, services
        finally:
            services.close()
    finally:
        if database_url is not None:
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def ids_of(bundle: dict[str, Any], mode: str = "match") -> list[str]:
    """`Type/id` of the entries of one search mode, in Bundle order."""
    return [
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if e["search"]["mode"] == mode
    ]


# --- a small hand-built population (what each search test expects is worked out from it) -------

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
US_CORE_PATIENT = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"


def _mr(value: str) -> dict[str, Any]:
    return {
        "type": {"coding": [{"system": V2_0203, "code": "MR"}]},
        "system": "urn:mrn",
        "value": value,
    }


def _ref(target: str) -> dict[str, str]:
    return {"reference": target}


def _quantity(value: float, unit: str, code: str | None = None) -> dict[str, Any]:
    q: dict[str, Any] = {"value": value, "unit": unit}
    if code is not None:
        q.update(system=UCUM, code=code)
    return q


def _observation(code: str, subject: str, value: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": _ref(subject),
        "valueQuantity": value,
        **extra,
    }


POPULATION: dict[str, dict[str, Any]] = {
    "Organization/org1": {
        "name": "Acme Health",
        "identifier": [{"system": "urn:org", "value": "A"}],
    },
    "Organization/org2": {"name": "Beta Clinic"},
    "Practitioner/doc1": {"name": [{"family": "House", "given": ["Gregory"]}]},
    "Patient/p1": {
        "meta": {
            "profile": [US_CORE_PATIENT],
            "tag": [{"system": "urn:tags", "code": "vip"}],
        },
        "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">A</div>'},
        "name": [{"family": "Müller", "given": ["Anna", "Maria"]}],
        "gender": "female",
        "birthDate": "1975-03-15",
        "active": True,
        "managingOrganization": _ref("Organization/org1"),
        "identifier": [_mr("MR-1"), {"system": "urn:ssn", "value": "111"}],
        "maritalStatus": {"text": "married"},
        "telecom": [{"system": "email", "value": "anna@example.org"}],
    },
    "Patient/p2": {
        "meta": {"source": "urn:source:lab"},
        "name": [{"family": "Smith", "given": ["John"]}],
        "gender": "male",
        "birthDate": "1980",
        "managingOrganization": _ref("Organization/org2"),
        "generalPractitioner": [_ref("Practitioner/doc1")],
        "identifier": [_mr("MR-2")],
    },
    "Patient/p3": {
        "name": [{"family": "Smithson", "given": ["Ann"]}],
        "gender": "other",
        "birthDate": "1965-07",
        "active": False,
    },
    "Patient/p4": {"name": [{"text": "Ng"}]},
    "Encounter/e1": {
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": _ref("Patient/p1"),
        "period": {"start": "2021-01-01T09:00:00Z", "end": "2021-01-01T10:00:00Z"},
        "serviceProvider": _ref("Organization/org1"),
        "participant": [{"individual": _ref("Practitioner/doc1")}],
    },
    "Encounter/e2": {
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "subject": _ref("Patient/p2"),
        "period": {"start": "2015-04-30", "end": "2015-05-02"},
        "serviceProvider": _ref("Organization/org2"),
    },
    "Condition/c1": {
        "subject": _ref("Patient/p1"),
        "code": {
            "coding": [
                {"system": SNOMED, "code": "44054006", "display": "Diabetes mellitus type 2"}
            ],
            "text": "Diabetes",
        },
        "clinicalStatus": {"coding": [{"code": "active"}]},
        "onsetDateTime": "2010-01-01T10:00:00Z",
    },
    "Condition/c2": {
        "subject": _ref("Patient/p2"),
        "encounter": _ref("Encounter/e2"),
        "code": {"coding": [{"system": SNOMED, "code": "38341003", "display": "Hypertension"}]},
        "clinicalStatus": {"coding": [{"code": "resolved"}]},
        "onsetPeriod": {"start": "2015-05-01", "end": "2016-05-01"},
    },
    "Condition/c3": {
        "subject": _ref("Patient/p3"),
        "code": {"coding": [{"system": SNOMED, "code": "44054006"}]},
        "clinicalStatus": {"coding": [{"code": "active"}]},
        "onsetDateTime": "2020",
    },
    "Condition/c4": {
        "subject": _ref("Patient/p1"),
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "E11"}]},
    },
    "Observation/o1": _observation(
        "8867-4",
        "Patient/p1",
        _quantity(72, "beats/minute", "/min"),
        effectiveDateTime="2020-05-01T10:00:00Z",
    ),
    "Observation/o2": _observation("2339-0", "Patient/p2", _quantity(5.4, "mg", "mg")),
    "Observation/o3": _observation("29463-7", "Patient/p3", _quantity(100, "kg", "kg")),
    "Observation/o4": {
        **_observation("29463-7", "Patient/p1", _quantity(80.5, "kilogram")),
        "status": "preliminary",
    },
    "ImagingStudy/s1": {
        "status": "available",
        "subject": _ref("Patient/p1"),
        "started": "2021-01-01",
        "modality": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"}],
        "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.3"}],
    },
    "ImagingStudy/s2": {"status": "available", "subject": _ref("Patient/p2"), "started": "2022"},
    "ImagingStudy/s3": {"status": "available", "subject": _ref("Patient/p1"), "started": "2023"},
    "DiagnosticReport/r1": {
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "18748-4"}]},
        "subject": _ref("Patient/p1"),
        "imagingStudy": [_ref("ImagingStudy/s1")],
    },
    "DiagnosticReport/r2": {
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "18748-4"}]},
        "subject": _ref("Patient/p2"),
        "imagingStudy": [_ref("ImagingStudy/s2")],
        "performer": [{"type": "Practitioner", "identifier": {"system": "urn:npi", "value": "42"}}],
    },
    "Procedure/pr1": {
        "status": "completed",
        "subject": _ref("Patient/p3"),
        "instantiatesUri": ["http://example.org/protocols/knee/v2"],
    },
}


def load_population(services: Services) -> None:
    """PUT every resource of POPULATION (in order: targets before their referrers)."""
    ctx = RequestContext()
    for key, body in POPULATION.items():
        res_type, res_id = key.split("/")
        resource = {"resourceType": res_type, "id": res_id, **body}
        services.fhir.service.update(ctx, res_type, res_id, resource)


@dataclass
class Env:
    """The population behind a live server, and an HTTP client on its FHIR base."""

    services: Services
    client: httpx.Client
    base: str

    def get(self, url: str, **headers: str) -> httpx.Response:
        """GET `Type?a=b&c=d` with the values encoded by httpx (they hold `|`, `:`, `/`)."""
        path, _, query = url.partition("?")
        items = [tuple(item.split("=", 1)) for item in query.split("&") if item]
        return self.client.get("/" + path, params=items, headers=headers)

    def bundle(self, url: str) -> dict[str, Any]:
        r = self.get(url)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        assert body["resourceType"] == "Bundle" and body["type"] == "searchset"
        return body

    def ids(self, url: str, mode: str = "match") -> set[str]:
        return {key.split("/")[1] for key in ids_of(self.bundle(url), mode)}


@contextmanager
def population_server(backend: str, tmp_factory: Any) -> Iterator[Env]:
    """POPULATION loaded into a fresh store on `backend`, served over HTTP."""
    with store_for(backend, tmp_factory.mktemp(f"search-{backend}")) as (settings, services):
        load_population(services)
        with LiveServer(settings, services) as server:
            base = server.url + "/fhir"
            with httpx.Client(base_url=base, timeout=60) as client:
                yield Env(services, client, base)
