"""WADO-RS: instances as stored, metadata from the index, bulk data by byte range (PS3.18 10.4)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from functools import partial

from anyio import to_thread
from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from dicomhub.dicomweb.deps import Ctx, ServicesDep, UrlsDep, check_uids
from dicomhub.dicomweb.negotiation import (
    accepts_json,
    choose_bulk,
    choose_retrieve,
    if_none_match,
)
from dicomhub.dicomweb.streaming import (
    LazyPart,
    Part,
    generated_response,
    multipart_response,
    single_response,
    streamed_multipart_response,
)
from dicomhub.dicomweb.zipstream import ZipMember, zip_response
from dicomhub.errors import NotAcceptable
from dicomhub.services.retrieve import StoredInstance
from dicomhub.services.urls import Urls

router = APIRouter(tags=["WADO-RS"])


def _dicom_part_type(stored: StoredInstance) -> str:
    return f"application/dicom; transfer-syntax={stored.transfer_syntax_uid}"


async def _retrieve(
    request: Request,
    services: ServicesDep,
    ctx: Ctx,
    urls: Urls,
    study: str,
    series: str | None = None,
    sop: str | None = None,
) -> Response:
    check_uids(study, series, sop)
    choice = choose_retrieve(request.headers.get("accept"), single_instance=sop is not None)
    found = await to_thread.run_sync(services.retrieve.instances, ctx, study, series, sop)
    wanted = choice.transfer_syntax
    if wanted not in (None, "*") and any(s.transfer_syntax_uid != wanted for s in found):
        if choice.zip:
            raise NotAcceptable(
                "application/zip holds the instances as stored; ask for it without "
                "transfer-syntax or with transfer-syntax=*"
            )
        return await _transcoded(services, urls, found, wanted, multipart=choice.multipart)
    if choice.zip:
        return _zip(services, found, sop or series or study)
    if not choice.multipart:
        (stored,) = found
        return single_response(
            services.blobs,
            Part({}, stored.blob_id, ((0, stored.size),)),
            _dicom_part_type(stored),
        )
    parts = [
        Part(
            {
                "Content-Type": _dicom_part_type(s),
                "Content-Length": str(s.size),
                "Content-Location": urls.instance(s.study_uid, s.series_uid, s.sop_instance_uid),
            },
            s.blob_id,
            ((0, s.size),),
        )
        for s in found
    ]
    return multipart_response(services.blobs, parts, "application/dicom")


async def _transcoded(
    services: ServicesDep, urls: Urls, found: list[StoredInstance], wanted: str, *, multipart: bool
) -> Response:
    """Instances converted to `wanted` while they are sent, frame by frame; those already in it
    go as stored. The first one is converted before the status line, so its refusal is a 406."""
    services.frames.check_transcode(found, wanted)
    part_type = f"application/dicom; transfer-syntax={wanted}"
    first = found[0]
    chunks = None
    if first.transfer_syntax_uid != wanted:
        chunks = await to_thread.run_sync(services.frames.transcoded, first, wanted)
    if not multipart:
        assert chunks is not None
        return generated_response(chunks, part_type)
    parts: list[Part | LazyPart] = []
    for s in found:
        headers = {
            "Content-Type": part_type,
            "Content-Location": urls.instance(s.study_uid, s.series_uid, s.sop_instance_uid),
        }
        if s.transfer_syntax_uid == wanted:
            headers["Content-Length"] = str(s.size)
            parts.append(Part(headers, s.blob_id, ((0, s.size),)))
        elif s is first and chunks is not None:
            parts.append(LazyPart(headers, partial(_given, chunks)))
        else:
            parts.append(LazyPart(headers, partial(services.frames.transcoded, s, wanted)))
    return streamed_multipart_response(services.blobs, parts, "application/dicom")


def _given(chunks: Iterator[bytes]) -> Iterator[bytes]:
    return chunks


def _zip(services: ServicesDep, found: list[StoredInstance], uid: str) -> Response:
    """The stored files as a ZIP download; names inside are UIDs only, never patient data."""
    members = [
        ZipMember(f"{s.study_uid}/{s.series_uid}/{s.sop_instance_uid}.dcm", s.blob_id, s.size)
        for s in found
    ]
    return zip_response(services.blobs, members, f"{uid}.zip")


@router.get("/studies/{study}", summary="Retrieve a study")
async def retrieve_study(
    study: str, request: Request, services: ServicesDep, ctx: Ctx, urls: UrlsDep
) -> Response:
    return await _retrieve(request, services, ctx, urls, study)


@router.get("/studies/{study}/series/{series}", summary="Retrieve a series")
async def retrieve_series(
    study: str, series: str, request: Request, services: ServicesDep, ctx: Ctx, urls: UrlsDep
) -> Response:
    return await _retrieve(request, services, ctx, urls, study, series)


@router.get("/studies/{study}/series/{series}/instances/{sop}", summary="Retrieve an instance")
async def retrieve_instance(
    study: str,
    series: str,
    sop: str,
    request: Request,
    services: ServicesDep,
    ctx: Ctx,
    urls: UrlsDep,
) -> Response:
    return await _retrieve(request, services, ctx, urls, study, series, sop)


async def _metadata(
    request: Request,
    services: ServicesDep,
    ctx: Ctx,
    urls: Urls,
    study: str,
    series: str | None = None,
    sop: str | None = None,
) -> Response:
    check_uids(study, series, sop)
    if not accepts_json(request.headers.get("accept")):
        raise NotAcceptable("metadata is available as application/dicom+json only")
    metadata = await to_thread.run_sync(services.retrieve.metadata, ctx, urls, study, series, sop)
    headers = {"ETag": metadata.etag, "Cache-Control": "no-cache"}
    if if_none_match(request.headers.get("if-none-match"), metadata.etag):
        metadata.chunks.close()  # type: ignore[attr-defined]
        return Response(status_code=304, headers=headers)

    def next_chunk(chunks: Iterator[bytes]) -> bytes | None:
        return next(chunks, None)

    async def body() -> AsyncIterator[bytes]:
        while (chunk := await to_thread.run_sync(next_chunk, metadata.chunks)) is not None:
            yield chunk

    return StreamingResponse(body(), media_type="application/dicom+json", headers=headers)


@router.get("/studies/{study}/metadata", summary="Retrieve study metadata")
async def study_metadata(
    study: str, request: Request, services: ServicesDep, ctx: Ctx, urls: UrlsDep
) -> Response:
    return await _metadata(request, services, ctx, urls, study)


@router.get("/studies/{study}/series/{series}/metadata", summary="Retrieve series metadata")
async def series_metadata(
    study: str, series: str, request: Request, services: ServicesDep, ctx: Ctx, urls: UrlsDep
) -> Response:
    return await _metadata(request, services, ctx, urls, study, series)


@router.get(
    "/studies/{study}/series/{series}/instances/{sop}/metadata",
    summary="Retrieve instance metadata",
)
async def instance_metadata(
    study: str,
    series: str,
    sop: str,
    request: Request,
    services: ServicesDep,
    ctx: Ctx,
    urls: UrlsDep,
) -> Response:
    return await _metadata(request, services, ctx, urls, study, series, sop)


@router.get(
    "/studies/{study}/series/{series}/instances/{sop}/bulkdata/{path:path}",
    summary="Retrieve bulk data of an instance",
)
async def bulkdata(
    study: str,
    series: str,
    sop: str,
    path: str,
    request: Request,
    services: ServicesDep,
    ctx: Ctx,
) -> Response:
    check_uids(study, series, sop)
    stored, parts = await to_thread.run_sync(
        services.retrieve.bulkdata, ctx, study, series, sop, path
    )
    multipart = choose_bulk(request.headers.get("accept"), parts=len(parts))
    part_type = "application/octet-stream"
    encapsulated = stored.frames is not None and stored.frames.get("encapsulated")
    if encapsulated and path.upper().startswith("7FE0"):
        part_type = f"application/octet-stream; transfer-syntax={stored.transfer_syntax_uid}"
    out = [
        Part(
            {"Content-Type": part_type, "Content-Length": str(p.size)},
            p.blob_id,
            p.ranges,
            p.data,
        )
        for p in parts
    ]
    if not multipart:
        return single_response(services.blobs, out[0], part_type)
    return multipart_response(services.blobs, out, "application/octet-stream")
