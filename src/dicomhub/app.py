"""The ASGI application: DICOMweb routers under each URL prefix, health, error mapping."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from anyio import to_thread
from fastapi import FastAPI, Request
from starlette.responses import Response

from dicomhub import __version__, admin_routes, http_middleware
from dicomhub.bootstrap import Services, build_services, build_sync_worker
from dicomhub.config import Settings
from dicomhub.dicomweb import errors as dicomweb_errors
from dicomhub.dicomweb.responses import JSONResponse
from dicomhub.dicomweb.routes import changefeed, delete, frames, qido, rendered, stow, wado
from dicomhub.fhir.api import errors as fhir_errors
from dicomhub.fhir.api import routes as fhir_routes
from dicomhub.fhir.api import search_routes as fhir_search_routes
from dicomhub.routing import include_flat
from dicomhub.ui import routes as ui_routes

__all__ = ["DICOMWEB_PREFIXES", "create_app", "create_app_from_env"]

# /dicom-web without a version, and the Azure DICOM service's /v1 and /v2 URL shapes.
DICOMWEB_PREFIXES = ("/dicom-web", "/v1", "/v2")


def create_app(settings: Settings, services: Services | None = None) -> FastAPI:
    """An app over `settings`; storage must already be prepared (bootstrap.prepare_storage)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = services is None
        app.state.services = services or build_services(settings)
        app.state.fhir = app.state.services.fhir
        app.state.public_url = settings.public_url
        # Everything loaded so far lives as long as the process: keep it out of the cyclic
        # garbage collector's scans, which otherwise grow with every module imported.
        gc.collect()
        gc.freeze()
        # Blocking work (files, SQL, parsing) runs in threads; allow as many as the pool can use.
        to_thread.current_default_thread_limiter().total_tokens = 64
        sync = build_sync_worker(settings, app.state.services) if settings.fhir_sync else None
        app.state.sync = sync
        if sync is not None:
            app.state.services.store.subscribe(sync.wake)
            sync.start()
        try:
            yield
        finally:
            if sync is not None:
                app.state.services.store.unsubscribe(sync.wake)
                sync.stop()
            if own:
                app.state.services.close()

    app = FastAPI(
        title="dicomhub",
        version=__version__,
        summary="DICOMweb archive (STOW-RS, QIDO-RS, WADO-RS, delete, change feed)",
        lifespan=lifespan,
    )
    _install_error_handlers(app)
    http_middleware.install(app, settings.cors_origins)
    # Routes are tried in order, about a microsecond each: /dicom-web (viewers, most clients)
    # first, then FHIR, then the Azure-shaped /v1 and /v2.
    dicomweb = (stow, qido, wado, frames, rendered, delete, changefeed)
    for module in dicomweb:
        include_flat(app, module.router, prefix=DICOMWEB_PREFIXES[0])
    include_flat(app, fhir_routes.router, prefix="/fhir", tags=["FHIR"])
    # after the FHIR routes: GET /fhir/{type} must not shadow /fhir/metadata or /fhir/_history
    include_flat(app, fhir_search_routes.router, prefix="/fhir", tags=["FHIR"])
    include_flat(app, admin_routes.router, prefix="/admin", tags=["administration"])
    for prefix in DICOMWEB_PREFIXES[1:]:
        for module in dicomweb:
            include_flat(app, module.router, prefix=prefix)

    # last: the UI owns / and /viewer, nothing under the DICOMweb or FHIR prefixes
    include_flat(app, ui_routes.router)

    @app.get("/health", tags=["Health"], summary="Liveness and storage check")
    @app.get("/health/check", tags=["Health"], include_in_schema=False)
    async def health(request: Request) -> Response:
        services: Services = request.app.state.services

        def probe() -> dict[str, object]:
            with services.db.read() as conn:
                conn.exec_driver_sql("SELECT 1")
            return {"status": "ok", "overallStatus": "Healthy", "database": services.db.backend}

        return JSONResponse(await to_thread.run_sync(probe))

    return app


def _install_error_handlers(app: FastAPI) -> None:
    """Errors on /fhir become OperationOutcomes; everywhere else DICOMweb's JSON errors."""
    for kind in dicomweb_errors.HANDLERS:

        async def dispatch(
            request: Request, exc: Exception, kind: type[Exception] = kind
        ) -> Response:
            fhir = request.url.path == "/fhir" or request.url.path.startswith("/fhir/")
            table = fhir_errors.HANDLERS if fhir else dicomweb_errors.HANDLERS
            return await table[kind](request, exc)

        app.add_exception_handler(kind, dispatch)


def create_app_from_env() -> FastAPI:
    """uvicorn factory for worker processes: settings come from DICOMHUB_* variables."""
    return create_app(Settings())
