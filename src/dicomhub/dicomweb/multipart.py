"""Streaming multipart/related: a reader that hands part bytes to a sink, and a writer."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Protocol

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser

from dicomhub.errors import InvalidInput

__all__ = ["MultipartReader", "PartSink", "new_boundary", "part_header"]


class PartSink(Protocol):
    def write(self, data: bytes | memoryview) -> None: ...


class MultipartReader:
    """Feed body chunks; each part's bytes go to the sink `open_part(headers)` returns.

    Completed parts are collected in `completed` (sink, headers) for the caller to process
    between chunks, so that parsing and checking never hold more than one chunk in memory.
    """

    def __init__(self, boundary: str, open_part: Callable[[dict[str, str]], PartSink]) -> None:
        if not boundary or len(boundary) > 200:
            raise InvalidInput("the multipart boundary is missing or too long")
        self._open_part = open_part
        self._headers: dict[str, str] = {}
        self._field = bytearray()
        self._value = bytearray()
        self._sink: PartSink | None = None
        self.completed: list[tuple[PartSink, dict[str, str]]] = []
        self.parts = 0
        self.finished = False
        self._parser = MultipartParser(
            boundary.encode("latin-1"),
            {
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_end": self._on_end,
            },
        )

    def _on_part_begin(self) -> None:
        self._headers = {}
        self._sink = None

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _on_header_end(self) -> None:
        name = self._field.decode("latin-1").strip().lower()
        self._headers[name] = self._value.decode("latin-1").strip()
        self._field.clear()
        self._value.clear()

    def _on_headers_finished(self) -> None:
        self._sink = self._open_part(self._headers)

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        assert self._sink is not None
        self._sink.write(memoryview(data)[start:end])

    def _on_part_end(self) -> None:
        if self._sink is None:  # a part with no header block
            self._sink = self._open_part(self._headers)
        self.completed.append((self._sink, self._headers))
        self._sink = None
        self.parts += 1

    def _on_end(self) -> None:
        self.finished = True

    @property
    def open_sink(self) -> PartSink | None:
        """The sink of a part still being received (to be discarded if the body is cut short)."""
        return self._sink

    def feed(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            raise InvalidInput(f"malformed multipart body: {exc}") from exc

    def close(self) -> None:
        if not self.finished:
            raise InvalidInput(
                "malformed multipart body: it ends before the closing boundary"
                if self.parts or self._sink is not None
                else "malformed multipart body: no part delimited by the boundary was found"
            )


def new_boundary() -> str:
    return f"dicomhub-{secrets.token_hex(12)}"


def part_header(boundary: str, headers: dict[str, str], *, first: bool) -> bytes:
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"{'' if first else chr(13) + chr(10)}--{boundary}\r\n{lines}\r\n".encode("latin-1")


def closing(boundary: str) -> bytes:
    return f"\r\n--{boundary}--\r\n".encode("latin-1")
