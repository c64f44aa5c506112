"""QIDO-RS end to end: every matching rule at every level, over HTTP, on both index backends.

Most tests search one fixed population stored once per backend (`archive`, read-only);
tests that need their own data use the per-test `http` fixture.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from dicomhub.bootstrap import build_services, prepare_storage
from dicomhub.config import Settings
from tests.conftest import PG_ADMIN, LiveServer, require_postgres
from tests.dicomfiles import (
    CT_IMAGE,
    MR_IMAGE,
    SECONDARY_CAPTURE,
    make_dataset,
    make_instance,
    multipart_body,
    to_part10,
)

# Tags, written out here rather than taken from dicomhub.
STUDY_UID_TAG = "0020000D"
SERIES_UID_TAG = "0020000E"
SOP_UID_TAG = "00080018"
UID_TAG = {"study": STUDY_UID_TAG, "series": SERIES_UID_TAG, "instance": SOP_UID_TAG}
TAGS = {
    "SpecificCharacterSet": "00080005",
    "SOPClassUID": "00080016",
    "SOPInstanceUID": "00080018",
    "StudyDate": "00080020",
    "StudyTime": "00080030",
    "AccessionNumber": "00080050",
    "InstanceAvailability": "00080056",
    "Modality": "00080060",
    "ModalitiesInStudy": "00080061",
    "SOPClassesInStudy": "00080062",
    "Manufacturer": "00080070",
    "InstitutionName": "00080080",
    "ReferringPhysicianName": "00080090",
    "TimezoneOffsetFromUTC": "00080201",
    "StudyDescription": "00081030",
    "SeriesDescription": "0008103E",
    "RetrieveURL": "00081190",
    "PatientName": "00100010",
    "PatientID": "00100020",
    "PatientBirthDate": "00100030",
    "PatientSex": "00100040",
    "PatientAge": "00101010",
    "BodyPartExamined": "00180015",
    "StudyInstanceUID": "0020000D",
    "SeriesInstanceUID": "0020000E",
    "StudyID": "00200010",
    "SeriesNumber": "00200011",
    "InstanceNumber": "00200013",
    "NumberOfStudyRelatedSeries": "00201206",
    "NumberOfStudyRelatedInstances": "00201208",
    "NumberOfSeriesRelatedInstances": "00201209",
    "SamplesPerPixel": "00280002",
    "PhotometricInterpretation": "00280004",
    "NumberOfFrames": "00280008",
    "Rows": "00280010",
    "Columns": "00280011",
    "BitsAllocated": "00280100",
    "PerformedProcedureStepStartDate": "00400244",
    "PerformedProcedureStepStartTime": "00400245",
    "RequestAttributesSequence": "00400275",
    "PixelData": "7FE00010",
}


def tags(*keywords: str) -> set[str]:
    return {TAGS[k] for k in keywords}


# PS3.18 Tables 10.6.3-3, -4 and -5: what every result of a level carries by default.
STUDY_DEFAULT = tags(
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "InstanceAvailability",
    "ModalitiesInStudy",
    "ReferringPhysicianName",
    "TimezoneOffsetFromUTC",
    "RetrieveURL",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)
SERIES_DEFAULT = tags(
    "Modality",
    "TimezoneOffsetFromUTC",
    "SeriesDescription",
    "RetrieveURL",
    "SeriesInstanceUID",
    "SeriesNumber",
    "NumberOfSeriesRelatedInstances",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "RequestAttributesSequence",
)
INSTANCE_DEFAULT = tags(
    "SOPClassUID",
    "SOPInstanceUID",
    "InstanceAvailability",
    "TimezoneOffsetFromUTC",
    "RetrieveURL",
    "InstanceNumber",
    "Rows",
    "Columns",
    "BitsAllocated",
    "NumberOfFrames",
)

# --- the population -----------------------------------------------------------------------------
# Studies A-D, series A1 ... D1, instances "<series>.<InstanceNumber>". None = attribute absent.

STUDIES: dict[str, dict[str, str | None]] = {
    "A": {
        "PatientName": "Doe^John",
        "PatientID": "PID-001",
        "StudyDate": "20240115",
        "StudyTime": "101500",
        "AccessionNumber": "ACC-001",
        "ReferringPhysicianName": "Smith^Anna",
        "StudyID": "S1",
        "PatientBirthDate": "19800101",
        "PatientSex": "M",
        "StudyDescription": "Brain MRI",
    },
    "B": {
        "PatientName": "Müller^Jürgen",
        "PatientID": "PID-002",
        "StudyDate": "20231231",
        "StudyTime": "235959.5",
        "AccessionNumber": "acc-002",
        "ReferringPhysicianName": "Doe^Jane",
        "StudyID": "S2",
        "PatientBirthDate": "19751231",
        "PatientSex": "M",
        "StudyDescription": "Chest CT",
    },
    "C": {
        "PatientName": "DOE^JANE^^",
        "PatientID": "pid-001",
        "StudyDate": "20240301",
        "StudyTime": "0800",
        "AccessionNumber": "ACC-003",
        "ReferringPhysicianName": None,
        "StudyID": "S3",
        "PatientBirthDate": None,
        "PatientSex": "F",
        "StudyDescription": "brain mri",
    },
    "D": {
        "PatientName": "Ñúñez^José",
        "PatientID": "PID-004",
        "StudyDate": "20240115",
        "StudyTime": "1015",
        "AccessionNumber": "ACC-004",
        "ReferringPhysicianName": "Smith^Bob",
        "StudyID": "S4",
        "PatientBirthDate": "20000229",
        "PatientSex": "O",
        "StudyDescription": "Brain MRI follow-up",
    },
}


@dataclass(frozen=True)
class SeriesSpec:
    study: str
    sop_class: str
    instance_numbers: tuple[int, ...]
    attributes: dict[str, Any]


def _series(
    study: str,
    modality: str,
    number: int,
    pps_date: str | None,
    pps_time: str | None,
    description: str | None,
    body_part: str | None,
    manufacturer: str | None,
    institution: str | None,
    sop_class: str,
    instance_numbers: tuple[int, ...],
) -> SeriesSpec:
    return SeriesSpec(
        study,
        sop_class,
        instance_numbers,
        {
            "Modality": modality,
            "SeriesNumber": number,
            "PerformedProcedureStepStartDate": pps_date,
            "PerformedProcedureStepStartTime": pps_time,
            "SeriesDescription": description,
            "BodyPartExamined": body_part,
            "Manufacturer": manufacturer,
            "InstitutionName": institution,
        },
    )


# Instances of A1 are stored out of InstanceNumber order on purpose.
SERIES: dict[str, SeriesSpec] = {
    "A1": _series(
        "A", "MR", 1, "20240115", "101600", "T1 axial", "HEAD", "Acme", "General Hospital",
        MR_IMAGE, (3, 1, 2),
    ),
    "A2": _series(
        "A", "CT", 2, "20240116", "0930", "Scout", "HEAD", "Globex", "General Hospital",
        CT_IMAGE, (1,),
    ),
    "B1": _series(
        "B", "CT", 1, "20231231", "2300", "Chest axial", "CHEST", "Acme",
        "Clinique Sainte-Anne", CT_IMAGE, (1, 2),
    ),
    "B2": _series(
        "B", "OT", 3, None, None, None, None, None, "Clinique Sainte-Anne",
        SECONDARY_CAPTURE, (1,),
    ),
    "C1": _series(
        "C", "US", 10, None, None, None, "ABDOMEN", "Initech", None, SECONDARY_CAPTURE, (5,)
    ),
    "D1": _series(
        "D", "MR", 1, "20240115", "101600.25", "T2 axial", "HEAD", "Acme Medical",
        "General Hospital East", MR_IMAGE, (1,),
    ),
}  # fmt: skip

INSTANCES = [f"{s}.{n}" for s, spec in SERIES.items() for n in spec.instance_numbers]

# Labels to UIDs and back; each kind has its own root so the sets cannot collide.
UIDS: dict[str, str] = {}
for _i, _label in enumerate(STUDIES, 1):
    UIDS[_label] = f"1.2.826.0.1.3680043.10.1.{_i}"
for _i, _label in enumerate(SERIES, 1):
    UIDS[_label] = f"1.2.826.0.1.3680043.10.2.{_i}"
for _i, _label in enumerate(INSTANCES, 1):
    UIDS[_label] = f"1.2.826.0.1.3680043.10.3.{_i}"
LABELS = {uid: label for label, uid in UIDS.items()}
_LABEL = re.compile(r"\{([A-D][0-9.]*)\}")


def fill(text: str) -> str:
    """`{A}`, `{A1}`, `{A1.2}` replaced by the UID of that study, series or instance."""
    return _LABEL.sub(lambda m: UIDS[m.group(1)], text)


def population() -> list[bytes]:
    """Part-10 files of the population, in the order they are stored."""
    files = []
    for series_label, spec in SERIES.items():
        for number in spec.instance_numbers:
            attributes = {**STUDIES[spec.study], **spec.attributes}
            ds = make_dataset(
                study_uid=UIDS[spec.study],
                series_uid=UIDS[series_label],
                sop_uid=UIDS[f"{series_label}.{number}"],
                sop_class=spec.sop_class,
                rows=2,
                columns=2,
                SpecificCharacterSet="ISO_IR 192",
                InstanceNumber=number,
                **{k: v for k, v in attributes.items() if v is not None},
            )
            for keyword, value in attributes.items():
                if value is None and keyword in ds:
                    delattr(ds, keyword)
            files.append(to_part10(ds))
    return files


# --- helpers ------------------------------------------------------------------------------------


def store(http: httpx.Client, files: list[bytes]) -> None:
    body, content_type = multipart_body(files)
    response = http.post("/studies", content=body, headers={"Content-Type": content_type})
    assert response.status_code == 200, response.text
    assert "00081198" not in response.json(), response.text  # no FailedSOPSequence


def search(
    http: httpx.Client, path: str, params: Any = None, *, warning: bool = False
) -> list[dict[str, Any]]:
    """A successful search's results; fails on a Warning header unless one is expected."""
    response = http.get(path, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/dicom+json")
    assert ("warning" in response.headers) == warning, response.headers.get("warning")
    results = response.json()
    assert isinstance(results, list)
    return results


def labels(results: list[dict[str, Any]], level: str) -> list[str]:
    out = []
    for item in results:
        uid = item[UID_TAG[level]]["Value"][0]
        out.append(LABELS.get(uid, uid))
    return out


def matched(results: list[dict[str, Any]], level: str) -> set[str]:
    """The set of labels found, after checking that none is found twice."""
    found = labels(results, level)
    assert len(found) == len(set(found)), f"duplicates in {found}"
    return set(found)


def value(item: dict[str, Any], keyword: str) -> Any:
    return item[TAGS[keyword]].get("Value")


@contextmanager
def _postgres_database() -> Iterator[str]:
    name = f"dicomhub_qido_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass(frozen=True)
class Archive:
    http: httpx.Client
    base: str  # the /dicom-web root as a client reaches it


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def archive(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Archive]:
    """The population, stored once per backend and searched by many tests (which must not write)."""
    if request.param == "postgresql":
        require_postgres()
    root: Path = tmp_path_factory.mktemp(f"qido-{request.param}")
    with ExitStack() as stack:
        database_url = (
            stack.enter_context(_postgres_database()) if request.param == "postgresql" else None
        )
        settings = Settings(
            data_dir=root / "data",
            database_url=database_url,
            sqlite_synchronous="NORMAL",
            qido_max_limit=500,
        )
        prepare_storage(settings)
        services = build_services(settings)
        stack.callback(services.close)
        server = stack.enter_context(LiveServer(settings, services))
        base = server.url + "/dicom-web"
        http = stack.enter_context(httpx.Client(base_url=base, timeout=60))
        store(http, population())
        yield Archive(http, base)


# --- matching, one case per rule and key --------------------------------------------------------

STUDY_CASES = [
    # StudyDate (DA): single value, ACR-NEMA form, ranges a-b, a-, -b
    ("StudyDate", "20240115", "A D"),
    ("StudyDate", "2024.01.15", "A D"),
    ("StudyDate", "20240101-20240131", "A D"),
    ("StudyDate", "20240115-20240115", "A D"),
    ("StudyDate", "20240101-", "A C D"),
    ("StudyDate", "-20231231", "B"),
    ("StudyDate", "20231231-20240115", "A B D"),
    ("StudyDate", "20240302-", ""),
    ("StudyDate", "", "A B C D"),
    # StudyTime (TM): a single value is exact after padding; range bounds cover partial times
    ("StudyTime", "101500", "A D"),  # D holds "1015"
    ("StudyTime", "1015", "A D"),
    ("StudyTime", "10", ""),  # 10:00:00 exactly: nobody
    ("StudyTime", "10-10", "A D"),
    ("StudyTime", "1015-1015", "A D"),
    ("StudyTime", "-0900", "C"),
    ("StudyTime", "0800-0800", "C"),
    ("StudyTime", "2359-", "B"),
    ("StudyTime", "235959.5", "B"),
    ("StudyTime", "235959", ""),  # B is 23:59:59.5
    ("StudyTime", "235959-235959", "B"),
    ("StudyTime", "10:15", "A D"),
    # AccessionNumber (SH): exact and case-sensitive, wildcards, value list
    ("AccessionNumber", "ACC-001", "A"),
    ("AccessionNumber", "acc-001", ""),
    ("AccessionNumber", "ACC*", "A C D"),
    ("AccessionNumber", "acc*", "B"),
    ("AccessionNumber", "ACC-00?", "A C D"),
    ("AccessionNumber", "?CC-00?", "A C D"),
    ("AccessionNumber", "*", "A B C D"),
    ("AccessionNumber", "ACC-001\\ACC-003", "A C"),
    # ModalitiesInStudy: any series of the study
    ("ModalitiesInStudy", "CT", "A B"),
    ("ModalitiesInStudy", "MR", "A D"),
    ("ModalitiesInStudy", "US", "C"),
    ("ModalitiesInStudy", "CT,US", "A B C"),
    ("ModalitiesInStudy", "CT\\US", "A B C"),
    ("ModalitiesInStudy", "C*", "A B"),
    ("ModalitiesInStudy", "?T", "A B"),  # CT and OT
    ("ModalitiesInStudy", "ct", ""),
    ("ModalitiesInStudy", "XA", ""),
    # ReferringPhysicianName (PN): case- and accent-insensitive
    ("ReferringPhysicianName", "Smith^Anna", "A"),
    ("ReferringPhysicianName", "SMITH^ANNA^^", "A"),
    ("ReferringPhysicianName", "smith*", "A D"),
    ("ReferringPhysicianName", "DOE*", "B"),
    ("ReferringPhysicianName", "*", "A B C D"),
    ("ReferringPhysicianName", "", "A B C D"),
    # PatientName (PN)
    ("PatientName", "Doe^John", "A"),
    ("PatientName", "doe^john", "A"),
    ("PatientName", "DOE^JOHN", "A"),
    ("PatientName", "Doe^John^^", "A"),
    ("PatientName", "Doe^John^^^^", "A"),
    ("PatientName", "Doe^Jane", "C"),  # stored as DOE^JANE^^
    ("PatientName", "Doe", ""),  # single value: the whole name
    ("PatientName", "Doe*", "A C"),
    ("PatientName", "do?^j*", "A C"),
    ("PatientName", "*john", "A"),
    ("PatientName", "*^J*", "A B C D"),
    ("PatientName", "Müller^Jürgen", "B"),
    ("PatientName", "MÜLLER^JÜRGEN", "B"),
    ("PatientName", "muller^jurgen", "B"),
    ("PatientName", "Mül*", "B"),
    ("PatientName", "mul*", "B"),
    ("PatientName", "nunez^jose", "D"),
    ("PatientName", "ÑÚÑEZ^JOSÉ", "D"),
    ("PatientName", "n?nez*", "D"),
    ("PatientName", "Doe^John\\Nunez^Jose", "A D"),
    ("PatientName", "*", "A B C D"),
    # PatientID (LO): case-sensitive
    ("PatientID", "PID-001", "A"),
    ("PatientID", "pid-001", "C"),
    ("PatientID", "PID*", "A B D"),
    ("PatientID", "pid*", "C"),
    ("PatientID", "PID-00?", "A B D"),
    ("PatientID", "*-001", "A C"),
    ("PatientID", "*", "A B C D"),
    ("PatientID", "PID-001\\PID-002", "A B"),
    ("PatientID", "PID-0", ""),
    # StudyInstanceUID (UI): single, list with comma or backslash
    ("StudyInstanceUID", "{A}", "A"),
    ("StudyInstanceUID", "{A},{C}", "A C"),
    ("StudyInstanceUID", "{B}\\{D}", "B D"),
    ("StudyInstanceUID", "{A}, {B}\\{C}", "A B C"),
    ("StudyInstanceUID", "{A1}", ""),  # a series UID is no study UID
    ("StudyInstanceUID", "1.2.3.4.5", ""),
    # StudyID (SH)
    ("StudyID", "S1", "A"),
    ("StudyID", "s1", ""),
    ("StudyID", "S*", "A B C D"),
    ("StudyID", "S?", "A B C D"),
    ("StudyID", "S1\\S4", "A D"),
    # PatientBirthDate (DA); C has none
    ("PatientBirthDate", "19800101", "A"),
    ("PatientBirthDate", "-19791231", "B"),
    ("PatientBirthDate", "19700101-19891231", "A B"),
    ("PatientBirthDate", "20000229", "D"),
    ("PatientBirthDate", "", "A B C D"),
    # PatientSex (CS): list with comma or backslash
    ("PatientSex", "M", "A B"),
    ("PatientSex", "F", "C"),
    ("PatientSex", "m", ""),
    ("PatientSex", "F,O", "C D"),
    ("PatientSex", "F\\O", "C D"),
    # StudyDescription (LO)
    ("StudyDescription", "Brain MRI", "A"),
    ("StudyDescription", "brain mri", "C"),
    ("StudyDescription", "Brain*", "A D"),
    ("StudyDescription", "*MRI*", "A D"),
    ("StudyDescription", "*mri", "C"),
    ("StudyDescription", "Brain?MRI", "A"),
    ("StudyDescription", "Brain MR", ""),
    # SOPClassesInStudy (computed, UI)
    ("SOPClassesInStudy", SECONDARY_CAPTURE, "B C"),
    ("SOPClassesInStudy", f"{MR_IMAGE},{SECONDARY_CAPTURE}", "A B C D"),
    ("SOPClassesInStudy", CT_IMAGE, "A B"),
]


def _case_id(key: str, value: str, *rest: object) -> str:
    return f"{key}={value}"


def _params(key: str, raw: str) -> dict[str, str]:
    return {key: fill(raw)}


@pytest.mark.parametrize(
    ("key", "raw", "expected"), STUDY_CASES, ids=[_case_id(*c) for c in STUDY_CASES]
)
def test_study_matching(archive: Archive, key: str, raw: str, expected: str) -> None:
    results = search(archive.http, "/studies", _params(key, raw))
    assert matched(results, "study") == set(expected.split())
    # Matching keys are returned, with the value of each result (PS3.18 10.6.3.3).
    for item in results:
        assert TAGS[key] in item


SERIES_CASES = [
    # Modality (CS)
    ("Modality", "CT", "A2 B1"),
    ("Modality", "MR", "A1 D1"),
    ("Modality", "mr", ""),
    ("Modality", "M?", "A1 D1"),
    ("Modality", "*T", "A2 B1 B2"),
    ("Modality", "CT\\MR", "A1 A2 B1 D1"),
    ("Modality", "US,OT", "B2 C1"),
    # SeriesInstanceUID (UI)
    ("SeriesInstanceUID", "{A1}", "A1"),
    ("SeriesInstanceUID", "{A1},{D1}", "A1 D1"),
    ("SeriesInstanceUID", "{B2}\\{C1}", "B2 C1"),
    ("SeriesInstanceUID", "{A}", ""),
    # SeriesNumber (IS): integer or list
    ("SeriesNumber", "1", "A1 B1 D1"),
    ("SeriesNumber", "01", "A1 B1 D1"),
    ("SeriesNumber", "10", "C1"),
    ("SeriesNumber", "2,3", "A2 B2"),
    ("SeriesNumber", "2\\10", "A2 C1"),
    ("SeriesNumber", "4", ""),
    ("SeriesNumber", "2147483647", ""),
    # PerformedProcedureStepStartDate (DA)
    ("PerformedProcedureStepStartDate", "20240115", "A1 D1"),
    ("PerformedProcedureStepStartDate", "20240116-", "A2"),
    ("PerformedProcedureStepStartDate", "-20231231", "B1"),
    ("PerformedProcedureStepStartDate", "20231231-20240116", "A1 A2 B1 D1"),
    # PerformedProcedureStepStartTime (TM)
    ("PerformedProcedureStepStartTime", "1016", "A1"),  # D1 is 10:16:00.25
    ("PerformedProcedureStepStartTime", "101600.25", "D1"),
    ("PerformedProcedureStepStartTime", "1016-1016", "A1 D1"),
    ("PerformedProcedureStepStartTime", "-10", "A1 A2 D1"),
    ("PerformedProcedureStepStartTime", "-0959", "A2"),
    ("PerformedProcedureStepStartTime", "22-", "B1"),
    # SeriesDescription (LO)
    ("SeriesDescription", "T1 axial", "A1"),
    ("SeriesDescription", "t1 axial", ""),
    ("SeriesDescription", "*axial", "A1 B1 D1"),
    ("SeriesDescription", "T? axial", "A1 D1"),
    # BodyPartExamined (CS)
    ("BodyPartExamined", "HEAD", "A1 A2 D1"),
    ("BodyPartExamined", "CHEST,ABDOMEN", "B1 C1"),
    ("BodyPartExamined", "ABD*", "C1"),
    ("BodyPartExamined", "head", ""),
    # Manufacturer (LO)
    ("Manufacturer", "Acme", "A1 B1"),
    ("Manufacturer", "acme", ""),
    ("Manufacturer", "Acme*", "A1 B1 D1"),
    ("Manufacturer", "Globex\\Initech", "A2 C1"),
    # InstitutionName (LO)
    ("InstitutionName", "General Hospital", "A1 A2"),
    ("InstitutionName", "General*", "A1 A2 D1"),
    ("InstitutionName", "*Anne", "B1 B2"),
    ("InstitutionName", "*", "A1 A2 B1 B2 C1 D1"),
    # study-level keys at series level
    ("PatientID", "PID-001", "A1 A2"),
    ("PatientName", "mül*", "B1 B2"),
    ("StudyDate", "20240115", "A1 A2 D1"),
    ("StudyInstanceUID", "{B}", "B1 B2"),
    ("ModalitiesInStudy", "US", "C1"),
    ("StudyDescription", "Chest*", "B1 B2"),
]


@pytest.mark.parametrize(
    ("key", "raw", "expected"), SERIES_CASES, ids=[_case_id(*c) for c in SERIES_CASES]
)
def test_series_matching(archive: Archive, key: str, raw: str, expected: str) -> None:
    results = search(archive.http, "/series", _params(key, raw))
    assert matched(results, "series") == set(expected.split())
    for item in results:
        assert TAGS[key] in item


INSTANCE_CASES = [
    # SOPClassUID (UI)
    ("SOPClassUID", MR_IMAGE, "A1.1 A1.2 A1.3 D1.1"),
    ("SOPClassUID", f"{CT_IMAGE},{SECONDARY_CAPTURE}", "A2.1 B1.1 B1.2 B2.1 C1.5"),
    ("SOPClassUID", f"{SECONDARY_CAPTURE}\\{MR_IMAGE}", "A1.1 A1.2 A1.3 B2.1 C1.5 D1.1"),
    ("SOPClassUID", "1.2.840.10008.5.1.4.1.1.128", ""),
    # SOPInstanceUID (UI)
    ("SOPInstanceUID", "{A1.2}", "A1.2"),
    ("SOPInstanceUID", "{A1.2},{C1.5}", "A1.2 C1.5"),
    ("SOPInstanceUID", "{B1.1}\\{B1.2}\\{D1.1}", "B1.1 B1.2 D1.1"),
    ("SOPInstanceUID", "{A1}", ""),
    # InstanceNumber (IS)
    ("InstanceNumber", "1", "A1.1 A2.1 B1.1 B2.1 D1.1"),
    ("InstanceNumber", "2,3", "A1.2 A1.3 B1.2"),
    ("InstanceNumber", "3\\5", "A1.3 C1.5"),
    ("InstanceNumber", "+5", "C1.5"),
    ("InstanceNumber", "4", ""),
    # higher-level keys at instance level
    ("Modality", "CT", "A2.1 B1.1 B1.2"),
    ("SeriesNumber", "3", "B2.1"),
    ("StudyDate", "-20231231", "B1.1 B1.2 B2.1"),
    ("PatientName", "ñúñez^josé", "D1.1"),
    ("SeriesInstanceUID", "{A1}", "A1.1 A1.2 A1.3"),
    ("StudyInstanceUID", "{C}", "C1.5"),
]


@pytest.mark.parametrize(
    ("key", "raw", "expected"), INSTANCE_CASES, ids=[_case_id(*c) for c in INSTANCE_CASES]
)
def test_instance_matching(archive: Archive, key: str, raw: str, expected: str) -> None:
    results = search(archive.http, "/instances", _params(key, raw))
    assert matched(results, "instance") == set(expected.split())
    for item in results:
        assert TAGS[key] in item


def test_keys_combine_with_and(archive: Archive) -> None:
    found = search(archive.http, "/studies", {"PatientName": "Doe*", "StudyDate": "20240301"})
    assert labels(found, "study") == ["C"]
    found = search(
        archive.http,
        "/instances",
        {"Modality": "MR", "InstanceNumber": "1,2", "StudyDate": "20240115"},
    )
    assert matched(found, "instance") == {"A1.1", "A1.2", "D1.1"}


# --- fuzzy matching -----------------------------------------------------------------------------

FUZZY_CASES = [
    ("/studies", "PatientName", "joh", "study", "A"),
    ("/studies", "PatientName", "JOH", "study", "A"),
    ("/studies", "PatientName", "do", "study", "A C"),
    ("/studies", "PatientName", "ohn", "study", ""),  # a word prefix, not a substring
    ("/studies", "PatientName", "oe", "study", ""),
    ("/studies", "PatientName", "doe jo", "study", "A"),
    ("/studies", "PatientName", "Doe^Ja", "study", "C"),
    ("/studies", "PatientName", "ja doe", "study", "C"),  # any component, any order
    ("/studies", "PatientName", "jur", "study", "B"),
    ("/studies", "PatientName", "JÜR", "study", "B"),
    ("/studies", "PatientName", "jose", "study", "D"),
    ("/studies", "PatientName", "núñ", "study", "D"),
    ("/studies", "PatientName", "j", "study", "A B C D"),
    ("/studies", "PatientName", "jo*", "study", "A D"),
    ("/studies", "ReferringPhysicianName", "smi", "study", "A D"),
    ("/studies", "ReferringPhysicianName", "ann", "study", "A"),
    ("/studies", "ReferringPhysicianName", "jan", "study", "B"),
    ("/studies", "ReferringPhysicianName", "mith", "study", ""),
    ("/series", "PatientName", "mul", "series", "B1 B2"),
    ("/instances", "PatientName", "joh", "instance", "A1.1 A1.2 A1.3 A2.1"),
]


@pytest.mark.parametrize(
    ("path", "key", "raw", "level", "expected"),
    FUZZY_CASES,
    ids=[f"{c[0]}-{c[1]}={c[2]}" for c in FUZZY_CASES],
)
def test_fuzzy_matching(
    archive: Archive, path: str, key: str, raw: str, level: str, expected: str
) -> None:
    results = search(archive.http, path, {key: raw, "fuzzymatching": "true"})
    assert matched(results, level) == set(expected.split())


def test_fuzzy_matching_leaves_other_keys_literal(archive: Archive) -> None:
    found = search(
        archive.http, "/studies", {"fuzzymatching": "true", "PatientID": "PID", "PatientName": "d"}
    )
    assert found == []
    found = search(
        archive.http,
        "/studies",
        {"fuzzymatching": "true", "PatientID": "pid-001", "PatientName": "d"},
    )
    assert labels(found, "study") == ["C"]


def test_without_fuzzymatching_a_word_is_a_whole_name(archive: Archive) -> None:
    assert search(archive.http, "/studies", {"PatientName": "joh"}) == []
    assert search(archive.http, "/studies", {"PatientName": "joh", "fuzzymatching": "false"}) == []


# --- the six search resources -------------------------------------------------------------------

SCOPED_CASES = [
    ("/studies/{A}/series", {}, "series", "A1 A2"),
    ("/studies/{A}/series", {"Modality": "CT"}, "series", "A2"),
    ("/studies/{B}/series", {"SeriesNumber": "3"}, "series", "B2"),
    ("/studies/{A}/series", {"SeriesInstanceUID": "{B1}"}, "series", ""),
    ("/studies/{A}/instances", {}, "instance", "A1.1 A1.2 A1.3 A2.1"),
    ("/studies/{A}/instances", {"InstanceNumber": "1"}, "instance", "A1.1 A2.1"),
    ("/studies/{A}/instances", {"Modality": "MR"}, "instance", "A1.1 A1.2 A1.3"),
    ("/studies/{A}/series/{A1}/instances", {}, "instance", "A1.1 A1.2 A1.3"),
    ("/studies/{A}/series/{A1}/instances", {"InstanceNumber": "2"}, "instance", "A1.2"),
    ("/studies/{B}/series/{B1}/instances", {"SOPClassUID": CT_IMAGE}, "instance", "B1.1 B1.2"),
    ("/studies/{A}/series/{B1}/instances", {}, "instance", ""),  # B1 is not in A
    ("/studies/1.2.3.4.5/series", {}, "series", ""),
    ("/studies/1.2.3.4.5/instances", {}, "instance", ""),
    ("/series", {}, "series", " ".join(SERIES)),
    ("/instances", {}, "instance", " ".join(INSTANCES)),
    ("/studies", {}, "study", "A B C D"),
]


@pytest.mark.parametrize(
    ("path", "params", "level", "expected"),
    SCOPED_CASES,
    ids=[f"{c[0]}?{'&'.join(f'{k}={v}' for k, v in c[1].items())}" for c in SCOPED_CASES],
)
def test_search_resources(
    archive: Archive, path: str, params: dict[str, str], level: str, expected: str
) -> None:
    query = {k: fill(v) for k, v in params.items()}
    results = search(archive.http, fill(path), query)
    assert matched(results, level) == set(expected.split())


def test_order_is_insertion_order(archive: Archive) -> None:
    assert labels(search(archive.http, "/studies"), "study") == list(STUDIES)
    assert labels(search(archive.http, "/series"), "series") == list(SERIES)
    assert labels(search(archive.http, "/instances"), "instance") == INSTANCES
    assert labels(search(archive.http, fill("/studies/{A}/instances")), "instance") == [
        "A1.3",
        "A1.1",
        "A1.2",
        "A2.1",
    ]


def test_instances_of_a_series_come_in_instance_number_order(archive: Archive) -> None:
    # A1 was stored as 3, 1, 2; the series resource lists it as a viewer would.
    path = fill("/studies/{A}/series/{A1}/instances")
    assert labels(search(archive.http, path), "instance") == ["A1.1", "A1.2", "A1.3"]


# --- keys as tags, percent-encoding -------------------------------------------------------------

TAG_KEY_CASES = [
    ("/studies", "00100020=PID-001", "study", "A"),
    ("/studies", "00100010=doe*", "study", "A C"),
    ("/studies", "0020000D={B}", "study", "B"),
    ("/studies", "0020000d={B}", "study", "B"),
    ("/studies", "00080061=MR", "study", "A D"),
    ("/studies", "00080020=20240101-", "study", "A C D"),
    ("/series", "00080060=CT", "series", "A2 B1"),
    ("/series", "00200011=10", "series", "C1"),
    ("/instances", "00200013=2", "instance", "A1.2 B1.2"),
    ("/instances", f"00080016={SECONDARY_CAPTURE}", "instance", "B2.1 C1.5"),
]


@pytest.mark.parametrize(
    ("path", "query", "level", "expected"), TAG_KEY_CASES, ids=[c[1] for c in TAG_KEY_CASES]
)
def test_keys_as_tags(archive: Archive, path: str, query: str, level: str, expected: str) -> None:
    key, _, raw = query.partition("=")
    results = search(archive.http, path, {key: fill(raw)})
    assert matched(results, level) == set(expected.split())
    for item in results:
        assert key.upper() in item  # returned under its tag like any matching key


ENCODED_CASES = [
    ("PatientName=Doe%5EJohn", "A"),
    ("PatientName=doe%5ejohn", "A"),
    ("PatientName=M%C3%BCller%5EJ%C3%BCrgen", "B"),
    ("PatientName=M%C3%9CLLER%2A", "B"),
    ("PatientName=%2A%5EJ%2A", "A B C D"),
    ("PatientID=PID%2A", "A B D"),
    ("PatientID=PID-00%3F", "A B D"),
    ("PatientID=PID-001%5CPID-002", "A B"),
    ("StudyDescription=Brain%20MRI", "A"),
    ("StudyDescription=Brain+MRI", "A"),
    ("ModalitiesInStudy=CT%2CUS", "A B C"),
    ("StudyDate=20240101%2D20240131", "A D"),
    ("%50atientID=PID-001", "A"),  # an encoded key
    ("00100020=PID%2D001", "A"),
]


@pytest.mark.parametrize(("query", "expected"), ENCODED_CASES, ids=[c[0] for c in ENCODED_CASES])
def test_percent_encoded_query(archive: Archive, query: str, expected: str) -> None:
    # The query string is sent exactly as written, not re-encoded by the client.
    response = archive.http.get(f"{archive.base}/studies?{query}")
    assert response.status_code == 200, response.text
    assert matched(response.json(), "study") == set(expected.split())


def test_percent_encoded_uid_list(archive: Archive) -> None:
    query = f"StudyInstanceUID={UIDS['A']}%2C{UIDS['D']}%5C{UIDS['B']}"
    response = archive.http.get(f"{archive.base}/studies?{query}")
    assert response.status_code == 200, response.text
    assert matched(response.json(), "study") == {"A", "B", "D"}


# --- returned attributes ------------------------------------------------------------------------


def _one(archive: Archive, path: str, params: dict[str, str]) -> dict[str, Any]:
    results = search(archive.http, fill(path), {k: fill(v) for k, v in params.items()})
    assert len(results) == 1, results
    return results[0]


def test_study_result(archive: Archive) -> None:
    item = _one(archive, "/studies", {"StudyInstanceUID": "{A}"})
    assert set(item) == STUDY_DEFAULT
    assert item[TAGS["PatientName"]] == {"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]}
    assert item[TAGS["PatientID"]] == {"vr": "LO", "Value": ["PID-001"]}
    assert item[TAGS["StudyDate"]] == {"vr": "DA", "Value": ["20240115"]}
    assert item[TAGS["StudyTime"]] == {"vr": "TM", "Value": ["101500"]}
    assert item[TAGS["AccessionNumber"]] == {"vr": "SH", "Value": ["ACC-001"]}
    assert item[TAGS["ReferringPhysicianName"]] == {
        "vr": "PN",
        "Value": [{"Alphabetic": "Smith^Anna"}],
    }
    assert item[TAGS["PatientBirthDate"]] == {"vr": "DA", "Value": ["19800101"]}
    assert item[TAGS["PatientSex"]] == {"vr": "CS", "Value": ["M"]}
    assert item[TAGS["StudyID"]] == {"vr": "SH", "Value": ["S1"]}
    assert item[TAGS["InstanceAvailability"]] == {"vr": "CS", "Value": ["ONLINE"]}
    assert item[TAGS["ModalitiesInStudy"]]["vr"] == "CS"
    assert sorted(value(item, "ModalitiesInStudy")) == ["CT", "MR"]
    assert item[TAGS["NumberOfStudyRelatedSeries"]] == {"vr": "IS", "Value": [2]}
    assert item[TAGS["NumberOfStudyRelatedInstances"]] == {"vr": "IS", "Value": [4]}
    assert item[TAGS["RetrieveURL"]] == {
        "vr": "UR",
        "Value": [f"{archive.base}/studies/{UIDS['A']}"],
    }
    assert item[TAGS["TimezoneOffsetFromUTC"]] == {"vr": "SH"}  # no value: the VR alone


def test_study_result_with_absent_attributes(archive: Archive) -> None:
    item = _one(archive, "/studies", {"StudyInstanceUID": "{C}"})
    assert set(item) == STUDY_DEFAULT
    assert item[TAGS["ReferringPhysicianName"]] == {"vr": "PN"}
    assert item[TAGS["PatientBirthDate"]] == {"vr": "DA"}
    assert item[TAGS["PatientName"]]["Value"] == [{"Alphabetic": "DOE^JANE^^"}]
    assert value(item, "ModalitiesInStudy") == ["US"]


def test_matched_keys_are_added_to_the_defaults(archive: Archive) -> None:
    item = _one(archive, "/studies", {"StudyDescription": "Chest CT"})
    assert set(item) == STUDY_DEFAULT | tags("StudyDescription")
    assert value(item, "StudyDescription") == ["Chest CT"]
    # A universal key asks for the attribute without restricting anything.
    results = search(archive.http, "/studies", {"StudyDescription": ""})
    assert len(results) == 4
    assert all(TAGS["StudyDescription"] in r for r in results)


def test_series_result_at_the_top_level(archive: Archive) -> None:
    item = _one(archive, "/series", {"SeriesInstanceUID": "{A1}"})
    # /series describes the study as well (PS3.18 10.6.3.3.2).
    assert set(item) == SERIES_DEFAULT | STUDY_DEFAULT
    assert value(item, "Modality") == ["MR"]
    assert value(item, "SeriesNumber") == [1]
    assert value(item, "SeriesDescription") == ["T1 axial"]
    assert value(item, "PerformedProcedureStepStartDate") == ["20240115"]
    assert value(item, "PerformedProcedureStepStartTime") == ["101600"]
    assert value(item, "NumberOfSeriesRelatedInstances") == [3]
    assert value(item, "NumberOfStudyRelatedInstances") == [4]
    assert value(item, "StudyInstanceUID") == [UIDS["A"]]
    assert value(item, "RetrieveURL") == [f"{archive.base}/studies/{UIDS['A']}/series/{UIDS['A1']}"]
    assert item[TAGS["RequestAttributesSequence"]] == {"vr": "SQ"}


def test_series_result_of_a_study(archive: Archive) -> None:
    item = _one(archive, "/studies/{B}/series", {"Modality": "OT"})
    assert set(item) == SERIES_DEFAULT | tags("StudyInstanceUID")
    assert item[TAGS["SeriesDescription"]] == {"vr": "LO"}
    assert item[TAGS["PerformedProcedureStepStartDate"]] == {"vr": "DA"}
    assert item[TAGS["PerformedProcedureStepStartTime"]] == {"vr": "TM"}
    assert value(item, "NumberOfSeriesRelatedInstances") == [1]


def test_instance_result_at_the_top_level(archive: Archive) -> None:
    item = _one(archive, "/instances", {"SOPInstanceUID": "{A1.2}"})
    assert set(item) == INSTANCE_DEFAULT | SERIES_DEFAULT | STUDY_DEFAULT
    assert value(item, "SOPClassUID") == [MR_IMAGE]
    assert value(item, "InstanceNumber") == [2]
    assert value(item, "Rows") == [2]
    assert value(item, "Columns") == [2]
    assert value(item, "BitsAllocated") == [16]
    assert item[TAGS["NumberOfFrames"]] == {"vr": "IS"}
    assert value(item, "RetrieveURL") == [
        f"{archive.base}/studies/{UIDS['A']}/series/{UIDS['A1']}/instances/{UIDS['A1.2']}"
    ]
    assert value(item, "PatientName") == [{"Alphabetic": "Doe^John"}]
    assert value(item, "Modality") == ["MR"]


def test_instance_result_of_a_study(archive: Archive) -> None:
    item = _one(archive, "/studies/{A}/instances", {"InstanceNumber": "3"})
    assert set(item) == INSTANCE_DEFAULT | SERIES_DEFAULT | tags("StudyInstanceUID")


def test_instance_result_of_a_series(archive: Archive) -> None:
    item = _one(archive, "/studies/{A}/series/{A1}/instances", {"InstanceNumber": "3"})
    assert set(item) == INSTANCE_DEFAULT | tags("StudyInstanceUID", "SeriesInstanceUID")
    assert value(item, "SeriesInstanceUID") == [UIDS["A1"]]


# --- includefield -------------------------------------------------------------------------------

INCLUDE_CASES = [
    ([("includefield", "StudyDescription")], {"StudyDescription": ["Brain MRI"]}),
    ([("includefield", "00081030")], {"StudyDescription": ["Brain MRI"]}),
    (
        [("includefield", "StudyDescription"), ("includefield", "00101010")],
        {"StudyDescription": ["Brain MRI"], "PatientAge": None},
    ),
    (
        [("includefield", "00081030,PatientAge")],
        {"StudyDescription": ["Brain MRI"], "PatientAge": None},
    ),
    ([("includefield", "SpecificCharacterSet")], {"SpecificCharacterSet": ["ISO_IR 192"]}),
    ([("includefield", "SOPClassesInStudy")], {"SOPClassesInStudy": [CT_IMAGE, MR_IMAGE]}),
    # Kept only per instance: answered from the newest instance's stored metadata.
    (
        [("includefield", "PhotometricInterpretation")],
        {"PhotometricInterpretation": ["MONOCHROME2"]},
    ),
]


@pytest.mark.parametrize(
    ("params", "extra"),
    INCLUDE_CASES,
    ids=["&".join(f"{k}={v}" for k, v in c[0]) for c in INCLUDE_CASES],
)
def test_includefield_at_study_level(
    archive: Archive, params: list[tuple[str, str]], extra: dict[str, list[Any] | None]
) -> None:
    results = search(archive.http, "/studies", [("StudyInstanceUID", UIDS["A"]), *params])
    assert len(results) == 1
    item = results[0]
    assert set(item) == STUDY_DEFAULT | tags(*extra)
    for keyword, expected in extra.items():
        got = value(item, keyword)
        assert (sorted(got) if got else got) == expected, keyword


def test_includefield_from_instances_belongs_to_each_result(archive: Archive) -> None:
    """Attributes read from an instance's stored JSON come from that study's or series' own
    instance, not from the newest instance of the archive (OHIF's study list asks Modality)."""
    studies = search(archive.http, "/studies", [("includefield", "00080060,ModalitiesInStudy")])
    assert len(studies) > 2
    for item in studies:
        assert value(item, "Modality")[0] in value(item, "ModalitiesInStudy"), item
    series = search(archive.http, "/series", [("includefield", "SOPInstanceUID")])
    assert len(series) > 2
    for item in series:
        study_uid = value(item, "StudyInstanceUID")[0]
        series_uid = value(item, "SeriesInstanceUID")[0]
        members = search(archive.http, f"/studies/{study_uid}/series/{series_uid}/instances", [])
        assert value(item, "SOPInstanceUID")[0] in {value(m, "SOPInstanceUID")[0] for m in members}


def test_includefield_of_an_attribute_nobody_has(archive: Archive) -> None:
    item = _one(archive, "/studies", {"StudyInstanceUID": "{A}", "includefield": "00091001"})
    assert item["00091001"] == {"vr": "UN"}


COMPUTED_CASES = [
    ("/studies", "B", "NumberOfStudyRelatedSeries", [2]),
    ("/studies", "B", "NumberOfStudyRelatedInstances", [3]),
    ("/studies", "B", "ModalitiesInStudy", ["CT", "OT"]),
    ("/studies", "B", "SOPClassesInStudy", [CT_IMAGE, SECONDARY_CAPTURE]),
    ("/series", "B1", "NumberOfSeriesRelatedInstances", [2]),
    ("/series", "B1", "NumberOfStudyRelatedSeries", [2]),
    ("/series", "B1", "SOPClassesInStudy", [CT_IMAGE, SECONDARY_CAPTURE]),
    ("/instances", "B1.2", "NumberOfSeriesRelatedInstances", [2]),
    ("/instances", "B1.2", "NumberOfStudyRelatedInstances", [3]),
    ("/instances", "B1.2", "ModalitiesInStudy", ["CT", "OT"]),
    ("/instances", "B1.2", "SOPClassesInStudy", [CT_IMAGE, SECONDARY_CAPTURE]),
]


@pytest.mark.parametrize(
    ("path", "label", "keyword", "expected"),
    COMPUTED_CASES,
    ids=[f"{c[0]}-{c[2]}" for c in COMPUTED_CASES],
)
def test_computed_attributes(
    archive: Archive, path: str, label: str, keyword: str, expected: list[Any]
) -> None:
    key = {"/studies": "StudyInstanceUID", "/series": "SeriesInstanceUID"}.get(
        path, "SOPInstanceUID"
    )
    item = _one(archive, path, {key: UIDS[label], "includefield": keyword})
    got = value(item, keyword)
    assert sorted(got) == expected


def test_includefield_all_at_study_level(archive: Archive) -> None:
    item = _one(archive, "/studies", {"StudyInstanceUID": "{B}", "includefield": "all"})
    assert set(item) >= STUDY_DEFAULT
    assert value(item, "StudyDescription") == ["Chest CT"]
    assert value(item, "SpecificCharacterSet") == ["ISO_IR 192"]
    assert sorted(value(item, "SOPClassesInStudy")) == [CT_IMAGE, SECONDARY_CAPTURE]
    # Series and instance attributes do not describe a study.
    assert TAGS["Modality"] not in item
    assert TAGS["SOPInstanceUID"] not in item


def test_includefield_all_at_series_level(archive: Archive) -> None:
    item = _one(
        archive, "/studies/{A}/series", {"SeriesInstanceUID": "{A2}", "includefield": "all"}
    )
    assert set(item) >= SERIES_DEFAULT
    assert value(item, "BodyPartExamined") == ["HEAD"]
    assert value(item, "Manufacturer") == ["Globex"]
    assert value(item, "InstitutionName") == ["General Hospital"]
    assert value(item, "NumberOfSeriesRelatedInstances") == [1]
    assert TAGS["SOPInstanceUID"] not in item


def test_includefield_all_at_instance_level(archive: Archive) -> None:
    item = _one(archive, "/instances", {"SOPInstanceUID": "{D1.1}", "includefield": "all"})
    assert set(item) >= INSTANCE_DEFAULT | SERIES_DEFAULT | STUDY_DEFAULT
    assert value(item, "PhotometricInterpretation") == ["MONOCHROME2"]
    assert value(item, "SamplesPerPixel") == [1]
    assert value(item, "StudyDescription") == ["Brain MRI follow-up"]
    assert value(item, "InstitutionName") == ["General Hospital East"]
    assert value(item, "PatientName") == [{"Alphabetic": "Ñúñez^José"}]
    pixel_data = item[TAGS["PixelData"]]
    assert "Value" not in pixel_data and "InlineBinary" not in pixel_data
    assert pixel_data["BulkDataURI"].startswith(
        f"{archive.base}/studies/{UIDS['D']}/series/{UIDS['D1']}/instances/{UIDS['D1.1']}"
    )


# --- paging -------------------------------------------------------------------------------------


def test_paging_is_stable_and_complete(archive: Archive) -> None:
    everything = labels(search(archive.http, "/instances"), "instance")
    assert len(everything) == 9
    pages = []
    for offset in (0, 4, 8):
        response = archive.http.get("/instances", params={"limit": "4", "offset": str(offset)})
        assert response.status_code == 200
        page = labels(response.json(), "instance")
        more = offset + 4 < 9
        if more:
            assert response.headers["warning"].startswith("299 ")
            assert f"offset={offset + 4}" in response.headers["warning"]
        else:
            assert "warning" not in response.headers
        pages.append(page)
    assert [len(p) for p in pages] == [4, 4, 1]
    assert [label for page in pages for label in page] == everything


def test_paging_with_a_filter(archive: Archive) -> None:
    first = search(archive.http, "/studies", {"PatientName": "*", "limit": "2"}, warning=True)
    rest = search(archive.http, "/studies", {"PatientName": "*", "limit": "2", "offset": "2"})
    assert labels(first, "study") + labels(rest, "study") == ["A", "B", "C", "D"]


def test_exactly_limit_results_sends_no_warning(archive: Archive) -> None:
    assert len(search(archive.http, "/studies", {"limit": "4"})) == 4


def test_offset_past_the_end(archive: Archive) -> None:
    assert search(archive.http, "/studies", {"offset": "4"}) == []
    assert search(archive.http, "/studies", {"offset": "2147483647"}) == []


def test_limit_above_the_maximum_is_clamped_with_a_warning(archive: Archive) -> None:
    response = archive.http.get("/studies", params={"limit": "100000"})
    assert response.status_code == 200
    assert len(response.json()) == 4
    warning = response.headers["warning"]
    assert warning.startswith("299 ")
    assert "500" in warning


def test_default_limit_and_maximum(http: httpx.Client) -> None:
    study, series = "1.2.826.0.1.3680043.10.9.1", "1.2.826.0.1.3680043.10.9.2"
    files = [
        make_instance(
            study_uid=study, series_uid=series, InstanceNumber=n, rows=1, columns=1, pixel_seed=n
        )
        for n in range(1, 506)
    ]
    store(http, files)
    everything = labels(search(http, "/instances", {"limit": "500"}, warning=True), "instance")
    everything += labels(search(http, "/instances", {"limit": "500", "offset": "500"}), "instance")
    assert len(everything) == len(set(everything)) == 505

    response = http.get("/instances")
    assert response.status_code == 200
    assert labels(response.json(), "instance") == everything[:100]  # the default limit
    assert response.headers["warning"].startswith("299 ")
    assert "offset=100" in response.headers["warning"]

    response = http.get("/instances", params={"limit": "501", "offset": "3"})
    assert response.status_code == 200
    assert labels(response.json(), "instance") == everything[3:503]  # clamped to 500
    warnings = [w.strip() for w in response.headers["warning"].split(", 299 ")]
    assert len(warnings) == 2
    assert "501" in warnings[0] and "500" in warnings[0]
    assert "offset=503" in warnings[1]

    path = f"/studies/{study}/series/{series}/instances"
    numbered = search(http, path, {"limit": "500", "offset": "5", "InstanceNumber": ""})
    assert [value(i, "InstanceNumber")[0] for i in numbered] == list(range(6, 506))


# --- empty results, errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/studies", {"PatientID": "nobody"}),
        ("/series", {"Modality": "XA"}),
        ("/instances", {"InstanceNumber": "99"}),
        ("/studies/1.2.3.4.5/series", {}),
        ("/studies/1.2.3.4.5/instances", {}),
        ("/studies/1.2.3.4.5/series/1.2.3.4.6/instances", {}),
    ],
)
def test_empty_result(archive: Archive, path: str, params: dict[str, str]) -> None:
    response = archive.http.get(path, params=params)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/dicom+json")
    assert response.json() == []


