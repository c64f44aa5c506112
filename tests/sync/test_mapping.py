"""dicomhub.sync.mapping: DICOM JSON of stored instances to FHIR R4 Patient, ImagingStudy, Endpoint."""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from dicomhub.dicom.json_model import dataset_to_json
from dicomhub.fhir.validation import validate_resource
from dicomhub.sync.body_parts import BODY_PARTS, SNOMED
from dicomhub.sync.mapping import (
    DCM,
    MappedDataset,
    MappingOptions,
    accession_identifier,
    endpoint_identifier,
    map_endpoint,
    map_imaging_study,
    map_patient,
    patient_identifier,
    study_identifier,
)
from tests.dicomfiles import make_dataset, sample_files, storable, to_part10

OPTIONS = MappingOptions("http://dicomhub.test:8080/dicom-web")
ACSN = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]}
STUDY = "1.2.826.0.1.3680043.8.498.1"
SR_TEXT = "1.2.840.10008.5.1.4.1.1.88.11"
# FHIR R4 dateTime (2.24.0.2): a time needs a zone.
FHIR_DATETIME = re.compile(
    r"^[0-9]{4}(-[0-9]{2}(-[0-9]{2}(T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"(Z|[+-][0-9]{2}:[0-9]{2}))?)?)?$"
)


def valid(resource: dict[str, Any]) -> dict[str, Any]:
    assert validate_resource(resource) == resource["resourceType"]
    return resource


def stored(ds: Dataset) -> dict[str, Any]:
    """The DICOM JSON the archive keeps for `ds`: written as Part 10, read back, converted."""
    return converted(dcmread(io.BytesIO(to_part10(ds))))


def converted(ds: Dataset) -> dict[str, Any]:
    metadata, problems = dataset_to_json(ds, lambda path: f"bulk/{path}")
    assert problems == []
    return metadata


def sample(name: str) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some samples carry values pydicom warns about
        return converted(dcmread(str(get_testdata_file(name))))


def study(instances: Sequence[dict[str, Any]], options: MappingOptions = OPTIONS, **kw: Any) -> Any:
    """The mapped ImagingStudy, checked to be the same from datasets that keep what the
    mapping derives from each (sync/parsed.py), before and after they hold it."""
    kw.setdefault("patient_ref", "Patient/p1")
    kw.setdefault("endpoint_ref", "Endpoint/e1")
    mapped = map_imaging_study(instances, options, **kw)
    keeping = [MappedDataset(ds) for ds in instances]
    assert map_imaging_study(keeping, options, **kw) == mapped
    assert all(ds.facts is not None for ds in keeping)
    assert map_imaging_study(keeping, options, **kw) == mapped
    return valid(mapped)


def built(sop: str, series: str = "1.2.3.1", **attributes: Any) -> dict[str, Any]:
    return stored(
        make_dataset(
            study_uid=STUDY, series_uid=series, sop_uid=sop, rows=2, columns=2, **attributes
        )
    )


def code_item(value: str, scheme: str, meaning: str, **more: Any) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    for keyword, v in more.items():
        setattr(item, keyword, v)
    return item


def dcm(code: str) -> dict[str, str]:
    return {"system": DCM, "code": code}


def sct(code: str, display: str) -> dict[str, str]:
    return {"system": SNOMED, "code": code, "display": display}


# --- pydicom's sample files -------------------------------------------------------------------


