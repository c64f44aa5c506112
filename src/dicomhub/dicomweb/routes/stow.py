"""STOW-RS: POST /studies[/{study}] (PS3.18 10.5), streamed to staged blobs part by part."""

from __future__ import annotations

import logging
from typing import Any

from anyio import CancelScope, to_thread
from fastapi import APIRouter, Request
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from dicomhub.dicomweb.deps import Ctx, ServicesDep, UrlsDep, check_uid
from dicomhub.dicomweb.multipart import MultipartReader, PartSink
from dicomhub.dicomweb.negotiation import parse_media_type
from dicomhub.dicomweb.responses import DicomJSONResponse
from dicomhub.errors import InvalidInput, TooLarge, UnsupportedMediaType
from dicomhub.services.store import StagedPart, StoreBatch, StoreOutcome
from dicomhub.services.urls import Urls

log = logging.getLogger(__name__)
router = APIRouter(tags=["STOW-RS"])

_DICOM = "application/dicom"


@router.post("/studies", summary="Store instances")
async def store(request: Request, services: ServicesDep, ctx: Ctx, urls: UrlsDep) -> Response:
    return await _store(
        request, services.store.begin(ctx), urls, None, services.settings.max_request_bytes
    )


@router.post("/studies/{study}", summary="Store instances of one study")
async def store_study(
    study: str, request: Request, services: ServicesDep, ctx: Ctx, urls: UrlsDep
) -> Response:
    check_uid("StudyInstanceUID", study)
    batch = services.store.begin(ctx, study_uid=study)
    return await _store(request, batch, urls, study, services.settings.max_request_bytes)


def _content(request: Request) -> tuple[bool, str | None]:
    """(multipart?, boundary) from Content-Type; 415 for anything STOW does not take."""
    header = request.headers.get("content-type")
    if not header:
        raise UnsupportedMediaType(
            'Content-Type is missing; send multipart/related; type="application/dicom"'
        )
    media = parse_media_type(header)
    if media.mime == _DICOM:
        return False, None
    if media.mime != "multipart/related":
        raise UnsupportedMediaType(
            f'{media.mime} cannot be stored; send multipart/related; type="application/dicom" '
            "or application/dicom"
        )
    if media.type_param not in (None, _DICOM):
        raise UnsupportedMediaType(
            f"multipart/related; type={media.type_param} is not supported (only application/dicom "
            "parts are; the JSON metadata + bulk data form of STOW-RS is not)"
        )
    boundary = media.params.get("boundary")
    if not boundary:
        raise InvalidInput("multipart/related without a boundary parameter")
    return True, boundary


def _check_length(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise InvalidInput(f"Content-Length '{declared}' is not a number") from None
        if size > limit:
            raise TooLarge(f"the request body of {size} bytes exceeds the limit of {limit} bytes")


class _PartProblem:
    """Records why a part is refused before its bytes are looked at (wrong part Content-Type)."""

    def __init__(self, part: StagedPart, problem: str | None) -> None:
        self.part = part
        self.problem = problem

    def write(self, data: bytes | memoryview) -> None:
        if self.problem is None:
            self.part.write(data)


def _completed(reader: MultipartReader, batch: StoreBatch) -> list[_PartProblem]:
    """The parts the last chunk completed, taken from the reader and sealed (fsyncs started)."""
    parts = []
    for sink, _headers in reader.completed:
        assert isinstance(sink, _PartProblem)
        if sink.problem is None:
            batch.seal(sink.part)
        parts.append(sink)
    reader.completed.clear()
    return parts


async def _store(
    request: Request, batch: StoreBatch, urls: Urls, study: str | None, limit: int
) -> Response:
    multipart, boundary = _content(request)
    _check_length(request, limit)
    received = 0
    # Parts whose checks wait for the end of the body: the last ones are checked in the same
    # worker-thread call as the commit (one hand-over instead of two for a one-instance STOW).
    last: list[_PartProblem] = []

    def finish() -> StoreOutcome:
        for item in last:
            batch.add(item.part, item.problem)
        return batch.commit()

    try:
        if not multipart:
            part = batch.part()
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise TooLarge(f"the request body exceeds the limit of {limit} bytes")
                part.write(chunk)
            if part.size == 0:
                raise InvalidInput("the request body is empty")
            batch.seal(part)
            last.append(_PartProblem(part, None))
        else:
            assert boundary is not None

            def open_part(headers: dict[str, str]) -> PartSink:
                ctype = headers.get("content-type")
                problem = None
                if ctype and parse_media_type(ctype).mime not in (
                    _DICOM,
                    "application/octet-stream",
                ):
                    problem = f"part Content-Type {ctype} is not application/dicom"
                return _PartProblem(batch.part(), problem)

            reader = MultipartReader(boundary, open_part)
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise TooLarge(f"the request body exceeds the limit of {limit} bytes")
                reader.feed(chunk)
                done = _completed(reader, batch)
                if reader.finished:
                    last += done
                    continue
                for item in done:  # checked while the next parts arrive
                    await to_thread.run_sync(batch.add, item.part, item.problem)
            reader.close()
            if reader.parts == 0:
                raise InvalidInput("the multipart body holds no part")
        outcome = await to_thread.run_sync(finish)
    except ClientDisconnect:
        await to_thread.run_sync(batch.abort)
        log.info("STOW client went away after %d bytes; nothing stored", received)
        return Response(status_code=400)
    except BaseException:
        # Shielded: a cancelled request (server shutting down) must still drop its staged bytes.
        with CancelScope(shield=True):
            await to_thread.run_sync(batch.abort)
        raise
    return _response(outcome, urls, study)


def _uid(tag: str, value: str | None) -> dict[str, Any]:
    return {tag: {"vr": "UI", "Value": [value]}} if value else {tag: {"vr": "UI"}}


def _response(outcome: StoreOutcome, urls: Urls, study: str | None) -> Response:
    referenced: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for item in outcome.instances:
        entry: dict[str, Any] = {
            **_uid("00081150", item.sop_class_uid),
            **_uid("00081155", item.sop_instance_uid),
        }
        if item.stored:
            assert item.study_uid and item.series_uid and item.sop_instance_uid
            entry["00081190"] = {
                "vr": "UR",
                "Value": [urls.instance(item.study_uid, item.series_uid, item.sop_instance_uid)],
            }
            if item.warning_reason is not None:
                entry["00081196"] = {"vr": "US", "Value": [item.warning_reason]}
                entry["00000902"] = {"vr": "LO", "Value": [item.message]}
            referenced.append(dict(sorted(entry.items())))
        else:
            entry["00081197"] = {"vr": "US", "Value": [item.failure_reason]}
            entry["00000902"] = {"vr": "LO", "Value": [item.message]}
            failed.append(dict(sorted(entry.items())))
    body: dict[str, Any] = {}
    studies = {i.study_uid for i in outcome.stored}
    retrieve_study = study or (studies.pop() if len(studies) == 1 else None)
    if retrieve_study and outcome.stored:
        body["00081190"] = {"vr": "UR", "Value": [urls.study(retrieve_study)]}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    if referenced:
        body["00081199"] = {"vr": "SQ", "Value": referenced}
    if not outcome.stored:
        status = 409
    elif failed or any(i.warning_reason is not None for i in outcome.stored):
        status = 202
    else:
        status = 200
    return DicomJSONResponse(body, status_code=status)
