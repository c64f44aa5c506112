"""WADO-RS frames and transcoding: stored frames by their recorded byte ranges, converted on demand."""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.filereader import read_dataset

from dicomhub.context import RequestContext
from dicomhub.dicom.transcode import (
    DEFLATED,
    EXPLICIT_LE,
    NATIVE,
    FrameConverter,
    Pixels,
    TranscodeError,
    conversion_problem,
    frame_label,
    frame_output,
    little_endian_value,
    native_frame,
    needs_whole_value,
    reencode,
    syntax_name,
    transcode_instance,
)
from dicomhub.errors import NotAcceptable, NotFound
from dicomhub.services.retrieve import RetrieveService
from dicomhub.storage.blobs.base import BlobStore, read_ranges
from dicomhub.storage.index.instances import StoredInstance

__all__ = ["FramePart", "FrameService", "FrameTarget", "Frames"]

# Frames served as stored are read in the request's one worker-thread call up to this many bytes;
# larger ones are streamed by range.
INLINE_LIMIT = 4 * 1024 * 1024
# Instances whose frames could not be indexed at store time are read whole, up to this size.
WHOLE_LIMIT = 256 * 1024 * 1024
_TAIL_LIMIT = 1024 * 1024
_CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class FrameTarget:
    """One acceptable representation: multipart or single part, a media type (None: any) and
    a transfer syntax (None: the media type's default, "*": as stored)."""

    multipart: bool
    media_type: str | None
    transfer_syntax: str | None


@dataclass(frozen=True, slots=True)
class FramePart:
    """One frame: byte ranges of a blob, bytes in hand, or a call that makes them."""

    blob_id: str | None = None
    ranges: tuple[tuple[int, int], ...] = ()
    data: bytes | None = None
    produce: Callable[[], bytes] | None = None


@dataclass(frozen=True, slots=True)
class Frames:
    multipart: bool
    media_type: str  # the parts' media type, e.g. image/jpeg
    transfer_syntax: str
    parts: list[FramePart]

    @property
    def content_type(self) -> str:
        return f"{self.media_type}; transfer-syntax={self.transfer_syntax}"


