"""Request-scoped dependencies: the services, the caller's context, the URL base, UID checks.

They are `async def` although they never await: FastAPI runs plain `def` dependencies in the
thread pool, a thread hop per dependency per request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from dicomhub.bootstrap import Services
from dicomhub.context import Origin, RequestContext
from dicomhub.dicom.uid import uid_problem
from dicomhub.errors import InvalidInput
from dicomhub.services.urls import Urls

__all__ = ["Ctx", "ServicesDep", "UrlsDep", "api_version", "check_uid", "check_uids"]


async def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def _context(request: Request) -> RequestContext:
    client = request.client
    return RequestContext(origin=Origin.DICOMWEB, remote=client.host if client else None)


def _prefix(request: Request) -> str:
    # Routes are mounted under /dicom-web, /v1 and /v2: the first path segment is the mount.
    path = request.url.path
    first = path.split("/", 2)[1] if path.count("/") >= 1 else ""
    return f"/{first}" if first in ("dicom-web", "v1", "v2") else ""


def _base(request: Request) -> str:
    public: str | None = request.app.state.services.settings.public_url
    if public:
        return public.rstrip("/")
    base = request.base_url
    server = request.scope.get("server")
    # Some clients (dicomweb-client among them) send a Host header without the port; URLs built
    # from it would point at port 80. Without proxy headers, the port we listen on is the answer.
    if (
        base.port is None
        and server
        and "x-forwarded-host" not in request.headers
        and server[1] not in (80, 443)
    ):
        base = base.replace(port=server[1])
    return str(base).rstrip("/")


async def _urls(request: Request) -> Urls:
    return Urls(_base(request) + _prefix(request))


async def api_version(request: Request) -> int:
    """2 under /v2, 1 under /v1, 0 without a version prefix."""
    prefix = _prefix(request)
    return {"/v2": 2, "/v1": 1}.get(prefix, 0)


def check_uid(name: str, value: str) -> str:
    problem = uid_problem(value)
    if problem:
        raise InvalidInput(f"{name} '{value}' in the URL is not a valid UID: it {problem}")
    return value


def check_uids(study: str, series: str | None = None, sop: str | None = None) -> None:
    """400 for a study, series or SOP Instance UID in the path that is not a UID."""
    check_uid("StudyInstanceUID", study)
    if series is not None:
        check_uid("SeriesInstanceUID", series)
    if sop is not None:
        check_uid("SOPInstanceUID", sop)


ServicesDep = Annotated[Services, Depends(_services)]
Ctx = Annotated[RequestContext, Depends(_context)]
UrlsDep = Annotated[Urls, Depends(_urls)]
