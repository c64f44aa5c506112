"""WADO-RS retrieve: stored files, metadata from the stored JSON, bulk data by recorded offsets."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicomhub.context import RequestContext
from dicomhub.errors import NotFound, Unsupported
from dicomhub.services.store import StoreService
from dicomhub.services.urls import Urls, resolve_bulk_uris
from dicomhub.storage.blobs.base import BlobStore
from dicomhub.storage.engine import Database
from dicomhub.storage.index import instances as index
from dicomhub.storage.index.instances import StoredInstance

__all__ = ["BulkPart", "Metadata", "RetrieveService", "StoredInstance", "scope_name"]

_PAGE = 500


@dataclass(frozen=True, slots=True)
class Metadata:
    """An ETag for the scope, and the JSON array as chunks (read page by page, never all at once)."""

    etag: str
    chunks: Iterator[bytes]


@dataclass(frozen=True, slots=True)
class BulkPart:
    """One part of a bulk-data response: byte ranges of a blob, or bytes already in hand."""

    blob_id: str | None
    ranges: tuple[tuple[int, int], ...]
    data: bytes | None = None

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else sum(n for _, n in self.ranges)


def scope_name(study: str, series: str | None, sop: str | None) -> str:
    if sop is not None:
        return f"instance {sop} of series {series} in study {study}"
    if series is not None:
        return f"series {series} in study {study}"
    return f"study {study}"


@dataclass
class RetrieveService:
    db: Database
    blobs: BlobStore
    store: StoreService

    def instances(
        self, ctx: RequestContext, study: str, series: str | None = None, sop: str | None = None
    ) -> list[StoredInstance]:
        pk = self.store.partition_key(ctx.partition)
        with self.db.read() as conn:
            found = index.find_instances(conn, pk, study, series, sop)
        if not found:
            raise NotFound(f"{scope_name(study, series, sop)} is not stored")
        return found

    def open(self, stored: StoredInstance) -> BinaryIO:
        return self.blobs.open(stored.blob_id)

    def metadata(
        self,
        ctx: RequestContext,
        urls: Urls,
        study: str,
        series: str | None = None,
        sop: str | None = None,
    ) -> Metadata:
        pk = self.store.partition_key(ctx.partition)
        with self.db.read() as conn:
            newest, count, stored_at = index.metadata_version(conn, pk, study, series, sop)
        if count == 0:
            raise NotFound(f"{scope_name(study, series, sop)} is not stored")
        etag = f'"{newest}-{count}-{stored_at:x}"'
        return Metadata(etag, self._metadata_chunks(pk, urls, study, series, sop))

    def _metadata_chunks(
        self, pk: int, urls: Urls, study: str, series: str | None, sop: str | None
    ) -> Iterator[bytes]:
        yield b"["
        after = 0
        first = True
        while True:
            with self.db.read() as conn:
                page = index.metadata_page(
                    conn, pk, study, series, sop, after_key=after, limit=_PAGE
                )
            if not page:
                break
            parts = []
            for key, st, se, sp, stored in page:
                parts.append(resolve_bulk_uris(stored, urls.instance(st, se, sp)))
                after = key
            yield (b"" if first else b",") + b",".join(parts)
            first = False
            if len(page) < _PAGE:
                break
        yield b"]"

    def bulkdata(
        self, ctx: RequestContext, study: str, series: str, sop: str, path: str
    ) -> tuple[StoredInstance, list[BulkPart]]:
        """The value of the element at `path` (e.g. `7FE00010` or `00400275/0/00420011`)."""
        (stored,) = self.instances(ctx, study, series, sop)
        steps = path.strip("/").split("/")
        pixel = len(steps) == 1 and steps[0].upper() in ("7FE00010", "7FE00008", "7FE00009")
        frames = stored.frames
        if pixel and frames is not None and int(frames["tag"]) == int(steps[0], 16):
            if frames["length"] is not None:
                return stored, [BulkPart(stored.blob_id, ((frames["offset"], frames["length"]),))]
            if frames["frames"] is None:
                raise Unsupported("the frames of this encapsulated pixel data could not be indexed")
            parts = [
                BulkPart(stored.blob_id, tuple((o, n) for o, n in frame))
                for frame in frames["frames"]
            ]
            return stored, parts
        return stored, [BulkPart(None, (), self._element_value(stored, steps, path))]

    def _element_value(self, stored: StoredInstance, steps: list[str], path: str) -> bytes:
        # Non-pixel bulk data is rare (overlays, waveforms, PDFs): read the header again.
        with self.blobs.open(stored.blob_id) as fh:
            ds = dcmread(fh, stop_before_pixels=not steps[0].upper().startswith("7FE0"))
        node: Any = ds
        try:
            for i, step in enumerate(steps):
                if i % 2 == 0:
                    tag = int(step, 16)
                    if not isinstance(node, Dataset) or tag not in node:
                        raise KeyError(step)
                    node = node[tag].value
                else:
                    if not isinstance(node, Sequence):
                        raise KeyError(step)
                    node = node[int(step)]
        except (KeyError, ValueError, IndexError):
            raise NotFound(
                f"no bulk data at '{path}' in instance {stored.sop_instance_uid}"
            ) from None
        if isinstance(node, bytes | bytearray):
            return bytes(node)
        raise NotFound(f"'{path}' is not a binary attribute")
