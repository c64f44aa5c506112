"""A study reconciled pass after pass while it is stored waits between passes (throttle); the
cursor never passes a study that waits, and a restart loses nothing."""

from __future__ import annotations

import io
import time
from typing import Any

import orjson
from pydicom.uid import generate_uid
from sqlalchemy import delete

from dicomhub.bootstrap import Services, build_sync_worker
from dicomhub.config import Settings
from dicomhub.context import RequestContext
from dicomhub.storage import sync as sync_store
from dicomhub.storage.schema import changefeed
from dicomhub.sync import worker
from tests.dicomfiles import make_instance


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _store(services: Services, study: str, series: str) -> None:
    data = make_instance(study_uid=study, series_uid=series, sop_uid=generate_uid())
    assert services.store.store_file(RequestContext(), io.BytesIO(data)).stored


def _instances(services: Services, study: str) -> int | None:
    """numberOfInstances of the study's ImagingStudy in the embedded store (None: absent)."""
    token = f"urn:dicom:uid|urn:oid:{study}"
    with services.db.read() as conn:
        rows = services.fhir.search.match(conn, "ImagingStudy", [("identifier", token)], limit=5)
    found: list[dict[str, Any]] = [orjson.loads(r.body) for r in rows if r.body]
    assert len(found) <= 1
    return int(found[0]["numberOfInstances"]) if found else None


def _cursor(services: Services, sync: worker.SyncWorker) -> tuple[int, int]:
    """(the sync's cursor, the latest change-feed sequence)."""
    with services.db.read() as conn:
        state = sync_store.state(conn, sync.target)
        return (state.sequence if state else 0), sync_store.latest_sequence(conn)


def test_the_default_throttle_leaves_small_studies_alone_and_caps_the_wait() -> None:
    assert worker.throttle(0.002) == 0.0  # a study of a few instances
    assert worker.throttle(0.06) == 0.06 * worker.THROTTLE_FACTOR  # ~500 instances
    assert worker.throttle(5.0) == worker.THROTTLE_MAX_SECONDS


def test_a_study_just_reconciled_waits_while_others_go_on(
    settings: Settings, services: Services
) -> None:
    clock = _Clock()
    sync = build_sync_worker(settings, services)
    sync.clock = clock
    sync.wait_after = lambda cost: 30.0  # every pass counts as an expensive one
    growing, series = generate_uid(), generate_uid()
    _store(services, growing, series)
    assert sync.run_once().studies == 1
    # A study's first pass never makes it wait: the second goes through at once.
    _store(services, growing, series)
    assert sync.run_once().studies == 1
    assert _instances(services, growing) == 2

    # The growing study gets a third instance, and another study arrives after it.
    _store(services, growing, series)
    other = generate_uid()
    _store(services, other, generate_uid())
    report = sync.run_once()
    assert (report.studies, report.waiting) == (1, 1)
    assert _instances(services, other) == 1
    assert _instances(services, growing) == 2  # waits
    cursor, latest = _cursor(services, sync)
    assert cursor == latest - 2  # below the growing study's new change

    # Looking again before it is due reconciles nothing, not even the other study again.
    report = sync.run_once()
    assert (report.changes, report.studies, report.waiting) == (2, 0, 1)

    clock.now += 31
    report = sync.run_once()
    assert (report.studies, report.waiting) == (1, 0)
    assert _instances(services, growing) == 3
    cursor, latest = _cursor(services, sync)
    assert cursor == latest


def test_a_restart_while_a_study_waits_loses_nothing(
    settings: Settings, services: Services
) -> None:
    sync = build_sync_worker(settings, services)
    sync.wait_after = lambda cost: 3600.0
    growing, series = generate_uid(), generate_uid()
    _store(services, growing, series)
    sync.run_once()
    _store(services, growing, series)
    sync.run_once()  # its second pass: from now on it waits
    _store(services, growing, series)
    assert sync.run_once().waiting == 1
    sync.stop()  # a new process (or another worker) takes over from the cursor

    again = build_sync_worker(settings, services)
    report = again.run_once()
    assert report.studies == 1
    assert _instances(services, growing) == 3
    cursor, latest = _cursor(services, again)
    assert cursor == latest


