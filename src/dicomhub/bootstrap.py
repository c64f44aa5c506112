"""Build the storage and services from Settings; start-up recovery lives here too."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dicomhub.config import Settings
from dicomhub.fhir.api.errors import describe as describe_fhir_error
from dicomhub.fhir.bundles import BundleProcessor
from dicomhub.fhir.capability import capability_statement
from dicomhub.fhir.search_service import FhirSearch
from dicomhub.fhir.service import FhirService, format_instant
from dicomhub.services.changefeed import ChangeFeedService
from dicomhub.services.delete import DeleteService
from dicomhub.services.frames import FrameService
from dicomhub.services.rendering import RenderService
from dicomhub.services.retrieve import RetrieveService
from dicomhub.services.search import SearchService
from dicomhub.services.store import StoreService
from dicomhub.services.thumbnails import ThumbnailCache
from dicomhub.storage import sync as sync_store
from dicomhub.storage.blobs.filesystem import FilesystemBlobStore
from dicomhub.storage.engine import Database
from dicomhub.sync.mapping import MappingOptions
from dicomhub.sync.reconcile import StudyKey, StudyReconciler
from dicomhub.sync.targets import (
    BearerAuth,
    ClientCredentials,
    EmbeddedTarget,
    FhirTarget,
    HttpTarget,
    StaticToken,
)
from dicomhub.sync.worker import SyncWorker

__all__ = ["FhirStore", "Services", "build_services", "build_sync_worker", "prepare_storage"]

log = logging.getLogger(__name__)


@dataclass
class FhirStore:
    """The FHIR side: resource service, search, Bundle processing."""

    service: FhirService
    search: FhirSearch
    bundles: BundleProcessor
    started: str

    def capabilities(self, base: str) -> dict[str, Any]:
        return capability_statement(base, self.started)


@dataclass
class Services:
    settings: Settings
    db: Database
    blobs: FilesystemBlobStore
    store: StoreService
    search: SearchService
    retrieve: RetrieveService
    frames: FrameService
    rendering: RenderService
    delete: DeleteService
    changefeed: ChangeFeedService
    fhir: FhirStore

    def close(self) -> None:
        self.store.close()
        self.blobs.close()
        self.db.dispose()


def build_services(settings: Settings) -> Services:
    """Connect to existing storage; call prepare_storage() once before, from one process."""
    db = Database(settings.resolved_database_url, sqlite_synchronous=settings.sqlite_synchronous)
    blobs = FilesystemBlobStore(settings.blob_dir)
    store = StoreService(db, blobs)
    search = FhirSearch(db)
    fhir_service = FhirService(db, search)
    fhir = FhirStore(
        service=fhir_service,
        search=search,
        bundles=BundleProcessor(fhir_service, search.read_entry, describe_fhir_error),
        started=format_instant(datetime.now(UTC)),
    )
    retrieve = RetrieveService(db, blobs, store)
    thumbnails = ThumbnailCache(settings.data_dir / "cache" / "thumbnails")
    return Services(
        settings=settings,
        db=db,
        blobs=blobs,
        store=store,
        search=SearchService(
            db, store, default_limit=settings.qido_default_limit, max_limit=settings.qido_max_limit
        ),
        retrieve=retrieve,
        frames=FrameService(blobs, retrieve),
        rendering=RenderService(retrieve, blobs, thumbnails),
        delete=DeleteService(db, blobs, store, thumbnails),
        changefeed=ChangeFeedService(db),
        fhir=fhir,
    )


def build_sync_worker(settings: Settings, services: Services) -> SyncWorker:
    """The DICOM -> FHIR sync worker: into the embedded store, or the external `fhir_url`."""
    options = MappingOptions(
        dicomweb_base=f"{settings.base_url}/dicom-web",
        patient_id_system=settings.patient_id_system,
        timezone=settings.dicom_timezone,
    )
    target: FhirTarget
    if settings.fhir_url:
        auth: BearerAuth = StaticToken(settings.fhir_token)
        if settings.fhir_token_url and settings.fhir_client_id and settings.fhir_client_secret:
            auth = ClientCredentials(
                settings.fhir_token_url,
                settings.fhir_client_id,
                settings.fhir_client_secret,
                settings.fhir_scope,
            )
        target = HttpTarget(settings.fhir_url, auth)
    else:
        target = EmbeddedTarget(services.fhir.service, services.fhir.search)

    def load(studies: Sequence[StudyKey]) -> dict[StudyKey, list[tuple[int, bytes]]]:
        with services.db.read() as conn:
            return {key: sync_store.study_metadata(conn, *key) for key in studies}

    return SyncWorker(services.db, StudyReconciler(target, options, load))


def prepare_storage(settings: Settings) -> None:
    """Migrate the index, then finish or undo what an interrupted process left behind."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    services = build_services(settings)
    try:
        services.db.migrate()
        services.db.analyze()
        services.store.recover()
        purged = services.delete.purge_blobs()
        if purged:
            log.warning("removed %d blob(s) left by interrupted deletes", purged)
    finally:
        services.close()