class _Source:
    """The stored frames of one instance: by the index's byte ranges, or from the whole data set
    when the index could not cut them (deflated files, unmarked fragments, unaligned 1-bit frames)."""

    def __init__(self, blobs: BlobStore, stored: StoredInstance) -> None:
        self.blobs = blobs
        self.stored = stored
        self.info: dict[str, Any] | None = stored.frames
        self.whole: Dataset | None = None
        self._frames: list[bytes] | None = None
        self.count = max(stored.number_of_frames, 1)
        if self.info is not None and self.info.get("frames") is not None:
            self.tag = int(self.info["tag"])
            self.vr = str(self.info["vr"])
            return
        if self.info is None and stored.transfer_syntax_uid != DEFLATED:
            raise NotFound(
                f"instance {stored.sop_instance_uid} has no pixel data, so it has no frames"
            )
        problem = self.info.get("problem") if self.info else "the data set is deflated"
        if stored.size > WHOLE_LIMIT:
            raise NotAcceptable(
                f"the frames of instance {stored.sop_instance_uid} could not be indexed "
                f"({problem}) and it is too large to be read whole"
            )
        with blobs.open(stored.blob_id) as fh:
            self.whole = _read(fh)
        element = next(
            (self.whole[t] for t in (0x7FE00010, 0x7FE00008, 0x7FE00009) if t in self.whole),
            None,
        )
        if element is None:
            raise NotFound(
                f"instance {stored.sop_instance_uid} has no pixel data, so it has no frames"
            )
        self.tag, self.vr = int(element.tag), str(element.VR)
        if stored.transfer_syntax_uid not in NATIVE:
            try:
                self._frames = list(generate_frames(element.value, number_of_frames=self.count))
            except Exception as exc:
                raise NotAcceptable(
                    f"the frames of instance {stored.sop_instance_uid} cannot be told apart: "
                    f"{problem}"
                ) from exc
            if len(self._frames) < self.count:
                raise NotAcceptable(
                    f"instance {stored.sop_instance_uid} holds {len(self._frames)} frames, "
                    f"not {self.count}"
                )

    @property
    def syntax(self) -> str:
        return self.stored.transfer_syntax_uid

    @property
    def pixel_syntax(self) -> str:
        """The encoding of the frames this source gives (a deflated file's are inflated)."""
        return EXPLICIT_LE if self.syntax == DEFLATED else self.syntax

    def ranges(self, index: int) -> tuple[tuple[int, int], ...] | None:
        if self.whole is not None or self.info is None:
            return None
        return tuple((int(o), int(n)) for o, n in self.info["frames"][index])

    def read(self, index: int, fh: BinaryIO | None = None) -> bytes:
        ranges = self.ranges(index)
        if ranges is None:
            assert self.whole is not None
            if self._frames is not None:
                return self._frames[index]
            value = self.whole[self.tag].value
            return native_frame(value, index, Pixels.of(self.whole))
        own = fh is None
        handle = self.blobs.open(self.stored.blob_id) if fh is None else fh
        try:
            return read_ranges(handle, ranges, self.stored.blob_id)
        finally:
            if own:
                handle.close()

    def header(self, fh: BinaryIO) -> tuple[Dataset, Dataset | None]:
        """The data set before the pixel data (with its file meta), and the elements after it."""
        if self.whole is not None:
            head, tail = Dataset(), Dataset()
            for elem in self.whole:
                (head if elem.tag < self.tag else tail if elem.tag > self.tag else Dataset()).add(
                    elem
                )
            head.file_meta = FileMetaDataset(self.whole.file_meta)
            head.preamble = self.whole.preamble
            return head, tail
        fh.seek(0)
        head = _read(fh, stop_before_pixels=True)
        return head, self._tail(fh, head)

    def _tail(self, fh: BinaryIO, head: Dataset) -> Dataset | None:
        assert self.info is not None
        if self.info["length"] is not None:
            end = int(self.info["offset"]) + int(self.info["length"])
        else:
            last_offset, last_length = self.info["frames"][-1][-1]
            end = int(last_offset) + int(last_length) + 8  # the sequence delimiter item
        size = self.stored.size - end
        if size <= 0 or size > _TAIL_LIMIT:
            return None
        implicit, little = head.original_encoding
        try:
            return read_dataset(
                io.BytesIO(read_ranges(fh, ((end, size),), self.stored.blob_id)),
                bool(implicit),
                little is not False,
            )
        except Exception:  # noqa: BLE001 - an unreadable tail (padding, junk) is left out
            return None

    def value(self, fh: BinaryIO) -> tuple[int, Callable[[], Iterator[bytes]]]:
        """The native pixel value: its length and its bytes in chunks."""
        if self.whole is not None:
            data = bytes(self.whole[self.tag].value)
            return len(data), lambda: iter([data])
        assert self.info is not None and self.info["length"] is not None
        offset, length = int(self.info["offset"]), int(self.info["length"])

        def chunks() -> Iterator[bytes]:
            for start in range(0, length, _CHUNK):
                yield read_ranges(
                    fh, ((offset + start, min(_CHUNK, length - start)),), self.stored.blob_id
                )

        return length, chunks


def _read(fh: BinaryIO, *, stop_before_pixels: bool = False) -> Dataset:
    # pydicom warns about files it reads anyway (e.g. implicit VR inside an explicit-VR file);
    # such files were accepted at store time and are served the same way.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dcmread(fh, stop_before_pixels=stop_before_pixels)


