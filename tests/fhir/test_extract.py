"""Write-time index extraction, over the Synthea sample and hand-built resources."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from dicomhub.fhir.search.extract import compile_param, extract, extract_param
from dicomhub.fhir.search.normalize import DATE_MAX, DATE_MIN, NUMBER_MAX, date_range, number_range
from dicomhub.fhir.search.parameters import INDEXED_TYPES, ParamType, SearchParam, search_params
from dicomhub.fhir.search.rows import (
    OF_TYPE,
    DateRow,
    IndexRows,
    NumberRow,
    QuantityRow,
    ReferenceRow,
    StringRow,
    TokenRow,
    UriRow,
)

SYNTHEA = Path("/work/shared/data/synthea-10-patients")
Row = StringRow | TokenRow | DateRow | NumberRow | QuantityRow | UriRow | ReferenceRow
KINDS = ("strings", "tokens", "dates", "numbers", "quantities", "uris", "references")


def _load() -> dict[str, dict[str, Any]]:
    resources: dict[str, dict[str, Any]] = {}
    for path in sorted(SYNTHEA.glob("*.ndjson")):
        if path.name == "log.ndjson":  # the bulk-export log, not resources
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            resource = json.loads(line)
            resources[f"{resource['resourceType']}/{resource['id']}"] = resource
    return resources


@pytest.fixture(scope="module")
def synthea() -> dict[str, dict[str, Any]]:
    if not SYNTHEA.is_dir():
        pytest.fail(f"the Synthea sample is missing at {SYNTHEA}")
    return _load()


def rows(resource: dict[str, Any], param: str) -> set[Row]:
    """The rows of one parameter, whatever their kind."""
    out = extract(resource)
    return {row for kind in KINDS for row in getattr(out, kind) if row.param == param}


def all_rows(out: IndexRows) -> list[Row]:
    return [row for kind in KINDS for row in getattr(out, kind)]


def instant(value: str, param: str) -> DateRow:
    return DateRow(param, *date_range(value))


# --- the whole sample ---------------------------------------------------------------------------


def test_every_synthea_resource_extracts(synthea: dict[str, dict[str, Any]]) -> None:
    assert len(synthea) == 7160
    per_type: Counter[str] = Counter()
    for key, resource in synthea.items():
        out = extract(resource)
        per_type[resource["resourceType"]] += 1
        # every resource is findable by _id, and every row belongs to a known parameter
        # (`identifier:of-type` rows belong to `identifier`, see rows.OF_TYPE)
        assert TokenRow("_id", None, resource["id"]) in out.tokens, key
        known = search_params(resource["resourceType"])
        params = {row.param.removesuffix(OF_TYPE) for row in all_rows(out)}
        assert params <= set(known), key
        for row in out.references:  # nothing unusable is indexed
            assert row.target_id or row.url or row.identifier_value, (key, row)
        for date in out.dates:
            assert DATE_MIN <= date.low <= date.high <= DATE_MAX, (key, date)
    assert set(per_type) >= {"Patient", "Condition", "Encounter", "MedicationRequest"}


def test_synthea_references_are_relative_or_conditional(
    synthea: dict[str, dict[str, Any]],
) -> None:
    """This export writes `Type/id` and `Type?identifier=system|value`; both resolve here."""
    kinds: Counter[str] = Counter()
    for resource in synthea.values():
        for row in extract(resource).references:
            assert row.target_type is not None, row
            assert row.url is None, row
            kinds["id" if row.target_id else "identifier"] += 1
            if row.target_id is None:
                assert row.identifier_system and row.identifier_value, row
    assert kinds["id"] > 1000 and kinds["identifier"] > 1000


def test_every_patient_is_the_subject_it_is_referred_to_as(
    synthea: dict[str, dict[str, Any]],
) -> None:
    patients = {k.split("/")[1] for k in synthea if k.startswith("Patient/")}
    referred = {
        row.target_id
        for resource in synthea.values()
        for row in extract(resource).references
        if row.param == "patient"
    }
    assert referred == patients


# --- hand-checked Synthea resources ------------------------------------------------------------

PATIENT = "Patient/129c6ac7-8d06-89de-ad63-0204a93e76c3"


def test_patient(synthea: dict[str, dict[str, Any]]) -> None:
    patient = synthea[PATIENT]
    assert rows(patient, "birthdate") == {instant("1927-05-21", "birthdate")}
    assert rows(patient, "birthdate") == {
        DateRow("birthdate", -1344902400000000, -1344816000000001)
    }
    assert rows(patient, "death-date") == {instant("1989-05-09T20:35:22-04:00", "death-date")}
    assert rows(patient, "deceased") == {TokenRow("deceased", None, "true")}
    assert rows(patient, "gender") == {TokenRow("gender", None, "female")}
    assert rows(patient, "family") == {
        StringRow("family", "medhurst46", "Medhurst46"),
        StringRow("family", "cummerata161", "Cummerata161"),
    }
    assert rows(patient, "given") == {
        StringRow("given", "sumiko254", "Sumiko254"),
        StringRow("given", "larue605", "Larue605"),
    }
    assert rows(patient, "name") == {
        StringRow("name", norm, exact)
        for norm, exact in [
            ("medhurst46", "Medhurst46"),
            ("cummerata161", "Cummerata161"),
            ("sumiko254", "Sumiko254"),
            ("larue605", "Larue605"),
            ("mrs.", "Mrs."),
        ]
    }
    assert len(extract(patient).strings) == len(set(extract(patient).strings))  # deduplicated
    assert rows(patient, "identifier") == {
        TokenRow(
            "identifier",
            "https://github.com/synthetichealth/synthea",
            "129c6ac7-8d06-89de-ad63-0204a93e76c3",
        ),
        TokenRow(
            "identifier",
            "http://hospital.smarthealthit.org",
            "129c6ac7-8d06-89de-ad63-0204a93e76c3",
            "medical record number",
        ),
        TokenRow(
            "identifier", "http://hl7.org/fhir/sid/us-ssn", "999-94-5397", "social security number"
        ),
        TokenRow(
            "identifier", "urn:oid:2.16.840.1.113883.4.3.25", "S99940903", "driver's license number"
        ),
        TokenRow(
            "identifier",
            "http://standardhealthrecord.org/fhir/StructureDefinition/passportNumber",
            "X53631011X",
            "passport number",
        ),
    }
    assert rows(patient, "phone") == {TokenRow("phone", None, "555-810-7203")}
    assert rows(patient, "telecom") == {TokenRow("telecom", None, "555-810-7203")}
    assert rows(patient, "email") == set()
    assert rows(patient, "address-city") == {StringRow("address-city", "emporia", "Emporia")}
    assert StringRow("address", "633 abernathy landing", "633 Abernathy Landing") in rows(
        patient, "address"
    )
    assert rows(patient, "language") == {
        TokenRow("language", "urn:ietf:bcp:47", "en-US", "english (united states)")
    }
    assert rows(patient, "_profile") == {
        UriRow("_profile", "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient")
    }
    assert rows(patient, "_lastUpdated") == set()  # the export carries no meta.lastUpdated


def test_condition(synthea: dict[str, dict[str, Any]]) -> None:
    condition = synthea["Condition/0023b3a7-2ded-840c-ee5b-6b123fdcfb0b"]
    assert rows(condition, "code") == {
        TokenRow("code", "http://snomed.info/sct", "91302008", "sepsis (disorder)")
    }
    patient = ReferenceRow("patient", "Patient", "129c6ac7-8d06-89de-ad63-0204a93e76c3")
    assert rows(condition, "patient") == {patient}
    assert rows(condition, "subject") == {
        ReferenceRow("subject", "Patient", "129c6ac7-8d06-89de-ad63-0204a93e76c3")
    }
    assert rows(condition, "encounter") == {
        ReferenceRow("encounter", "Encounter", "f6003197-6507-1168-87be-ceccd5517094")
    }
    # 1976-01-19T22:58:16-05:00 is 1976-01-20T03:58:16Z, a one-second range
    onset = DateRow("onset-date", 190958296000000, 190958296999999)
    assert rows(condition, "onset-date") == {onset}
    assert rows(condition, "recorded-date") == {DateRow("recorded-date", onset.low, onset.high)}
    assert rows(condition, "clinical-status") == {
        TokenRow(
            "clinical-status", "http://terminology.hl7.org/CodeSystem/condition-clinical", "active"
        )
    }
    assert rows(condition, "verification-status") == {
        TokenRow(
            "verification-status",
            "http://terminology.hl7.org/CodeSystem/condition-ver-status",
            "confirmed",
        )
    }
    assert rows(condition, "category") == {
        TokenRow(
            "category",
            "http://terminology.hl7.org/CodeSystem/condition-category",
            "encounter-diagnosis",
            "encounter diagnosis",
        )
    }
    assert rows(condition, "onset-age") == rows(condition, "abatement-date") == set()


def test_encounter(synthea: dict[str, dict[str, Any]]) -> None:
    encounter = synthea["Encounter/00c7f717-4030-5582-2ed8-888ad2bc878e"]
    period = DateRow(
        "date",
        date_range("1989-10-04T02:25:16-04:00")[0],
        date_range("1989-10-04T06:20:16-04:00")[1],
    )
    assert rows(encounter, "date") == {period}
    assert period.high - period.low == (3 * 3600 + 55 * 60 + 1) * 1_000_000 - 1
    assert rows(encounter, "class") == {
        TokenRow("class", "http://terminology.hl7.org/CodeSystem/v3-ActCode", "AMB")
    }
    assert rows(encounter, "type") == {
        TokenRow("type", "http://snomed.info/sct", "185347001", "encounter for problem (procedure)")
    }
    assert rows(encounter, "subject") == {
        ReferenceRow("subject", "Patient", "79a66c97-6131-3213-f3c9-4606946ab056")
    }
    assert rows(encounter, "status") == {TokenRow("status", None, "finished")}
    # conditional references: identifier, type, no id (bulk import resolves them later)
    npi = ("http://hl7.org/fhir/sid/us-npi", "9999974493")
    assert rows(encounter, "participant") == {
        ReferenceRow("participant", "Practitioner", None, None, *npi)
    }
    assert rows(encounter, "practitioner") == {
        ReferenceRow("practitioner", "Practitioner", None, None, *npi)
    }
    assert rows(encounter, "service-provider") == {
        ReferenceRow(
            "service-provider",
            "Organization",
            None,
            None,
            "https://github.com/synthetichealth/synthea",
            "a261e1fc-9361-3633-a2c4-8569a04b818d",
        )
    }
    assert rows(encounter, "participant-type") == {
        TokenRow(
            "participant-type",
            "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
            "PPRF",
            "primary performer",
        )
    }
    assert rows(encounter, "reason-code") == {
        TokenRow(
            "reason-code",
            "http://snomed.info/sct",
            "46177005",
            "end-stage renal disease (disorder)",
        )
    }


def test_medication_request(synthea: dict[str, dict[str, Any]]) -> None:
    request = synthea["MedicationRequest/002eb5b8-2964-effd-3b09-f132017dae04"]
    assert rows(request, "code") == {
        TokenRow(
            "code",
            "http://www.nlm.nih.gov/research/umls/rxnorm",
            "314076",
            "lisinopril 10 mg oral tablet",
        )
    }
    assert rows(request, "medication") == set()  # a CodeableConcept, not a Reference
    assert rows(request, "authoredon") == {instant("1989-05-27T23:58:16-04:00", "authoredon")}
    assert rows(request, "intent") == {TokenRow("intent", None, "order")}
    assert rows(request, "status") == {TokenRow("status", None, "stopped")}
    assert rows(request, "requester") == {
        ReferenceRow(
            "requester", "Practitioner", None, None, "http://hl7.org/fhir/sid/us-npi", "9999974394"
        )
    }
    assert rows(request, "date") == set()  # no dosageInstruction.timing.event


def test_document_reference(synthea: dict[str, dict[str, Any]]) -> None:
    document = synthea["DocumentReference/00212c89-d070-985e-b695-b5f12fffd23e"]
    assert rows(document, "type") == {
        TokenRow("type", "http://loinc.org", "34117-2", "history and physical note"),
        TokenRow("type", "http://loinc.org", "51847-2", "evaluation + plan note"),
    }
    assert rows(document, "date") == {DateRow("date", *date_range("1987-11-19T00:22:16.824-05:00"))}
    assert rows(document, "date") == {DateRow("date", 564297736824000, 564297736824999)}
    assert rows(document, "period") == {
        DateRow(
            "period",
            date_range("1987-11-19T00:22:16-05:00")[0],
            date_range("1987-12-01T03:03:16-05:00")[1],
        )
    }
    assert rows(document, "encounter") == {
        ReferenceRow("encounter", "Encounter", "63f23b73-1623-966a-ea00-876590af06a5")
    }
    assert rows(document, "contenttype") == {
        TokenRow("contenttype", None, "text/plain; charset=utf-8")
    }
    assert rows(document, "identifier") == {
        TokenRow("identifier", "urn:ietf:rfc:3986", "urn:uuid:78eb1ea7-7e46-5eba-a5d7-108eba5d294b")
    }
    assert rows(document, "author") == {
        ReferenceRow(
            "author", "Practitioner", None, None, "http://hl7.org/fhir/sid/us-npi", "9999974592"
        )
    }
    assert rows(document, "patient") == {
        ReferenceRow("patient", "Patient", "129c6ac7-8d06-89de-ad63-0204a93e76c3")
    }


def test_immunization(synthea: dict[str, dict[str, Any]]) -> None:
    immunization = synthea["Immunization/04912b69-f775-5a9d-3e8b-9d06c28165ad"]
    assert rows(immunization, "vaccine-code") == {
        TokenRow("vaccine-code", "http://hl7.org/fhir/sid/cvx", "62", "hpv, quadrivalent")
    }
    assert rows(immunization, "date") == {instant("2014-08-19T01:16:46-04:00", "date")}
    assert rows(immunization, "patient") == {
        ReferenceRow("patient", "Patient", "fb7c882a-f897-e7c5-67e0-825e7fd55d15")
    }


def test_identifier_only_reference_takes_the_parameters_single_target(
    synthea: dict[str, dict[str, Any]],
) -> None:
    location = synthea["Location/0b9875ba-9310-313d-93d4-bf552585d527"]
    assert rows(location, "organization") == {
        ReferenceRow(
            "organization",
            "Organization",
            None,
            None,
            "https://github.com/synthetichealth/synthea",
            "658bfe6a-1b87-3ca3-9923-959fd4e14477",
        )
    }
    # a single Address (not a list) flattens like any other value
    assert rows(location, "address-postalcode") == {
        StringRow("address-postalcode", "668391105", "668391105")
    }
    assert rows(location, "name") == {
        StringRow("name", "life care center of burlington", "LIFE CARE CENTER OF BURLINGTON")
    }


def test_contact_points_filter_on_system(synthea: dict[str, dict[str, Any]]) -> None:
    practitioner = synthea["Practitioner/0965e26a-8bc3-395f-b7b0-4620fb6e778c"]
    assert rows(practitioner, "email") == {TokenRow("email", None, "Irvin970.Emard19@example.com")}
    assert rows(practitioner, "phone") == set()
    assert rows(practitioner, "active") == {TokenRow("active", None, "true")}


def test_types_the_store_does_not_index_get_the_common_parameters(
    synthea: dict[str, dict[str, Any]],
) -> None:
    device = next(r for k, r in synthea.items() if k.startswith("Device/"))
    assert "Device" not in INDEXED_TYPES
    assert {row.param for row in all_rows(extract(device))} <= {"_id", "_profile"}


# --- hand-built resources ----------------------------------------------------------------------

STUDY_UID = "1.2.840.113619.2.55.3.604688119.969.1268071029.320"


def imaging_study() -> dict[str, Any]:
    return {
        "resourceType": "ImagingStudy",
        "id": "study-1",
        "meta": {
            "lastUpdated": "2024-05-01T12:00:00.123Z",
            "tag": [{"system": "urn:tags", "code": "research", "display": "Research"}],
            "security": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}
            ],
            "source": "urn:dicomhub:ingest",
        },
        "identifier": [
            {"system": "urn:dicom:uid", "value": f"urn:oid:{STUDY_UID}"},
            {
                "type": {"text": "Accession ID"},
                "system": "http://hospital.example/accession",
                "value": "A12345",
            },
        ],
        "status": "available",
        "subject": {"reference": "Patient/p1"},
        "started": "2024-04-30T09:15:00+02:00",
        "referrer": {"reference": "Practitioner/dr-1"},
        "endpoint": [{"reference": "Endpoint/wado"}],
        "reasonCode": [{"text": "Chest pain"}],
        "series": [
            {
                "uid": "1.2.3.1",
                "modality": {
                    "system": "http://dicom.nema.org/resources/ontology/DCM",
                    "code": "CT",
                },
                "bodySite": {
                    "system": "http://snomed.info/sct",
                    "code": "51185008",
                    "display": "Thorax",
                },
                "endpoint": [{"reference": "Endpoint/series-wado"}],
                "performer": [{"actor": {"reference": "Practitioner/tech-1"}}],
                "instance": [
                    {
                        "uid": "1.2.3.1.1",
                        "sopClass": {
                            "system": "urn:ietf:rfc:3986",
                            "code": "urn:oid:1.2.840.10008.5.1.4.1.1.2",
                        },
                    },
                    {
                        "uid": "1.2.3.1.2",
                        "sopClass": {
                            "system": "urn:ietf:rfc:3986",
                            "code": "urn:oid:1.2.840.10008.5.1.4.1.1.2",
                        },
                    },
                ],
            },
            {
                "uid": "1.2.3.2",
                "modality": {
                    "system": "http://dicom.nema.org/resources/ontology/DCM",
                    "code": "SR",
                },
                "instance": [{"uid": "1.2.3.2.1"}],
            },
        ],
    }


def test_imaging_study() -> None:
    study = imaging_study()
    dcm = "http://dicom.nema.org/resources/ontology/DCM"
    ct_image = ("urn:ietf:rfc:3986", "urn:oid:1.2.840.10008.5.1.4.1.1.2")
    assert rows(study, "modality") == {
        TokenRow("modality", dcm, "CT"),
        TokenRow("modality", dcm, "SR"),
    }
    assert rows(study, "series") == {
        TokenRow("series", None, "1.2.3.1"),
        TokenRow("series", None, "1.2.3.2"),
    }
    assert rows(study, "instance") == {
        TokenRow("instance", None, uid) for uid in ("1.2.3.1.1", "1.2.3.1.2", "1.2.3.2.1")
    }
    assert rows(study, "dicom-class") == {TokenRow("dicom-class", *ct_image)}
    assert rows(study, "bodysite") == {
        TokenRow("bodysite", "http://snomed.info/sct", "51185008", "thorax")
    }
    assert rows(study, "started") == {DateRow("started", *date_range("2024-04-30T07:15:00Z"))}
    assert rows(study, "identifier") == {
        TokenRow("identifier", "urn:dicom:uid", f"urn:oid:{STUDY_UID}"),
        TokenRow("identifier", "http://hospital.example/accession", "A12345", "accession id"),
    }
    assert rows(study, "subject") == {ReferenceRow("subject", "Patient", "p1")}
    assert rows(study, "patient") == {ReferenceRow("patient", "Patient", "p1")}
    assert rows(study, "endpoint") == {
        ReferenceRow("endpoint", "Endpoint", "wado"),
        ReferenceRow("endpoint", "Endpoint", "series-wado"),
    }
    assert rows(study, "performer") == {ReferenceRow("performer", "Practitioner", "tech-1")}
    assert rows(study, "referrer") == {ReferenceRow("referrer", "Practitioner", "dr-1")}
    assert rows(study, "reason") == {TokenRow("reason", None, None, "chest pain")}
    assert rows(study, "status") == {TokenRow("status", None, "available")}
    # the common parameters
    assert rows(study, "_id") == {TokenRow("_id", None, "study-1")}
    assert rows(study, "_lastUpdated") == {
        DateRow("_lastUpdated", *date_range("2024-05-01T12:00:00.123Z"))
    }
    assert rows(study, "_tag") == {TokenRow("_tag", "urn:tags", "research", "research")}
    assert rows(study, "_security") == {
        TokenRow("_security", "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "R")
    }
    assert rows(study, "_source") == {UriRow("_source", "urn:dicomhub:ingest")}


def observation() -> dict[str, Any]:
    loinc = "http://loinc.org"
    ucum = "http://unitsofmeasure.org"
    return {
        "resourceType": "Observation",
        "id": "bp-1",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
        "code": {
            "coding": [{"system": loinc, "code": "85354-9", "display": "Blood pressure panel"}],
            "text": "Blood pressure",
        },
        "subject": {"reference": "Patient/p1"},
        "effectivePeriod": {"start": "2024-01-02T10:00:00Z"},
        "valueQuantity": {"value": 7.20, "unit": "mmol/L", "system": ucum, "code": "mmol/L"},
        "component": [
            {
                "code": {"coding": [{"system": loinc, "code": "8480-6"}]},
                "valueQuantity": {"value": 120, "unit": "mmHg", "system": ucum, "code": "mm[Hg]"},
            },
            {
                "code": {"coding": [{"system": loinc, "code": "8462-4"}]},
                "valueQuantity": {"value": 80, "comparator": "<", "system": ucum, "code": "mm[Hg]"},
            },
            {
                "code": {"coding": [{"system": loinc, "code": "8478-0"}]},
                "valueCodeableConcept": {
                    "coding": [{"system": "urn:x", "code": "low"}],
                    "text": "Low",
                },
            },
            {
                "code": {"coding": [{"system": loinc, "code": "9999-9"}]},
                "valueSampledData": {
                    "origin": {"value": 0},
                    "period": 10,
                    "dimensions": 1,
                    "data": "1 2 3",
                },
            },
        ],
    }


def test_observation_quantities_and_components() -> None:
    obs = observation()
    ucum = "http://unitsofmeasure.org"
    value = QuantityRow("value-quantity", 7.2, 7.15, 7.25, ucum, "mmol/L", "mmol/L")
    systolic = (120.0, 119.5, 120.5, ucum, "mm[Hg]", "mmHg")
    diastolic = (80.0, -NUMBER_MAX, 80.5, ucum, "mm[Hg]", None)  # `<80` is open below
    assert rows(obs, "value-quantity") == {value}
    assert rows(obs, "component-value-quantity") == {
        QuantityRow("component-value-quantity", *systolic),
        QuantityRow("component-value-quantity", *diastolic),
    }  # the SampledData component is not indexed
    assert rows(obs, "combo-value-quantity") == {
        QuantityRow("combo-value-quantity", 7.2, 7.15, 7.25, ucum, "mmol/L", "mmol/L"),
        QuantityRow("combo-value-quantity", *systolic),
        QuantityRow("combo-value-quantity", *diastolic),
    }
    assert rows(obs, "component-value-concept") == {
        TokenRow("component-value-concept", "urn:x", "low", "low")
    }
    assert rows(obs, "value-concept") == set()
    assert rows(obs, "component-code") == {
        TokenRow("component-code", "http://loinc.org", code)
        for code in ("8480-6", "8462-4", "8478-0", "9999-9")
    }
    assert len(rows(obs, "combo-code")) == 6  # the code's two rows and four components
    assert rows(obs, "code") == {
        TokenRow("code", "http://loinc.org", "85354-9", "blood pressure"),
        TokenRow("code", None, None, "blood pressure panel"),  # the display the text hides
    }
    assert rows(obs, "date") == {DateRow("date", date_range("2024-01-02T10:00:00Z")[0], DATE_MAX)}
    assert rows(obs, "patient") == {ReferenceRow("patient", "Patient", "p1")}
    assert rows(obs, "value-string") == set()
    del obs["valueQuantity"]
    obs["valueCodeableConcept"] = {"text": "Très élevé"}
    assert rows(obs, "value-string") == {StringRow("value-string", "tres eleve", "Très élevé")}
    assert rows(obs, "value-concept") == {TokenRow("value-concept", None, None, "tres eleve")}
    del obs["valueCodeableConcept"]
    obs["valueString"] = "Positive"
    assert rows(obs, "value-string") == {StringRow("value-string", "positive", "Positive")}


def test_reference_forms() -> None:
    report = {
        "resourceType": "DiagnosticReport",
        "id": "r1",
        "status": "final",
        "code": {"text": "CT chest"},
        "subject": {"reference": "https://other.example/fhir/Patient/p9/_history/3"},
        "imagingStudy": [
            {"reference": "ImagingStudy/study-1/_history/2"},
            {"reference": "urn:uuid:0b5c6a52-3f1e-4a4c-9c8b-3c9d3a1f2e11"},
            {"reference": "#contained-study"},
            {"display": "a study on film"},
            {"identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{STUDY_UID}"}},
        ],
        "result": [
            {"reference": "http://example.org/not/a/fhir/url"},
            {"reference": "Observation?code=http://loinc.org|1234-5"},
            {"reference": "Observation?identifier=lab-42"},
            {"reference": "Observation?identifier=urn%3Asys%7Cv%201"},
        ],
        "performer": [{"type": "Organization", "identifier": {"value": "org-7"}}],
        "resultsInterpreter": [{"reference": "urn:oid:1.2.3"}],
    }
    assert rows(report, "subject") == {
        ReferenceRow("subject", "Patient", "p9", "https://other.example/fhir/Patient/p9")
    }
    assert rows(report, "patient") == {
        ReferenceRow("patient", "Patient", "p9", "https://other.example/fhir/Patient/p9")
    }
    assert rows(report, "study") == {
        ReferenceRow("study", "ImagingStudy", "study-1"),
        ReferenceRow("study", None, None, "urn:uuid:0b5c6a52-3f1e-4a4c-9c8b-3c9d3a1f2e11"),
        # identifier only: typed by the parameter's single target (ImagingStudy)
        ReferenceRow("study", "ImagingStudy", None, None, "urn:dicom:uid", f"urn:oid:{STUDY_UID}"),
    }
    conditional = "Observation?code=http://loinc.org|1234-5"
    assert rows(report, "result") == {
        ReferenceRow("result", None, None, "http://example.org/not/a/fhir/url"),
        ReferenceRow("result", "Observation", None, conditional),  # other criteria: kept whole
        ReferenceRow("result", "Observation", None, None, None, "lab-42"),  # any system
        ReferenceRow("result", "Observation", None, None, "urn:sys", "v 1"),  # percent-decoded
    }
    assert rows(report, "performer") == {
        ReferenceRow("performer", "Organization", None, None, None, "org-7")  # Reference.type
    }
    assert rows(report, "results-interpreter") == {
        ReferenceRow("results-interpreter", None, None, "urn:oid:1.2.3")
    }


def test_where_resolve_keeps_only_the_named_type() -> None:
    encounter = {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"code": "AMB"},
        "subject": {"reference": "Group/g1"},
        "participant": [
            {"individual": {"reference": "Practitioner/a"}},
            {"individual": {"reference": "RelatedPerson/b"}},
            {"individual": {"reference": "Practitioner?identifier=urn:npi|9"}},
            {"individual": {"reference": "urn:uuid:6f1c2d4e-0000-4000-8000-000000000000"}},
            {"individual": {"type": "Practitioner", "identifier": {"value": "c"}}},
        ],
    }
    assert rows(encounter, "patient") == set()  # the subject is a Group
    assert {(r.target_type, r.target_id, r.url) for r in rows(encounter, "practitioner")} == {
        ("Practitioner", "a", None),
        ("Practitioner", None, None),
        # untyped, and the parameter has the single target Practitioner
        (None, None, "urn:uuid:6f1c2d4e-0000-4000-8000-000000000000"),
    }
    assert len(rows(encounter, "practitioner")) == 4
    assert len(rows(encounter, "participant")) == 5


@pytest.mark.parametrize(
    ("deceased", "expected"),
    [
        ({}, "false"),
        ({"deceasedBoolean": False}, "false"),
        ({"deceasedBoolean": True}, "true"),
        ({"deceasedDateTime": "2020-01-01"}, "true"),
    ],
)
def test_deceased(deceased: dict[str, Any], expected: str) -> None:
    patient = {"resourceType": "Patient", "id": "p", **deceased}
    assert rows(patient, "deceased") == {TokenRow("deceased", None, expected)}


def test_names_and_strings() -> None:
    patient = {
        "resourceType": "Patient",
        "name": [
            {
                "text": "Dr. José  García-Núñez",
                "family": "García-Núñez",
                "given": ["José", None],
                "suffix": ["PhD"],
            },
        ],
        "_name": [{"given": [None, {"extension": [{"url": "urn:x", "valueString": "x"}]}]}],
        "address": [{"line": ["1  Rue de l'Église"], "district": "Île-de-France"}],
    }
    assert rows(patient, "name") == {
        StringRow("name", "dr. jose garcia-nunez", "Dr. José  García-Núñez"),
        StringRow("name", "garcia-nunez", "García-Núñez"),
        StringRow("name", "jose", "José"),
        StringRow("name", "phd", "PhD"),
    }
    assert rows(patient, "address") == {
        StringRow("address", "1 rue de l'eglise", "1  Rue de l'Église"),
        StringRow("address", "ile-de-france", "Île-de-France"),
    }


def test_choice_dates_quantities_and_ranges() -> None:
    condition = {
        "resourceType": "Condition",
        "subject": {"reference": "Patient/p"},
        "onsetAge": {"value": 52, "unit": "a", "system": "http://unitsofmeasure.org", "code": "a"},
        "abatementRange": {"low": {"value": 60, "code": "a"}, "high": {"value": 65.5, "code": "a"}},
        "recordedDate": "2020-05",
    }
    assert rows(condition, "onset-age") == {
        QuantityRow("onset-age", 52.0, 51.5, 52.5, "http://unitsofmeasure.org", "a", "a")
    }
    assert rows(condition, "abatement-age") == {
        QuantityRow("abatement-age", 60.0, 60.0, 65.5, None, "a", None)
    }
    assert rows(condition, "recorded-date") == {DateRow("recorded-date", *date_range("2020-05"))}
    assert rows(condition, "onset-date") == set()
    del condition["abatementRange"]
    condition["abatementString"] = "In remission"
    assert rows(condition, "abatement-string") == {
        StringRow("abatement-string", "in remission", "In remission")
    }
    procedure = {
        "resourceType": "Procedure",
        "status": "completed",
        "subject": {"reference": "Patient/p"},
        "performedPeriod": {"end": "2021"},
        "instantiatesCanonical": ["http://example.org/PlanDefinition/xray|2"],
        "instantiatesUri": ["http://example.org/protocol"],
    }
    assert rows(procedure, "date") == {DateRow("date", DATE_MIN, date_range("2021")[1])}
    assert rows(procedure, "instantiates-canonical") == {
        ReferenceRow(
            "instantiates-canonical", None, None, "http://example.org/PlanDefinition/xray|2"
        )
    }
    assert rows(procedure, "instantiates-uri") == {
        UriRow("instantiates-uri", "http://example.org/protocol")
    }
    del procedure["performedPeriod"]
    procedure["performedString"] = "last summer"
    assert rows(procedure, "date") == set()  # not a date: left out, as the spec has no rule


def test_timing_and_duration() -> None:
    request = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/p"},
        "occurrenceTiming": {
            "event": ["2024-01-01T08:00:00Z", "2024-01-02"],
            "repeat": {"boundsPeriod": {"start": "2024-01-01", "end": "2024-01-31"}},
        },
        "orderDetail": [{"text": "Contrast"}],
    }
    assert rows(request, "occurrence") == {
        DateRow("occurrence", *date_range("2024-01-01T08:00:00Z")),
        DateRow("occurrence", *date_range("2024-01-02")),
        DateRow("occurrence", date_range("2024-01-01")[0], date_range("2024-01-31")[1]),
    }
    assert rows(request, "order-detail") == {TokenRow("order-detail", None, "Contrast")}
    encounter = {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"code": "AMB"},
        "length": {"value": 1.5, "unit": "h", "system": "http://unitsofmeasure.org", "code": "h"},
    }
    assert rows(encounter, "length") == {
        QuantityRow("length", 1.5, 1.45, 1.55, "http://unitsofmeasure.org", "h", "h")
    }


def test_number_parameters() -> None:
    """No indexed R4 type has a number parameter; a custom one goes through the same code."""
    births = SearchParam(
        "birth-order", ParamType.NUMBER, "Patient", "Patient.multipleBirth.as(integer)"
    )
    assert extract_param(
        births, {"resourceType": "Patient", "multipleBirthInteger": 2}
    ).numbers == [NumberRow("birth-order", *number_range("2"))]
    assert (
        extract_param(births, {"resourceType": "Patient", "multipleBirthBoolean": True})
        == IndexRows()
    )
    series = SearchParam("n", ParamType.NUMBER, "ImagingStudy", "ImagingStudy.series.number")
    study = imaging_study()
    study["series"][0]["number"] = 3
    assert extract_param(series, study).numbers == [NumberRow("n", 3.0, 2.5, 3.5)]
    assert compile_param(series)


@pytest.mark.parametrize(
    ("resource", "message"),
    [
        ({}, "no resourceType"),
        ({"resourceType": "Nonsense"}, "unknown resource type"),
        ({"resourceType": "Patient", "birthDate": "1927-13-01"}, "invalid date"),
        ({"resourceType": "Patient", "birthDate": 1927}, "birthdate: expected a string"),
        ({"resourceType": "Patient", "active": "yes"}, "active: expected a boolean"),
        ({"resourceType": "Patient", "name": ["Smith"]}, "expected an object"),
        ({"resourceType": "Patient", "identifier": "123"}, "identifier: expected an object"),
        (
            {"resourceType": "Encounter", "period": {"start": "2020-02", "end": "2020-01"}},
            "per-1",
        ),
        (
            {"resourceType": "Encounter", "length": {"value": "NaN"}},
            "invalid number",
        ),
    ],
)
def test_invalid_values_raise(resource: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        extract(resource)
