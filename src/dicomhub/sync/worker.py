"""The sync worker: follows the change feed from a cursor kept in the database.

One worker per target holds a lease on the cursor row, so several processes (serve --workers,
dicomhub sync) may run one each without doing the same work twice. A store or delete wakes
the worker of its process at once; the others poll every POLL_SECONDS, which also picks up
changes made by other processes. Each batch of changes names studies; each study is
reconciled (reconcile.py), retried with backoff when the target says so, and sent to the
dead-letter table when it keeps failing. The cursor moves only past studies that are done or
dead-lettered: a crash at any point replays at most one batch, which reconciling makes harmless.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection

from dicomhub.storage import sync as store
from dicomhub.storage.engine import Database
from dicomhub.sync.reconcile import StudyReconciler
from dicomhub.sync.targets import TargetError

__all__ = ["BatchReport", "SyncWorker"]

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25
LEASE_SECONDS = 30.0
BATCH = 1000
# Attempts per study in one pass (backoff between them), before it is dead-lettered.
ATTEMPTS = 4
BACKOFF = (0.2, 1.0, 3.0)
# A sequence number missing below visible ones may be a transaction still committing
# (PostgreSQL hands out sequence numbers before commit): wait this long before skipping it.
GAP_SECONDS = 2.0


@dataclass
class BatchReport:
    changes: int = 0
    studies: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    dead: int = 0


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class SyncWorker:
    db: Database
    reconciler: StudyReconciler
    owner: str = field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    )
    batch: int = BATCH
    sleep: Callable[[float], None] = time.sleep
    _wake: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _gap: tuple[int, float] | None = None  # (first missing sequence, when first seen)
    _dead: set[tuple[int, str]] = field(default_factory=set)  # dead-lettered studies

    @property
    def target(self) -> str:
        return self.reconciler.target.name

    def wake(self) -> None:
        """A store or delete committed: look at the change feed now."""
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="fhir-sync", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.db.write(lambda conn: store.release_lease(conn, self.target, self.owner))

    def _loop(self) -> None:
        log.info("FHIR sync to %s started (%s)", self.target, self.owner)
        while not self._stop.is_set():
            try:
                report = self.run_once()
            except Exception:
                log.exception("FHIR sync pass failed; trying again shortly")
                self.reconciler.forget()
                report = BatchReport()
                self._stop.wait(1.0)
            if report.changes == 0 or self._stop.is_set():
                self._wake.wait(POLL_SECONDS)
                self._wake.clear()

    def run_once(self) -> BatchReport:
        """One batch: take the lease, reconcile the studies changed after the cursor, advance."""
        with self.db.read() as conn:
            seen = store.state(conn, self.target)
            if seen is not None and store.latest_sequence(conn) <= seen.sequence:
                return BatchReport()  # nothing new: no write, no lease
        now = _now()
        until = now + timedelta(seconds=LEASE_SECONDS)

        def lease(conn: Connection) -> store.SyncState | None:
            store.ensure_state(conn, self.target, now)
            if not store.acquire_lease(conn, self.target, self.owner, until, now):
                return None
            return store.state(conn, self.target)

        current = self.db.write(lease)
        if current is None:
            return BatchReport()  # another worker holds the lease
        with self.db.read() as conn:
            changes = store.changes_after(conn, current.sequence, self.batch)
            self._dead = {
                (d.partition_key, d.study_uid) for d in store.dead_letters(conn, self.target)
            }
        changes = self._contiguous(current.sequence, changes)
        report = BatchReport(changes=len(changes))
        if not changes:
            return report
        studies: dict[tuple[int, str], int] = {}
        for change in changes:
            studies[(change.partition_key, change.study_uid)] = change.sequence
        finished = True
        for (partition_key, study_uid), sequence in studies.items():
            if self._stop.is_set():
                finished = False
                break
            outcome = self._study(partition_key, study_uid, sequence)
            report.outcomes[outcome] = report.outcomes.get(outcome, 0) + 1
            report.studies += 1
            report.dead += outcome == "dead-lettered"
        if finished and not self._advance(changes[-1].sequence):
            log.warning("FHIR sync lost its lease while working; another worker goes on")
        return report

    def _advance(self, sequence: int) -> bool:
        until = _now() + timedelta(seconds=LEASE_SECONDS)
        return self.db.write(
            lambda conn: store.advance(conn, self.target, self.owner, sequence, until, _now())
        )

    def _contiguous(self, after: int, changes: list[store.Change]) -> list[store.Change]:
        """The changes up to the first gap in the sequence, unless that gap is old enough to be
        a rolled-back transaction rather than one still committing."""
        expected = after + 1
        for i, change in enumerate(changes):
            if change.sequence != expected:
                missing = expected
                first_seen = self._gap[1] if self._gap and self._gap[0] == missing else None
                if first_seen is None:
                    self._gap = (missing, time.monotonic())
                    return changes[:i]
                if time.monotonic() - first_seen < GAP_SECONDS:
                    return changes[:i]
                log.info("change-feed sequence %d never appeared; skipping it", missing)
                self._gap = None
            expected = change.sequence + 1
        return changes

    def _study(self, partition_key: int, study_uid: str, sequence: int) -> str:
        """Reconcile with retries; 'dead-lettered' when it keeps failing."""
        reason = ""
        for attempt in range(ATTEMPTS):
            try:
                outcome = self.reconciler.sync_study(partition_key, study_uid)
            except TargetError as exc:
                reason = str(exc)
                self.reconciler.forget()
                if not exc.retryable:
                    break
                log.info("FHIR sync of study %s failed (%s); retrying", study_uid, reason)
                if attempt < len(BACKOFF):
                    self.sleep(BACKOFF[attempt])
                continue
            except Exception as exc:  # a mapping bug must not stop the whole feed
                log.exception("FHIR sync of study %s failed", study_uid)
                reason = f"{type(exc).__name__}: {exc}"
                self.reconciler.forget()
                break
            if (partition_key, study_uid) in self._dead:
                self._dead.discard((partition_key, study_uid))
                self.db.write(
                    lambda conn: store.clear_dead_letter(
                        conn, self.target, partition_key, study_uid
                    )
                )
            return outcome
        log.warning("FHIR sync of study %s dead-lettered: %s", study_uid, reason)
        self.db.write(
            lambda conn: store.record_failure(
                conn,
                self.target,
                partition_key,
                study_uid,
                sequence,
                reason or "failed",
                attempt + 1,
                _now(),
            )
        )
        return "dead-lettered"

    def retry_dead_letters(self, study_uids: list[str] | None = None) -> dict[str, str]:
        """Reconcile dead-lettered studies now: study UID -> outcome (cleared when it works)."""
        with self.db.read() as conn:
            letters = store.dead_letters(conn, self.target, study_uids)
        self._dead |= {(letter.partition_key, letter.study_uid) for letter in letters}
        return {
            letter.study_uid: self._study(letter.partition_key, letter.study_uid, letter.sequence)
            for letter in letters
        }

    def status(self) -> dict[str, object]:
        """Cursor, backlog, lease and dead letters, as JSON-ready values."""
        with self.db.read() as conn:
            state = store.state(conn, self.target)
            latest = store.latest_sequence(conn)
            letters = store.dead_letters(conn, self.target)
        done = state.sequence if state else 0
        return {
            "target": self.target,
            "sequence": done,
            "latestSequence": latest,
            "backlog": max(latest - done, 0),
            "leaseOwner": state.lease_owner if state else None,
            "leaseUntil": state.lease_until.isoformat() if state and state.lease_until else None,
            "deadLetters": [
                {
                    "studyInstanceUid": d.study_uid,
                    "sequence": d.sequence,
                    "attempts": d.attempts,
                    "reason": d.reason,
                    "firstFailedAt": d.first_failed_at.isoformat(),
                    "lastFailedAt": d.last_failed_at.isoformat(),
                }
                for d in letters
            ],
        }
