"""WADO-RS: instances as stored, metadata from the index, bulk data by byte range (PS3.18 10.4)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator, Iterator

from anyio import to_thread
from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from dicomhub.dicomweb.deps import Ctx, ServicesDep, UrlsDep, check_uid
from dicomhub.dicomweb.multipart import closing, new_boundary, part_header
from dicomhub.dicomweb.negotiation import accepts_json, choose_bulk, choose_retrieve
from dicomhub.errors import NotAcceptable
from dicomhub.services.retrieve import BulkPart, StoredInstance
from dicomhub.services.urls import Urls
from dicomhub.storage.blobs.base import BlobStore

router = APIRouter(tags=["WADO-RS"])

_CHUNK = 4 * 1024 * 1024


def _check(study: str, series: str | None = None, sop: str | None = None) -> None:
    check_uid("StudyInstanceUID", study)
    if series is not None:
        check_uid("SeriesInstanceUID", series)
    if sop is not None:
        check_uid("SOPInstanceUID", sop)


def _chunks(
    blobs: BlobStore, blob_id: str, ranges: tuple[tuple[int, int], ...]
) -> Generator[bytes, None, None]:
    """Byte ranges of a blob in chunks; the file is closed before the last chunk is handed out."""
    plan = [
        (offset + start, min(_CHUNK, length - start))
        for offset, length in ranges
        for start in range(0, length, _CHUNK)
    ]
    fh = blobs.open(blob_id)
    try:
        for i, (offset, length) in enumerate(plan):
            fh.seek(offset)
            data = fh.read(length)
            if len(data) < length:
                raise OSError(f"blob {blob_id} is shorter than its index says")
            if i == len(plan) - 1:
                fh.close()
            yield data
    finally:
        fh.close()


async def _read_blob(
    blobs: BlobStore, blob_id: str, ranges: tuple[tuple[int, int], ...]
) -> AsyncIterator[bytes]:
    # One thread hop per chunk, open and close included: an instance smaller than a chunk
    # costs a single hop (hops, not bytes, dominate when a study of small files is streamed).
    chunks = _chunks(blobs, blob_id, ranges)
    try:
        while (chunk := await to_thread.run_sync(next, chunks, None)) is not None:
            yield chunk
    finally:
        # No thread needed: after the last chunk the file is already closed, and when the
        # client goes away mid-stream closing a regular file is a quick syscall. run_sync does
        # not abandon its thread on cancellation, so the generator is never running here.
        chunks.close()


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
    _check(study, series, sop)
    choice = choose_retrieve(request.headers.get("accept"), single_instance=sop is not None)
    found = await to_thread.run_sync(services.retrieve.instances, ctx, study, series, sop)
    wanted = choice.transfer_syntax
    if wanted not in (None, "*"):
        mismatched = sorted(
            {s.transfer_syntax_uid for s in found if s.transfer_syntax_uid != wanted}
        )
        if mismatched:
            raise NotAcceptable(
                f"transcoding is not supported yet: stored as {', '.join(mismatched)}, asked for "
                f"{wanted}; ask for transfer-syntax=* to receive the instances as stored"
            )
    blobs = services.blobs
    if not choice.multipart:
        (stored,) = found
        return StreamingResponse(
            _read_blob(blobs, stored.blob_id, ((0, stored.size),)),
            media_type=_dicom_part_type(stored),
            headers={"Content-Length": str(stored.size)},
        )
    boundary = new_boundary()

    async def body() -> AsyncIterator[bytes]:
        for i, stored in enumerate(found):
            headers = {
                "Content-Type": _dicom_part_type(stored),
                "Content-Length": str(stored.size),
                "Content-Location": urls.instance(
                    stored.study_uid, stored.series_uid, stored.sop_instance_uid
                ),
            }
            yield part_header(boundary, headers, first=i == 0)
            async for chunk in _read_blob(blobs, stored.blob_id, ((0, stored.size),)):
                yield chunk
        yield closing(boundary)

    return StreamingResponse(
        body(),
        media_type=f'multipart/related; type="application/dicom"; boundary={boundary}',
    )


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
    _check(study, series, sop)
    if not accepts_json(request.headers.get("accept")):
        raise NotAcceptable("metadata is available as application/dicom+json only")
    metadata = await to_thread.run_sync(services.retrieve.metadata, ctx, urls, study, series, sop)
    headers = {"ETag": metadata.etag, "Cache-Control": "no-cache"}
    if_none_match = request.headers.get("if-none-match")
    if if_none_match and metadata.etag in {t.strip() for t in if_none_match.split(",")}:
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
    _check(study, series, sop)
    stored, parts = await to_thread.run_sync(
        services.retrieve.bulkdata, ctx, study, series, sop, path
    )
    multipart = choose_bulk(request.headers.get("accept"), parts=len(parts))
    blobs = services.blobs
    part_type = "application/octet-stream"
    if (
        stored.frames is not None
        and stored.frames.get("encapsulated")
        and path.upper().startswith("7FE0")
    ):
        part_type = f"application/octet-stream; transfer-syntax={stored.transfer_syntax_uid}"

    async def content(part: BulkPart) -> AsyncIterator[bytes]:
        if part.data is not None:
            yield part.data
            return
        assert part.blob_id is not None
        async for chunk in _read_blob(blobs, part.blob_id, part.ranges):
            yield chunk

    def size(part: BulkPart) -> int:
        return len(part.data) if part.data is not None else sum(n for _, n in part.ranges)

    if not multipart:
        return StreamingResponse(
            content(parts[0]),
            media_type=part_type,
            headers={"Content-Length": str(size(parts[0]))},
        )
    boundary = new_boundary()

    async def body() -> AsyncIterator[bytes]:
        for i, part in enumerate(parts):
            headers = {"Content-Type": part_type, "Content-Length": str(size(part))}
            yield part_header(boundary, headers, first=i == 0)
            async for chunk in content(part):
                yield chunk
        yield closing(boundary)

    return StreamingResponse(
        body(),
        media_type=f'multipart/related; type="application/octet-stream"; boundary={boundary}',
    )
