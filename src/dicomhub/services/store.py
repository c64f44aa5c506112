"""Store: stage bytes, parse and validate once, then index and change feed in one transaction."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from enum import StrEnum
from typing import BinaryIO

from dicomhub.context import RequestContext
from dicomhub.dicom.read import NotDicom, ParsedInstance, missing_part10_header, parse_part10
from dicomhub.errors import NotFound
from dicomhub.services.urls import BULK_MARKER
from dicomhub.storage.blobs.base import BlobStore, BlobWriter
from dicomhub.storage.engine import Database
from dicomhub.storage.index import inserts
from dicomhub.storage.index import instances as index

__all__ = [
    "FailureCode",
    "InstanceOutcome",
    "StagedPart",
    "StoreBatch",
    "StoreOutcome",
    "StoreService",
    "StoreStatus",
]

log = logging.getLogger(__name__)

# Parts up to this size are parsed from a copy kept in memory while they are written: pydicom
# asks a file for its position before every element, and each such tell() on an open file is
# a system call (dozens per header, most of the parse's system time for a one-instance STOW).
KEEP_IN_MEMORY = 4 * 1024 * 1024
# Parts of one request whose files stay open while their fsyncs wait (see StoreBatch.seal).
OPEN_UNTIL_SYNCED = 64


class StoreStatus(StrEnum):
    STORED = "stored"
    STORED_WITH_WARNINGS = "stored-with-warnings"
    ALREADY_STORED = "already-stored"
    FAILED = "failed"


class FailureCode:
    """FailureReason / WarningReason values of the Azure DICOM service (and PS3.4 where they exist)."""

    PROCESSING_FAILURE = 272  # 0x0110
    VALIDATION_FAILURE = 43264  # 0xA900
    STUDY_MISMATCH = 43265  # 0xA901
    ALREADY_STORED = 45070
    BEING_CREATED = 45071
    COERCED = 45056  # 0xB000, a warning: stored with a Part-10 header the sender left out
    DATASET_DOES_NOT_MATCH = 45063  # 0xB007, a warning: stored, with findings


@dataclass(frozen=True, slots=True)
class InstanceOutcome:
    status: StoreStatus
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    failure_reason: int | None = None
    warning_reason: int | None = None
    message: str = ""

    @property
    def stored(self) -> bool:
        return self.status in (StoreStatus.STORED, StoreStatus.STORED_WITH_WARNINGS)


@dataclass(frozen=True, slots=True)
class StoreOutcome:
    instances: tuple[InstanceOutcome, ...]

    @property
    def stored(self) -> tuple[InstanceOutcome, ...]:
        return tuple(i for i in self.instances if i.stored)

    @property
    def failed(self) -> tuple[InstanceOutcome, ...]:
        return tuple(i for i in self.instances if not i.stored)


@dataclass(slots=True)
class _Pending:
    writer: BlobWriter
    parsed: ParsedInstance
    warnings: str
    durable: tuple[Future[None], ...]
    coerced: bool = False


def _bulk_placeholder(path: str) -> str:
    return BULK_MARKER + path


def _outcome(pending: _Pending, result: inserts.InsertResult) -> InstanceOutcome:
    p = pending.parsed
    if result.instance_key is not None and pending.warnings:
        status, failure = StoreStatus.STORED_WITH_WARNINGS, None
        warning = FailureCode.COERCED if pending.coerced else FailureCode.DATASET_DOES_NOT_MATCH
        message = pending.warnings
    elif result.instance_key is not None:
        status, failure, warning, message = StoreStatus.STORED, None, None, ""
    elif result.duplicate:
        status, failure, warning = StoreStatus.ALREADY_STORED, FailureCode.ALREADY_STORED, None
        message = "the instance is already stored; delete it first to replace it"
    else:
        status, failure, warning = StoreStatus.FAILED, FailureCode.VALIDATION_FAILURE, None
        message = result.conflict or "the index refused the instance"
    return InstanceOutcome(
        status,
        sop_class_uid=p.sop_class_uid,
        sop_instance_uid=p.sop_instance_uid,
        study_uid=p.study_uid,
        series_uid=p.series_uid,
        failure_reason=failure,
        warning_reason=warning,
        message=message,
    )


class StagedPart:
    """A part being written to its staged blob, and its bytes while there are few enough."""

    __slots__ = ("_kept", "_room", "durable", "writer")

    def __init__(self, writer: BlobWriter, keep: int = KEEP_IN_MEMORY) -> None:
        self.writer = writer
        self._kept: list[bytes | memoryview] | None = []
        self._room = keep
        self.durable: tuple[Future[None], ...] = ()  # its fsyncs, once sealed

    @property
    def size(self) -> int:
        return self.writer.size

    def write(self, data: bytes | memoryview) -> None:
        self.writer.write(data)
        if self._kept is not None:
            self._room -= len(data)
            if self._room < 0:
                self._kept = None
            elif isinstance(data, bytes) or isinstance(getattr(data, "obj", None), bytes):
                self._kept.append(data)  # immutable (request chunks): held by reference
            else:
                self._kept.append(bytes(data))  # a buffer its owner may fill again

    def abort(self) -> None:
        self._kept = None
        wait(self.durable)  # an fsync still running must not race the unlink
        self.writer.abort()

    def take(self) -> bytes | None:
        """The bytes written, if all were kept; forgotten here (the parse needs them once)."""
        kept, self._kept = self._kept, None
        return b"".join(kept) if kept is not None else None


def _open(writer: BlobWriter, content: bytes | None) -> BinaryIO:
    return io.BytesIO(content) if content is not None else writer.reader()


class StoreBatch:
    """One request's worth of instances: parts are added as they arrive, committed together.

    Not thread-safe: one request drives it, from one thread at a time.
    """

    def __init__(self, service: StoreService, ctx: RequestContext, study_uid: str | None) -> None:
        self._service = service
        self._ctx = ctx
        self._study_uid = study_uid
        self._pending: list[_Pending] = []
        self._outcomes: list[InstanceOutcome | None] = []
        self._writers: list[BlobWriter] = []
        self._syncing: list[Future[None]] = []
        self._seen: set[str] = set()

    def part(self) -> StagedPart:
        """A staged blob for the next part's bytes; hand it to `add` once written."""
        return StagedPart(self._stage(), self._service.keep_in_memory)

    def _stage(self) -> BlobWriter:
        writer = self._service.blobs.stage()
        self._writers.append(writer)
        return writer

    def seal(self, part: StagedPart) -> None:
        """The part's last byte is written: start making it durable, from the caller's thread.

        Call it from the thread that wrote the part, before handing the part to `add` in a
        worker thread: the fsync threads then start before the parse holds the GIL, and run
        beside it. Started from `add`, they began only once the parse was done.
        """
        if part.durable:
            return
        # A sealed file stays open until its fsync has run. When the fsyncs of many earlier
        # parts still wait (a slow disk, many small parts), the file is closed instead and its
        # fsync opens it again: a request must not run the process out of file descriptors.
        behind = len(self._syncing) >= 2 * OPEN_UNTIL_SYNCED
        if behind and not self._syncing[-2 * OPEN_UNTIL_SYNCED].done():
            part.writer.close()
        else:
            part.writer.seal()
        part.durable = self._service.make_durable(part.writer)
        self._syncing += part.durable

    def add(self, part: StagedPart, problem: str | None = None) -> InstanceOutcome | None:
        """Make the part durable and check it. Returns its outcome now if it already failed."""
        if problem is not None:
            part.abort()
            return self._fail(None, FailureCode.PROCESSING_FAILURE, problem)
        content = part.take()
        writer = part.writer
        # The fsyncs (milliseconds, seconds on a slow disk) run while the part is parsed.
        self.seal(part)
        durable = part.durable
        coerced = False
        try:
            with _open(writer, content) as fh:
                header = missing_part10_header(fh)
            if header is not None:
                wait(durable)  # the received bytes' fsyncs, before their file goes
                writer = self._with_header(writer, header)
                content = header + content if content is not None else None
                coerced = True
                durable = self._service.make_durable(writer)
                self._syncing += durable
            with _open(writer, content) as fh:
                parsed = parse_part10(fh, writer.size, _bulk_placeholder, content)
            refusal = self._refusal(parsed)
        except NotDicom as exc:
            parsed, refusal = None, (FailureCode.VALIDATION_FAILURE, str(exc))
        except Exception as exc:
            log.exception("unexpected error while parsing a stored part")
            parsed, refusal = None, (FailureCode.PROCESSING_FAILURE, f"could not process: {exc}")
        if refusal is not None or parsed is None:
            wait(durable)  # an fsync still running must not race the unlink
            writer.abort()
            code, message = refusal or (FailureCode.PROCESSING_FAILURE, "could not process")
            return self._fail(parsed, code, message)
        self._seen.add(parsed.sop_instance_uid)
        messages = [f.message for f in parsed.warnings]
        if coerced:
            messages.insert(
                0, "the part lacked the Part-10 preamble or File Meta Information; added"
            )
        self._pending.append(_Pending(writer, parsed, "; ".join(messages), durable, coerced))
        self._outcomes.append(None)
        return None

    def _refusal(self, parsed: ParsedInstance) -> tuple[int, str] | None:
        if parsed.errors:
            return FailureCode.VALIDATION_FAILURE, "; ".join(f.message for f in parsed.errors)
        if self._study_uid is not None and parsed.study_uid != self._study_uid:
            return (
                FailureCode.STUDY_MISMATCH,
                f"StudyInstanceUID {parsed.study_uid} differs from {self._study_uid} in the URL",
            )
        if parsed.sop_instance_uid in self._seen:
            return FailureCode.ALREADY_STORED, "the same instance appears twice in the request"
        return None

    def _with_header(self, writer: BlobWriter, header: bytes) -> BlobWriter:
        """A new staged blob holding `header` followed by the received bytes, which stay unchanged."""
        fixed = self._stage()
        with writer.reader() as fh:
            fixed.write(header)
            while chunk := fh.read(1024 * 1024):
                fixed.write(chunk)
        fixed.close()
        writer.abort()
        return fixed

    def _fail(self, parsed: ParsedInstance | None, code: int, message: str) -> InstanceOutcome:
        outcome = InstanceOutcome(
            StoreStatus.ALREADY_STORED
            if code == FailureCode.ALREADY_STORED
            else StoreStatus.FAILED,
            sop_class_uid=parsed.sop_class_uid or None if parsed else None,
            sop_instance_uid=parsed.sop_instance_uid or None if parsed else None,
            study_uid=parsed.study_uid or None if parsed else None,
            series_uid=parsed.series_uid or None if parsed else None,
            failure_reason=code,
            message=message,
        )
        log.info("store refused %s: %s (%s)", outcome.sop_instance_uid or "a part", message, code)
        self._outcomes.append(outcome)
        return outcome

    def commit(self) -> StoreOutcome:
        """Index every accepted part in one transaction, then make their blobs permanent."""
        try:
            for pending in self._pending:
                for done in pending.durable:
                    done.result()  # fsyncs done in the background while parsing
            results = self._service.index_batch(self._ctx, self._pending) if self._pending else []
        except BaseException:
            self.abort()
            raise
        by_pending = iter(zip(self._pending, results, strict=True))
        final: list[InstanceOutcome] = []
        for early in self._outcomes:
            if early is not None:
                final.append(early)
                continue
            pending, result = next(by_pending)
            if result.instance_key is not None:
                self._service.blobs.promote(pending.writer.blob_id)
            else:
                pending.writer.abort()
            final.append(_outcome(pending, result))
        self._pending.clear()
        self._writers.clear()
        self._syncing.clear()
        stored = StoreOutcome(tuple(final))
        if stored.stored:
            self._service.notify()
        return stored

    def abort(self) -> None:
        """Drop everything staged by this request (client gone, body malformed, server stopping)."""
        wait(self._syncing)  # an fsync still running must not race the unlink
        for writer in self._writers:
            writer.abort()
        self._writers.clear()
        self._pending.clear()
        self._syncing.clear()


