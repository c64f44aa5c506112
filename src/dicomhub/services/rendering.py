"""Rendered resources and thumbnails (PS3.18 10.4.1.1.3, Sup 203): what to render, then one
ranged read of the header and the frame, a decode, and for thumbnails a cache on disk."""

from __future__ import annotations

import hashlib
import io
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.pixels.utils import pixel_array

from dicomhub.context import RequestContext
from dicomhub.dicom import render
from dicomhub.dicom.frames import PixelDataError, read_fragments
from dicomhub.dicom.render import IMAGE_TYPES, ImageDescription, RenderError, Viewport, Window
from dicomhub.errors import InvalidInput, NotAcceptable, NotFound, Unsupported
from dicomhub.services.retrieve import RetrieveService, scope_name
from dicomhub.services.thumbnails import ThumbnailCache
from dicomhub.storage.blobs.base import BlobStore, read_ranges
from dicomhub.storage.index.instances import StoredInstance, find_instances
from dicomhub.storage.index.rendering import Candidate, candidates

__all__ = [
    "THUMBNAIL_SIDE",
    "Accepted",
    "RenderJob",
    "RenderOptions",
    "RenderPlan",
    "RenderService",
    "Rendered",
]

THUMBNAIL_SIDE = 128
_PIXEL_DATA = 0x7FE00010
# The stored bit stream is the rendered video (PS3.5 8.2.5-8.2.8; PS3.18 Table 8.7.4-1).
VIDEO_TYPES = {
    "1.2.840.10008.1.2.4.100": "video/mpeg",
    "1.2.840.10008.1.2.4.101": "video/mpeg",
    "1.2.840.10008.1.2.4.102": "video/mp4",
    "1.2.840.10008.1.2.4.103": "video/mp4",
    "1.2.840.10008.1.2.4.104": "video/mp4",
    "1.2.840.10008.1.2.4.105": "video/mp4",
    "1.2.840.10008.1.2.4.106": "video/mp4",
    "1.2.840.10008.1.2.4.107": "video/H265",
    "1.2.840.10008.1.2.4.108": "video/H265",
}
# Encapsulated documents (PS3.3 A.45, A.85): the document is the rendered representation.
DOCUMENT_TYPES = {
    "1.2.840.10008.5.1.4.1.1.104.1": "application/pdf",
    "1.2.840.10008.5.1.4.1.1.104.2": "text/xml",
    "1.2.840.10008.5.1.4.1.1.104.3": "model/stl",
    "1.2.840.10008.5.1.4.1.1.104.4": "model/obj",
    "1.2.840.10008.5.1.4.1.1.104.5": "model/mtl",
}
_DECODE_ERRORS = (
    ValueError,
    RuntimeError,
    TypeError,
    KeyError,
    AttributeError,
    NotImplementedError,
    IndexError,
    InvalidDicomError,
)


@dataclass(frozen=True, slots=True)
class Accepted:
    """One acceptable media range, by preference; `multipart`: the range was the `type` of a
    multipart/related range (`*/*` for multipart/related without a type)."""

    mime: str
    multipart: bool = False


@dataclass(frozen=True, slots=True)
class RenderOptions:
    window: Window | None = None
    viewport: Viewport | None = None
    quality: int | None = None


@dataclass(frozen=True, slots=True)
class RenderJob:
    """One rendered part: a frame of an image (1-based), or a whole document or video;
    `of_frame`: the part stands for that frame rather than for the whole instance."""

    stored: StoredInstance
    media_type: str
    frame: int | None = None
    of_frame: bool = False


@dataclass(frozen=True, slots=True)
class RenderPlan:
    jobs: tuple[RenderJob, ...]
    multipart: bool
    left_out: int = 0  # instances in scope that have no representation of the asked type


@dataclass(frozen=True, slots=True)
class Rendered:
    """Bytes in hand, or byte ranges of a stored file (a video, sent as stored)."""

    media_type: str
    data: bytes | None = None
    blob_id: str | None = None
    ranges: tuple[tuple[int, int], ...] = ()
    etag: str | None = None


def _offers(has_pixels: bool, transfer_syntax: str, sop_class: str) -> tuple[str, ...]:
    if has_pixels:
        video = VIDEO_TYPES.get(transfer_syntax)
        return (video,) if video else IMAGE_TYPES
    document = DOCUMENT_TYPES.get(sop_class)
    return (document,) if document else ()


def offers(stored: StoredInstance | Candidate) -> tuple[str, ...]:
    """The rendered media types of an instance, its default first."""
    if isinstance(stored, Candidate):
        return _offers(stored.has_pixels, stored.transfer_syntax_uid, stored.sop_class_uid)
    return _offers(stored.frames is not None, stored.transfer_syntax_uid, stored.sop_class_uid)


