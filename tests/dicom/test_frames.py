"""The frame index: the byte ranges recorded at store time hold exactly pydicom's frames."""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.encaps import encapsulate, encapsulate_extended, generate_frames
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
)

from dicomhub.dicom.frames import FrameIndex
from dicomhub.dicom.read import NotDicom, ParsedInstance, parse_part10
from tests.dicomfiles import make_dataset, sample_files, to_part10


@contextmanager
def _pydicom_quiet() -> Iterator[None]:
    """pydicom warns about odd files (e.g. an implicit-VR data set in an explicit-VR file).

    The server runs with warnings as warnings; pytest turns them into errors, so the
    sample files are read here as the server reads them.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom\.")
        yield


def _parse_bytes(data: bytes) -> ParsedInstance:
    with _pydicom_quiet():
        return parse_part10(io.BytesIO(data), len(data), lambda path: f"bulk:{path}")


def _parse_file(path: Path) -> ParsedInstance:
    with _pydicom_quiet():
        return _parse_bytes(path.read_bytes())


def _recorded_frames(data: bytes, index: FrameIndex) -> list[bytes]:
    assert index.frames is not None, index.problem
    return [b"".join(data[o : o + n] for o, n in frame) for frame in index.frames]


@dataclass(frozen=True)
class _Sample:
    path: Path
    data: bytes
    parsed: ParsedInstance


def _framed_samples() -> list[_Sample]:
    out = []
    for path in sample_files():
        data = path.read_bytes()
        try:
            parsed = _parse_bytes(data)
        except ValueError:
            continue
        if not parsed.errors and parsed.frames is not None and parsed.frames.frames is not None:
            out.append(_Sample(path, data, parsed))
    return out


FRAMED = _framed_samples()


def _pydicom_frames(sample: _Sample) -> list[bytes]:
    """The frames as pydicom cuts them, independently of dicomhub's index."""
    with _pydicom_quiet():
        ds = dcmread(io.BytesIO(sample.data))
    index = sample.parsed.frames
    assert index is not None
    value = ds[index.tag].value
    count = sample.parsed.number_of_frames
    if index.encapsulated:
        return list(generate_frames(value, number_of_frames=count))
    frame_len = ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated // 8
    if ds.PhotometricInterpretation == "YBR_FULL_422":
        frame_len = frame_len * 2 // 3
    return [value[i * frame_len : (i + 1) * frame_len] for i in range(count)]


def test_the_framed_sample_set_covers_every_layout() -> None:
    # ~150 of the sample files have indexed frames; a parser regression would shrink the set.
    assert len(FRAMED) > 140
    encapsulated = [s for s in FRAMED if s.parsed.frames and s.parsed.frames.encapsulated]
    native = [s for s in FRAMED if s.parsed.frames and not s.parsed.frames.encapsulated]
    assert len(encapsulated) > 40 and len(native) > 40
    assert any(s.parsed.number_of_frames > 1 for s in encapsulated)
    assert any(s.parsed.number_of_frames > 1 for s in native)
    assert any(s.parsed.transfer_syntax == ExplicitVRBigEndian for s in native)
    assert any(s.parsed.transfer_syntax == ImplicitVRLittleEndian for s in native)


def test_every_sample_with_pixel_data_gets_a_frame_index() -> None:
    """Storable samples whose pixel data pydicom sees are indexed (deflated files cannot be)."""
    unindexed = []
    for path in sample_files():
        data = path.read_bytes()
        try:
            parsed = _parse_bytes(data)
        except ValueError:
            continue
        if parsed.errors or parsed.transfer_syntax == DeflatedExplicitVRLittleEndian:
            continue
        with _pydicom_quiet():
            ds = dcmread(io.BytesIO(data))
        has_pixels = any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
        indexed = parsed.frames is not None and parsed.frames.frames is not None
        if has_pixels != indexed:
            problem = parsed.frames.problem if parsed.frames else "no index"
            unindexed.append((path.name, has_pixels, problem))
    assert unindexed == []