BAD_QUERIES = [
    ("/studies", "StudyDate=2024", "StudyDate"),
    ("/studies", "StudyDate=20241301", "StudyDate"),
    ("/studies", "StudyDate=20240201-20240101", "StudyDate"),
    ("/studies", "StudyDate=2024-01-15", "StudyDate"),
    ("/studies", "StudyDate=*", "StudyDate"),
    ("/studies", "StudyTime=25", "StudyTime"),
    ("/studies", "StudyTime=10-25", "StudyTime"),
    ("/studies", "StudyTime=1200-1100", "StudyTime"),
    ("/studies", "StudyInstanceUID=1.2.*", "StudyInstanceUID"),
    ("/studies", "StudyInstanceUID=abc", "StudyInstanceUID"),
    ("/studies", "StudyInstanceUID=,", "StudyInstanceUID"),
    ("/series", "SeriesNumber=one", "SeriesNumber"),
    ("/series", "SeriesNumber=1*", "SeriesNumber"),
    ("/series", "SeriesNumber=99999999999999999999", "SeriesNumber"),
    ("/instances", "InstanceNumber=-2147483649", "InstanceNumber"),
    ("/studies", "limit=0", "limit"),
    ("/studies", "limit=-5", "limit"),
    ("/studies", "limit=ten", "limit"),
    ("/studies", "offset=-1", "offset"),
    ("/studies", "offset=1.5", "offset"),
    ("/studies", "offset=2147483648", "offset"),
    ("/studies", "PatientID=a&PatientID=b", "PatientID"),
    ("/studies", "PatientID=a&00100020=a", "PatientID"),
    ("/studies", "NoSuchKeyword=1", "NoSuchKeyword"),
    ("/studies", "PatientAge=030Y", "PatientAge"),
    ("/studies", "Modality=CT", "Modality"),
    ("/series", "SOPInstanceUID=1.2.3", "SOPInstanceUID"),
    ("/studies", "includefield=NoSuchKeyword", "includefield"),
    ("/studies", "fuzzymatching=maybe", "fuzzymatching"),
    ("/studies", "ModalitiesInStudy=C*,MR", "ModalitiesInStudy"),
    ("/studies/not-a-uid/series", "", "not-a-uid"),
    ("/studies/1.2.3/series/1..2/instances", "", "1..2"),
]


