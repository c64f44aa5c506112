"""Streaming stored bytes out: single parts and multipart/related bodies of blob byte ranges."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from dataclasses import dataclass

from anyio import to_thread
from starlette.responses import Response, StreamingResponse

from dicomhub.dicomweb.multipart import closing, new_boundary, part_header
from dicomhub.storage.blobs.base import BlobStore

__all__ = [
    "LazyPart",
    "Part",
    "generated_response",
    "multipart_bytes",
    "multipart_response",
    "single_response",
    "streamed_multipart_response",
]

# Parts up to this size are read whole, with their header, into one buffer (one send each);
# larger ones stream in chunks of this size.
_CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Part:
    """A part's headers and its content: byte ranges of a blob, or bytes in hand."""

    headers: dict[str, str]
    blob_id: str | None = None
    ranges: tuple[tuple[int, int], ...] = ()
    data: bytes | None = None

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else sum(n for _, n in self.ranges)


def _chunks(
    blobs: BlobStore, blob_id: str, ranges: Sequence[tuple[int, int]]
) -> Generator[bytes, None, None]:
    """Byte ranges of a blob in chunks; the file is closed before the last chunk is handed out."""
    plan = [
        (offset + start, min(_CHUNK, length - start))
        for offset, length in ranges
        for start in range(0, length, _CHUNK)
    ]
    fh = blobs.open(blob_id)
    try:
        for i, (offset, length) in enumerate(plan):
            fh.seek(offset)
            data = fh.read(length)
            if len(data) < length:
                raise OSError(f"blob {blob_id} is shorter than its index says")
            if i == len(plan) - 1:
                fh.close()
            yield data
    finally:
        fh.close()


async def _stream(blobs: BlobStore, part: Part) -> AsyncIterator[bytes]:
    if part.data is not None:
        yield part.data
        return
    assert part.blob_id is not None
    # One thread hop per chunk, open and close included.
    chunks = _chunks(blobs, part.blob_id, part.ranges)
    try:
        while (chunk := await to_thread.run_sync(next, chunks, None)) is not None:
            yield chunk
    finally:
        # No thread needed: after the last chunk the file is already closed, and a client gone
        # mid-stream leaves a regular file to close (a quick syscall). run_sync does not
        # abandon its thread on cancellation, so the generator is never running here.
        chunks.close()


def _whole(blobs: BlobStore, head: bytes, part: Part) -> memoryview:
    """The part's header and content in one buffer: one send, no copy when it is written."""
    buf = bytearray(len(head) + part.size)
    buf[: len(head)] = head
    view = memoryview(buf)
    if part.data is not None:
        view[len(head) :] = part.data
        return view
    assert part.blob_id is not None
    pos = len(head)
    with blobs.open(part.blob_id) as fh:
        for offset, length in part.ranges:
            fh.seek(offset)
            if fh.readinto(view[pos : pos + length]) != length:  # type: ignore[attr-defined]
                raise OSError(f"blob {part.blob_id} is shorter than its index says")
            pos += length
    return view


def part_bytes(blobs: BlobStore, part: Part) -> bytes | memoryview:
    """A part's content in one buffer (a blocking read: call it in a worker thread)."""
    return part.data if part.data is not None else _whole(blobs, b"", part)


def single_response(blobs: BlobStore, part: Part, media_type: str) -> StreamingResponse:
    headers = {"Content-Length": str(part.size)}
    return StreamingResponse(_stream(blobs, part), media_type=media_type, headers=headers)


def multipart_response(
    blobs: BlobStore, parts: Sequence[Part], part_type: str
) -> StreamingResponse:
    """multipart/related with a Content-Length (so no chunked framing) and read-ahead.

    While one part is being sent, the next is read in a worker thread.
    """
    boundary = new_boundary()
    heads = [part_header(boundary, p.headers, first=i == 0) for i, p in enumerate(parts)]
    tail = closing(boundary)
    length = sum(len(h) + p.size for h, p in zip(heads, parts, strict=True)) + len(tail)
    loop = asyncio.get_running_loop()

    def load(i: int) -> asyncio.Future[memoryview] | None:
        if parts[i].size > _CHUNK:
            return None
        return loop.run_in_executor(None, _whole, blobs, heads[i], parts[i])

    async def body() -> AsyncIterator[bytes | memoryview]:
        ahead = load(0) if parts else None
        try:
            for i, part in enumerate(parts):
                current, ahead = ahead, (load(i + 1) if i + 1 < len(parts) else None)
                if current is not None:
                    yield await current
                    continue
                yield heads[i]
                async for chunk in _stream(blobs, part):
                    yield chunk
            yield tail
        finally:
            if ahead is not None:
                ahead.cancel()

    return StreamingResponse(
        body(),
        media_type=f'multipart/related; type="{part_type}"; boundary={boundary}',
        headers={"Content-Length": str(length)},
    )


@dataclass(frozen=True, slots=True)
class LazyPart:
    """A part made while it is sent: `open()` (run in a worker thread) returns its chunks."""

    headers: dict[str, str]
    open: Callable[[], Iterator[bytes]]


async def _generated(open_chunks: Callable[[], Iterator[bytes]]) -> AsyncIterator[bytes]:
    chunks = await to_thread.run_sync(open_chunks)
    try:
        while (chunk := await to_thread.run_sync(next, chunks, None)) is not None:
            yield chunk
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()  # a generator paused between chunks: closing runs its cleanup here


def generated_response(chunks: Iterator[bytes], media_type: str) -> StreamingResponse:
    """A body made chunk by chunk in worker threads; its length is not known up front."""
    return StreamingResponse(_generated(lambda: chunks), media_type=media_type)


def streamed_multipart_response(
    blobs: BlobStore, parts: Sequence[Part | LazyPart], part_type: str
) -> StreamingResponse:
    """multipart/related whose parts may be made while sending (chunked, no Content-Length)."""
    boundary = new_boundary()

    async def body() -> AsyncIterator[bytes]:
        for i, part in enumerate(parts):
            yield part_header(boundary, part.headers, first=i == 0)
            if isinstance(part, LazyPart):
                async for chunk in _generated(part.open):
                    yield chunk
            else:
                async for chunk in _stream(blobs, part):
                    yield chunk
        yield closing(boundary)

    return StreamingResponse(
        body(), media_type=f'multipart/related; type="{part_type}"; boundary={boundary}'
    )


def multipart_bytes(parts: Sequence[tuple[dict[str, str], bytes]], part_type: str) -> Response:
    """A multipart/related body already in memory: one buffer, one send."""
    boundary = new_boundary()
    pieces: list[bytes] = []
    for i, (headers, data) in enumerate(parts):
        pieces += (part_header(boundary, headers, first=i == 0), data)
    pieces.append(closing(boundary))
    return Response(
        b"".join(pieces),
        media_type=f'multipart/related; type="{part_type}"; boundary={boundary}',
    )
