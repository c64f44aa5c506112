"""Where each frame of pixel data lies in a Part-10 file, found once at store time (PS3.5 A.4).

The reader is given a binary stream positioned at the first byte of the pixel
data element; it seeks over fragment values instead of reading them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

__all__ = [
    "FrameIndex",
    "PixelDataError",
    "PixelLayout",
    "read_fragments",
    "read_frame_index",
    "trailing_problem",
]

PIXEL_DATA_TAGS = {
    0x7FE00010: "PixelData",
    0x7FE00008: "FloatPixelData",
    0x7FE00009: "DoubleFloatPixelData",
}
_ITEM = 0xFFFEE000
_SEQ_DELIM = 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF

_JPEG_FAMILY = {
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.81",
}
_J2K_FAMILY = {
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.92",
    "1.2.840.10008.1.2.4.93",
    "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.4.203",
}


class PixelDataError(ValueError):
    """The pixel data element is malformed or truncated."""


@dataclass(frozen=True, slots=True)
class PixelLayout:
    """What the header says about the pixel data, enough to cut native frames."""

    transfer_syntax: str
    implicit_vr: bool
    little_endian: bool
    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    number_of_frames: int
    photometric: str = ""
    extended_offsets: tuple[int, ...] | None = None
    extended_lengths: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class FrameIndex:
    """The pixel data element and its frames, each frame a list of (offset, length) byte ranges."""

    tag: int
    vr: str
    value_offset: int
    value_length: int | None  # None when encapsulated (undefined length)
    encapsulated: bool
    frames: tuple[tuple[tuple[int, int], ...], ...] | None  # None when frames cannot be told apart
    problem: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "tag": self.tag,
            "vr": self.vr,
            "offset": self.value_offset,
            "length": self.value_length,
            "encapsulated": self.encapsulated,
            "frames": [[list(r) for r in f] for f in self.frames]
            if self.frames is not None
            else None,
            "problem": self.problem,
        }


def read_frame_index(fp: BinaryIO, file_size: int, layout: PixelLayout) -> FrameIndex:
    """Index the pixel data element at the stream's position; raises PixelDataError if malformed."""
    endian = "<" if layout.little_endian else ">"
    start = fp.tell()
    header = fp.read(8)
    if len(header) < 8:
        raise PixelDataError("file ends inside the pixel data element header")
    group, elem = struct.unpack(f"{endian}HH", header[:4])
    tag = group << 16 | elem
    if tag not in PIXEL_DATA_TAGS:
        raise PixelDataError(f"expected pixel data at byte {start}, found ({group:04X},{elem:04X})")
    vr_bytes = header[4:6]
    # Some writers switch to implicit VR mid-file; pydicom reads such files, so must we.
    if layout.implicit_vr or not (b"AA" <= vr_bytes <= b"ZZ"):
        vr = "OW" if tag == 0x7FE00010 else ("OF" if tag == 0x7FE00008 else "OD")
        (length,) = struct.unpack(f"{endian}L", header[4:8])
    else:
        vr = vr_bytes.decode("ascii")
        if vr in {"OB", "OW", "OF", "OD", "OL", "OV", "UN", "UT", "SQ"}:
            extra = fp.read(4)
            if len(extra) < 4:
                raise PixelDataError("file ends inside the pixel data element header")
            (length,) = struct.unpack(f"{endian}L", extra)
        else:
            (length,) = struct.unpack(f"{endian}H", header[6:8])
    value_offset = fp.tell()
    if length != _UNDEFINED:
        if value_offset + length > file_size:
            raise PixelDataError(
                f"pixel data is truncated: {length} bytes declared, "
                f"{file_size - value_offset} present"
            )
        frames, problem = _native_frames(value_offset, length, layout)
        fp.seek(value_offset + length)
        return FrameIndex(tag, vr, value_offset, length, False, frames, problem)
    fragments, bot = read_fragments(fp, file_size, endian)
    end = fp.tell()
    frames, problem = _group_fragments(fp, fragments, bot, layout)
    fp.seek(end)  # leave the stream after the element, as for native pixel data
    return FrameIndex(tag, vr if vr != "OW" else "OB", value_offset, None, True, frames, problem)


def _native_frames(
    offset: int, length: int, layout: PixelLayout
) -> tuple[tuple[tuple[tuple[int, int], ...], ...] | None, str | None]:
    bits = layout.rows * layout.columns * layout.samples_per_pixel * layout.bits_allocated
    if layout.photometric == "YBR_FULL_422":
        bits = (
            bits * 2 // 3
        )  # two chroma samples are shared by each pair of pixels (PS3.3 C.7.6.3.1.2)
    count = max(layout.number_of_frames, 1)
    if bits == 0:
        return None, "Rows, Columns, SamplesPerPixel or BitsAllocated missing"
    if bits % 8:
        # 1-bit frames need not start on a byte boundary: they are cut from the whole value later.
        return None, "frames are not byte aligned (BitsAllocated 1)"
    frame_len = bits // 8
    if frame_len * count > length:
        return None, f"pixel data holds {length} bytes, {count} frames need {frame_len * count}"
    return tuple(((offset + i * frame_len, frame_len),) for i in range(count)), None


