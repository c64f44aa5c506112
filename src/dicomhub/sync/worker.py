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
import sys
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
# After working off the head of the feed, the pause before looking again (see _loop).
COALESCE_SECONDS = 0.25
LEASE_SECONDS = 15.0
BATCH = 1000
# Studies reconciled per transaction of the embedded store: fewer commits, and a write lock
# held for ~0.1 s at most, so stores keep flowing meanwhile.
CHUNK = 20
# Quick attempts per study when the target answers 429, 5xx or 412 (backoff between them);
# after them the whole feed pauses (growing to MAX_BACKOFF) and resumes from that study.
ATTEMPTS = 3
BACKOFF = (0.2, 1.0)
MAX_BACKOFF = 60.0
# A study reconciled again and again while it is stored (a series sent instance by instance)
# costs a pass over all its instances each time: 15-27 ms of CPU at about 450 instances (the
# load, the search and the write; mapping and validation only look at new instances). When a
# study reconciled within the last RECENT_SECONDS takes another pass of at least
# THROTTLE_MIN_SECONDS of CPU, it waits THROTTLE_FACTOR times that (at most
# THROTTLE_MAX_SECONDS) before the next, so one growing study takes at most about a tenth of
# the sync's time. A study's first pass, and studies of a few instances, never wait.
THROTTLE_MIN_SECONDS = 0.02
THROTTLE_FACTOR = 10.0
THROTTLE_MAX_SECONDS = 1.0
RECENT_SECONDS = 60.0
# A sequence number missing below visible ones may be a transaction still committing
# (PostgreSQL hands out sequence numbers before commit): wait this long before skipping it.
GAP_SECONDS = 2.0


@dataclass
class BatchReport:
    changes: int = 0
    studies: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    dead: int = 0
    waiting: int = 0  # studies whose next pass is not due yet (throttled)


def throttle(cost: float) -> float:
    """Seconds a study waits before its next pass, after a pass that took `cost` s of CPU."""
    if cost < THROTTLE_MIN_SECONDS:
        return 0.0
    return min(cost * THROTTLE_FACTOR, THROTTLE_MAX_SECONDS)


def _now() -> datetime:
    return datetime.now(UTC)


class _Postponed(Exception):
    """A study failed in a way that may pass (the target is down or busy): try again later."""

    first: int = 0  # the study's first change in the batch: where to resume