def test_ct_small_maps_to_the_exact_imaging_study_and_patient() -> None:
    ct = sample("CT_small.dcm")
    assert study([ct]) == {
        "resourceType": "ImagingStudy",
        "meta": {"source": "urn:dicomhub"},
        "identifier": [
            {
                "system": "urn:dicom:uid",
                "value": "urn:oid:1.3.6.1.4.1.5962.1.2.1.20040119072730.12322",
            }
        ],
        "status": "available",
        "modality": [dcm("CT")],
        "subject": {"reference": "Patient/p1"},
        "started": "2004-01-19T07:27:30-05:00",  # TimezoneOffsetFromUTC -0500
        "endpoint": [{"reference": "Endpoint/e1"}],
        "numberOfSeries": 1,
        "numberOfInstances": 1,
        "description": "e+1",
        "series": [
            {
                "uid": "1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322",
                "number": 1,
                "modality": dcm("CT"),
                "numberOfInstances": 1,
                "started": "1997-04-30T11:27:49-05:00",
                "instance": [
                    {
                        "uid": "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322",
                        "sopClass": {
                            "system": "urn:ietf:rfc:3986",
                            "code": "urn:oid:1.2.840.10008.5.1.4.1.1.2",
                        },
                        "number": 1,
                    }
                ],
            }
        ],
    }
    assert valid(map_patient(ct, OPTIONS)) == {
        "resourceType": "Patient",
        "meta": {"source": "urn:dicomhub"},
        "identifier": [{"system": "urn:dicomhub:patient-id", "value": "1CT1"}],
        "name": [
            {"family": "CompressedSamples", "given": ["CT1"], "text": "CT1 CompressedSamples"}
        ],
        "gender": "other",
    }


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "JPEG2000.dcm",  # NM, BodyPartExamined "WHOLE BODY" (a space the Defined Term lacks)
            {
                "started": "2004-08-26T18:50:59-04:00",
                "modality": [dcm("NM")],
                "description": "Whole Body Bone",
                "bodySite": sct("38266002", "Entire body"),
                "series_started": "1997-08-06T12:29:31-04:00",
            },
        ),
        (
            "SC_rgb.dcm",  # UTF-8, no time zone: a date only; a referring physician
            {
                "started": "2017-01-01",
                "modality": [dcm("OT")],
                "referrer": {"display": "James Moriarty"},
            },
        ),
        (
            "waveform_ecg.dcm",  # an accession number, no SeriesNumber
            {
                "started": "2013-01-25",
                "modality": [dcm("ECG")],
                "description": "ECG",
                "accession": {"type": ACSN, "value": "03028041970546"},
                "referrer": {"display": "2721"},
            },
        ),
        (
            "emri_small.dcm",  # empty PatientID, BodyPartExamined HEAD
            {
                "started": "2000-01-01",
                "modality": [dcm("MR")],
                "bodySite": sct("69536005", "Head"),
                "series_started": "2000-01-01",
            },
        ),
        ("rtplan.dcm", {"started": "2003-07-16", "modality": [dcm("RTPLAN")]}),
        (
            "liver.dcm",  # a segmentation with an accession number
            {
                "started": "2003-04-17",
                "modality": [dcm("SEG")],
                "accession": {"type": ACSN, "value": "03086212"},
                "series_started": "2016-03-18",
            },
        ),
    ],
)
def test_pydicom_samples(name: str, expected: dict[str, Any]) -> None:
    mapped = study([sample(name)])
    (series,) = mapped["series"]
    assert mapped["started"] == expected["started"]
    assert mapped["modality"] == expected["modality"]
    assert mapped.get("description") == expected.get("description")
    assert mapped.get("referrer") == expected.get("referrer")
    assert mapped["identifier"][1:] == ([expected["accession"]] if "accession" in expected else [])
    assert series.get("bodySite") == expected.get("bodySite")
    assert series.get("started") == expected.get("series_started")
    assert mapped["numberOfInstances"] == series["numberOfInstances"] == 1


def test_a_real_series_of_several_files_with_one_instance_stored_twice() -> None:
    # MR2_J2KI and MR2_UNCI are the same SOP instance in two transfer syntaxes.
    names = ["MR2_J2KI.dcm", "MR2_UNCR.dcm", "MR2_UNCI.dcm", "MR2_J2KR.dcm"]
    mapped = study([sample(n) for n in names])
    (series,) = mapped["series"]
    assert mapped["numberOfSeries"] == 1
    assert mapped["numberOfInstances"] == series["numberOfInstances"] == 3
    assert [i["number"] for i in series["instance"]] == [1, 2, 3]
    assert series["instance"][0]["uid"] == "1.3.6.1.4.1.5962.1.1.5.1.1.20040826185059.5457"
    assert series["started"] == "1995-05-01T16:22:53.77-04:00"  # TM 162253.7700
    assert mapped["description"] == "SHOULDER"
    patient = valid(map_patient(sample("MR2_UNCR.dcm"), OPTIONS))
    assert patient["name"][0]["text"] == "MR2 CompressedSamples"


def test_every_storable_sample_file_maps_to_valid_resources() -> None:
    count = 0
    for path in sample_files():
        if path.suffix.lower() != ".dcm" or not storable(path):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            metadata, _ = dataset_to_json(dcmread(path, force=True), lambda p: f"bulk/{p}")
        mapped = study([metadata])
        assert mapped["numberOfInstances"] == 1, path
        valid(map_patient(metadata, OPTIONS))
        count += 1
    assert count > 50


def test_instances_of_two_studies_or_none_are_refused() -> None:
    with pytest.raises(ValueError, match="exactly one study"):
        map_imaging_study(
            [sample("CT_small.dcm"), sample("MR_small.dcm")],
            OPTIONS,
            patient_ref="Patient/1",
            endpoint_ref=None,
        )
    with pytest.raises(ValueError, match="exactly one study"):
        map_imaging_study([], OPTIONS, patient_ref="Patient/1", endpoint_ref=None)


# --- studies built with pydicom ---------------------------------------------------------------