@pytest.mark.parametrize("sample", FRAMED, ids=[s.path.name for s in FRAMED])
def test_sample_frames_equal_pydicoms(sample: _Sample) -> None:
    index = sample.parsed.frames
    assert index is not None
    expected = _pydicom_frames(sample)
    assert len(expected) == sample.parsed.number_of_frames
    assert _recorded_frames(sample.data, index) == expected
    # The metadata names the pixel data by a BulkDataURI, never inline.
    key = f"{index.tag:08X}"
    assert sample.parsed.metadata[key] == {"vr": index.vr, "BulkDataURI": f"bulk:{key}"}


# --- built files: every way frames can be laid out -----------------------------------------


def _jpeg_like(i: int, size: int = 40) -> bytes:
    """A stand-in codestream: SOI, filler that holds no marker, EOI (even length)."""
    return b"\xff\xd8" + bytes([(i * 7 + 1) % 200 + 1]) * (size - 4) + b"\xff\xd9"


def _j2k_like(i: int, size: int = 40) -> bytes:
    return b"\xff\x4f\xff\x51" + bytes([(i * 5 + 3) % 200 + 1]) * (size - 6) + b"\xff\xd9"


def _rle_like(i: int, size: int = 48) -> bytes:
    # An RLE frame starts with its segment header, never with a JPEG marker.
    return struct.pack("<2L", 1, 64) + bytes([i + 10]) * (size - 8)


def _encapsulated_file(
    frames: list[bytes],
    transfer_syntax: str,
    *,
    fragments_per_frame: int = 1,
    bot: bool = False,
    extended: bool = False,
) -> bytes:
    ds = make_dataset(rows=4, columns=4, frames=len(frames))
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    if extended:
        pixel_data, eot, eotl = encapsulate_extended(frames)
        if fragments_per_frame > 1:
            # pydicom writes one fragment per frame; split each frame and list the frame starts.
            pixel_data = encapsulate(frames, fragments_per_frame, has_bot=False)
            offsets, pos = [], 0
            for frame in frames:
                offsets.append(pos)
                pos += len(frame) + 8 * fragments_per_frame
            eot = struct.pack(f"<{len(frames)}Q", *offsets)
            eotl = struct.pack(f"<{len(frames)}Q", *(len(f) for f in frames))
        ds.ExtendedOffsetTable = eot
        ds.ExtendedOffsetTableLengths = eotl
    else:
        pixel_data = encapsulate(frames, fragments_per_frame, has_bot=bot)
    ds.PixelData = pixel_data
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return to_part10(ds, transfer_syntax)


def _check_built(
    data: bytes, frames: list[bytes], fragments: int, *, pydicom_too: bool = True
) -> ParsedInstance:
    parsed = _parse_bytes(data)
    assert parsed.errors == [], parsed.errors
    assert parsed.warnings == [], parsed.warnings
    index = parsed.frames
    assert index is not None and index.encapsulated and index.problem is None
    assert index.frames is not None
    assert [len(f) for f in index.frames] == [fragments] * len(frames)
    recorded = _recorded_frames(data, index)
    assert recorded == frames
    if not pydicom_too:
        return parsed
    ds = dcmread(io.BytesIO(data))
    eot = None
    if "ExtendedOffsetTable" in ds:
        eot = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    assert (
        list(generate_frames(ds.PixelData, number_of_frames=len(frames), extended_offsets=eot))
        == recorded
    )
    return parsed


@pytest.mark.parametrize("fragments", [1, 3])
def test_basic_offset_table(fragments: int) -> None:
    # RLE has no start-of-frame marker: only the table can tell frames apart.
    frames = [_rle_like(i) for i in range(4)]
    data = _encapsulated_file(frames, RLELossless, fragments_per_frame=fragments, bot=True)
    _check_built(data, frames, fragments)


def test_extended_offset_table() -> None:
    frames = [_rle_like(i, size=64 + 16 * i) for i in range(3)]
    data = _encapsulated_file(frames, RLELossless, extended=True)
    ds = dcmread(io.BytesIO(data))
    assert "ExtendedOffsetTable" in ds and ds.PixelData[4:8] == b"\0\0\0\0"  # empty BOT
    _check_built(data, frames, 1)


def test_extended_offset_table_with_several_fragments_per_frame() -> None:
    """PS3.5 A.4 wants one fragment per frame with an EOT; a writer that splits frames anyway
    is still indexed by the table (pydicom's generate_frames would cut such frames wrongly)."""
    frames = [_rle_like(i, size=64 + 16 * i) for i in range(3)]
    data = _encapsulated_file(frames, RLELossless, fragments_per_frame=2, extended=True)
    _check_built(data, frames, 2, pydicom_too=False)