def _match(mime: str, available: Sequence[str]) -> str | None:
    for offer in available:
        lowered = offer.lower()
        if mime in ("*/*", lowered) or (mime.endswith("/*") and lowered.startswith(mime[:-1])):
            return offer
    return None


def _describe_accept(accept: Sequence[Accepted]) -> str:
    named = [f"multipart/related; type={a.mime}" if a.multipart else a.mime for a in accept]
    return ", ".join(named) or "nothing"


class _Headers:
    """Image descriptions by blob id (stored files never change), least recently used out."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[str, ImageDescription] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, blob_id: str) -> ImageDescription | None:
        with self._lock:
            desc = self._items.get(blob_id)
            if desc is not None:
                self._items.move_to_end(blob_id)
            return desc

    def put(self, blob_id: str, desc: ImageDescription) -> None:
        with self._lock:
            self._items[blob_id] = desc
            self._items.move_to_end(blob_id)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


class RenderService:
    def __init__(
        self,
        retrieve: RetrieveService,
        blobs: BlobStore,
        thumbnails: ThumbnailCache,
        *,
        cached_headers: int = 512,
    ) -> None:
        self.retrieve = retrieve
        self.blobs = blobs
        self.thumbnails = thumbnails
        self._headers = _Headers(cached_headers)

    # -- planning -------------------------------------------------------------------------------

    def plan(
        self,
        ctx: RequestContext,
        study: str,
        series: str | None,
        sop: str | None,
        frames: Sequence[int] | None,
        accept: Sequence[Accepted],
    ) -> RenderPlan:
        """Which instances and frames to render, in which media type (406 if none fits)."""
        if sop is None:
            return self._plan_scope(ctx, study, series, accept)
        (stored,) = self._instances(ctx, study, series, sop)
        available = offers(stored)
        if not available:
            raise NotAcceptable(
                f"instance {sop} (SOP class {stored.sop_class_uid}) holds neither pixel data nor "
                "an encapsulated document: it has no rendered representation"
            )
        if frames is not None:
            if available != IMAGE_TYPES:
                raise NotAcceptable(
                    f"instance {sop} is rendered as {available[0]}, not frame by frame; "
                    "ask for the instance's /rendered resource"
                )
            _check_frames(stored, frames)
            return _plan_frames(stored, frames, accept)
        image = available == IMAGE_TYPES
        for wanted in accept:
            chosen = _match(wanted.mime, available)
            if chosen is None:
                continue
            if wanted.multipart:
                numbers = range(1, stored.number_of_frames + 1) if image else [None]
                jobs = tuple(RenderJob(stored, chosen, n, image) for n in numbers)
                return RenderPlan(jobs, multipart=True)
            # One image of a multi-frame instance is its first frame (as Azure and Orthanc do).
            return RenderPlan((RenderJob(stored, chosen, 1 if image else None),), False)
        raise NotAcceptable(
            f"instance {sop} can be rendered as {', '.join(available)} "
            f"(or multipart/related of those), not as {_describe_accept(accept)}"
        )

    def _instances(
        self, ctx: RequestContext, study: str, series: str | None, sop: str | None
    ) -> list[StoredInstance]:
        return self.retrieve.instances(ctx, study, series, sop)

    def _plan_scope(
        self, ctx: RequestContext, study: str, series: str | None, accept: Sequence[Accepted]
    ) -> RenderPlan:
        found: list[StoredInstance] | None = None
        for wanted in accept:
            if wanted.multipart:
                if found is None:
                    found = self.retrieve.instances(ctx, study, series)
                jobs: list[RenderJob] = []
                for stored in found:
                    chosen = _match(wanted.mime, offers(stored))
                    if chosen is not None:
                        frame = 1 if chosen in IMAGE_TYPES else None
                        jobs.append(RenderJob(stored, chosen, frame))
                if jobs:
                    return RenderPlan(tuple(jobs), True, left_out=len(found) - len(jobs))
                continue

            # A single image asked of a study or series: its representative instance.
            def fits(candidate: Candidate, mime: str = wanted.mime) -> bool:
                return _match(mime, offers(candidate)) is not None

            representative = self._representative(ctx, study, series, fits)
            if representative is not None:
                media = _match(wanted.mime, offers(representative))
                assert media is not None
                frame = 1 if media in IMAGE_TYPES else None
                return RenderPlan((RenderJob(representative, media, frame),), False)
        raise NotAcceptable(
            f"no instance in scope can be rendered as {_describe_accept(accept)}; images are "
            'rendered as multipart/related; type="image/jpeg" (or image/png, image/gif), one '
            "part an instance, or as one representative image/jpeg, image/png or image/gif"
        )

    def _representative(
        self,
        ctx: RequestContext,
        study: str,
        series: str | None,
        usable: Callable[[Candidate], bool],
    ) -> StoredInstance | None:
        """The middle usable instance (by InstanceNumber) of the first series (by SeriesNumber)
        that has one; NotFound for an empty scope, None when nothing is usable."""
        pk = self.retrieve.store.partition_key(ctx.partition)
        with self.retrieve.db.read() as conn:
            found = candidates(conn, pk, study, series)
            if not found:
                raise NotFound(f"{scope_name(study, series, None)} is not stored")
            chosen = _middle_of_first_series(found, usable)
            if chosen is None:
                return None
            found_one = find_instances(conn, pk, study, chosen.series_uid, chosen.sop_instance_uid)
            return found_one[0] if found_one else None

    # -- rendering ------------------------------------------------------------------------------

    def render(self, job: RenderJob, options: RenderOptions) -> Rendered:
        """One part of a plan, encoded."""
        stored = job.stored
        etag = _etag("r", stored.blob_id, f"{job.frame}|{job.media_type}|{options}")
        if job.frame is None:
            if job.media_type in VIDEO_TYPES.values():
                return self._video(stored, job.media_type, etag)
            return self._document(stored, job.media_type, etag)
        desc, arr = self._decode(stored, job.frame)
        try:
            data = render.render(
                arr,
                desc,
                job.media_type,
                frame=job.frame,
                window=options.window,
                viewport=options.viewport,
                quality=options.quality,
            )
        except RenderError as exc:
            raise InvalidInput(str(exc)) from None
        return Rendered(job.media_type, data, etag=etag)

    def thumbnail(
        self,
        ctx: RequestContext,
        study: str,
        series: str | None,
        sop: str | None,
        frame: int | None,
        accept: Sequence[Accepted],
        viewport: Viewport | None = None,
        quality: int | None = None,
    ) -> Rendered:
        """A small image of a representative frame (Sup 203), cached on disk by blob id."""
        stored: StoredInstance | None
        if sop is not None:
            (stored,) = self._instances(ctx, study, series, sop)
            if offers(stored) != IMAGE_TYPES:
                stored = None
        else:
            stored = self._representative(ctx, study, series, lambda c: offers(c) == IMAGE_TYPES)
        if stored is None:
            what = scope_name(study, series, sop)
            raise NotAcceptable(f"{what} holds no image to make a thumbnail of")
        media = next((m for a in accept if (m := _match(a.mime, IMAGE_TYPES))), None)
        if media is None:
            raise NotAcceptable(
                f"thumbnails are image/jpeg, image/png or image/gif, not {_describe_accept(accept)}"
            )
        if frame is None:
            frame = stored.number_of_frames // 2 + 1  # the middle frame
        else:
            _check_frames(stored, [frame])
        default = viewport is None
        view = viewport or Viewport(THUMBNAIL_SIDE, THUMBNAIL_SIDE)
        key = f"1|{frame}|{view}|{media}|{quality}"
        etag = _etag("t", stored.blob_id, key)
        cacheable = default or (
            view.sw is None
            and view.sh is None
            and not (view.sx or view.sy)
            and max(view.width or 0, view.height or 0) <= 512
        )
        if cacheable and (data := self.thumbnails.get(stored.blob_id, key, media)) is not None:
            return Rendered(media, data, etag=etag)
        desc, arr = self._decode(stored, frame)
        try:
            data = render.render(
                arr, desc, media, frame=frame, viewport=view, quality=quality, upscale=not default
            )
        except RenderError as exc:
            raise InvalidInput(str(exc)) from None
        if cacheable:
            blob_id = stored.blob_id
            self.thumbnails.put(blob_id, key, media, data, lambda: self.blobs.exists(blob_id))
        return Rendered(media, data, etag=etag)

    def _decode(self, stored: StoredInstance, frame: int) -> tuple[ImageDescription, np.ndarray]:
        """The image description (cached) and one decoded frame, from ranged reads."""
        index: dict[str, Any] = stored.frames or {}
        ranges = None
        frame_list = index.get("frames")
        if frame_list is not None and int(index.get("tag", 0)) == _PIXEL_DATA:
            ranges = frame_list[frame - 1]
        desc = self._headers.get(stored.blob_id)
        with self.blobs.open(stored.blob_id) as fh:
            if desc is None:
                head = read_ranges(fh, ((0, int(index.get("offset", 0))),), stored.blob_id)
                try:
                    ds = dcmread(io.BytesIO(head), stop_before_pixels=True, force=True)
                    desc = render.describe(ds)
                except RenderError as exc:
                    raise Unsupported(f"instance {stored.sop_instance_uid}: {exc}") from None
                except _DECODE_ERRORS as exc:
                    raise Unsupported(
                        f"the header of instance {stored.sop_instance_uid} cannot be read: {exc}"
                    ) from None
                self._headers.put(stored.blob_id, desc)
            if ranges is None:
                # Frames not indexed at store time (1-bit, float or unusual encapsulation):
                # let pydicom find the frame in the whole file.
                fh.seek(0)
                try:
                    return desc, pixel_array(fh, index=frame - 1)
                except _DECODE_ERRORS as exc:
                    raise Unsupported(
                        f"frame {frame} of instance {stored.sop_instance_uid} cannot be decoded: "
                        f"{exc}"
                    ) from None
            data = read_ranges(fh, ranges, stored.blob_id)
        try:
            return desc, render.decode_frame(data, desc, stored.transfer_syntax_uid)
        except RenderError as exc:
            raise Unsupported(
                f"frame {frame} of instance {stored.sop_instance_uid} cannot be rendered: {exc}"
            ) from None

    def _video(self, stored: StoredInstance, media_type: str, etag: str) -> Rendered:
        index: dict[str, Any] = stored.frames or {}
        if index.get("frames"):
            ranges = tuple((o, n) for frame in index["frames"] for o, n in frame)
        else:
            with self.blobs.open(stored.blob_id) as fh:
                fh.seek(int(index["offset"]))
                try:
                    fragments, _ = read_fragments(fh, stored.size)
                except PixelDataError as exc:
                    raise Unsupported(
                        f"the encapsulated pixel data of instance {stored.sop_instance_uid} "
                        f"is malformed: {exc}"
                    ) from None
                ranges = tuple(fragments)
        return Rendered(media_type, blob_id=stored.blob_id, ranges=ranges, etag=etag)

    def _document(self, stored: StoredInstance, media_type: str, etag: str) -> Rendered:
        with self.blobs.open(stored.blob_id) as fh:
            try:
                ds = dcmread(fh, force=True)
            except _DECODE_ERRORS as exc:
                raise Unsupported(
                    f"instance {stored.sop_instance_uid} cannot be read: {exc}"
                ) from None
        document = ds.get("EncapsulatedDocument")
        if not isinstance(document, bytes | bytearray):
            raise NotFound(f"instance {stored.sop_instance_uid} holds no encapsulated document")
        length = ds.get("EncapsulatedDocumentLength")
        data = bytes(document)
        if isinstance(length, int) and 0 <= length <= len(data):
            data = data[:length]  # drop the padding to an even length (PS3.3 C.24.2.1)
        return Rendered(media_type, data, etag=etag)


def _middle_of_first_series(
    found: list[Candidate], usable: Callable[[Candidate], bool]
) -> Candidate | None:
    """`found` is in SeriesNumber, InstanceNumber order."""
    members: list[Candidate] = []
    for candidate in found:
        if members and candidate.series_uid != members[0].series_uid:
            break
        if usable(candidate):
            members.append(candidate)
    return members[len(members) // 2] if members else None


def _etag(kind: str, blob_id: str, key: str) -> str:
    """Stored files never change: the blob id and the parameters name the representation."""
    return f'"{kind}-{hashlib.sha256(f"{blob_id}|{key}".encode()).hexdigest()[:32]}"'


def _check_frames(stored: StoredInstance, frames: Sequence[int]) -> None:
    count = stored.number_of_frames
    missing = [n for n in frames if not 1 <= n <= count]
    if missing:
        raise NotFound(
            f"instance {stored.sop_instance_uid} has {count} frame{'s' if count != 1 else ''}; "
            f"there is no frame {', '.join(str(n) for n in missing)}"
        )


def _plan_frames(
    stored: StoredInstance, frames: Sequence[int], accept: Sequence[Accepted]
) -> RenderPlan:
    for wanted in accept:
        chosen = _match(wanted.mime, IMAGE_TYPES)
        if chosen is None:
            continue
        if wanted.multipart or (len(frames) > 1 and wanted.mime == "*/*"):
            return RenderPlan(tuple(RenderJob(stored, chosen, n, True) for n in frames), True)
        if len(frames) == 1:
            return RenderPlan((RenderJob(stored, chosen, frames[0], True),), False)
    several = (
        'several frames come as multipart/related; type="image/jpeg" (or image/png, image/gif)'
    )
    raise NotAcceptable(
        f"frames are rendered as image/jpeg, image/png or image/gif; {several}; "
        f"not as {_describe_accept(accept)}"
    )
