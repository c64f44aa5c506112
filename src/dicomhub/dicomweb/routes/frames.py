"""WADO-RS frames: single frames and lists, as stored or transcoded (PS3.18 10.4.1.1.4)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from anyio import to_thread
from fastapi import APIRouter, Request
from starlette.responses import Response

from dicomhub.bootstrap import Services
from dicomhub.context import RequestContext
from dicomhub.dicomweb.deps import Ctx, ServicesDep, check_uids
from dicomhub.dicomweb.negotiation import choose_frames
from dicomhub.dicomweb.streaming import (
    LazyPart,
    Part,
    multipart_bytes,
    multipart_response,
    single_response,
    streamed_multipart_response,
)
from dicomhub.errors import InvalidInput
from dicomhub.services.frames import Frames, FrameTarget

router = APIRouter(tags=["WADO-RS"])

_MAX_FRAMES_LISTED = 100_000


def parse_frame_list(text: str) -> list[int]:
    """`1`, `1,3,5`: 1-based frame numbers, in the order asked (PS3.18 10.4.1.1.4)."""
    pieces = text.split(",")
    if len(pieces) > _MAX_FRAMES_LISTED:
        raise InvalidInput(f"at most {_MAX_FRAMES_LISTED} frames can be asked for at once")
    numbers = []
    for raw in pieces:
        piece = raw.strip()
        if not piece.isascii() or not piece.isdigit() or int(piece) == 0:
            raise InvalidInput(
                f"frame list '{text}' is malformed: frames are numbers from 1, separated by commas"
            )
        numbers.append(int(piece))
    return numbers


def _in_memory(frames: Frames) -> Response | None:
    """The response when every frame is already in hand (the usual single-frame case)."""
    if any(p.data is None for p in frames.parts):
        return None
    if not frames.multipart:
        data = frames.parts[0].data
        assert data is not None
        return Response(data, media_type=frames.content_type)
    return multipart_bytes(
        [
            ({"Content-Type": frames.content_type, "Content-Length": str(len(p.data))}, p.data)
            for p in frames.parts
            if p.data is not None
        ],
        frames.media_type,
    )


def _frames(
    services: Services,
    ctx: RequestContext,
    uids: tuple[str, str, str],
    numbers: list[int],
    targets: list[FrameTarget],
) -> tuple[Frames, Response | None]:
    # One worker-thread call does the lookup, the read and the body: no further thread hops.
    frames = services.frames.frames(ctx, *uids, numbers, targets)
    return frames, _in_memory(frames)


@router.get(
    "/studies/{study}/series/{series}/instances/{sop}/frames/{frame_list}",
    summary="Retrieve frames of an instance",
)
async def retrieve_frames(
    study: str,
    series: str,
    sop: str,
    frame_list: str,
    request: Request,
    services: ServicesDep,
    ctx: Ctx,
) -> Response:
    check_uids(study, series, sop)
    numbers = parse_frame_list(frame_list)
    targets = choose_frames(request.headers.get("accept"))
    frames, response = await to_thread.run_sync(
        _frames, services, ctx, (study, series, sop), numbers, targets
    )
    if response is not None:
        return response
    content_type = frames.content_type
    if not frames.multipart:
        (part,) = frames.parts
        return single_response(services.blobs, Part({}, part.blob_id, part.ranges), content_type)
    if all(p.produce is None for p in frames.parts):
        # Frames too large to read up front: by range, with read-ahead.
        parts = [
            Part(
                {"Content-Type": content_type, "Content-Length": str(sum(n for _, n in p.ranges))},
                p.blob_id,
                p.ranges,
            )
            for p in frames.parts
        ]
        return multipart_response(services.blobs, parts, frames.media_type)
    lazy: list[Part | LazyPart] = [
        LazyPart({"Content-Type": content_type}, _one(p.produce))
        if p.produce is not None
        else Part({"Content-Type": content_type}, p.blob_id, p.ranges, p.data)
        for p in frames.parts
    ]
    return streamed_multipart_response(services.blobs, lazy, frames.media_type)


def _one(produce: Callable[[], bytes]) -> Callable[[], Iterator[bytes]]:
    return lambda: iter([produce()])
