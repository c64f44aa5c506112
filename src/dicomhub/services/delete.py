"""Delete studies, series and instances: index rows and change feed first, blobs after commit."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial

from dicomhub.context import RequestContext
from dicomhub.errors import NotFound
from dicomhub.services.store import StoreService
from dicomhub.services.thumbnails import ThumbnailCache
from dicomhub.storage.blobs.base import BlobStore
from dicomhub.storage.engine import Database
from dicomhub.storage.index import instances as index

__all__ = ["DeleteService"]

log = logging.getLogger(__name__)


@dataclass
class DeleteService:
    db: Database
    blobs: BlobStore
    store: StoreService
    thumbnails: ThumbnailCache | None = None

    def delete(
        self, ctx: RequestContext, study: str, series: str | None = None, sop: str | None = None
    ) -> int:
        """Delete everything in scope; returns how many instances went. NotFound if none matched."""
        pk = self.store.partition_key(ctx.partition)
        now = ctx.now()
        deleted = self.db.write(
            lambda conn: index.delete_instances(conn, self.db.backend, pk, study, series, sop, now)
        )
        if not deleted:
            what = sop or series or study
            raise NotFound(f"{what} is not stored")
        self.store.notify()
        self.purge_blobs()
        log.info("deleted %d instance(s) under %s", len(deleted), sop or series or study)
        return len(deleted)

    def purge_blobs(self) -> int:
        """Remove blobs whose rows are gone (queued by delete transactions); safe to repeat."""
        removed = 0
        while True:
            with self.db.read() as conn:
                ids = index.pending_blob_deletions(conn)
            if not ids:
                return removed
            done = []
            for blob_id in ids:
                try:
                    if self.blobs.delete(blob_id):
                        done.append(blob_id)
                except OSError:
                    log.exception("could not remove blob %s; it stays queued", blob_id)
                    break
            # A blob still staged by a store stays queued: it is removed once promoted.
            if done and self.thumbnails is not None:
                self.thumbnails.drop(done)
            if done:
                self.db.write(partial(index.forget_blob_deletions, blob_ids=done))
            removed += len(done)
            if len(done) < len(ids):
                return removed
