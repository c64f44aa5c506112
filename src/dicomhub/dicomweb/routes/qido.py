"""QIDO-RS: search studies, series and instances (PS3.18 10.6)."""

from __future__ import annotations

from anyio import to_thread
from fastapi import APIRouter, Request
from starlette.responses import Response

from dicomhub.dicom.attributes import Level
from dicomhub.dicomweb.deps import Ctx, ServicesDep, UrlsDep, check_uids
from dicomhub.dicomweb.negotiation import accepts_json
from dicomhub.dicomweb.responses import DicomJSONResponse
from dicomhub.errors import NotAcceptable

router = APIRouter(tags=["QIDO-RS"])


async def _search(
    request: Request,
    services: ServicesDep,
    ctx: Ctx,
    urls: UrlsDep,
    level: Level,
    study: str | None = None,
    series: str | None = None,
) -> Response:
    if not accepts_json(request.headers.get("accept")):
        raise NotAcceptable("search results are available as application/dicom+json only")
    if study is not None:
        check_uids(study, series)
    spec = services.search.parse(
        level, request.query_params.multi_items(), study_uid=study, series_uid=series
    )
    result = await to_thread.run_sync(services.search.search, ctx, spec, urls)
    headers = {}
    warnings = list(result.warnings)
    if result.has_more:
        warnings.append(
            f"There are additional results that can be requested (offset={spec.offset + spec.limit})"
        )
    if warnings:
        # PS3.18 8.3.4.4: 299 warnings about truncation and ignored parameters.
        headers["Warning"] = ", ".join(f'299 dicomhub "{w}"' for w in warnings)
    return DicomJSONResponse(result.items, headers=headers)


@router.get("/studies", summary="Search for studies")
async def search_studies(
    request: Request, services: ServicesDep, ctx: Ctx, urls: UrlsDep
) -> Response:
    return await _search(request, services, ctx, urls, Level.STUDY)


@router.get("/series", summary="Search for series")
async def search_series(
    request: Request, services: ServicesDep, ctx: Ctx, urls: UrlsDep
) -> Response:
    return await _search(request, services, ctx, urls, Level.SERIES)


@router.get("/instances", summary="Search for instances")
async def search_instances(
    request: Request, services: ServicesDep, ctx: Ctx, urls: UrlsDep
) -> Response:
    return await _search(request, services, ctx, urls, Level.INSTANCE)


@router.get("/studies/{study}/series", summary="Search for series of a study")
async def search_study_series(
    study: str, request: Request, services: ServicesDep, ctx: Ctx, urls: UrlsDep
) -> Response:
    return await _search(request, services, ctx, urls, Level.SERIES, study)


@router.get("/studies/{study}/instances", summary="Search for instances of a study")
async def search_study_instances(
    study: str, request: Request, services: ServicesDep, ctx: Ctx, urls: UrlsDep
) -> Response:
    return await _search(request, services, ctx, urls, Level.INSTANCE, study)


@router.get(
    "/studies/{study}/series/{series}/instances", summary="Search for instances of a series"
)
async def search_series_instances(
    study: str, series: str, request: Request, services: ServicesDep, ctx: Ctx, urls: UrlsDep
) -> Response:
    return await _search(request, services, ctx, urls, Level.INSTANCE, study, series)
