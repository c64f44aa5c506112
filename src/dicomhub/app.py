"""The ASGI application: DICOMweb routers under each URL prefix, health, error mapping."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from anyio import to_thread
from fastapi import FastAPI, Request
from starlette.responses import Response

from dicomhub import __version__
from dicomhub.bootstrap import Services, build_services
from dicomhub.config import Settings
from dicomhub.dicomweb.errors import install_error_handlers
from dicomhub.dicomweb.responses import JSONResponse
from dicomhub.dicomweb.routes import changefeed, delete, qido, stow, wado

__all__ = ["DICOMWEB_PREFIXES", "create_app", "create_app_from_env"]

# /dicom-web without a version, and the Azure DICOM service's /v1 and /v2 URL shapes.
DICOMWEB_PREFIXES = ("/dicom-web", "/v1", "/v2")


def create_app(settings: Settings, services: Services | None = None) -> FastAPI:
    """An app over `settings`; storage must already be prepared (bootstrap.prepare_storage)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = services is None
        app.state.services = services or build_services(settings)
        # Everything loaded so far lives as long as the process: keep it out of the cyclic
        # garbage collector's scans, which otherwise grow with every module imported.
        gc.collect()
        gc.freeze()
        # Blocking work (files, SQL, parsing) runs in threads; allow as many as the pool can use.
        to_thread.current_default_thread_limiter().total_tokens = 64
        try:
            yield
        finally:
            if own:
                app.state.services.close()

    app = FastAPI(
        title="dicomhub",
        version=__version__,
        summary="DICOMweb archive (STOW-RS, QIDO-RS, WADO-RS, delete, change feed)",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    for prefix in DICOMWEB_PREFIXES:
        for module in (stow, qido, wado, delete, changefeed):
            app.include_router(module.router, prefix=prefix)

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


def create_app_from_env() -> FastAPI:
    """uvicorn factory for worker processes: settings come from DICOMHUB_* variables."""
    return create_app(Settings())
