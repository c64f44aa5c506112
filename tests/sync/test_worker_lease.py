"""Two sync workers on one index (serve --workers 2): one works, the other stays out of its way."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydicom.uid import generate_uid
from sqlalchemy import event

from dicomhub.bootstrap import Services, build_sync_worker
from dicomhub.config import Settings
from dicomhub.context import RequestContext
from dicomhub.sync import worker
from tests.dicomfiles import make_instance


@contextmanager
def _statements(services: Services) -> Iterator[list[str]]:
    """The SQL statements the index runs meanwhile, from every connection."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(services.db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(services.db.engine, "before_cursor_execute", record)


def test_a_worker_without_the_lease_does_not_write_and_takes_over_when_it_is_free(
    settings: Settings, services: Services
) -> None:
    ctx = RequestContext()
    study = generate_uid()

    def store() -> None:
        data = make_instance(study_uid=study, series_uid=generate_uid(), sop_uid=generate_uid())
        assert services.store.store_file(ctx, io.BytesIO(data)).stored

    first = build_sync_worker(settings, services)
    second = build_sync_worker(settings, services)
    store()
    assert first.run_once().studies == 1

    # Each store of second's process wakes it; while first holds the lease it looks at the
    # index once per poll interval, and never writes.
    store()
    with _statements(services) as seen:
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