def _dead_local(owner: str) -> bool:
    """Whether `owner` (host:pid:nonce) is a process of this machine that no longer runs."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # it exists, under another user
    return False


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
    _backoff: float = 0.0  # seconds of the current pause while the target is unwell
    _look_after: float = 0.0  # monotonic time before which another worker's lease is assumed
    wait_after: Callable[[float], float] = throttle
    clock: Callable[[], float] = time.monotonic
    # study -> clock time before which it is not reconciled again (see throttle)
    _not_before: dict[tuple[int, str], float] = field(default_factory=dict)
    # study -> clock time of its last pass, for the last RECENT_SECONDS
    _reconciled: dict[tuple[int, str], float] = field(default_factory=dict)
    # study -> last change reconciled, for studies the cursor has not passed yet (it waits
    # for an earlier, throttled study): they are not reconciled again for the same changes
    _done: dict[tuple[int, str], int] = field(default_factory=dict)
    # gaps in the sequence (first missing, next present) skipped while the cursor is below
    _skipped: set[tuple[int, int]] = field(default_factory=set)

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
                self._done.clear()  # reconcile again rather than trust a half-finished pass
                report = BatchReport()
                self._stop.wait(1.0)
            if report.changes == 0 or self._stop.is_set():
                # While a peer holds the lease, wakes return early: look again when it is due.
                due = self._look_after - time.monotonic()
                self._wake.wait(due if 0 < due < POLL_SECONDS else POLL_SECONDS)
                self._wake.clear()
            elif report.changes < self.batch or report.waiting:
                # Caught up with the feed: let the stores still arriving gather for a moment,
                # so that a study receiving instance after instance (a modality sending a
                # series, one instance per request) is reconciled a few times a second, not
                # once per instance, each time reading all of its instances again. (A pause
                # growing with the pass was tried: under a steady stream of small studies the
                # passes and pauses grew each other, and latency reached seconds.)
                self._stop.wait(COALESCE_SECONDS)

    def run_once(self) -> BatchReport:
        """One batch: take the lease, reconcile the studies changed after the cursor, advance."""
        if time.monotonic() < self._look_after:
            return BatchReport()
        with self.db.read() as conn:
            seen = store.state(conn, self.target)
            if seen is not None and store.latest_sequence(conn) <= seen.sequence:
                return BatchReport()  # nothing new: no write, no lease
        if self._held_elsewhere(seen):
            # Each store wakes the worker of its own process; while another live worker holds
            # the lease, looking more often than it polls, let alone trying for the lease (a
            # write transaction), would cost every store of this process for nothing.
            self._look_after = time.monotonic() + POLL_SECONDS
            return BatchReport()
        current = self._lease(seen)
        if current is None:  # another worker took it meanwhile
            self._look_after = time.monotonic() + POLL_SECONDS
            return BatchReport()
        with self.db.read() as conn:
            changes = store.changes_after(conn, current.sequence, self.batch)
            self._dead = {
                (d.partition_key, d.study_uid) for d in store.dead_letters(conn, self.target)
            }
        changes = self._contiguous(current.sequence, changes)
        report = BatchReport(changes=len(changes))
        if not changes:
            return report
        # studies in the order of their first change in the batch, with that change
        studies: dict[tuple[int, str], tuple[int, int]] = {}
        for change in changes:
            key = (change.partition_key, change.study_uid)
            if change.sequence <= self._done.get(key, 0):
                continue  # reconciled after this change already (the cursor waits below)
            first = studies[key][0] if key in studies else change.sequence
            studies[key] = (first, change.sequence)
        # Working off a full batch, every study must be reconciled before the cursor passes
        # its changes anyway: waiting would only slow the catch-up.
        items, held = self._due(studies, report, hold=len(changes) < self.batch)
        renewed = time.monotonic()
        for start in range(0, len(items), CHUNK):
            chunk = items[start : start + CHUNK]
            first = min(chunk[0][1][0], held)
            if self._stop.is_set():
                self._advance(first - 1)
                return report
            if time.monotonic() - renewed > LEASE_SECONDS / 3:
                if not self._advance(first - 1):  # keeps the lease while a long batch runs
                    log.warning("FHIR sync lost its lease while working; another worker goes on")
                    return report
                renewed = time.monotonic()
            outcomes = self._together(chunk)
            if outcomes is None:  # one by one, to retry or dead-letter the one that fails
                outcomes = []
                for key, (first_change, last) in chunk:
                    started = time.thread_time()
                    try:
                        outcomes.append(self._study(*key, last))
                    except _Postponed as exc:
                        exc.first = min(first_change, held)
                        self._count(report, outcomes)
                        return self._pause(report, exc)
                    self._passed(key, last, time.thread_time() - started)
            self._count(report, outcomes)
        self._backoff = 0.0
        done = min(changes[-1].sequence, held - 1)
        if not self._advance(done):
            log.warning("FHIR sync lost its lease while working; another worker goes on")
        self._done = {key: last for key, last in self._done.items() if last > done}
        self._skipped = {gap for gap in self._skipped if gap[1] > done + 1}
        return report

    def _due(
        self, studies: dict[tuple[int, str], tuple[int, int]], report: BatchReport, *, hold: bool
    ) -> tuple[list[tuple[tuple[int, str], tuple[int, int]]], int]:
        """The studies to reconcile now, and the first pending change of the first one that
        waits (the cursor stays below it); none waits unless `hold`."""
        now = self.clock()
        self._not_before = {k: t for k, t in self._not_before.items() if t > now}
        recent = now - RECENT_SECONDS
        while self._reconciled and next(iter(self._reconciled.values())) < recent:
            del self._reconciled[next(iter(self._reconciled))]
        held = sys.maxsize
        due = []
        for key, span in studies.items():
            if hold and key in self._not_before:
                held = min(held, span[0])
                report.waiting += 1
            else:
                due.append((key, span))
        return due, held

    def _passed(self, key: tuple[int, str], last: int, cost: float) -> None:
        """A study is reconciled up to change `last`: when may it run again (throttle)."""
        now = self.clock()
        if key in self._reconciled:
            wait = self.wait_after(cost)
            if wait > 0:
                self._not_before[key] = now + wait
        self._reconciled.pop(key, None)
        self._reconciled[key] = now  # oldest first, for the pruning in _due
        self._done[key] = last

    def _together(self, chunk: list[tuple[tuple[int, str], tuple[int, int]]]) -> list[str] | None:
        """Reconcile a chunk of studies as one unit (one transaction in the embedded store);
        None when any of them failed, and then nothing of the chunk was written there."""
        if len(chunk) == 1:
            return None

        costs: dict[tuple[int, str], float] = {}

        def work() -> list[str]:
            self.reconciler.forget()  # what a rolled-back attempt cached is not there
            costs.clear()
            outcomes = []
            with self.reconciler.prefetched([key for key, _ in chunk]):
                for key, _ in chunk:
                    started = time.thread_time()
                    outcomes.append(self.reconciler.sync_study(*key))
                    costs[key] = time.thread_time() - started
            return outcomes

        try:
            outcomes = self.reconciler.target.together(work)
        except Exception as exc:  # noqa: BLE001 - the one-by-one pass reports each failure
            log.info("FHIR sync of %d studies together failed (%s); one by one", len(chunk), exc)
            self.reconciler.forget()
            return None
        done = [key for key, _ in chunk if key in self._dead]
        if done:
            self._dead.difference_update(done)

            def clear(conn: Connection) -> None:
                for key in done:
                    store.clear_dead_letter(conn, self.target, *key)

            self.db.write(clear)
        for key, (_first, last) in chunk:  # after the clearing: a failure there replays them
            self._passed(key, last, costs[key])
        return outcomes

    @staticmethod
    def _count(report: BatchReport, outcomes: list[str]) -> None:
        for outcome in outcomes:
            report.outcomes[outcome] = report.outcomes.get(outcome, 0) + 1
            report.studies += 1
            report.dead += outcome == "dead-lettered"

    def _pause(self, report: BatchReport, exc: _Postponed) -> BatchReport:
        """The target is unwell: wait (growing), then resume from the study that failed."""
        self._advance(exc.first - 1)
        self._backoff = min(max(self._backoff * 2, 1.0), MAX_BACKOFF)
        log.warning("FHIR sync paused %.0f s: %s", self._backoff, exc)
        self._stop.wait(self._backoff)
        report.outcomes["postponed"] = report.outcomes.get("postponed", 0) + 1
        return report

    def _held_elsewhere(self, seen: store.SyncState | None) -> bool:
        """Another worker, still running, holds a lease that has not run out."""
        if seen is None or not seen.lease_owner or seen.lease_owner == self.owner:
            return False
        if seen.lease_until is None or seen.lease_until <= _now():
            return False
        return not _dead_local(seen.lease_owner)

    def _lease(self, seen: store.SyncState | None) -> store.SyncState | None:
        now = _now()
        until = now + timedelta(seconds=LEASE_SECONDS)
        # A holder that was killed on this machine (its process is gone) leaves at once,
        # instead of after its lease runs out.
        dead_owner = (
            seen.lease_owner
            if seen is not None and seen.lease_owner and _dead_local(seen.lease_owner)
            else None
        )

        def work(conn: Connection) -> store.SyncState | None:
            store.ensure_state(conn, self.target, now)
            if dead_owner is not None:
                store.release_lease(conn, self.target, dead_owner)
            if not store.acquire_lease(conn, self.target, self.owner, until, now):
                return None
            return store.state(conn, self.target)

        return self.db.write(work)

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
            if change.sequence != expected and (expected, change.sequence) not in self._skipped:
                missing = expected
                first_seen = self._gap[1] if self._gap and self._gap[0] == missing else None
                if first_seen is None:
                    self._gap = (missing, time.monotonic())
                    return changes[:i]
                if time.monotonic() - first_seen < GAP_SECONDS:
                    return changes[:i]
                log.info("change-feed sequence %d never appeared; skipping it", missing)
                self._gap = None
                # the cursor may stay below it (a study waits): do not wait for it again
                self._skipped.add((expected, change.sequence))
            expected = change.sequence + 1
        return changes

    def _study(self, partition_key: int, study_uid: str, sequence: int) -> str:
        """Reconcile; a failure the target calls permanent is dead-lettered at once, a
        passing one (429, 5xx, 412, no connection) is retried, then postponed (_Postponed)."""
        reason = ""
        for attempt in range(ATTEMPTS):
            try:
                outcome = self.reconciler.sync_study(partition_key, study_uid)
            except TargetError as exc:
                reason = str(exc)
                self.reconciler.forget()
                if not exc.retryable:
                    break
                if attempt == ATTEMPTS - 1:
                    raise _Postponed(reason) from exc
                log.info("FHIR sync of study %s failed (%s); retrying", study_uid, reason)
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
                1,
                _now(),
            )
        )
        return "dead-lettered"

    def retry_dead_letters(self, study_uids: list[str] | None = None) -> dict[str, str]:
        """Reconcile dead-lettered studies now: study UID -> outcome (cleared when it works)."""
        with self.db.read() as conn:
            letters = store.dead_letters(conn, self.target, study_uids)
        self._dead |= {(letter.partition_key, letter.study_uid) for letter in letters}
        outcomes: dict[str, str] = {}
        for letter in letters:
            try:
                outcomes[letter.study_uid] = self._study(
                    letter.partition_key, letter.study_uid, letter.sequence
                )
            except _Postponed as exc:
                outcomes[letter.study_uid] = f"still failing: {exc}"
        return outcomes

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
