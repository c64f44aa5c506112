"""WADO-RS rendered resources and thumbnails: consumer-ready images (PS3.18 10.4.1.1.3, 10.4.1.1.5)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from anyio import to_thread
from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from dicomhub.dicom.render import RenderError, parse_quality, parse_viewport, parse_window
from dicomhub.dicomweb.deps import Ctx, ServicesDep, UrlsDep, check_uids
from dicomhub.dicomweb.multipart import closing, new_boundary, part_header
from dicomhub.dicomweb.negotiation import if_none_match, parse_accept
from dicomhub.dicomweb.routes.frames import parse_frame_list
from dicomhub.dicomweb.streaming import Part, part_bytes, single_response
from dicomhub.errors import DicomhubError, InvalidInput
from dicomhub.services.rendering import Accepted, Rendered, RenderJob, RenderOptions, RenderPlan
from dicomhub.services.urls import Urls
from dicomhub.storage.blobs.base import BlobStore

router = APIRouter(tags=["WADO-RS rendered"])

log = logging.getLogger(__name__)


def _accepted(request: Request) -> list[Accepted]:
    """Acceptable media ranges by preference; the `accept` query parameter wins (PS3.18 8.3.3.1)."""
    header = request.query_params.get("accept") or request.headers.get("accept")
    out = []
    for r in parse_accept(header):
        if r.mime in ("multipart/related", "multipart/*"):
            out.append(Accepted(r.type_param or "*/*", multipart=True))
        else:
            out.append(Accepted(r.mime))
    return out


def _options(request: Request) -> RenderOptions:
    params = request.query_params
    try:
        window = parse_window(params["window"]) if "window" in params else None
        viewport = parse_viewport(params["viewport"]) if "viewport" in params else None
        quality = parse_quality(params["quality"]) if "quality" in params else None
    except RenderError as exc:
        raise InvalidInput(str(exc)) from None
    return RenderOptions(window, viewport, quality)


def _location(urls: Urls, job: RenderJob) -> str:
    s = job.stored
    url = urls.instance(s.study_uid, s.series_uid, s.sop_instance_uid)
    return f"{url}/frames/{job.frame}/rendered" if job.of_frame else f"{url}/rendered"


def _single(request: Request, blobs: BlobStore, rendered: Rendered) -> Response:
    headers = {"Cache-Control": "no-cache"}
    if rendered.etag:
        headers["ETag"] = rendered.etag
    if if_none_match(request.headers.get("if-none-match"), rendered.etag):
        return Response(status_code=304, headers=headers)
    if rendered.data is not None:
        return Response(rendered.data, media_type=rendered.media_type, headers=headers)
    assert rendered.blob_id is not None
    response = single_response(
        blobs, Part({}, rendered.blob_id, rendered.ranges), rendered.media_type
    )
    response.headers.update(headers)
    return response


async def _content(blobs: BlobStore, rendered: Rendered) -> bytes | memoryview:
    if rendered.data is not None:
        return rendered.data
    part = Part({}, rendered.blob_id, rendered.ranges)
    return await to_thread.run_sync(part_bytes, blobs, part)


async def _respond(
    request: Request, services: ServicesDep, urls: Urls, plan: RenderPlan, options: RenderOptions
) -> Response:
    rendering = services.rendering
    # The first part is rendered before answering: its errors (a bad viewport...) get a status.
    first = await to_thread.run_sync(rendering.render, plan.jobs[0], options)
    if not plan.multipart:
        return _single(request, services.blobs, first)
    boundary = new_boundary()

    async def body() -> AsyncIterator[bytes]:
        for i, job in enumerate(plan.jobs):
            try:
                rendered = (
                    first if i == 0 else await to_thread.run_sync(rendering.render, job, options)
                )
                data = await _content(services.blobs, rendered)
            except DicomhubError as exc:
                # The status is sent already: leave the part out, say so in the log.
                log.warning("left %s out of a rendered response: %s", _location(urls, job), exc)
                continue
            head = {
                "Content-Type": rendered.media_type,
                "Content-Length": str(len(data)),
                "Content-Location": _location(urls, job),
            }
            yield part_header(boundary, head, first=i == 0) + data
        yield closing(boundary)

    part_type = plan.jobs[0].media_type
    headers = {"Cache-Control": "no-cache"}
    if plan.left_out:
        headers["Warning"] = (
            f'299 dicomhub "{plan.left_out} instance(s) in scope have no {part_type} '
            'representation and were left out"'
        )
    return StreamingResponse(
        body(),
        media_type=f'multipart/related; type="{part_type}"; boundary={boundary}',
        headers=headers,
    )


async def _rendered(
    request: Request,
    services: ServicesDep,
    ctx: Ctx,
    urls: Urls,
    study: str,
    series: str | None = None,
    sop: str | None = None,
    frames: str | None = None,
) -> Response:
    check_uids(study, series, sop)
    numbers = parse_frame_list(frames) if frames is not None else None
    options = _options(request)
    accept = _accepted(request)
    plan = await to_thread.run_sync(
        services.rendering.plan, ctx, study, series, sop, numbers, accept
    )
    return await _respond(request, services, urls, plan, options)


@router.get("/studies/{study}/rendered", summary="Retrieve a rendered study")
async def rendered_study(
    study: str, request: Request, services: ServicesDep, ctx: Ctx, urls: UrlsDep
) -> Response:
    return await _rendered(request, services, ctx, urls, study)


@router.get("/studies/{study}/series/{series}/rendered", summary="Retrieve a rendered series")
async def rendered_series(
    study: str, series: str, request: Request, services: ServicesDep, ctx: Ctx, urls: UrlsDep
) -> Response:
    return await _rendered(request, services, ctx, urls, study, series)


@router.get(
    "/studies/{study}/series/{series}/instances/{sop}/rendered",
    summary="Retrieve a rendered instance",
)
async def rendered_instance(
    study: str,
    series: str,
    sop: str,
    request: Request,
    services: ServicesDep,
    ctx: Ctx,
    urls: UrlsDep,
) -> Response:
    return await _rendered(request, services, ctx, urls, study, series, sop)


@router.get(
    "/studies/{study}/series/{series}/instances/{sop}/frames/{frames}/rendered",
    summary="Retrieve rendered frames",
)
async def rendered_frames(
    study: str,
    series: str,
    sop: str,
    frames: str,
    request: Request,
    services: ServicesDep,
    ctx: Ctx,
    urls: UrlsDep,
) -> Response:
    return await _rendered(request, services, ctx, urls, study, series, sop, frames)


async def _thumbnail(
    request: Request,
    services: ServicesDep,
    ctx: Ctx,
    study: str,
    series: str | None = None,
    sop: str | None = None,
    frames: str | None = None,
) -> Response:
    check_uids(study, series, sop)
    frame = parse_frame_list(frames)[0] if frames is not None else None
    options = _options(request)
    rendered = await to_thread.run_sync(
        services.rendering.thumbnail,
        ctx,
        study,
        series,
        sop,
        frame,
        _accepted(request),
        options.viewport,
        options.quality,
    )
    return _single(request, services.blobs, rendered)


@router.get("/studies/{study}/thumbnail", summary="Retrieve a study thumbnail")
async def study_thumbnail(
    study: str, request: Request, services: ServicesDep, ctx: Ctx
) -> Response:
    return await _thumbnail(request, services, ctx, study)


@router.get("/studies/{study}/series/{series}/thumbnail", summary="Retrieve a series thumbnail")
async def series_thumbnail(
    study: str, series: str, request: Request, services: ServicesDep, ctx: Ctx
) -> Response:
    return await _thumbnail(request, services, ctx, study, series)


@router.get(
    "/studies/{study}/series/{series}/instances/{sop}/thumbnail",
    summary="Retrieve an instance thumbnail",
)
async def instance_thumbnail(
    study: str, series: str, sop: str, request: Request, services: ServicesDep, ctx: Ctx
) -> Response:
    return await _thumbnail(request, services, ctx, study, series, sop)


@router.get(
    "/studies/{study}/series/{series}/instances/{sop}/frames/{frames}/thumbnail",
    summary="Retrieve a frame thumbnail",
)
async def frame_thumbnail(
    study: str,
    series: str,
    sop: str,
    frames: str,
    request: Request,
    services: ServicesDep,
    ctx: Ctx,
) -> Response:
    return await _thumbnail(request, services, ctx, study, series, sop, frames)