def test_an_extended_offset_table_is_read() -> None:
    # One fragment per frame would index the same without a table: a wrong count shows it is used.
    frames = [_rle_like(i) for i in range(3)]
    ds = make_dataset(rows=4, columns=4, frames=3)
    pixel_data, eot, eotl = encapsulate_extended(frames)
    ds.ExtendedOffsetTable = eot[:16]
    ds.ExtendedOffsetTableLengths = eotl[:16]
    ds.PixelData = pixel_data
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    parsed = _parse_bytes(to_part10(ds, RLELossless))
    assert parsed.frames is not None and parsed.frames.frames is None
    assert parsed.frames.problem == "the offset table lists 2 frames, the header 3"


@pytest.mark.parametrize(
    ("transfer_syntax", "make"),
    [(JPEGBaseline8Bit, _jpeg_like), (JPEG2000Lossless, _j2k_like)],
    ids=["jpeg-soi", "j2k-soc"],
)
def test_several_fragments_per_frame_without_a_table(
    transfer_syntax: str, make: Callable[[int, int], bytes]
) -> None:
    frames = [make(i, 60) for i in range(3)]
    data = _encapsulated_file(frames, transfer_syntax, fragments_per_frame=3)
    _check_built(data, frames, 3)


def test_one_fragment_per_frame_without_a_table() -> None:
    frames = [_rle_like(i) for i in range(5)]
    data = _encapsulated_file(frames, RLELossless)
    _check_built(data, frames, 1)


def test_one_frame_in_several_fragments() -> None:
    frames = [_rle_like(0, size=96)]
    data = _encapsulated_file(frames, RLELossless, fragments_per_frame=4)
    _check_built(data, frames, 4)


def test_fragments_that_cannot_be_told_apart_are_a_warning() -> None:
    frames = [_rle_like(i) for i in range(3)]
    data = _encapsulated_file(frames, RLELossless, fragments_per_frame=2)
    parsed = _parse_bytes(data)
    assert parsed.errors == []
    assert parsed.frames is not None and parsed.frames.frames is None
    assert parsed.frames.problem == "6 fragments for 3 frames and no offset table"
    assert [w.attribute for w in parsed.warnings] == ["PixelData"]
    assert "frames not indexed" in parsed.warnings[0].message
    # The element itself is still known: the whole value can be served.
    assert parsed.metadata["7FE00010"] == {"vr": "OB", "BulkDataURI": "bulk:7FE00010"}


def test_an_offset_table_for_the_wrong_number_of_frames_is_a_warning() -> None:
    frames = [_rle_like(i) for i in range(3)]
    ds = make_dataset(rows=4, columns=4, frames=2)  # the header says 2, the table lists 3
    ds.PixelData = encapsulate(frames, has_bot=True)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    parsed = _parse_bytes(to_part10(ds, RLELossless))
    assert parsed.errors == []
    assert parsed.frames is not None and parsed.frames.frames is None
    assert parsed.frames.problem == "the offset table lists 3 frames, the header 2"


def test_native_multiframe_and_ybr_full_422() -> None:
    ds = make_dataset(rows=6, columns=4, frames=3)
    data = to_part10(ds)
    parsed = _parse_bytes(data)
    assert parsed.frames is not None and not parsed.frames.encapsulated
    assert _recorded_frames(data, parsed.frames) == [
        ds.PixelData[i * 48 : (i + 1) * 48] for i in range(3)
    ]

    ybr = make_dataset(rows=4, columns=4, frames=2)
    ybr.SamplesPerPixel = 3
    ybr.PhotometricInterpretation = "YBR_FULL_422"
    ybr.PlanarConfiguration = 0
    ybr.BitsAllocated, ybr.BitsStored, ybr.HighBit = 8, 8, 7
    # 4x4 pixels of 2 luminance + 1 shared chroma pair per 2 pixels: 32 bytes per frame.
    ybr.PixelData = bytes(range(64))
    data = to_part10(ybr)
    parsed = _parse_bytes(data)
    assert parsed.frames is not None
    assert _recorded_frames(data, parsed.frames) == [bytes(range(32)), bytes(range(32, 64))]


