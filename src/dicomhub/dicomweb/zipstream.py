"""application/zip retrieve: stored files streamed as a ZIP archive (STORED, ZIP64 when needed).

Entries are STORED, not deflated: DICOM pixel data is mostly compressed already or barely
compressible, so deflate would cost CPU for little, and STORED lets the archive's exact size be
known before the first byte (Content-Length, so downloads show progress). Each entry's CRC-32 is
computed before its local header is sent, so every header is complete (no data descriptors):
streaming unzippers and Java's ZipInputStream, which cannot read STORED entries with data
descriptors, read these archives too. An entry up to 4 MiB is read once into one buffer; a larger
one is read twice (CRC, then send) chunk by chunk, so memory stays bounded whatever the study.
"""

from __future__ import annotations

import asyncio
import struct
import zlib
from collections.abc import AsyncIterator, Generator, Sequence
from dataclasses import dataclass
from datetime import datetime

from anyio import to_thread
from starlette.responses import StreamingResponse

from dicomhub.storage.blobs.base import BlobStore

__all__ = ["ZipLayout", "ZipMember", "zip_response"]

_CHUNK = 4 * 1024 * 1024
# ZIP64 fields past 2 GiB - 1 rather than 4 GiB - 1, as Python's zipfile does: some readers
# take the 32-bit fields as signed.
SIZE_LIMIT = 0x7FFFFFFF
_COUNT_LIMIT = 0xFFFF
_MASK32 = 0xFFFFFFFF
_VERSION = 20  # 2.0: STORED entries in folders
_VERSION_ZIP64 = 45
_MADE_BY = (3 << 8) | _VERSION_ZIP64  # Unix, so the external attributes below are permissions
_FILE_MODE = 0o100644 << 16

_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_END = struct.Struct("<IHHHHIIH")
_END64 = struct.Struct("<IQHHIIQQQQ")
_LOCATOR64 = struct.Struct("<IIQI")
_ZIP64_EXTRA_ID = 0x0001