@pytest.mark.parametrize(
    ("path", "query", "named"), BAD_QUERIES, ids=[f"{c[0]}?{c[1]}" for c in BAD_QUERIES]
)
def test_malformed_query(archive: Archive, path: str, query: str, named: str) -> None:
    response = archive.http.get(f"{archive.base}{path}?{query}")
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"status", "code", "message"}
    assert body["status"] == 400
    assert body["code"] == "invalid-input"
    assert named in body["message"]


@pytest.mark.parametrize("path", ["/studies", "/series", "/instances", "/studies/{A}/series"])
@pytest.mark.parametrize(
    "accept",
    [
        "application/dicom",
        'multipart/related; type="application/dicom"',
        'multipart/related; type="application/dicom+xml"',
        "text/html",
        "application/dicom+json;q=0",
    ],
)
def test_not_acceptable(archive: Archive, path: str, accept: str) -> None:
    response = archive.http.get(fill(path), headers={"Accept": accept})
    assert response.status_code == 406, response.text
    body = response.json()
    assert set(body) == {"status", "code", "message"}
    assert body["status"] == 406


@pytest.mark.parametrize(
    "accept",
    ["application/dicom+json", "application/json", "*/*", "application/*", "text/html, */*;q=0.1"],
)
def test_acceptable(archive: Archive, accept: str) -> None:
    response = archive.http.get("/studies", headers={"Accept": accept})
    assert response.status_code == 200
    assert len(response.json()) == 4