def test_series_and_instances_are_ordered_by_number_then_uid() -> None:
    instances = [
        built("1.2.3.2.2", series="1.2.3.2", Modality="MR", SeriesNumber=2, InstanceNumber=2),
        built("1.2.3.1.9", series="1.2.3.1", Modality="CT", SeriesNumber=1, InstanceNumber=10),
        built("1.2.3.9.1", series="1.2.3.9", Modality="SR", SeriesNumber=None, InstanceNumber=1),
        built("1.2.3.1.1", series="1.2.3.1", Modality="CT", SeriesNumber=1, InstanceNumber=9),
        built("1.2.3.1.3", series="1.2.3.1", Modality="CT", SeriesNumber=1, InstanceNumber=None),
        built("1.2.3.1.2", series="1.2.3.1", Modality="CT", SeriesNumber=1, InstanceNumber=9),
        built("1.2.3.2.1", series="1.2.3.2", Modality="MR", SeriesNumber=2, InstanceNumber=1),
        built("1.2.3.8.1", series="1.2.3.8", Modality="MR", SeriesNumber=2, InstanceNumber=1),
    ]
    mapped = study(instances, based_on=["ServiceRequest/o1", "ServiceRequest/o1"])
    assert [(s["uid"], s.get("number")) for s in mapped["series"]] == [
        ("1.2.3.1", 1),
        ("1.2.3.2", 2),
        ("1.2.3.8", 2),
        ("1.2.3.9", None),
    ]
    ct = mapped["series"][0]
    assert [(i["uid"], i.get("number")) for i in ct["instance"]] == [
        ("1.2.3.1.1", 9),
        ("1.2.3.1.2", 9),
        ("1.2.3.1.9", 10),
        ("1.2.3.1.3", None),
    ]
    assert mapped["modality"] == [dcm("CT"), dcm("MR"), dcm("SR")]
    assert mapped["numberOfSeries"] == 4
    assert mapped["numberOfInstances"] == 8
    assert [s["numberOfInstances"] for s in mapped["series"]] == [4, 2, 1, 1]
    assert mapped["basedOn"] == [{"reference": "ServiceRequest/o1"}]
    assert mapped["subject"] == {"reference": "Patient/p1"}


def test_later_instances_win_for_study_level_values() -> None:
    first = built("1.2.3.1.1", StudyDescription="CT HEAD", PatientName="Old^Name")
    second = built("1.2.3.1.2", StudyDescription="CT HEAD W/O", PatientName="New^Name")
    third = built("1.2.3.1.3")  # no StudyDescription: the last one that has it counts
    assert study([first, second, third])["description"] == "CT HEAD W/O"
    assert study([second, first])["description"] == "CT HEAD"


def test_no_endpoint_no_based_on_and_empty_values_are_left_out() -> None:
    mapped = study(
        [built("1.2.3.1.1", StudyDescription="", AccessionNumber="", Modality="")],
        endpoint_ref=None,
    )
    assert "endpoint" not in mapped
    assert "basedOn" not in mapped
    assert "description" not in mapped
    assert mapped["identifier"] == [study_identifier(STUDY)]
    # R4 series.modality is required: an instance without Modality is "OT" (other).
    assert mapped["series"][0]["modality"] == dcm("OT")