@dataclass
class StoreService:
    db: Database
    blobs: BlobStore
    _partitions: dict[str, int] = field(default_factory=dict)
    _listeners: list[Callable[[], None]] = field(default_factory=list)
    syncer: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=8, thread_name_prefix="fsync")
    )
    keep_in_memory: int = KEEP_IN_MEMORY

    def close(self) -> None:
        self.syncer.shutdown(wait=True)

    def make_durable(self, writer: BlobWriter) -> tuple[Future[None], ...]:
        """fsync the bytes and the name in parallel: the file system may share one journal commit."""
        return (self.syncer.submit(writer.sync), self.syncer.submit(writer.sync_name))

    def begin(self, ctx: RequestContext, *, study_uid: str | None = None) -> StoreBatch:
        return StoreBatch(self, ctx, study_uid)

    def store_file(self, ctx: RequestContext, source: BinaryIO) -> InstanceOutcome:
        """Store one Part-10 file read from `source` (the CLI import path)."""
        batch = self.begin(ctx)
        part = batch.part()
        try:
            while chunk := source.read(1024 * 1024):
                part.write(chunk)
        except BaseException:
            batch.abort()
            raise
        batch.add(part)
        return batch.commit().instances[0]

    def partition_key(self, name: str) -> int:
        key = self._partitions.get(name)
        if key is None:
            with self.db.read() as conn:
                key = index.partition_key(conn, name)
            if key is None:
                raise NotFound(f"data partition '{name}' does not exist")
            self._partitions[name] = key
        return key

    def index_batch(
        self, ctx: RequestContext, pending: list[_Pending]
    ) -> list[inserts.InsertResult]:
        pk = self.partition_key(ctx.partition)
        items = [inserts.NewInstance(p.parsed, p.writer.blob_id, p.writer.size) for p in pending]
        now = ctx.now()
        return self.db.write(lambda conn: inserts.insert_instances(conn, pk, items, now))

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call `listener` after each commit that stored something (wakes change-feed consumers)."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[], None]) -> None:
        self._listeners.remove(listener)

    def notify(self) -> None:
        for listener in self._listeners:
            try:
                listener()
            except Exception:
                log.exception("store listener failed")

    def recover(self) -> tuple[int, int]:
        """Finish or undo stores that a crashed process left between blob and index."""

        def referenced(ids: list[str]) -> set[str]:
            with self.db.read() as conn:
                return index.referenced_blobs(conn, ids)

        promoted, deleted = self.blobs.recover(referenced)
        if promoted or deleted:
            log.warning(
                "recovered interrupted stores: %d blob(s) completed, %d leftover(s) removed",
                promoted,
                deleted,
            )
        return promoted, deleted
