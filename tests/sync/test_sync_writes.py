"""What the sync writes into the embedded store: identifiers of any characters, shared Patients,
chunks of studies written in one batch, and chunks that fail part-way."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydicom.uid import generate_uid

from dicomhub.bootstrap import Services, build_services, build_sync_worker, prepare_storage
from dicomhub.config import Settings
from dicomhub.context import RequestContext
from dicomhub.fhir.search.values import escape
from dicomhub.sync.worker import SyncWorker
from tests.dicomfiles import make_instance
from tests.sync.support import statements

PATIENT_SYSTEM = "urn:dicomhub:patient-id"
# Characters that mean something in a search value (`,` `|` `$`) or in a query string
# (`&` `+` `#` `%` `=` space): a DICOM LO value may hold any of them (not a backslash, which
# separates values).
AWKWARD_IDS = ["A&B", "C+D", "E,F", "G|H", "I$J", "M#N", "O%20P", "Q R", "S=T"]


def _store(services: Services, **attributes: Any) -> str:
    study = generate_uid()
    data = make_instance(study_uid=study, **attributes)
    assert services.store.store_file(RequestContext(), io.BytesIO(data)).stored
    return study


def _drain(sync: SyncWorker) -> dict[str, int]:
    outcomes: dict[str, int] = {}
    while (report := sync.run_once()).changes:
        for outcome, count in report.outcomes.items():
            outcomes[outcome] = outcomes.get(outcome, 0) + count
    return outcomes


def _search(services: Services, res_type: str, token: str) -> list[dict[str, Any]]:
    with services.db.read() as conn:
        rows = services.fhir.search.match(conn, res_type, [("identifier", token)], limit=100)
    return [orjson.loads(r.body) for r in rows if r.body]


def _imaging_study(services: Services, study: str) -> dict[str, Any]:
    found = _search(services, "ImagingStudy", f"urn:dicom:uid|urn:oid:{study}")
    assert len(found) == 1
    return found[0]


def test_patient_ids_and_accession_numbers_of_any_characters(
    settings: Settings, services: Services
) -> None:
    ctx = RequestContext()
    order = services.fhir.service.create(
        ctx,
        {
            "resourceType": "ServiceRequest",
            "status": "active",
            "intent": "order",
            "subject": {"display": "someone"},
            "identifier": [{"value": "ACC,1&2|3"}],
        },
    )
    studies: dict[str, list[str]] = {}
    for pid in AWKWARD_IDS:
        # two studies per patient, with other demographics in the second: its Patient is
        # found by a search (the reconciler's cache holds other demographics)
        studies[pid] = [
            _store(services, PatientID=pid, PatientName="One^Name", AccessionNumber="ACC,1&2|3"),
            _store(services, PatientID=pid, PatientName="Other^Name"),
        ]
    sync = build_sync_worker(settings, services)
    assert _drain(sync) == {"created": 2 * len(AWKWARD_IDS)}
    assert sync.status()["deadLetters"] == []

    for pid, (first, second) in studies.items():
        patients = _search(services, "Patient", f"{PATIENT_SYSTEM}|{escape(pid)}")
        assert len(patients) == 1, pid
        assert patients[0]["identifier"] == [{"system": PATIENT_SYSTEM, "value": pid}]
        assert patients[0]["name"][0]["family"] == "Other"  # the later study's demographics
        for study in (first, second):
            assert _imaging_study(services, study)["subject"] == {
                "reference": f"Patient/{patients[0]['id']}"
            }
        based_on = _imaging_study(services, first).get("basedOn")
        assert based_on == [{"reference": f"ServiceRequest/{order.res_id}"}]
        assert "basedOn" not in _imaging_study(services, second)


def test_a_chunk_is_written_in_one_statement_per_table(
    settings: Settings, services: Services
) -> None:
    sync = build_sync_worker(settings, services)
    _store(services, PatientID="FIRST")
    assert _drain(sync) == {"created": 1}  # also creates the Endpoint

    studies = [_store(services, PatientID=f"BATCH-{i}") for i in range(20)]  # one chunk
    with statements(services) as seen:
        assert _drain(sync) == {"created": 20}
    inserts = [s for s in seen if s.lstrip().upper().startswith("INSERT INTO FHIR_RESOURCE ")]
    assert len(inserts) == 1, inserts
    versions = [s for s in seen if s.lstrip().upper().startswith("INSERT INTO FHIR_VERSION ")]
    assert len(versions) == 1
    for i, study in enumerate(studies):
        found = _imaging_study(services, study)
        patients = _search(services, "Patient", f"{PATIENT_SYSTEM}|BATCH-{i}")
        assert found["subject"]["reference"] == f"Patient/{patients[0]['id']}"
        assert found["meta"]["versionId"] == "1"


def test_a_chunk_that_fails_leaves_nothing_behind(settings: Settings, services: Services) -> None:
    ctx = RequestContext()
    good = [_store(services, PatientID=f"GOOD-{i}") for i in range(3)]
    bad = _store(services, PatientID="GOOD-1")
    # Two ImagingStudy resources claim the bad study: the reconciler refuses to choose, so
    # the chunk fails after it queued the writes of the studies before it.
    for _ in range(2):
        services.fhir.service.create(
            ctx,
            {
                "resourceType": "ImagingStudy",
                "status": "available",
                "subject": {"display": "someone"},
                "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{bad}"}],
            },
        )
    sync = build_sync_worker(settings, services)
    assert _drain(sync) == {"created": 3, "dead-lettered": 1}
    assert [d["studyInstanceUid"] for d in sync.status()["deadLetters"]] == [bad]

    # Another chunk after it: nothing queued by the failed attempt is written twice.
    later = _store(services, PatientID="GOOD-2", PatientName="Later^Name")
    assert _drain(sync) == {"created": 1}
    for i, study in enumerate(good):
        patients = _search(services, "Patient", f"{PATIENT_SYSTEM}|GOOD-{i}")
        assert len(patients) == 1
        assert _imaging_study(services, study)["subject"]["reference"] == (
            f"Patient/{patients[0]['id']}"
        )
    assert _imaging_study(services, later)["meta"]["versionId"] == "1"
    with services.db.read() as conn:
        total = conn.exec_driver_sql(
            "SELECT count(*) FROM fhir_resource WHERE res_type = 'ImagingStudy'"
        ).scalar_one()
    assert total == 3 + 2 + 1


@pytest.mark.parametrize("pid", ["A,B", "C&D"])
def test_the_same_patient_twice_in_one_chunk_is_created_once(
    settings: Settings, services: Services, pid: str
) -> None:
    first = _store(services, PatientID=pid, PatientName="First^Name")
    second = _store(services, PatientID=pid, PatientName="Second^Name")
    sync = build_sync_worker(settings, services)
    assert _drain(sync) == {"created": 2}
    patients = _search(services, "Patient", f"{PATIENT_SYSTEM}|{escape(pid)}")
    assert len(patients) == 1
    assert patients[0]["meta"]["versionId"] == "2"  # created, then the demographics updated
    for study in (first, second):
        assert _imaging_study(services, study)["subject"]["reference"] == (
            f"Patient/{patients[0]['id']}"
        )


def test_a_database_error_in_a_search_is_retried_not_dead_lettered(tmp_path: Path) -> None:
    """A failing index (here a table renamed away, which SQLite reports as an OperationalError,
    as it does a lock held too long) postpones the study; it is synced once the index is back."""
    settings = Settings(data_dir=tmp_path / "data", sqlite_synchronous="NORMAL")
    prepare_storage(settings)
    services = build_services(settings)
    try:
        study = _store(services, PatientID="BUSY-1")
        sync = build_sync_worker(settings, services)
        sync.sleep = lambda _seconds: None  # no backoff between the quick attempts

        def rename(old: str, new: str) -> None:
            services.db.write(lambda c: c.exec_driver_sql(f"ALTER TABLE {old} RENAME TO {new}"))

        rename("fhir_idx_token", "fhir_idx_token_away")
        assert sync.run_once().outcomes == {"postponed": 1}
        assert sync.status()["deadLetters"] == []
        rename("fhir_idx_token_away", "fhir_idx_token")
        assert _drain(sync) == {"created": 1}
        assert _imaging_study(services, study)["meta"]["versionId"] == "1"
    finally:
        services.close()


def test_a_conditional_reference_sees_what_the_chunk_has_not_written_yet(
    settings: Settings, services: Services
) -> None:
    target = build_sync_worker(settings, services).reconciler.target
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:test", "value": "COND-1"}],
    }

    def work() -> dict[str, Any]:
        created = target.create(patient, if_none_exist="identifier=urn:test|COND-1")
        observation = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "test"},
            "subject": {"reference": "Patient?identifier=urn:test|COND-1"},
        }
        target.create(observation, if_none_exist="identifier=urn:test|OBS-1")
        return created

    created = target.together(work)
    with services.db.read() as conn:
        rows = services.fhir.search.match(
            conn, "Observation", [("subject", f"Patient/{created['id']}")], limit=10
        )
    assert [orjson.loads(r.body)["subject"] for r in rows if r.body] == [
        {"reference": f"Patient/{created['id']}"}
    ]
