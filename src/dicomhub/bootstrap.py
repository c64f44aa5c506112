"""Build the storage and services from Settings; start-up recovery lives here too."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from dicomhub.config import Settings
from dicomhub.services.changefeed import ChangeFeedService
from dicomhub.services.delete import DeleteService
from dicomhub.services.retrieve import RetrieveService
from dicomhub.services.search import SearchService
from dicomhub.services.store import StoreService
from dicomhub.storage.blobs.filesystem import FilesystemBlobStore
from dicomhub.storage.engine import Database

__all__ = ["Services", "build_services", "prepare_storage"]

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    db: Database
    blobs: FilesystemBlobStore
    store: StoreService
    search: SearchService
    retrieve: RetrieveService
    delete: DeleteService
    changefeed: ChangeFeedService

    def close(self) -> None:
        self.store.close()
        self.blobs.close()
        self.db.dispose()


def build_services(settings: Settings) -> Services:
    """Connect to existing storage; call prepare_storage() once before, from one process."""
    db = Database(settings.resolved_database_url, sqlite_synchronous=settings.sqlite_synchronous)
    blobs = FilesystemBlobStore(settings.blob_dir)
    store = StoreService(db, blobs)
    return Services(
        settings=settings,
        db=db,
        blobs=blobs,
        store=store,
        search=SearchService(
            db, store, default_limit=settings.qido_default_limit, max_limit=settings.qido_max_limit
        ),
        retrieve=RetrieveService(db, blobs, store),
        delete=DeleteService(db, blobs, store),
        changefeed=ChangeFeedService(db),
    )


def prepare_storage(settings: Settings) -> None:
    """Migrate the index, then finish or undo what an interrupted process left behind."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    services = build_services(settings)
    try:
        services.db.migrate()
        services.store.recover()
        purged = services.delete.purge_blobs()
        if purged:
            log.warning("removed %d blob(s) left by interrupted deletes", purged)
    finally:
        services.close()
