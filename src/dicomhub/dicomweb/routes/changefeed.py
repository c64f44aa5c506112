"""Change feed: GET /changefeed and /changefeed/latest, with the Azure DICOM service's fields."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Depends, Query
from starlette.responses import Response

from dicomhub.dicomweb.deps import Ctx, ServicesDep, UrlsDep, api_version
from dicomhub.dicomweb.responses import JSONResponse
from dicomhub.errors import InvalidInput

router = APIRouter(tags=["Change feed"])

# (default, maximum) page sizes: v1 follows the Azure service's v1, v2 and unversioned its v2.
_LIMITS = {1: (10, 100), 2: (100, 200), 0: (100, 200)}

Version = Annotated[int, Depends(api_version)]


def _when(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "+"))
    except ValueError:
        raise InvalidInput(f"{name} '{value}' is not an ISO 8601 date and time") from None
    if parsed.tzinfo is None:
        raise InvalidInput(f"{name} must carry a time zone (for example 2024-01-31T10:00:00Z)")
    return parsed


@router.get("/changefeed", summary="Read the change feed")
async def changefeed(
    services: ServicesDep,
    ctx: Ctx,
    urls: UrlsDep,
    version: Version,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int | None, Query(ge=1)] = None,
    includeMetadata: bool = True,
    startTime: str | None = None,
    endTime: str | None = None,
) -> Response:
    default, maximum = _LIMITS[version]
    if limit is not None and limit > maximum:
        raise InvalidInput(f"limit must be between 1 and {maximum}, not {limit}")
    page = limit or default
    if startTime is not None or endTime is not None:
        if version == 1:
            raise InvalidInput("startTime and endTime are part of the v2 change feed; use /v2")
        start, end = _when("startTime", startTime), _when("endTime", endTime)
        entries = await to_thread.run_sync(
            lambda: services.changefeed.by_time(
                ctx,
                urls,
                start=start,
                end=end,
                offset=offset,
                limit=page,
                include_metadata=includeMetadata,
            )
        )
    else:
        entries = await to_thread.run_sync(
            lambda: services.changefeed.by_sequence(
                ctx, urls, offset=offset, limit=page, include_metadata=includeMetadata
            )
        )
    return JSONResponse(entries)


@router.get("/changefeed/latest", summary="Read the newest change-feed entry")
async def changefeed_latest(
    services: ServicesDep,
    ctx: Ctx,
    urls: UrlsDep,
    version: Version,
    includeMetadata: bool = True,
) -> Response:
    entry = await to_thread.run_sync(
        lambda: services.changefeed.latest(
            ctx, urls, include_metadata=includeMetadata, by_time=version == 2
        )
    )
    return JSONResponse(entry)
