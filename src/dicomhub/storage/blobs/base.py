"""The blob store interface: opaque ids in, bytes out; nothing about DICOM or patients."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from typing import BinaryIO, Protocol

__all__ = ["BlobStore", "BlobWriter", "new_blob_id", "read_ranges"]


def new_blob_id() -> str:
    """128 random bits: names carry no patient data, no UIDs and no order."""
    return secrets.token_hex(16)


def read_ranges(fh: BinaryIO, ranges: Iterable[tuple[int, int]], blob_id: str) -> bytes:
    """The bytes at (offset, length) `ranges` of an open blob, joined; OSError if it is short."""
    chunks = []
    for offset, length in ranges:
        fh.seek(offset)
        data = fh.read(length)
        if len(data) < length:
            raise OSError(f"blob {blob_id} is shorter than its index says")
        chunks.append(data)
    return b"".join(chunks)


class BlobWriter(Protocol):
    """An open, staged blob. Staged blobs are invisible until `promote`."""

    blob_id: str
    size: int

    def write(self, data: bytes | memoryview) -> None: ...

    def close(self) -> None:
        """End writing: the bytes can be read back, but are not yet durable."""

    def seal(self) -> None:
        """End writing, ready for sync() from another thread (which releases what it keeps)."""

    def sync(self) -> None:
        """Make the staged bytes durable (fsync); any thread, after close() or seal()."""

    def sync_name(self) -> None:
        """Make the staged blob's name durable; any thread, may run alongside sync()."""

    def finish(self) -> None:
        """close(), sync() and sync_name()."""

    def reader(self) -> BinaryIO:
        """Read the staged bytes back (for parsing before the index commit)."""

    def abort(self) -> None:
        """Drop the staged bytes."""


class BlobStore(Protocol):
    """Staging protects the index: bytes are durable before the index commits, visible after."""

    def stage(self) -> BlobWriter: ...

    def promote(self, blob_id: str) -> None:
        """Make a staged blob permanent; called after the index commit that references it."""

    def open(self, blob_id: str) -> BinaryIO: ...

    def delete(self, blob_id: str) -> bool:
        """Remove a blob; False (ask again later) while it is staged and not yet promoted."""

    def exists(self, blob_id: str) -> bool: ...

    def recover(self, referenced: Callable[[list[str]], Iterable[str]]) -> tuple[int, int]:
        """Promote leftover staged blobs that `referenced` names, delete the rest; (promoted, deleted)."""

    def close(self) -> None: ...