@pytest.mark.parametrize(
    ("date", "time", "offset", "zone", "expected"),
    [
        ("20240115", "101500", "+0100", None, "2024-01-15T10:15:00+01:00"),
        ("20240115", "101500", "-0500", "Europe/Paris", "2024-01-15T10:15:00-05:00"),
        ("20240115", "101500", "+1400", None, "2024-01-15T10:15:00+14:00"),
        ("20240115", "101500", "-1200", None, "2024-01-15T10:15:00-12:00"),
        ("20240115", "101500", "-0000", None, "2024-01-15T10:15:00+00:00"),
        ("20240115", "101500", "+0530", None, "2024-01-15T10:15:00+05:30"),
        # No offset: the configured zone, with its daylight saving time.
        ("20240115", "101500", None, None, "2024-01-15"),
        ("20240115", "101500", None, "Europe/Paris", "2024-01-15T10:15:00+01:00"),
        ("20240715", "101500", None, "Europe/Paris", "2024-07-15T10:15:00+02:00"),
        ("20240715", "101500", None, "Pacific/Kiritimati", "2024-07-15T10:15:00+14:00"),
        ("20240715", "101500", None, "UTC", "2024-07-15T10:15:00+00:00"),
        # Before 1911 Paris kept its mean time, +00:09:21, which FHIR cannot write.
        ("19000101", "101500", None, "Europe/Paris", "1900-01-01"),
        # Partial, fractional and old-style times.
        ("20240115", "10", "+0000", None, "2024-01-15T10:00:00+00:00"),
        ("20240115", "1015", "+0000", None, "2024-01-15T10:15:00+00:00"),
        ("20240115", "101530.123", "+0000", None, "2024-01-15T10:15:30.123+00:00"),
        ("20240115", "101530.000000", "+0000", None, "2024-01-15T10:15:30+00:00"),
        ("20240115", "10:15:30", "+0000", None, "2024-01-15T10:15:30+00:00"),
        ("20241231", "235960", "+0000", "UTC", "2024-12-31T23:59:60+00:00"),  # leap second
        ("2024.01.15", "101500", "+0000", None, "2024-01-15T10:15:00+00:00"),  # ACR-NEMA date
        # A malformed time keeps the date; a malformed offset counts as none.
        ("20240115", "2515", "+0000", None, "2024-01-15"),
        ("20240115", "1060", "+0000", None, "2024-01-15"),
        ("20240115", "101530.1234567", "+0000", None, "2024-01-15"),
        ("20240115", "noon", "+0000", None, "2024-01-15"),
        ("20240115", "\u0661\u0660\u0661\u0665\u0660\u0660", "+0000", None, "2024-01-15"),
        ("20240115", None, "+0100", "UTC", "2024-01-15"),
        ("20240115", "101500", "+1500", None, "2024-01-15"),
        ("20240115", "101500", "+0160", None, "2024-01-15"),
        ("20240115", "101500", "0100", None, "2024-01-15"),
        ("20240115", "101500", "+01:00", "UTC", "2024-01-15T10:15:00+00:00"),
        # A malformed date: no `started` at all.
        ("20240230", "101500", "+0000", None, None),
        ("2024-01-15", "101500", "+0000", None, None),
        ("00000101", "101500", "+0000", None, None),
        ("2024", "101500", "+0000", None, None),
        ("\u0662\u0660\u0662\u0664\u0660\u0661\u0661\u0665", "101500", "+0000", None, None),
        (None, "101500", "+0000", None, None),
    ],
)
def test_started(
    date: str | None, time: str | None, offset: str | None, zone: str | None, expected: str | None
) -> None:
    attributes = {"StudyDate": date, "StudyTime": time, "SeriesDate": date, "SeriesTime": time}
    ds = make_dataset(study_uid=STUDY, sop_uid="1.2.3.1.1", series_uid="1.2.3.1")
    for keyword, value in attributes.items():
        if value is None:
            ds.pop(keyword, None)
        else:
            setattr(ds, keyword, value)
    if offset is not None:
        ds.TimezoneOffsetFromUTC = offset
    options = MappingOptions(OPTIONS.dicomweb_base, timezone=zone)
    mapped = study([converted(ds)], options)
    assert mapped.get("started") == expected
    assert mapped["series"][0].get("started") == expected


@pytest.mark.parametrize(
    ("issuer", "expected"),
    [
        (None, {"type": ACSN, "value": "A-1"}),
        (
            {
                "LocalNamespaceEntityID": "RIS",
                "UniversalEntityID": "1.2.3.4",
                "UniversalEntityIDType": "ISO",
            },
            {
                "type": ACSN,
                "system": "urn:oid:1.2.3.4",
                "value": "A-1",
                "assigner": {"display": "RIS"},
            },
        ),
        (
            {
                "UniversalEntityID": "2C6B1C4E-0D3F-4A5B-9C7D-8E9F0A1B2C3D",
                "UniversalEntityIDType": "UUID",
            },
            {
                "type": ACSN,
                "system": "urn:uuid:2c6b1c4e-0d3f-4a5b-9c7d-8e9f0a1b2c3d",
                "value": "A-1",
            },
        ),
        (
            {
                "UniversalEntityID": "https://ris.example.org/accession",
                "UniversalEntityIDType": "URI",
            },
            {"type": ACSN, "system": "https://ris.example.org/accession", "value": "A-1"},
        ),
        (
            {"UniversalEntityID": "ris.example.org", "UniversalEntityIDType": "DNS"},
            {"type": ACSN, "system": "ris.example.org", "value": "A-1"},
        ),
        (
            {"LocalNamespaceEntityID": "Main RIS"},
            {"type": ACSN, "value": "A-1", "assigner": {"display": "Main RIS"}},
        ),
    ],
)
def test_accession_number_with_its_issuer(issuer: dict[str, str] | None, expected: Any) -> None:
    ds = make_dataset(study_uid=STUDY, AccessionNumber="A-1")
    if issuer is not None:
        item = Dataset()
        for keyword, value in issuer.items():
            setattr(item, keyword, value)
        ds.IssuerOfAccessionNumberSequence = [item]
    metadata = stored(ds)
    assert accession_identifier(metadata) == expected
    assert study([metadata])["identifier"] == [study_identifier(STUDY), expected]