def test_float_pixel_data() -> None:
    ds = make_dataset(rows=3, columns=2, frames=2, sop_class="1.2.840.10008.5.1.4.1.1.30")
    del ds.PixelData
    del ds.BitsStored, ds.HighBit, ds.PixelRepresentation
    ds.BitsAllocated = 32
    values = np.arange(12, dtype="<f4")
    ds.FloatPixelData = values.tobytes()
    data = to_part10(ds)
    parsed = _parse_bytes(data)
    assert parsed.errors == []
    assert parsed.frames is not None and parsed.frames.tag == 0x7FE00008
    assert parsed.frames.vr == "OF"
    assert _recorded_frames(data, parsed.frames) == [values[:6].tobytes(), values[6:].tobytes()]
    assert parsed.metadata["7FE00008"] == {"vr": "OF", "BulkDataURI": "bulk:7FE00008"}


def test_big_endian_native_frames() -> None:
    ds = make_dataset(rows=2, columns=2, frames=2)
    data = to_part10(ds, ExplicitVRBigEndian)
    parsed = _parse_bytes(data)
    assert parsed.errors == []
    assert parsed.frames is not None
    value = dcmread(io.BytesIO(data)).PixelData
    assert len(value) == 16
    assert _recorded_frames(data, parsed.frames) == [value[:8], value[8:]]


# --- truncation -------------------------------------------------------------------------------


def _errors(data: bytes) -> list[str]:
    return [f.message for f in _parse_bytes(data).errors]


def test_truncated_native_pixel_data_is_an_error() -> None:
    data = to_part10(make_dataset(rows=16, columns=16))
    errors = _errors(data[:-100])
    assert errors == ["pixel data is truncated: 512 bytes declared, 412 present"]


def test_truncated_encapsulated_pixel_data_is_an_error() -> None:
    frames = [_jpeg_like(i, size=200) for i in range(2)]
    data = _encapsulated_file(frames, JPEGBaseline8Bit, bot=True)
    # Cut inside the last fragment, then just before the sequence delimiter, then in the BOT.
    assert _errors(data[:-20]) == ["a pixel data fragment is truncated"]
    assert _errors(data[:-8]) == ["encapsulated pixel data is truncated (no sequence delimiter)"]
    bot_end = data.index(b"\xfe\xff\x00\xe0") + 10
    assert "truncated" in " ".join(_errors(data[:bot_end]))


@pytest.mark.parametrize("transfer_syntax", [ExplicitVRLittleEndian, ExplicitVRBigEndian])
def test_the_pixel_data_header_cut_short_is_an_error(transfer_syntax: str) -> None:
    data = to_part10(make_dataset(rows=4, columns=4), transfer_syntax)
    tag = b"\xe0\x7f\x10\x00" if transfer_syntax == ExplicitVRLittleEndian else b"\x7f\xe0\x00\x10"
    start = data.rindex(tag)
    for cut in range(2, 12):
        # pydicom itself fails on a header cut after the VR; before that it reads no element.
        try:
            errors = _errors(data[: start + cut])
        except NotDicom:
            assert cut >= 8
            continue
        assert errors == ["file ends inside the pixel data element header"], cut
    for cut in (12, 13):
        assert "pixel data is truncated" in " ".join(_errors(data[: start + cut]))


@pytest.mark.parametrize("transfer_syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_a_file_without_pixel_data_has_no_index(transfer_syntax: str) -> None:
    ds = make_dataset()
    del ds.PixelData
    parsed = _parse_bytes(to_part10(ds, transfer_syntax))
    assert parsed.errors == [] and parsed.frames is None
    assert "7FE00010" not in parsed.metadata


def test_frames_in_dataset_order() -> None:
    """Built frames of different sizes: a mix-up of frame order would show."""
    frames = [_jpeg_like(i, size=20 + 10 * i) for i in range(5)]
    data = _encapsulated_file(frames, JPEGBaseline8Bit)
    parsed = _check_built(data, frames, 1)
    assert parsed.number_of_frames == 5
    assert isinstance(parsed.frames, FrameIndex) and parsed.frames.frames is not None
    assert parsed.frames.to_json()["frames"] == [[list(r) for r in f] for f in parsed.frames.frames]
