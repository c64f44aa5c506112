"""DELETE of studies, series and instances (the Azure DICOM service's non-standard extension)."""

from __future__ import annotations

from anyio import to_thread
from fastapi import APIRouter
from starlette.responses import Response

from dicomhub.dicomweb.deps import Ctx, ServicesDep, check_uids

router = APIRouter(tags=["Delete"])


async def _delete(
    services: ServicesDep, ctx: Ctx, study: str, series: str | None = None, sop: str | None = None
) -> Response:
    check_uids(study, series, sop)
    await to_thread.run_sync(services.delete.delete, ctx, study, series, sop)
    return Response(status_code=204)


@router.delete("/studies/{study}", status_code=204, summary="Delete a study")
async def delete_study(study: str, services: ServicesDep, ctx: Ctx) -> Response:
    return await _delete(services, ctx, study)


@router.delete("/studies/{study}/series/{series}", status_code=204, summary="Delete a series")
async def delete_series(study: str, series: str, services: ServicesDep, ctx: Ctx) -> Response:
    return await _delete(services, ctx, study, series)


@router.delete(
    "/studies/{study}/series/{series}/instances/{sop}",
    status_code=204,
    summary="Delete an instance",
)
async def delete_instance(
    study: str, series: str, sop: str, services: ServicesDep, ctx: Ctx
) -> Response:
    return await _delete(services, ctx, study, series, sop)