def _dos_time(when: datetime) -> tuple[int, int]:
    when = max(when, datetime(1980, 1, 1))
    date = ((when.year - 1980) << 9) | (when.month << 5) | when.day
    time = (when.hour << 11) | (when.minute << 5) | (when.second // 2)
    return time, date


class ZipLayout:
    """Where each entry of an archive of known names and sizes goes, before any byte is read.

    The records are placed per APPNOTE 6.3 (4.3.7 local header, 4.3.12 central directory,
    4.3.14-16 ZIP64 end records, 4.5.3 ZIP64 extra field).
    """

    def __init__(
        self,
        members: Sequence[tuple[str, int]],
        *,
        when: datetime | None = None,
        size_limit: int = SIZE_LIMIT,  # tests lower it to check ZIP64 with small files
    ) -> None:
        self._names = [name.encode("ascii") for name, _ in members]  # UIDs: no UTF-8 flag
        self._sizes = [size for _, size in members]
        self._limit = size_limit
        self._time, self._date = _dos_time(when or datetime.now())
        self.offsets: list[int] = []
        position = 0
        for i, size in enumerate(self._sizes):
            self.offsets.append(position)
            position += self.header_size(i) + size
        self.directory_offset = position
        self.size = position + len(self.directory([0] * len(self._sizes)))

    def __len__(self) -> int:
        return len(self._sizes)

    def header_size(self, i: int) -> int:
        return _LOCAL.size + len(self._names[i]) + (20 if self._sizes[i] > self._limit else 0)

    def header(self, i: int, crc: int) -> bytes:
        """The local file header of entry `i`; its content follows it."""
        name, size = self._names[i], self._sizes[i]
        zip64 = size > self._limit
        extra = struct.pack("<HHQQ", _ZIP64_EXTRA_ID, 16, size, size) if zip64 else b""
        stored = _MASK32 if zip64 else size
        version = _VERSION_ZIP64 if zip64 else _VERSION
        fixed = _LOCAL.pack(
            0x04034B50, version, 0, 0, self._time, self._date, crc, stored, stored,
            len(name), len(extra),
        )  # fmt: skip
        return fixed + name + extra

    def directory(self, crcs: Sequence[int]) -> bytes:
        """Central directory and end records: the last bytes of the archive."""
        out = bytearray()
        for name, size, offset, crc in zip(
            self._names, self._sizes, self.offsets, crcs, strict=True
        ):
            big_size, big_offset = size > self._limit, offset > self._limit
            # Only the fields that overflow go into the ZIP64 extra field, in this order.
            values = ([size, size] if big_size else []) + ([offset] if big_offset else [])
            extra = (
                struct.pack(f"<HH{len(values)}Q", _ZIP64_EXTRA_ID, 8 * len(values), *values)
                if values
                else b""
            )
            out += _CENTRAL.pack(
                0x02014B50, _MADE_BY, _VERSION_ZIP64 if values else _VERSION, 0, 0,
                self._time, self._date, crc,
                _MASK32 if big_size else size, _MASK32 if big_size else size,
                len(name), len(extra), 0, 0, 0, _FILE_MODE,
                _MASK32 if big_offset else offset,
            )  # fmt: skip
            out += name + extra
        start, length, count = self.directory_offset, len(out), len(self._names)
        if count >= _COUNT_LIMIT or length > self._limit or start > self._limit:
            end64 = start + length
            out += _END64.pack(
                0x06064B50, _END64.size - 12, _MADE_BY, _VERSION_ZIP64, 0, 0,
                count, count, length, start,
            )  # fmt: skip
            out += _LOCATOR64.pack(0x07064B50, 0, end64, 1)
        out += _END.pack(
            0x06054B50, 0, 0, min(count, _COUNT_LIMIT), min(count, _COUNT_LIMIT),
            _MASK32 if length > self._limit else length,
            _MASK32 if start > self._limit else start,
            0,
        )  # fmt: skip
        return bytes(out)


@dataclass(frozen=True, slots=True)
class ZipMember:
    """An entry: its name in the archive and the blob holding it (a whole stored file)."""

    name: str
    blob_id: str
    size: int


def _short(blob_id: str) -> OSError:
    return OSError(f"blob {blob_id} is shorter than its index says")


def _whole(
    blobs: BlobStore, layout: ZipLayout, i: int, member: ZipMember
) -> tuple[memoryview, int]:
    """Header and content in one buffer (one send, no copy); the header is filled in last."""
    head = layout.header_size(i)
    view = memoryview(bytearray(head + member.size))
    with blobs.open(member.blob_id) as fh:
        if fh.readinto(view[head:]) != member.size:  # type: ignore[attr-defined]
            raise _short(member.blob_id)
    crc = zlib.crc32(view[head:])
    view[:head] = layout.header(i, crc)
    return view, crc


def _checksum(blobs: BlobStore, member: ZipMember) -> int:
    crc = 0
    for data in _chunks(blobs, member):
        crc = zlib.crc32(data, crc)
    return crc


def _chunks(blobs: BlobStore, member: ZipMember) -> Generator[bytes, None, None]:
    left = member.size
    with blobs.open(member.blob_id) as fh:
        while left:
            data = fh.read(min(_CHUNK, left))
            if not data:
                raise _short(member.blob_id)
            left -= len(data)
            yield data


def zip_response(
    blobs: BlobStore, members: Sequence[ZipMember], filename: str
) -> StreamingResponse:
    """The archive as a download, with its exact Content-Length; the next entry is read ahead."""
    layout = ZipLayout([(m.name, m.size) for m in members])
    loop = asyncio.get_running_loop()

    def load(i: int) -> asyncio.Future[tuple[memoryview, int]] | None:
        if i >= len(members) or members[i].size > _CHUNK:
            return None
        return loop.run_in_executor(None, _whole, blobs, layout, i, members[i])

    async def body() -> AsyncIterator[bytes | memoryview]:
        crcs = [0] * len(members)
        ahead = load(0)
        try:
            for i, member in enumerate(members):
                current, ahead = ahead, load(i + 1)
                if current is not None:
                    view, crcs[i] = await current
                    yield view
                    continue
                crcs[i] = await to_thread.run_sync(_checksum, blobs, member)
                yield layout.header(i, crcs[i])
                chunks = _chunks(blobs, member)
                try:
                    while (chunk := await to_thread.run_sync(next, chunks, None)) is not None:
                        yield chunk
                finally:
                    chunks.close()
            yield layout.directory(crcs)
        finally:
            if ahead is not None:
                ahead.cancel()

    return StreamingResponse(
        body(),
        media_type="application/zip",
        headers={
            "Content-Length": str(layout.size),
            "Content-Disposition": f'attachment; filename="{filename}"',
        },
    )
