"""Two sync workers on one index (serve --workers 2): one works, the other stays out of its way."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import update

from dicomhub.bootstrap import Services, build_sync_worker
from dicomhub.config import Settings
from dicomhub.context import RequestContext
from dicomhub.storage.schema import sync_state
from dicomhub.sync import worker
from tests.dicomfiles import make_instance
from tests.sync.support import statements


def _store(services: Services) -> None:
    """One new instance of a new study."""
    data = make_instance(
        study_uid=generate_uid(), series_uid=generate_uid(), sop_uid=generate_uid()
    )
    assert services.store.store_file(RequestContext(), io.BytesIO(data)).stored


def _first_holds_the_lease(
    settings: Settings, services: Services
) -> tuple[worker.SyncWorker, worker.SyncWorker]:
    """Two workers; the first has synced one study and holds the lease."""
    first = build_sync_worker(settings, services)
    second = build_sync_worker(settings, services)
    _store(services)
    assert first.run_once().studies == 1  # creates the cursor row, takes the lease
    return first, second


def test_a_worker_without_the_lease_does_not_write_and_takes_over_when_it_is_free(
    settings: Settings, services: Services
) -> None:
    first, second = _first_holds_the_lease(settings, services)

    # Each store of second's process wakes it; while first holds the lease it looks at the
    # index once per poll interval, and never writes.
    _store(services)
    with statements(services) as seen:
        for _ in range(20):
            assert second.run_once().changes == 0
    assert seen, "second never looked at the feed"
    assert not [s for s in seen if s.lstrip().upper().startswith(("UPDATE", "INSERT"))], seen
    assert sum("sync_state" in s for s in seen) == 1, seen

    # The holder releases its lease (shutdown): the other takes over at its next look.
    first.stop()
    time.sleep(worker.POLL_SECONDS)
    report = second.run_once()
    assert report.changes == 1
    assert report.studies == 1
    assert second.status()["leaseOwner"] == second.owner
    assert second.status()["backlog"] == 0


def _set_lease(services: Services, target: str, owner: str, until: datetime) -> None:
    services.db.write(
        lambda conn: conn.execute(
            update(sync_state)
            .where(sync_state.c.target == target)
            .values(lease_owner=owner, lease_until=until)
        )
    )


def _exited_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(done.stdout)


@pytest.mark.parametrize("holder", ["expired", "dead process"])
def test_a_lease_left_by_a_holder_that_is_gone_is_taken_over(
    settings: Settings, services: Services, holder: str
) -> None:
    first, second = _first_holds_the_lease(settings, services)

    # the holder stops without releasing: killed, or on another machine that went away
    if holder == "expired":
        owner = "elsewhere:1:gone"
        until = datetime.now(UTC) - timedelta(seconds=1)
    else:
        owner = f"{socket.gethostname()}:{_exited_pid()}:gone"
        until = datetime.now(UTC) + timedelta(seconds=worker.LEASE_SECONDS)
    _set_lease(services, first.target, owner, until)
    _store(services)

    report = second.run_once()
    assert report.changes == 1 and report.studies == 1
    assert second.status()["leaseOwner"] == second.owner


def test_a_live_holder_on_another_machine_keeps_its_lease(
    settings: Settings, services: Services
) -> None:
    first, second = _first_holds_the_lease(settings, services)
    until = datetime.now(UTC) + timedelta(seconds=worker.LEASE_SECONDS)
    _set_lease(services, first.target, "elsewhere:1:alive", until)
    _store(services)

    assert second.run_once().changes == 0
    status = second.status()
    assert status["leaseOwner"] == "elsewhere:1:alive"
    assert status["backlog"] == 1