def test_procedure_codes_and_reasons() -> None:
    private = code_item("P-1", "99LOCAL", "Local procedure")
    declared = code_item("P-2", "99DECL", "Declared procedure")
    scheme = Dataset()
    scheme.CodingSchemeDesignator, scheme.CodingSchemeUID = "99DECL", "1.2.826.0.1.99"
    urn = Dataset()
    urn.URNCodeValue, urn.CodeMeaning = "urn:example:procedure:7", "URN procedure"
    request = Dataset()
    request.ReasonForRequestedProcedureCodeSequence = [
        code_item("R07.4", "I10", "Chest pain, unspecified")
    ]
    ds = make_dataset(
        study_uid=STUDY,
        ProcedureCodeSequence=[
            code_item("169069000", "SCT", "CT of chest"),
            code_item("24627-2", "LN", "Chest CT"),
            code_item("RPID16", "RADLEX", "CT Chest wo"),
            code_item("113691", "DCM", "IEC Body Dosimetry Phantom"),
            private,
            declared,
            urn,
        ],
        CodingSchemeIdentificationSequence=[scheme],
        RequestAttributesSequence=[request],
    )
    mapped = study([stored(ds)])
    assert mapped["procedureCode"] == [
        {"coding": [sct("169069000", "CT of chest")], "text": "CT of chest"},
        {
            "coding": [{"system": "http://loinc.org", "code": "24627-2", "display": "Chest CT"}],
            "text": "Chest CT",
        },
        {
            "coding": [{"system": "http://radlex.org", "code": "RPID16", "display": "CT Chest wo"}],
            "text": "CT Chest wo",
        },
        {
            "coding": [{**dcm("113691"), "display": "IEC Body Dosimetry Phantom"}],
            "text": "IEC Body Dosimetry Phantom",
        },
        # An undeclared private scheme has no URI: the Coding goes without a system.
        {"coding": [{"code": "P-1", "display": "Local procedure"}], "text": "Local procedure"},
        {
            "coding": [
                {"system": "urn:oid:1.2.826.0.1.99", "code": "P-2", "display": "Declared procedure"}
            ],
            "text": "Declared procedure",
        },
        {
            "coding": [
                {
                    "system": "urn:ietf:rfc:3986",
                    "code": "urn:example:procedure:7",
                    "display": "URN procedure",
                }
            ],
            "text": "URN procedure",
        },
    ]
    assert mapped["reasonCode"] == [
        {
            "coding": [
                {
                    "system": "http://hl7.org/fhir/sid/icd-10",
                    "code": "R07.4",
                    "display": "Chest pain, unspecified",
                }
            ],
            "text": "Chest pain, unspecified",
        }
    ]


def test_the_last_instance_with_codes_gives_them() -> None:
    """A study's first instances may predate the order: the last instance that carries
    procedure codes gives them, and the last with a reason (coded or as text) gives it."""
    coded = make_dataset(
        study_uid=STUDY,
        sop_uid="1.2.3.4.1",
        ProcedureCodeSequence=[code_item("169069000", "SCT", "CT of chest")],
        ReasonForRequestedProcedureCodeSequence=[code_item("R07.4", "I10", "Chest pain")],
    )
    text = make_dataset(
        study_uid=STUDY, sop_uid="1.2.3.4.2", ReasonForTheRequestedProcedure="Follow-up"
    )
    bare = make_dataset(study_uid=STUDY, sop_uid="1.2.3.4.3")
    mapped = study([stored(coded), stored(text), stored(bare)])
    assert mapped["procedureCode"] == [
        {"coding": [sct("169069000", "CT of chest")], "text": "CT of chest"}
    ]
    assert mapped["reasonCode"] == [{"text": "Follow-up"}]
    assert study([stored(text), stored(coded)])["reasonCode"][0]["text"] == "Chest pain"


def test_a_code_item_without_a_code_keeps_its_meaning() -> None:
    item = Dataset()
    item.CodingSchemeDesignator, item.CodeMeaning = "SCT", "Chest pain"
    ds = make_dataset(study_uid=STUDY, ReasonForRequestedProcedureCodeSequence=[item])
    assert study([stored(ds)])["reasonCode"] == [{"text": "Chest pain"}]


def test_a_reason_given_as_text_only() -> None:
    ds = make_dataset(study_uid=STUDY, ReasonForTheRequestedProcedure="Follow-up of nodule")
    assert study([stored(ds)])["reasonCode"] == [{"text": "Follow-up of nodule"}]
    assert "reasonCode" not in study([stored(make_dataset(study_uid=STUDY))])


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        ("CHEST", sct("816094009", "Chest")),
        ("ABDOMEN", sct("818981001", "Abdomen")),
        ("PELVIS", sct("816092008", "Pelvis")),
        ("HEAD", sct("69536005", "Head")),
        ("BRAIN", sct("12738006", "Brain")),
        ("NECK", sct("45048000", "Neck")),
        ("CSPINE", sct("122494005", "Cervical spine")),
        ("TSPINE", sct("122495006", "Thoracic spine")),
        ("LSPINE", sct("122496007", "Lumbar spine")),
        ("SPINE", sct("421060004", "Spine")),
        ("KNEE", sct("72696002", "Knee")),
        ("HIP", sct("24136001", "Hip joint")),
        ("SHOULDER", sct("16982005", "Shoulder")),
        ("WRIST", sct("74670003", "Wrist joint")),
        ("BREAST", sct("76752008", "Breast")),
        ("HEART", sct("80891009", "Heart")),
        ("SKULL", sct("89546000", "Skull")),
        ("CHESTABDPELVIS", sct("416775004", "Chest, Abdomen and Pelvis")),
        ("WHOLEBODY", sct("38266002", "Entire body")),
        # What devices write for the Defined Terms.
        ("WHOLE BODY", sct("38266002", "Entire body")),
        ("l-spine", sct("122496007", "Lumbar spine")),
        ("C_SPINE", sct("122494005", "Cervical spine")),
        # Not in PS3.16 Annex L: kept as text, no code invented.
        ("BODY", {"display": "BODY"}),
        ("Left knee (lateral)", {"display": "Left knee (lateral)"}),
    ],
)
def test_body_part_examined(term: str, expected: dict[str, str]) -> None:
    mapped = study([built("1.2.3.1.1", BodyPartExamined=term)])
    assert mapped["series"][0]["bodySite"] == expected


