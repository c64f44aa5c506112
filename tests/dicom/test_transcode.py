"""Transcoding, pure: frames and Part-10 files in another transfer syntax equal pydicom's pixels."""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate_extended
from pydicom.uid import JPEG2000Lossless, RLELossless

from dicomhub.dicom.read import parse_part10
from dicomhub.dicom.transcode import (
    EXPLICIT_LE,
    IMPLICIT_LE,
    FrameConverter,
    Pixels,
    TranscodeError,
    conversion_problem,
    frame_output,
    native_frame,
    transcode_instance,
)
from tests.dicomfiles import make_dataset, to_part10

JLS = "1.2.840.10008.1.2.4.80"
RLE = "1.2.840.10008.1.2.5"
J2K = "1.2.840.10008.1.2.4.90"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


def _read(data: bytes) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dcmread(io.BytesIO(data))


def _pixels(ds: Dataset) -> np.ndarray[Any, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(ds.pixel_array)


class Stored:
    """A file as the server keeps it: bytes, and the frame index parse_part10 records."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        parsed = parse_part10(io.BytesIO(data), len(data), lambda p: p)
        assert parsed.frames is not None and parsed.frames.frames is not None
        self.index = parsed.frames
        self.syntax = parsed.transfer_syntax
        self.reads: list[int] = []

    def frame(self, i: int) -> bytes:
        self.reads.append(i)
        assert self.index.frames is not None
        return b"".join(self.data[o : o + n] for o, n in self.index.frames[i])

    def value(self) -> Iterator[bytes]:
        assert self.index.value_length is not None
        start = self.index.value_offset
        yield self.data[start : start + self.index.value_length]

    def header(self) -> Dataset:
        return dcmread(io.BytesIO(self.data), stop_before_pixels=True)

    def transcode(self, target: str, trailing: Dataset | None = None) -> Iterator[bytes]:
        return transcode_instance(
            self.header(),
            self.syntax,
            target,
            frames=self.frame,
            value=self.value,
            value_length=self.index.value_length,
            pixel_tag=self.index.tag,
            pixel_vr=self.index.vr,
            trailing=trailing,
        )


def _sample(name: str) -> bytes:
    return Path(get_testdata_file(name)).read_bytes()  # type: ignore[arg-type]


ROUND_TRIPS = [
    # (file, targets): native, RLE, JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000, colour.
    ("MR_small.dcm", [IMPLICIT_LE, RLE, JLS, J2K]),
    ("MR_small_implicit.dcm", [EXPLICIT_LE, RLE, J2K]),
    ("MR_small_bigendian.dcm", [EXPLICIT_LE, IMPLICIT_LE, RLE, JLS, J2K]),
    ("emri_small_RLE.dcm", [EXPLICIT_LE, JLS, J2K]),
    ("SC_rgb_rle_2frame.dcm", [EXPLICIT_LE, JLS, J2K]),
    ("SC_rgb_jpeg_dcmtk.dcm", [EXPLICIT_LE, RLE, JLS, J2K]),  # JPEG baseline, YBR_FULL
    ("color3d_jpeg_baseline.dcm", [EXPLICIT_LE]),  # 120 frames of YBR_FULL_422
    ("JPGExtended.dcm", [EXPLICIT_LE, RLE]),
    ("JPEG-LL.dcm", [EXPLICIT_LE, J2K]),
    ("emri_small_jpeg_ls_lossless.dcm", [EXPLICIT_LE, RLE, J2K]),
    ("JPEG2000.dcm", [EXPLICIT_LE, RLE, JLS]),
    ("US1_J2KR.dcm", [EXPLICIT_LE, RLE]),  # YBR_RCT
    ("color-pl.dcm", [EXPLICIT_LE, RLE, J2K]),  # planar configuration 1
    ("SC_ybr_full_422_uncompressed.dcm", [RLE, J2K]),
    ("liver.dcm", [IMPLICIT_LE]),  # 1-bit
    ("liver_expb.dcm", [EXPLICIT_LE]),  # 1-bit, big endian
    ("SC_rgb_small_odd_big_endian.dcm", [EXPLICIT_LE]),  # odd-length 8-bit OW frames
    ("rtdose_expb.dcm", [EXPLICIT_LE, IMPLICIT_LE]),  # 32-bit, 15 frames
]


@pytest.mark.parametrize(
    ("name", "target"), [(name, t) for name, targets in ROUND_TRIPS for t in targets]
)
def test_transcoded_file_decodes_to_the_originals_pixels(name: str, target: str) -> None:
    original = _sample(name)
    stored = Stored(original)
    out = b"".join(stored.transcode(target))
    back = _read(out)
    assert str(back.file_meta.TransferSyntaxUID) == target
    assert back.SOPInstanceUID == _read(original).SOPInstanceUID
    np.testing.assert_array_equal(_pixels(back), _pixels(_read(original)))


def test_decoding_updates_the_image_pixel_module() -> None:
    # JPEG baseline YBR_FULL_422 decodes to RGB (pydicom's as_rgb), interleaved.
    out = _read(b"".join(Stored(_sample("color3d_jpeg_baseline.dcm")).transcode(EXPLICIT_LE)))
    assert out.PhotometricInterpretation == "RGB"
    assert out.PlanarConfiguration == 0
    assert out.LossyImageCompression == "01"  # kept: the pixels were lossy compressed once
    assert out["PixelData"].VR == "OB" and not out["PixelData"].is_undefined_length
    # Planar configuration 1 becomes 0 in native output.
    planar = _read(b"".join(Stored(_sample("color-pl.dcm")).transcode(RLE)))
    assert planar.PlanarConfiguration == 0
    # Lossless targets keep the colour space: YBR_FULL stays YBR_FULL (no rounding to RGB).
    ybr = _read(b"".join(Stored(_sample("SC_rgb_jpeg_dcmtk.dcm")).transcode(RLE)))
    assert ybr.PhotometricInterpretation == "YBR_FULL"
    meta = ybr.file_meta
    assert meta.TransferSyntaxUID == RLELossless
    assert meta.MediaStorageSOPInstanceUID == ybr.SOPInstanceUID


def test_encoded_frames_are_one_fragment_each_with_an_empty_offset_table() -> None:
    stored = Stored(_sample("emri_small.dcm"))
    back = _read(b"".join(stored.transcode(JPEG2000Lossless)))
    parsed = parse_part10(io.BytesIO(b"".join(stored.transcode(J2K))), 10**9, lambda p: p)
    assert parsed.frames is not None and parsed.frames.frames is not None
    assert [len(f) for f in parsed.frames.frames] == [1] * 10
    assert back.NumberOfFrames == 10


def test_the_output_streams_frame_by_frame() -> None:
    # Only the first frame is read before the first chunk (the header) is handed out.
    data = to_part10(make_dataset(rows=64, columns=64, frames=12))
    stored = Stored(data)
    chunks = stored.transcode(RLE)
    assert stored.reads == [0]
    header = next(chunks)
    assert header[128:132] == b"DICM"
    sizes = [len(c) for c in chunks]
    assert stored.reads == list(range(12))
    assert len(sizes) >= 12  # one item per frame, then the delimiter


def test_extended_offset_tables_and_trailing_padding_are_dropped() -> None:
    ds = make_dataset(rows=16, columns=16, frames=3)
    frames = [ds.PixelData[i * 512 : (i + 1) * 512] for i in range(3)]
    ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = encapsulate_extended(
        [_rle(f) for f in frames]
    )
    ds["PixelData"].VR = "OB"
    data = to_part10(ds, RLE)
    stored = Stored(data)
    trailing = Dataset()
    trailing.add_new(0xFFFCFFFC, "OB", b"\0" * 64)  # Data Set Trailing Padding
    trailing.add_new(0x7FE10010, "LO", "KEPT")
    back = _read(b"".join(stored.transcode(EXPLICIT_LE, trailing)))
    assert "ExtendedOffsetTable" not in back and "ExtendedOffsetTableLengths" not in back
    assert 0xFFFCFFFC not in back
    assert back[0x7FE10010].value == "KEPT"
    assert back.PixelData == b"".join(frames)


def _rle(frame: bytes) -> bytes:
    from pydicom.pixels.encoders.base import get_encoder

    opts = Pixels(16, 16, 1, 16, 12, 0, "MONOCHROME2").options()
    return bytes(get_encoder(RLE).encode(frame, **opts))


@pytest.mark.parametrize(
    ("source", "target", "words"),
    [
        (EXPLICIT_LE, JPEG_BASELINE, "lossy"),
        (EXPLICIT_LE, "1.2.840.10008.1.2.4.91", "lossy"),
        (EXPLICIT_LE, "1.2.840.10008.1.2.4.81", "lossy"),
        (EXPLICIT_LE, "1.2.840.10008.1.2.4.70", "cannot encode"),
        (EXPLICIT_LE, "1.2.840.10008.1.2.2", "cannot encode"),
        (EXPLICIT_LE, "1.2.840.10008.1.2.1.99", "cannot encode"),
        ("1.2.840.10008.1.2.4.92", EXPLICIT_LE, "no decoder"),
        ("1.2.840.10008.1.2.4.102", EXPLICIT_LE, "no decoder"),
    ],
)
def test_what_cannot_be_done_says_why(source: str, target: str, words: str) -> None:
    problem = conversion_problem(source, target)
    assert problem is not None and words in problem
    with pytest.raises(TranscodeError, match=words):
        FrameConverter(source, target, Pixels(8, 8, 1, 16, 12, 0, "MONOCHROME2"))


@pytest.mark.parametrize(
    ("source", "target"),
    [(EXPLICIT_LE, EXPLICIT_LE), (IMPLICIT_LE, EXPLICIT_LE), (JPEG_BASELINE, JPEG_BASELINE)],
)
def test_what_needs_no_work_is_possible(source: str, target: str) -> None:
    assert conversion_problem(source, target) is None


def test_an_undecodable_frame_is_a_transcode_error() -> None:
    converter = FrameConverter(J2K, EXPLICIT_LE, Pixels(8, 8, 1, 16, 12, 0, "MONOCHROME2"))
    with pytest.raises(TranscodeError, match="cannot decode"):
        converter.convert(b"\xff\x4f\xff\x51 not a codestream")


def test_an_encoder_profile_refusal_is_a_transcode_error() -> None:
    # JPEG-LS has no 32-bit profile (PS3.5 8.2.3).
    converter = FrameConverter(EXPLICIT_LE, JLS, Pixels(4, 4, 1, 32, 32, 0, "MONOCHROME2"))
    with pytest.raises(TranscodeError, match="JPEG-LS"):
        converter.convert(bytes(64))
    # pydicom's RLE encoder takes 8 and 16 bits: a 32-bit dose grid is refused before any byte.
    with pytest.raises(TranscodeError, match="Bits Allocated: 32"):
        Stored(_sample("rtdose_expb.dcm")).transcode(RLE)


@pytest.mark.parametrize(
    ("media_type", "syntax", "stored", "expected"),
    [
        (None, None, JPEG_BASELINE, (JPEG_BASELINE, "image/jpeg")),
        (None, "*", EXPLICIT_LE, (EXPLICIT_LE, "application/octet-stream")),
        (None, None, IMPLICIT_LE, (EXPLICIT_LE, "application/octet-stream")),
        (None, None, RLE, (RLE, "image/dicom-rle")),
        (
            "application/octet-stream",
            None,
            JPEG_BASELINE,
            (EXPLICIT_LE, "application/octet-stream"),
        ),
        ("application/octet-stream", "*", J2K, (J2K, "application/octet-stream")),
        ("image/jpeg", None, JPEG_BASELINE, (JPEG_BASELINE, "image/jpeg")),
        ("image/jpeg", None, EXPLICIT_LE, ("1.2.840.10008.1.2.4.70", "image/jpeg")),
        ("image/jp2", "*", EXPLICIT_LE, (J2K, "image/jp2")),
        ("image/x-jls", None, JLS, (JLS, "image/x-jls")),
        ("image/x-dicom-rle", None, EXPLICIT_LE, (RLE, "image/x-dicom-rle")),
        ("video/mp4", None, "1.2.840.10008.1.2.4.102", ("1.2.840.10008.1.2.4.102", "video/mp4")),
    ],
)
def test_frame_media_types_follow_ps3_18_table_8_7_3_5(
    media_type: str | None, syntax: str | None, stored: str, expected: tuple[str, str]
) -> None:
    assert frame_output(media_type, syntax, stored) == expected


def test_wildcard_image_types_take_compressed_frames_only() -> None:
    assert frame_output("image/*", None, J2K) == (J2K, "image/jp2")
    assert frame_output("image/*", "*", RLE) == (RLE, "image/dicom-rle")
    with pytest.raises(TranscodeError, match="application/octet-stream, not image/"):
        frame_output("image/*", None, EXPLICIT_LE)
    with pytest.raises(TranscodeError, match="not video/"):
        frame_output("video/*", None, JPEG_BASELINE)


def test_a_transfer_syntax_of_another_media_type_is_refused() -> None:
    with pytest.raises(TranscodeError, match="not a transfer syntax of image/jp2"):
        frame_output("image/jp2", JPEG_BASELINE, EXPLICIT_LE)
    with pytest.raises(TranscodeError, match="not a media type for frames"):
        frame_output("text/html", None, EXPLICIT_LE)


def test_one_bit_frames_are_cut_at_bit_offsets() -> None:
    pixels = Pixels(3, 3, 1, 1, 1, 0, "MONOCHROME2", number_of_frames=3)
    bits = np.array([1, 0, 1, 1, 0, 0, 1, 1, 1] + [0] * 9 + [1] * 9, dtype=np.uint8)
    value = np.packbits(bits, bitorder="little").tobytes()
    for i in range(3):
        frame = native_frame(value, i, pixels)
        assert len(frame) == 2
        got = np.unpackbits(np.frombuffer(frame, np.uint8), bitorder="little")[:9]
        np.testing.assert_array_equal(got, bits[i * 9 : (i + 1) * 9])
    with pytest.raises(TranscodeError):
        native_frame(value, 3, pixels)


def test_pixels_of_a_header() -> None:
    ds = make_dataset(rows=10, columns=12, frames=4)
    pixels = Pixels.of(ds)
    assert pixels == Pixels(10, 12, 1, 16, 12, 0, "MONOCHROME2", 0, 4)
    assert pixels.frame_length == 240
    ybr = Pixels(2, 4, 3, 8, 8, 0, "YBR_FULL_422")
    assert ybr.frame_length == 16  # two chroma samples per two pixels
    del ds.Rows
    with pytest.raises(TranscodeError, match="Rows"):
        Pixels.of(ds)


FrameSource = Callable[[int], bytes]