def read_fragments(
    fp: BinaryIO, file_size: int, endian: str = "<"
) -> tuple[list[tuple[int, int]], bytes]:
    """(value offset, length) of each fragment, and the Basic Offset Table bytes; the stream
    is at the Basic Offset Table item (the first byte of the pixel data value)."""
    fragments: list[tuple[int, int]] = []
    bot: bytes | None = None
    while True:
        item_pos = fp.tell()
        header = fp.read(8)
        if len(header) < 8:
            raise PixelDataError("encapsulated pixel data is truncated (no sequence delimiter)")
        group, elem, length = struct.unpack(f"{endian}HHL", header)
        tag = group << 16 | elem
        if tag == _SEQ_DELIM:
            break
        if tag != _ITEM:
            raise PixelDataError(
                f"unexpected ({group:04X},{elem:04X}) at byte {item_pos} in encapsulated pixel data"
            )
        if length == _UNDEFINED:
            raise PixelDataError("a pixel data fragment has undefined length")
        value_pos = item_pos + 8
        if value_pos + length > file_size:
            raise PixelDataError("a pixel data fragment is truncated")
        if bot is None:
            bot = fp.read(length) if length else b""
            if len(bot) < length:
                raise PixelDataError("the Basic Offset Table is truncated")
        else:
            fragments.append((value_pos, length))
            fp.seek(value_pos + length)
    return fragments, bot or b""


def _group_fragments(
    fp: BinaryIO,
    fragments: list[tuple[int, int]],
    bot: bytes,
    layout: PixelLayout,
) -> tuple[tuple[tuple[tuple[int, int], ...], ...] | None, str | None]:
    count = max(layout.number_of_frames, 1)
    if not fragments:
        return None, "encapsulated pixel data holds no fragments"
    first_item = fragments[0][0] - 8
    # Offsets in both tables count from the first fragment's item tag (PS3.5 A.4).
    offsets: list[int] | None = None
    if layout.extended_offsets:
        offsets = list(layout.extended_offsets)
    elif bot:
        if len(bot) % 4:
            return None, "the Basic Offset Table length is not a multiple of 4"
        fmt = ("<" if layout.little_endian else ">") + f"{len(bot) // 4}L"
        offsets = list(struct.unpack(fmt, bot))
    if offsets is not None:
        if len(offsets) != count:
            return None, f"the offset table lists {len(offsets)} frames, the header {count}"
        return _split_at(fragments, [first_item + o for o in offsets])
    if len(fragments) == count:
        return tuple((f,) for f in fragments), None
    if count == 1:
        return (tuple(fragments),), None
    starts = _frame_starts_by_marker(fp, fragments, layout.transfer_syntax)
    if starts is not None and len(starts) == count:
        return _split_at(fragments, [fragments[i][0] - 8 for i in starts])
    return None, f"{len(fragments)} fragments for {count} frames and no offset table"


def _split_at(
    fragments: list[tuple[int, int]], frame_item_positions: list[int]
) -> tuple[tuple[tuple[tuple[int, int], ...], ...] | None, str | None]:
    positions = {pos: i for i, pos in enumerate(frame_item_positions)}
    if len(positions) != len(frame_item_positions):
        return None, "the offset table repeats an offset"
    frames: list[list[tuple[int, int]]] = [[] for _ in frame_item_positions]
    current = -1
    for value_pos, length in fragments:
        index = positions.get(value_pos - 8)
        if index is not None:
            if index != current + 1:
                return None, "the offset table is not in fragment order"
            current = index
        if current < 0:
            return None, "the offset table does not point at the first fragment"
        frames[current].append((value_pos, length))
    if current != len(frame_item_positions) - 1:
        return None, "an offset in the offset table does not point at a fragment"
    return tuple(tuple(f) for f in frames), None


def _frame_starts_by_marker(
    fp: BinaryIO, fragments: list[tuple[int, int]], transfer_syntax: str
) -> list[int] | None:
    """Fragments that open a codestream (JPEG SOI, JPEG 2000 SOC) start a frame."""
    if transfer_syntax in _JPEG_FAMILY:
        marker = b"\xff\xd8"
    elif transfer_syntax in _J2K_FAMILY:
        marker = b"\xff\x4f"
    else:
        return None
    starts = []
    for i, (value_pos, length) in enumerate(fragments):
        if length < 2:
            continue
        fp.seek(value_pos)
        if fp.read(2) == marker:
            starts.append(i)
    if not starts or starts[0] != 0:
        return None
    return starts


_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"UT", b"UC", b"UR", b"SQ"}


def trailing_problem(fp: BinaryIO, file_size: int, layout: PixelLayout) -> str | None:
    """Check the elements after the pixel data (padding, signatures) for a cut-off end.

    Walks element headers from the stream's position; stops, content, at an undefined length.
    """
    endian = "<" if layout.little_endian else ">"
    while (pos := fp.tell()) < file_size:
        header = fp.read(8)
        if len(header) < 8:
            return f"the file ends inside an element header after the pixel data (byte {pos})"
        vr = header[4:6]
        if layout.implicit_vr or not (b"AA" <= vr <= b"ZZ"):
            (length,) = struct.unpack(f"{endian}L", header[4:8])
        elif vr in _LONG_VRS:
            extra = fp.read(4)
            if len(extra) < 4:
                return f"the file ends inside an element header after the pixel data (byte {pos})"
            (length,) = struct.unpack(f"{endian}L", extra)
        else:
            (length,) = struct.unpack(f"{endian}H", header[6:8])
        if length == _UNDEFINED:
            return None
        end = fp.tell() + length
        if end > file_size:
            group, elem = struct.unpack(f"{endian}HH", header[:4])
            return f"the file ends inside ({group:04X},{elem:04X}) after the pixel data"
        fp.seek(end)
    return None