def test_anatomic_region_sequence_when_body_part_examined_says_nothing_codable() -> None:
    region = code_item("T-D3000", "SRT", "Chest")  # a legacy SNOMED RT code: no FHIR system
    assert (
        study([built("1.2.3.1.1", AnatomicRegionSequence=[region])])["series"][0].get("bodySite")
        is None
    )
    region = code_item("39607008", "SCT", "Lung")
    mapped = study([built("1.2.3.1.1", AnatomicRegionSequence=[region])])
    assert mapped["series"][0]["bodySite"] == sct("39607008", "Lung")
    mapped = study([built("1.2.3.1.1", BodyPartExamined="KNEE", AnatomicRegionSequence=[region])])
    assert mapped["series"][0]["bodySite"] == sct("72696002", "Knee")


def test_the_body_part_table_holds_defined_terms_and_snomed_ids() -> None:
    assert len(BODY_PARTS) >= 100
    for term, (code, display) in BODY_PARTS.items():
        assert re.fullmatch(r"[0-9A-Z]{1,16}", term), term  # a CS value of at most 16 chars
        assert re.fullmatch(r"[1-9][0-9]{5,17}", code), term  # an SCTID
        assert display.strip() == display and display, term


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({"Laterality": "R"}, sct("24028007", "Right")),
        ({"Laterality": "L"}, sct("7771000", "Left")),
        ({"Laterality": "B"}, sct("51440002", "Right and left")),
        ({"Laterality": "U"}, None),
        ({}, None),
        ({"ImageLaterality": "L"}, sct("7771000", "Left")),
        ({"ImageLaterality": "U"}, None),
    ],
)
def test_laterality(attributes: dict[str, str], expected: dict[str, str] | None) -> None:
    mapped = study([built("1.2.3.1.1", **attributes)])
    assert mapped["series"][0].get("laterality") == expected


def test_image_laterality_of_both_sides_makes_a_bilateral_series() -> None:
    instances = [
        built("1.2.3.1.1", Modality="MG", ImageLaterality="L"),
        built("1.2.3.1.2", Modality="MG", ImageLaterality="R"),
    ]
    assert study(instances)["series"][0]["laterality"] == sct("51440002", "Right and left")


def test_instance_title_from_document_title_or_concept_name() -> None:
    report = built("1.2.3.1.1", sop_class=SR_TEXT, Modality="SR")
    concept = stored(
        make_dataset(
            study_uid=STUDY,
            series_uid="1.2.3.1",
            sop_uid="1.2.3.1.2",
            sop_class=SR_TEXT,
            Modality="SR",
            ConceptNameCodeSequence=[code_item("18748-4", "LN", "Diagnostic imaging report")],
        )
    )
    document = built("1.2.3.1.3", DocumentTitle="Referral letter")
    titles = [i.get("title") for i in study([report, concept, document])["series"][0]["instance"]]
    assert titles == [None, "Diagnostic imaging report", "Referral letter"]


# --- Patient ----------------------------------------------------------------------------------


def test_patient_with_every_name_component_in_three_representations() -> None:
    ds = make_dataset(
        study_uid=STUDY,
        SpecificCharacterSet="ISO_IR 192",
        PatientName="Müller^Jürgen^Hans^Dr.^III=山田^太郎=やまだ^たろう",
        PatientID="  PID-ß-7 ",
        PatientSex="M",
        PatientBirthDate="19700201",
    )
    assert valid(map_patient(stored(ds), OPTIONS)) == {
        "resourceType": "Patient",
        "meta": {"source": "urn:dicomhub"},
        "identifier": [{"system": "urn:dicomhub:patient-id", "value": "PID-ß-7"}],
        "name": [
            {
                "family": "Müller",
                "given": ["Jürgen", "Hans"],
                "prefix": ["Dr."],
                "suffix": ["III"],
                "text": "Dr. Jürgen Hans Müller III",
            },
            {
                "extension": [
                    {
                        "url": "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation",
                        "valueCode": "IDE",
                    }
                ],
                "family": "山田",
                "given": ["太郎"],
                "text": "太郎 山田",
            },
            {
                "extension": [
                    {
                        "url": "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation",
                        "valueCode": "SYL",
                    }
                ],
                "family": "やまだ",
                "given": ["たろう"],
                "text": "たろう やまだ",
            },
        ],
        "gender": "male",
        "birthDate": "1970-02-01",
    }