@dataclass
class FrameService:
    blobs: BlobStore
    retrieve: RetrieveService
    inline_limit: int = INLINE_LIMIT

    def frames(
        self,
        ctx: RequestContext,
        study: str,
        series: str,
        sop: str,
        numbers: Sequence[int],
        targets: Sequence[FrameTarget],
    ) -> Frames:
        """Frames `numbers` (1-based) in the first of `targets` that can be produced."""
        (stored,) = self.retrieve.instances(ctx, study, series, sop)
        source = _Source(self.blobs, stored)
        for n in numbers:
            if n > source.count:
                raise NotFound(
                    f"frame {n} does not exist: instance {sop} has {source.count} "
                    f"frame{'s' if source.count != 1 else ''}"
                )
        reasons: list[str] = []
        for target in targets:
            if not target.multipart and len(numbers) > 1:
                reasons.append(f"{len(numbers)} frames need multipart/related")
                continue
            try:
                syntax, media_type = frame_output(
                    target.media_type, target.transfer_syntax, source.syntax
                )
                problem = conversion_problem(source.syntax, syntax)
                if problem:
                    raise TranscodeError(problem)
                if syntax == frame_label(source.syntax) or syntax == source.syntax:
                    parts = self._as_stored(source, numbers)
                else:
                    parts = self._converted(source, syntax, numbers)
            except TranscodeError as exc:
                reasons.append(str(exc))
                continue
            return Frames(target.multipart, media_type, syntax, parts)
        stored_as = syntax_name(source.syntax)
        raise NotAcceptable(
            f"cannot produce the frames as asked (stored as {stored_as}): "
            + "; ".join(dict.fromkeys(reasons) or ["no acceptable media type"])
            + '; ask for multipart/related; type="application/octet-stream"; transfer-syntax=* '
            "to receive them as stored"
        )

    def _as_stored(self, source: _Source, numbers: Sequence[int]) -> list[FramePart]:
        plans = [source.ranges(n - 1) for n in numbers]
        total = sum(sum(n for _, n in r) for r in plans if r is not None)
        if source.whole is None and total > self.inline_limit:
            return [FramePart(source.stored.blob_id, r or ()) for r in plans]
        # Small enough: read now, in the caller's worker thread (one open, no further thread hops).
        if source.whole is not None:
            return [FramePart(data=source.read(n - 1)) for n in numbers]
        with self.blobs.open(source.stored.blob_id) as fh:
            return [FramePart(data=source.read(n - 1, fh)) for n in numbers]

    def _converted(self, source: _Source, syntax: str, numbers: Sequence[int]) -> list[FramePart]:
        with self.blobs.open(source.stored.blob_id) as fh:
            header, _ = source.header(fh)
            pixels = Pixels.of(header)
            read: Callable[[int], bytes] = source.read
            if needs_whole_value(source.pixel_syntax, pixels, source.vr):
                _, chunks = source.value(fh)
                little, pixels = little_endian_value(b"".join(chunks()), pixels, source.vr)
                read = partial(native_frame, little, pixels=pixels)
                converter = FrameConverter(EXPLICIT_LE, syntax, pixels, tag=source.tag)
            else:
                converter = FrameConverter(
                    source.pixel_syntax, syntax, pixels, vr=source.vr, tag=source.tag
                )
            # The first frame now: a frame that cannot be converted is refused before any byte.
            first = converter.convert(read(numbers[0] - 1))

        def produce(index: int) -> Callable[[], bytes]:
            return lambda: converter.convert(read(index))

        return [FramePart(data=first)] + [FramePart(produce=produce(n - 1)) for n in numbers[1:]]

    def check_transcode(self, found: Sequence[StoredInstance], target: str) -> None:
        """Refuse (406) up front what no instance of `found` could be converted to."""
        problems: dict[str, str] = {}
        for s in found:
            problem = conversion_problem(s.transfer_syntax_uid, target)
            if s.transfer_syntax_uid != target and problem:
                problems.setdefault(problem, s.transfer_syntax_uid)
        if problems:
            raise NotAcceptable(
                "; ".join(f"stored as {syntax_name(ts)}, {p}" for p, ts in problems.items())
                + "; ask for transfer-syntax=* to receive the instances as stored"
            )

    def transcoded(self, stored: StoredInstance, target: str) -> Iterator[bytes]:
        """The instance as a Part-10 file in `target`, streamed; refuses (406) before any byte."""
        problem = conversion_problem(stored.transfer_syntax_uid, target)
        if problem:
            raise NotAcceptable(problem)
        fh = self.blobs.open(stored.blob_id)
        try:
            try:
                source = _Source(self.blobs, stored)
            except NotFound:
                chunks = self._without_pixels(fh, target)
            else:
                chunks = self._with_pixels(fh, source, target)
        except TranscodeError as exc:
            fh.close()
            raise NotAcceptable(
                f"instance {stored.sop_instance_uid} cannot be transcoded: {exc}"
            ) from exc
        except BaseException:
            fh.close()
            raise
        return _closing(chunks, fh)

    def _with_pixels(self, fh: BinaryIO, source: _Source, target: str) -> Iterator[bytes]:
        header, trailing = source.header(fh)
        length: int | None = None
        value: Callable[[], Iterator[bytes]] = lambda: iter(())  # noqa: E731
        if source.pixel_syntax in NATIVE:
            length, value = source.value(fh)
        return transcode_instance(
            header,
            source.pixel_syntax,
            target,
            frames=lambda i: source.read(i, fh),
            value=value,
            value_length=length,
            pixel_tag=source.tag,
            pixel_vr=source.vr,
            trailing=trailing,
        )

    def _without_pixels(self, fh: BinaryIO, target: str) -> Iterator[bytes]:
        fh.seek(0)
        return iter([reencode(_read(fh), target)])


def _closing(chunks: Iterator[bytes], fh: BinaryIO) -> Iterator[bytes]:
    try:
        yield from chunks
    finally:
        fh.close()