# --- special characters in values ---------------------------------------------------------------


def test_sql_pattern_characters_are_literal(http: httpx.Client) -> None:
    ids = ["A%B", "AxB", "A_B", "A[B]", "A\u00e9B", "a%b"]
    store(
        http,
        [
            make_instance(PatientID=pid, SpecificCharacterSet="ISO_IR 192", pixel_seed=i)
            for i, pid in enumerate(ids)
        ],
    )

    def found(pattern: str) -> set[str]:
        return {value(r, "PatientID")[0] for r in search(http, "/studies", {"PatientID": pattern})}

    assert found("A%B") == {"A%B"}
    assert found("A_B") == {"A_B"}
    assert found("A[B]") == {"A[B]"}
    assert found("A%*") == {"A%B"}
    assert found("A_*") == {"A_B"}
    assert found("A[*") == {"A[B]"}
    assert found("A?B") == {"A%B", "AxB", "A_B", "A\u00e9B"}  # ? is one character, not one byte
    assert found("*%*") == {"A%B", "a%b"}
    assert found("A*") == {"A%B", "AxB", "A_B", "A[B]", "A\u00e9B"}
    assert found("%") == set()


# --- the index answers alone --------------------------------------------------------------------


def test_search_never_reads_the_stored_files(http: httpx.Client, settings: Settings) -> None:
    study, series = "1.2.826.0.1.3680043.10.8.1", "1.2.826.0.1.3680043.10.8.2"
    sop = "1.2.826.0.1.3680043.10.8.3"
    ds = make_dataset(
        study_uid=study,
        series_uid=series,
        sop_uid=sop,
        PatientName="Doe^John",
        StudyDescription="Index only",
        ImageType=["ORIGINAL", "PRIMARY", "AXIAL"],
    )
    store(http, [to_part10(ds)])
    objects = settings.data_dir / "blobs" / "objects"
    files = [p for p in objects.rglob("*") if p.is_file()]
    assert len(files) == 1
    for path in files:
        path.unlink()
    assert not [p for p in objects.rglob("*") if p.is_file()]

    assert labels(search(http, "/studies", {"PatientName": "doe*"}), "study") == [study]
    found = search(http, "/studies", {"includefield": "all"})
    assert value(found[0], "StudyDescription") == ["Index only"]
    # An instance attribute asked for at study level comes from the stored metadata too.
    found = search(http, "/studies", {"includefield": "00080008"})
    assert found[0]["00080008"]["Value"] == ["ORIGINAL", "PRIMARY", "AXIAL"]
    found = search(http, f"/studies/{study}/series", {"includefield": "all"})
    assert value(found[0], "NumberOfSeriesRelatedInstances") == [1]
    found = search(http, "/instances", {"includefield": "all", "SOPInstanceUID": sop})
    assert len(found) == 1
    assert found[0]["00080008"]["Value"] == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert value(found[0], "PhotometricInterpretation") == ["MONOCHROME2"]
    assert "BulkDataURI" in found[0][TAGS["PixelData"]]
    found = search(http, f"/studies/{study}/series/{series}/instances", {"includefield": "all"})
    assert labels(found, "instance") == [sop]