@pytest.mark.parametrize(
    ("sex", "gender"),
    [("M", "male"), ("F", "female"), ("O", "other"), ("", "unknown"), ("X", "unknown")],
)
def test_gender(sex: str, gender: str) -> None:
    assert valid(map_patient(built("1.2.3.1.1", PatientSex=sex), OPTIONS))["gender"] == gender


@pytest.mark.parametrize(
    ("birth", "expected"),
    [
        ("19991231", "1999-12-31"),
        ("20000229", "2000-02-29"),
        ("19990229", None),
        ("1999", None),
        ("", None),
    ],
)
def test_birth_date(birth: str, expected: str | None) -> None:
    patient = valid(map_patient(built("1.2.3.1.1", PatientBirthDate=birth), OPTIONS))
    assert patient.get("birthDate") == expected


def test_empty_patient_id_gives_no_identifier() -> None:
    instance = built("1.2.3.1.1", PatientID="")
    assert patient_identifier(instance) is None
    assert "identifier" not in valid(map_patient(instance, OPTIONS))


@pytest.mark.parametrize(
    ("attributes", "system"),
    [
        ({}, "urn:dicomhub:patient-id"),
        ({"IssuerOfPatientID": "1.2.840.99.1"}, "urn:oid:1.2.840.99.1"),
        (
            {"IssuerOfPatientID": "https://hospital.example.org/mrn"},
            "https://hospital.example.org/mrn",
        ),
        # Free text names a namespace but is no URI: patients of different issuers stay apart.
        ({"IssuerOfPatientID": "HOSPITAL A"}, "urn:dicomhub:patient-id:HOSPITAL%20A"),
        (
            {"IssuerOfPatientID": "HOSPITAL A", "qualifiers": ("2.16.840.1.113883.3.1", "ISO")},
            "urn:oid:2.16.840.1.113883.3.1",
        ),
        ({"qualifiers": ("urn:example:mrn", "URI")}, "urn:example:mrn"),
        ({"qualifiers": ("mrn.example.org", "DNS")}, "mrn.example.org"),
    ],
)
def test_patient_identifier_system(attributes: dict[str, Any], system: str) -> None:
    qualifiers = attributes.pop("qualifiers", None)
    ds = make_dataset(study_uid=STUDY, PatientID="12345", **attributes)
    if qualifiers is not None:
        item = Dataset()
        item.UniversalEntityID, item.UniversalEntityIDType = qualifiers
        ds.IssuerOfPatientIDQualifiersSequence = [item]
    instance = stored(ds)
    assert patient_identifier(instance, OPTIONS) == (system, "12345")
    assert valid(map_patient(instance, OPTIONS))["identifier"] == [
        {"system": system, "value": "12345"}
    ]


def test_a_configured_default_system_is_used_by_both_functions() -> None:
    options = MappingOptions(OPTIONS.dicomweb_base, patient_id_system="https://mrn.example.org")
    instance = built("1.2.3.1.1", PatientID="777")
    assert patient_identifier(instance, options) == ("https://mrn.example.org", "777")
    assert map_patient(instance, options)["identifier"] == [
        {"system": "https://mrn.example.org", "value": "777"}
    ]
    assert patient_identifier(instance) == ("urn:dicomhub:patient-id", "777")


# --- Endpoint and options ---------------------------------------------------------------------


def test_endpoint() -> None:
    options = MappingOptions("https://pacs.example.org/dicom-web/", source="urn:example:archive")
    assert endpoint_identifier(options) == (
        "urn:ietf:rfc:3986",
        "https://pacs.example.org/dicom-web",
    )
    assert valid(map_endpoint(options)) == {
        "resourceType": "Endpoint",
        "meta": {"source": "urn:example:archive"},
        "identifier": [
            {"system": "urn:ietf:rfc:3986", "value": "https://pacs.example.org/dicom-web"}
        ],
        "status": "active",
        "connectionType": {
            "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
            "code": "dicom-wado-rs",
            "display": "DICOM WADO-RS",
        },
        "name": "dicomhub DICOMweb (WADO-RS)",
        "payloadType": [{"text": "DICOM"}],
        "payloadMimeType": ["application/dicom"],
        "address": "https://pacs.example.org/dicom-web",
    }


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dicomweb_base": "pacs.example.org/dicom-web"},
        {"dicomweb_base": "http://host/dicom web"},
        {"dicomweb_base": "http://host", "timezone": "Mars/Olympus_Mons"},
        {"dicomweb_base": "http://host", "timezone": "../etc/passwd"},
        {"dicomweb_base": "http://host", "source": "not a uri"},
        {"dicomweb_base": "http://host", "patient_id_system": ""},
    ],
)
def test_bad_options_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        MappingOptions(**kwargs)


