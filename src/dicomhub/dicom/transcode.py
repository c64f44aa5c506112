"""Transfer syntaxes on retrieve: media types (PS3.18 8.7.3), frame decoding and encoding, new headers.

Decoding and encoding go through pydicom's pixel handlers (pylibjpeg, -libjpeg, -openjpeg, -rle,
pyjpegls); frames go in and out as bytes, one at a time, so memory stays at a frame or two.
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite, write_dataset
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.encoders.base import get_encoder
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID

__all__ = [
    "DEFLATED",
    "EXPLICIT_BE",
    "EXPLICIT_LE",
    "IMPLICIT_LE",
    "NATIVE",
    "FrameConverter",
    "Pixels",
    "TranscodeError",
    "conversion_problem",
    "frame_label",
    "frame_output",
    "known_media_type",
    "little_endian_value",
    "native_frame",
    "needs_whole_value",
    "reencode",
    "syntax_name",
    "transcode_instance",
]

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED = "1.2.840.10008.1.2.1.99"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
RLE = "1.2.840.10008.1.2.5"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"

_NATIVE_LE = frozenset({IMPLICIT_LE, EXPLICIT_LE, DEFLATED})
NATIVE = _NATIVE_LE | {EXPLICIT_BE}
# Targets we encode to: lossless only, so a retrieve never loses information (pydicom 3 encoders).
ENCODABLE = frozenset({RLE, JPEG_LS_LOSSLESS, J2K_LOSSLESS})
# PS3.18 8.7.3: Explicit VR Big Endian is not used by web services; Implicit VR only on request.
_TARGETS = ENCODABLE | {IMPLICIT_LE, EXPLICIT_LE}
PIXEL_DATA = 0x7FE00010
_KEYWORDS = {
    PIXEL_DATA: "PixelData",
    0x7FE00008: "FloatPixelData",
    0x7FE00009: "DoubleFloatPixelData",
}

# PS3.18 Table 8.7.3-5: media types of compressed frames, the default transfer syntax first.
_MEDIA_TYPES: dict[str, tuple[str, ...]] = {
    "image/jpeg": (
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.57",
    ),
    "image/dicom-rle": (RLE,),
    "image/jls": (JPEG_LS_LOSSLESS, "1.2.840.10008.1.2.4.81"),
    "image/jp2": (J2K_LOSSLESS, "1.2.840.10008.1.2.4.91"),
    "image/jpx": ("1.2.840.10008.1.2.4.92", "1.2.840.10008.1.2.4.93"),
    "image/jphc": ("1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"),
    "image/jxl": ("1.2.840.10008.1.2.4.110", "1.2.840.10008.1.2.4.111", "1.2.840.10008.1.2.4.112"),
    "video/mpeg2": ("1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.101"),
    "video/mp4": (
        "1.2.840.10008.1.2.4.102",
        "1.2.840.10008.1.2.4.103",
        "1.2.840.10008.1.2.4.104",
        "1.2.840.10008.1.2.4.105",
        "1.2.840.10008.1.2.4.106",
    ),
    "video/h265": ("1.2.840.10008.1.2.4.107", "1.2.840.10008.1.2.4.108"),
    "application/octet-stream": (EXPLICIT_LE,),
}
# Names from earlier editions of PS3.18, still sent by clients.
_ALIASES = {"image/x-dicom-rle": "image/dicom-rle", "image/x-jls": "image/jls"}
_MEDIA_OF = {ts: mt for mt, syntaxes in _MEDIA_TYPES.items() for ts in syntaxes}
_LOSSY = frozenset(
    {
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.81",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.93",
        "1.2.840.10008.1.2.4.203",
        "1.2.840.10008.1.2.4.112",
        *_MEDIA_TYPES["video/mpeg2"],
        *_MEDIA_TYPES["video/mp4"],
        *_MEDIA_TYPES["video/h265"],
    }
)


class TranscodeError(ValueError):
    """The pixel data cannot be given in the asked transfer syntax; the message says why."""


def syntax_name(uid: str) -> str:
    name = UID(uid).name
    return f"{name} ({uid})" if name and name != uid else uid


def known_media_type(mime: str) -> bool:
    return _ALIASES.get(mime, mime) in _MEDIA_TYPES


def frame_label(stored: str) -> str:
    """The transfer syntax that names stored frames: native little-endian frames are ELE bytes."""
    return EXPLICIT_LE if stored in _NATIVE_LE else stored


def frame_output(
    media_type: str | None, transfer_syntax: str | None, stored: str
) -> tuple[str, str]:
    """(transfer syntax, part media type) for frames asked as `media_type` (None: any).

    `transfer_syntax` None means the media type's default (PS3.18 8.7.3.5), "*" any; a
    compressed media type is served as stored when the stored syntax is one of its own.
    """
    label = frame_label(stored)
    if media_type is None or media_type in ("image/*", "video/*"):
        ts = label if transfer_syntax in (None, "*") else str(transfer_syntax)
        own = _MEDIA_OF.get(ts, "application/octet-stream")
        if media_type is not None and own.split("/")[0] != media_type.split("/")[0]:
            raise TranscodeError(f"frames in {syntax_name(ts)} are {own}, not {media_type}")
        return ts, own
    canonical = _ALIASES.get(media_type, media_type)
    if canonical == "application/octet-stream":
        if transfer_syntax is None:
            return EXPLICIT_LE, media_type
        return (label if transfer_syntax == "*" else transfer_syntax), media_type
    family = _MEDIA_TYPES.get(canonical)
    if family is None:
        raise TranscodeError(f"{media_type} is not a media type for frames")
    if transfer_syntax in (None, "*"):
        return (label if label in family else family[0]), media_type
    if transfer_syntax not in family:
        raise TranscodeError(
            f"{syntax_name(transfer_syntax)} is not a transfer syntax of {media_type}"
        )
    return transfer_syntax, media_type


def conversion_problem(source: str, target: str) -> str | None:
    """Why frames stored as `source` cannot be given as `target`, or None when they can."""
    if source == target or (source in _NATIVE_LE and target in _NATIVE_LE - {DEFLATED}):
        return None
    if target not in _TARGETS:
        why = (
            "a lossy transfer syntax" if target in _LOSSY else "a transfer syntax we cannot encode"
        )
        return (
            f"cannot transcode to {syntax_name(target)}: it is {why}; this server encodes "
            f"Explicit VR Little Endian, RLE Lossless, JPEG-LS Lossless and JPEG 2000 Lossless"
        )
    if source not in NATIVE:
        try:
            available = get_decoder(source).is_available
        except NotImplementedError:
            available = False
        if not available:
            return f"cannot decode {syntax_name(source)}: no decoder is installed for it"
    return None


@dataclass(frozen=True, slots=True)
class Pixels:
    """The Image Pixel module values that describe each frame (PS3.3 C.7.6.3)."""

    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric: str
    planar_configuration: int = 0
    number_of_frames: int = 1

    @classmethod
    def of(cls, ds: Dataset) -> Pixels:
        try:
            rows, columns, bits = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated)
        except (AttributeError, TypeError, ValueError):
            raise TranscodeError("Rows, Columns or BitsAllocated is missing") from None
        frames = ds.get("NumberOfFrames")
        try:
            count = int(frames) if frames not in (None, "") else 1
        except (TypeError, ValueError):
            count = 1
        return cls(
            rows=rows,
            columns=columns,
            samples_per_pixel=int(ds.get("SamplesPerPixel") or 1),
            bits_allocated=bits,
            bits_stored=int(ds.get("BitsStored") or bits),
            pixel_representation=int(ds.get("PixelRepresentation") or 0),
            photometric=str(ds.get("PhotometricInterpretation") or "MONOCHROME2").strip(),
            planar_configuration=int(ds.get("PlanarConfiguration") or 0),
            number_of_frames=max(count, 1),
        )

    @property
    def frame_bits(self) -> int:
        bits = self.rows * self.columns * self.samples_per_pixel * self.bits_allocated
        # Native YBR_FULL_422 shares two chroma samples between two pixels (PS3.3 C.7.6.3.1.2).
        return bits * 2 // 3 if self.photometric == "YBR_FULL_422" else bits

    @property
    def frame_length(self) -> int:
        """Bytes of one native frame (a 1-bit frame rounded up to whole bytes)."""
        return (self.frame_bits + 7) // 8

    def options(self, frames: int = 1) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "columns": self.columns,
            "samples_per_pixel": self.samples_per_pixel,
            "bits_allocated": self.bits_allocated,
            "bits_stored": self.bits_stored,
            "pixel_representation": self.pixel_representation,
            "photometric_interpretation": self.photometric,
            "planar_configuration": self.planar_configuration,
            "number_of_frames": frames,
        }


@contextmanager
def _quiet() -> Iterator[None]:
    # pydicom reports oddities it works around (e.g. a JFIF marker in an RGB frame) as warnings;
    # the result is what pydicom itself returns, so they are not the client's concern.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _decode(
    frame: bytes,
    source: str,
    pixels: Pixels,
    *,
    raw: bool,
    vr: str = "OW",
    tag: int = PIXEL_DATA,
    count: int = 1,
) -> tuple[np.ndarray[Any, Any], Pixels]:
    """`count` frames as an array (PlanarConfiguration 0) and the pixel description pydicom gives."""
    src = encapsulate([frame]) if source not in NATIVE else frame
    options = pixels.options(count)
    if source in NATIVE:
        options["pixel_keyword"] = _KEYWORDS.get(tag, "PixelData")
        options["pixel_vr"] = vr
    try:
        with _quiet():
            index = 0 if count == 1 else None
            arr, meta = get_decoder(source).as_array(src, index=index, raw=raw, **options)
    except Exception as exc:
        raise TranscodeError(f"cannot decode a {syntax_name(source)} frame: {exc}") from exc
    photometric = str(meta.get("photometric_interpretation", pixels.photometric))
    if photometric == "YBR_FULL_422" and not raw:
        photometric = "RGB"
    elif photometric == "YBR_FULL_422":
        # The decoded array has a chroma sample per pixel: full YBR, not 4:2:2 any more.
        photometric = "YBR_FULL"
    decoded = replace(
        pixels,
        photometric=photometric,
        planar_configuration=0,
        bits_stored=int(meta.get("bits_stored", pixels.bits_stored)),
    )
    return arr, decoded


def _native_bytes(arr: np.ndarray[Any, Any], pixels: Pixels) -> bytes:
    if pixels.bits_allocated == 1:
        return np.packbits(arr.astype(np.uint8).ravel(), bitorder="little").tobytes()
    little = arr.dtype.newbyteorder("<") if arr.dtype.itemsize > 1 else arr.dtype
    return arr.astype(little, copy=False).tobytes()


def native_frame(value: bytes, index: int, pixels: Pixels) -> bytes:
    """Frame `index` of a native little-endian value; 1-bit frames are re-packed from bit 0."""
    if pixels.bits_allocated != 1:
        length = pixels.frame_length
        return value[index * length : (index + 1) * length]
    bits = pixels.frame_bits
    unpacked = np.unpackbits(np.frombuffer(value, dtype=np.uint8), bitorder="little")
    part = unpacked[index * bits : (index + 1) * bits]
    if len(part) < bits:
        raise TranscodeError(f"the pixel data holds fewer than {index + 1} frames")
    return np.packbits(part, bitorder="little").tobytes()


def needs_whole_value(source: str, pixels: Pixels, vr: str) -> bool:
    """Big-endian values whose bits (1-bit) or bytes (odd-length 8-bit frames in OW) are swapped
    across frame boundaries: they are converted whole (such values are small)."""
    return source == EXPLICIT_BE and (
        pixels.bits_allocated == 1
        or (pixels.bits_allocated == 8 and vr == "OW" and pixels.frame_length % 2 == 1)
    )


def little_endian_value(
    value: bytes, pixels: Pixels, vr: str, tag: int = PIXEL_DATA
) -> tuple[bytes, Pixels]:
    """A whole big-endian native value in little-endian order, and the pixels it then holds."""
    arr, out = _decode(
        value, EXPLICIT_BE, pixels, raw=True, vr=vr, tag=tag, count=pixels.number_of_frames
    )
    return _native_bytes(arr, out), replace(out, number_of_frames=pixels.number_of_frames)


class FrameConverter:
    """Turns stored frames of one instance into frames of another transfer syntax."""

    def __init__(
        self, source: str, target: str, pixels: Pixels, *, vr: str = "OW", tag: int = PIXEL_DATA
    ) -> None:
        problem = conversion_problem(source, target)
        if problem:
            raise TranscodeError(problem)
        self.source = source
        self.target = target
        self.pixels = pixels
        self.vr = vr
        self.tag = tag
        self.output: Pixels | None = None  # known once a frame is converted
        self.copies = source == target or (source in _NATIVE_LE and target in _NATIVE_LE)
        if not self.copies and target in ENCODABLE and not get_encoder(target).is_available:
            raise TranscodeError(f"no encoder is installed for {syntax_name(target)}")

    def convert(self, frame: bytes) -> bytes:
        if self.copies:
            self.output = self.pixels
            return frame
        if self.target in NATIVE:
            # PS3.18 8.7.3.3.1: decoded frames are what pydicom's pixel_array gives (YBR as RGB).
            arr, out = _decode(
                frame, self.source, self.pixels, raw=self.source in NATIVE, vr=self.vr, tag=self.tag
            )
            data = _native_bytes(arr, out)
            if len(data) != out.frame_length:
                raise TranscodeError(
                    f"a decoded frame holds {len(data)} bytes, {out.frame_length} expected"
                )
        else:
            # Lossless targets keep the stored colour space: no YBR to RGB rounding.
            arr, out = _decode(frame, self.source, self.pixels, raw=True, vr=self.vr, tag=self.tag)
            data = self._encode(arr, out)
        self.output = out
        return data

    def _encode(self, arr: np.ndarray[Any, Any], pixels: Pixels) -> bytes:
        if pixels.bits_allocated not in (8, 16, 32, 64):
            raise TranscodeError(
                f"cannot encode {pixels.bits_allocated}-bit pixel data as {syntax_name(self.target)}"
            )
        try:
            with _quiet():
                encoded = get_encoder(self.target).encode(arr, **pixels.options())
        except Exception as exc:
            hint = ""
            if self.target == J2K_LOSSLESS and min(pixels.rows, pixels.columns) < 32:
                # OpenJPEG's six wavelet resolutions need 32 pixels each way.
                hint = " (the JPEG 2000 encoder needs at least 32 rows and 32 columns)"
            raise TranscodeError(
                f"cannot encode as {syntax_name(self.target)}{hint}: {exc}"
            ) from exc
        return bytes(encoded)


def _element_header(tag: int, vr: str, length: int, implicit: bool) -> bytes:
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    if implicit:
        return head + struct.pack("<L", length)
    return head + vr.encode("ascii") + b"\0\0" + struct.pack("<L", length)


def _item(data: bytes) -> bytes:
    return struct.pack("<HHL", 0xFFFE, 0xE000, len(data)) + data


_SEQUENCE_DELIMITER = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
_DROPPED_AFTER_PIXELS = {0xFFFCFFFC, 0xFFFAFFFA}  # padding; signatures no longer valid


def _convert_raw(ds: Dataset) -> None:
    """Give every element its VR before writing: some files mix implicit-VR elements into an
    explicit-VR data set, and pydicom would copy those raw, without a VR."""
    with _quiet():
        ds.walk(lambda _ds, _elem: None)


def _header_bytes(header: Dataset, target: str, source: Pixels, out: Pixels) -> bytes:
    for tag in (0x7FE00001, 0x7FE00002):  # extended offset tables describe the old encoding
        if tag in header:
            del header[tag]
    if out.photometric != source.photometric:
        header.PhotometricInterpretation = out.photometric
    if out.samples_per_pixel > 1 and (
        "PlanarConfiguration" in header or out.planar_configuration != source.planar_configuration
    ):
        header.PlanarConfiguration = out.planar_configuration
    if out.bits_stored != source.bits_stored:
        header.BitsStored = out.bits_stored
        header.HighBit = out.bits_stored - 1
    _convert_raw(header)
    meta = header.file_meta
    meta.TransferSyntaxUID = UID(target)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    if "ImplementationVersionName" in meta:
        del meta.ImplementationVersionName
    buf = io.BytesIO()
    with _quiet():
        dcmwrite(buf, header, enforce_file_format=True)
    return buf.getvalue()


def reencode(ds: Dataset, target: str) -> bytes:
    """A data set without pixel data in `target`: only its encoding changes (explicit VR little
    endian under any compressed syntax, which concerns pixel data alone)."""
    _convert_raw(ds)
    ds.file_meta.TransferSyntaxUID = UID(target)
    buf = io.BytesIO()
    with _quiet():
        dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def _trailing_bytes(trailing: Dataset | None, implicit: bool) -> bytes:
    if trailing is None:
        return b""
    kept = Dataset()
    for elem in trailing:
        if elem.tag not in _DROPPED_AFTER_PIXELS:
            kept.add(elem)
    if not len(kept):
        return b""
    fp = DicomBytesIO()
    fp.is_implicit_VR = implicit
    fp.is_little_endian = True
    with _quiet():
        write_dataset(fp, kept)
    return fp.getvalue()


def transcode_instance(
    header: Dataset,
    source: str,
    target: str,
    *,
    frames: Callable[[int], bytes],
    value: Callable[[], Iterator[bytes]],
    value_length: int | None,
    pixel_tag: int = PIXEL_DATA,
    pixel_vr: str = "OW",
    trailing: Dataset | None = None,
) -> Iterator[bytes]:
    """A Part-10 file in `target`, streamed: header, then the pixel data frame by frame.

    `header` is the data set up to the pixel data (with its file meta), `frames(i)` gives stored
    frame i, `value()` the stored native value in chunks. The first frame is converted before
    this returns, so a frame that cannot be converted raises TranscodeError here, not mid-stream.
    """
    pixels = Pixels.of(header)
    count = pixels.number_of_frames
    converter = FrameConverter(source, target, pixels, vr=pixel_vr, tag=pixel_tag)
    implicit = target == IMPLICIT_LE
    if pixel_tag != PIXEL_DATA and target not in NATIVE:
        raise TranscodeError("float pixel data has no compressed encoding")

    if source in _NATIVE_LE and target in _NATIVE_LE:
        if value_length is None:
            raise TranscodeError("the native pixel data has no recorded length")
        return _native(
            header, target, pixels, pixels, value(), value_length, pixel_tag, pixel_vr, trailing
        )
    if needs_whole_value(source, pixels, pixel_vr):
        little, out = little_endian_value(b"".join(value()), pixels, pixel_vr, pixel_tag)
        if target in NATIVE:
            return _native(
                header,
                target,
                pixels,
                out,
                iter([little]),
                len(little),
                pixel_tag,
                pixel_vr,
                trailing,
            )
        converter = FrameConverter(EXPLICIT_LE, target, out, tag=pixel_tag)
        frames = partial(native_frame, little, pixels=out)

    first = converter.convert(frames(0))
    out = converter.output or pixels
    head = _header_bytes(header, target, pixels, out)
    native = target in NATIVE
    length = out.frame_length * count
    if native:
        vr = "OB" if out.bits_allocated <= 8 else "OW"
        head += _element_header(pixel_tag, vr, length + length % 2, implicit)
    else:
        head += _element_header(pixel_tag, "OB", 0xFFFFFFFF, implicit) + _item(b"")

    def converted() -> Iterator[bytes]:
        yield head
        for i in range(count):
            data = first if i == 0 else converter.convert(frames(i))
            if native:
                yield data
            else:
                # Fragments have even length (PS3.5 A.4); one fragment per frame, empty offset table.
                yield _item(data + b"\0" * (len(data) % 2))
        if native:
            if length % 2:
                yield b"\0"
        else:
            yield _SEQUENCE_DELIMITER
        yield _trailing_bytes(trailing, implicit)

    return converted()


def _native(
    header: Dataset,
    target: str,
    source: Pixels,
    out: Pixels,
    body: Iterator[bytes],
    length: int,
    tag: int,
    vr: str,
    trailing: Dataset | None,
) -> Iterator[bytes]:
    """Header, then a native pixel value already in little-endian order, then the trailing elements."""
    implicit = target == IMPLICIT_LE
    if tag == PIXEL_DATA:
        vr = "OB" if out.bits_allocated <= 8 else "OW"
    head = _header_bytes(header, target, source, out)
    head += _element_header(tag, vr, length + length % 2, implicit)

    def chunks() -> Iterator[bytes]:
        yield head
        yield from body
        if length % 2:
            yield b"\0"
        yield _trailing_bytes(trailing, implicit)

    return chunks()
