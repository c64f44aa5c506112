"""Routes of the web UI (/) and of the bundled OHIF viewer (/viewer)."""

from __future__ import annotations

import mimetypes
from pathlib import Path

from anyio import to_thread
from fastapi import APIRouter, Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from dicomhub.bootstrap import Services
from dicomhub.dicomweb.responses import JSONResponse
from dicomhub.errors import NotFound
from dicomhub.http_middleware import accepts_gzip
from dicomhub.services.status import archive_status
from dicomhub.sync.worker import SyncWorker
from dicomhub.ui import viewer

__all__ = ["router"]

router = APIRouter(tags=["web UI"])

STATIC = Path(__file__).parent / "static"
# The UI's own files, by name; nothing else under /ui is served.
UI_FILES = {"app.js", "app.css", "placeholder.svg"}
# index.html and app-config.js change with an install or a setting: always revalidate them;
# the hashed bundles are checked by ETag too (FileResponse sets it).
NO_CACHE = {"Cache-Control": "no-cache"}


@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
async def home() -> Response:
    return FileResponse(STATIC / "index.html", headers=NO_CACHE)


@router.api_route("/ui/{name}", methods=["GET", "HEAD"], include_in_schema=False)
async def ui_file(name: str) -> Response:
    if name not in UI_FILES:
        raise NotFound(f"no such file of the web UI: {name}")
    return FileResponse(STATIC / name, headers=NO_CACHE)


@router.get("/api/status", summary="Archive totals, storage used and the FHIR sync's progress")
async def status(request: Request) -> Response:
    services: Services = request.app.state.services
    worker: SyncWorker | None = request.app.state.sync
    target = worker.target if worker is not None else None
    found = await to_thread.run_sync(
        archive_status, services.db, services.settings.blob_dir, target
    )
    body = found.as_json()
    installed = await to_thread.run_sync(viewer.is_installed, _viewer_root(request))
    body["viewer"] = {"installed": installed, "url": "/viewer/"}
    return JSONResponse(body, headers=NO_CACHE)


def _viewer_root(request: Request) -> Path:
    services: Services = request.app.state.services
    return services.settings.viewer_dir.resolve()


def _dicomweb_root(request: Request) -> str:
    services: Services = request.app.state.services
    base = services.settings.public_url or str(request.base_url)
    return base.rstrip("/") + "/dicom-web"


@router.api_route("/viewer", methods=["GET", "HEAD"], include_in_schema=False)
async def viewer_root() -> Response:
    return RedirectResponse("/viewer/", status_code=308)


@router.api_route("/viewer/app-config.js", methods=["GET", "HEAD"], include_in_schema=False)
async def viewer_config(request: Request) -> Response:
    return Response(
        viewer.app_config(_dicomweb_root(request)),
        media_type="text/javascript",
        headers=NO_CACHE,
    )


@router.api_route("/viewer/{path:path}", methods=["GET", "HEAD"], include_in_schema=False)
async def viewer_file(path: str, request: Request) -> Response:
    """A file of the dist; any other path is a route of the single-page app: index.html."""
    root = _viewer_root(request)
    gzip_ok = accepts_gzip(request.headers.get("accept-encoding"))

    def locate() -> tuple[Path | None, Path | None]:
        found = viewer.find_file(root, path)
        return found, (viewer.gzipped(found) if found is not None and gzip_ok else None)

    found, compressed = await to_thread.run_sync(locate)
    if found is not None and found.name != "index.html":
        headers = {"Vary": "Accept-Encoding"}
        if compressed is not None:
            kind = mimetypes.guess_type(found.name)[0] or "application/octet-stream"
            headers["Content-Encoding"] = "gzip"
            return FileResponse(compressed, media_type=kind, headers=headers)
        return FileResponse(found, headers=headers)
    if not await to_thread.run_sync(viewer.is_installed, root):
        return HTMLResponse(viewer.not_installed_page(root), status_code=404, headers=NO_CACHE)
    return FileResponse(root / "index.html", headers=NO_CACHE)