# --- anything goes: never a crash, always valid -----------------------------------------------

# Any code point, lone surrogates and control characters included.
_text = st.text(st.characters(exclude_categories=()), max_size=24)
_dates = st.one_of(
    _text,
    st.dates().map(lambda d: f"{d.year:04d}{d.month:02d}{d.day:02d}"),
    st.from_regex(r"\A[0-9]{8}\Z"),
    st.from_regex(r"\A\d{8}\Z"),  # \d: the digits of every script
)
_times = st.one_of(
    _text,
    st.from_regex(r"\A[0-9]{2}([0-9]{2}([0-9]{2}(\.[0-9]{1,7})?)?)?\Z"),
    st.from_regex(r"\A\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?\Z"),
)
_offsets = st.one_of(_text, st.from_regex(r"\A[+-][0-9]{4}\Z"))
_numbers = st.one_of(st.integers(), st.floats(), _text, st.booleans())
_names = st.one_of(
    _text,
    st.fixed_dictionaries(
        {}, optional={g: _text for g in ("Alphabetic", "Ideographic", "Phonetic")}
    ),
)
_zones = st.sampled_from(
    [None, "UTC", "Europe/Paris", "America/New_York", "Asia/Manila", "Australia/Lord_Howe"]
)


def _element(vr: str, value: Any) -> dict[str, Any]:
    return {"vr": vr} if value is None else {"vr": vr, "Value": [value]}


@st.composite
def _instances(draw: st.DrawFn) -> dict[str, Any]:
    def maybe(strategy: st.SearchStrategy[Any]) -> Any:
        return draw(st.one_of(st.none(), strategy))

    code = {
        "00080100": _element("SH", maybe(_text)),
        "00080102": _element("SH", maybe(st.sampled_from(["SCT", "LN", "99X", "DCM"]) | _text)),
        "00080104": _element("LO", maybe(_text)),
    }
    issuer = {
        "00400031": _element("UT", maybe(_text)),
        "00400032": _element("UT", maybe(_text)),
        "00400033": _element("CS", maybe(st.sampled_from(["ISO", "UUID", "URI", "DNS"]) | _text)),
    }
    return {
        "00080016": _element("UI", "1.2.840.10008.5.1.4.1.1.2"),
        "00080018": _element("UI", draw(st.sampled_from(["1.2.3.1.1", "1.2.3.1.2", "1.2.3.2.1"]))),
        "00080020": _element("DA", maybe(_dates)),
        "00080021": _element("DA", maybe(_dates)),
        "00080030": _element("TM", maybe(_times)),
        "00080031": _element("TM", maybe(_times)),
        "00080050": _element("SH", maybe(_text)),
        "00080051": {"vr": "SQ", "Value": [issuer]},
        "00080060": _element("CS", maybe(_text)),
        "00080090": _element("PN", maybe(_names)),
        "00080201": _element("SH", maybe(_offsets)),
        "00081030": _element("LO", maybe(_text)),
        "0008103E": _element("LO", maybe(_text)),
        "00081032": {"vr": "SQ", "Value": [code]},
        "00100010": _element("PN", maybe(_names)),
        "00100020": _element("LO", maybe(_text)),
        "00100021": _element("LO", maybe(_text)),
        "00100024": {"vr": "SQ", "Value": [issuer]},
        "00100030": _element("DA", maybe(_dates)),
        "00100040": _element("CS", maybe(_text)),
        "00180015": _element("CS", maybe(st.sampled_from(sorted(BODY_PARTS)) | _text)),
        "0020000D": _element("UI", STUDY),
        "0020000E": _element("UI", draw(st.sampled_from(["1.2.3.1", "1.2.3.2"]))),
        "00200011": _element("IS", maybe(_numbers)),
        "00200013": _element("IS", maybe(_numbers)),
        "00200060": _element("CS", maybe(st.sampled_from(["R", "L", "B", "U"]) | _text)),
        "00200062": _element("CS", maybe(st.sampled_from(["R", "L", "B", "U"]) | _text)),
        "00420010": _element("ST", maybe(_text)),
    }


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances=st.lists(_instances(), min_size=1, max_size=4), zone=_zones)
def test_random_values_never_crash_and_always_validate(
    instances: list[dict[str, Any]], zone: str | None
) -> None:
    options = MappingOptions(OPTIONS.dicomweb_base, timezone=zone)
    mapped = study(instances, options)
    sops = {i["00080018"]["Value"][0] for i in instances}
    assert mapped["numberOfInstances"] == len(sops)
    for started in [mapped.get("started"), *(s.get("started") for s in mapped["series"])]:
        assert started is None or FHIR_DATETIME.match(started), started
    for instance in instances:
        valid(map_patient(instance, options))
        accession = accession_identifier(instance)
        assert accession is None or accession["value"].strip() == accession["value"]
    valid(map_endpoint(options))