def test_studies_of_a_few_instances_are_reconciled_at_every_pass(
    settings: Settings, services: Services
) -> None:
    sync = build_sync_worker(settings, services)  # the default throttle
    study, series = generate_uid(), generate_uid()
    for count in range(1, 4):
        _store(services, study, series)
        report = sync.run_once()
        assert (report.studies, report.waiting) == (1, 0)
        assert _instances(services, study) == count


def test_the_cursor_waits_below_the_first_pending_change_only(
    settings: Settings, services: Services
) -> None:
    # Two studies growing out of phase: a change of one that was reconciled while the other
    # held the cursor must not hold the cursor again.
    clock = _Clock()
    sync = build_sync_worker(settings, services)
    sync.clock = clock
    sync.wait_after = lambda cost: 10.0
    first, second = generate_uid(), generate_uid()
    series = {first: generate_uid(), second: generate_uid()}
    for _ in range(2):  # first and second passes of both: both wait until 10
        _store(services, first, series[first])
        _store(services, second, series[second])
        sync.run_once()
    clock.now += 10.5
    _store(services, first, series[first])
    assert sync.run_once().studies == 1  # first waits again, until 20.5
    clock.now += 0.5
    _store(services, first, series[first])  # pending, holds the cursor
    _store(services, second, series[second])
    assert (sync.run_once().studies, _instances(services, second)) == (1, 3)  # second waits
    clock.now += 9.6  # first is due, second is not
    _store(services, second, series[second])
    report = sync.run_once()
    assert (report.studies, report.waiting) == (1, 1)
    assert _instances(services, first) == 4
    cursor, latest = _cursor(services, sync)
    assert cursor == latest - 1  # just below second's new change, past the one reconciled


def test_a_full_batch_reconciles_a_waiting_study_at_once(
    settings: Settings, services: Services
) -> None:
    sync = build_sync_worker(settings, services)
    sync.wait_after = lambda cost: 3600.0
    sync.batch = 3
    growing, series = generate_uid(), generate_uid()
    for _ in range(2):
        _store(services, growing, series)
        sync.run_once()
    for _ in range(3):  # a backlog: waiting would only slow the catch-up
        _store(services, growing, series)
    report = sync.run_once()
    assert (report.changes, report.studies, report.waiting) == (3, 1, 0)
    assert _instances(services, growing) == 5
    cursor, latest = _cursor(services, sync)
    assert cursor == latest


def test_a_gap_skipped_once_is_not_waited_for_again(
    settings: Settings, services: Services, monkeypatch: Any
) -> None:
    monkeypatch.setattr(worker, "GAP_SECONDS", 0.2)
    sync = build_sync_worker(settings, services)
    sync.wait_after = lambda cost: 3600.0
    growing, series = generate_uid(), generate_uid()
    for _ in range(3):  # the third change waits and holds the cursor below it
        _store(services, growing, series)
        sync.run_once()
    _store(services, generate_uid(), generate_uid())
    _, rolled_back = _cursor(services, sync)
    # as if its transaction had rolled back after taking the sequence number
    services.db.write(
        lambda conn: conn.execute(delete(changefeed).where(changefeed.c.sequence == rolled_back))
    )
    after_gap = generate_uid()
    _store(services, after_gap, generate_uid())
    sync.run_once()  # the gap is new: nothing after it yet
    assert _instances(services, after_gap) is None
    time.sleep(0.25)
    sync.run_once()  # the gap is old enough: skipped
    assert _instances(services, after_gap) == 1
    later = generate_uid()
    _store(services, later, generate_uid())
    sync.run_once()  # the cursor is still below the gap, which is not waited for again
    assert _instances(services, later) == 1
