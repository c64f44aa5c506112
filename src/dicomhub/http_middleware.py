"""Pure ASGI middlewares: HEAD as GET, gzip for JSON bodies only, CORS, and
Cross-Origin-Resource-Policy.

Pure ASGI (not BaseHTTPMiddleware): each one wraps `send` and looks at the response headers
once, so frames and files pass through with one extra function call per message.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

from anyio import to_thread
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "ALLOWED_HEADERS",
    "EXPOSED_HEADERS",
    "RECEIVED_METHOD",
    "CrossOriginResourcePolicy",
    "HeadAsGet",
    "JSONGzip",
    "accepts_gzip",
    "install",
    "received_method",
]

# JSON is highly redundant (DICOM JSON metadata shrinks ~10x); DICOM files, frames and images
# are compressed already or large binary, where gzip costs CPU and saves little.
JSON_TYPES = frozenset({"application/json", "application/dicom+json", "application/fhir+json"})
# Below about one TCP segment compression saves no round trip.
MINIMUM_SIZE = 1024
# zlib's fast levels (1-3) run at hundreds of MB/s; on the metadata of a 500-instance CT series
# (7.5 MB) level 3 gave 36x where level 1 gave 18x at the same speed, and level 6 75x at half
# the speed: 3 keeps the hot path cheap.
LEVEL = 3
# Chunks larger than this are compressed in a worker thread (zlib releases the GIL), so a big
# metadata page does not hold up the event loop.
_THREAD_ABOVE = 256 * 1024
_NOT_COMPRESSED = frozenset({204, 206, 304})

# What browsers may send to and read from the DICOMweb and FHIR routes of another origin.
ALLOWED_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS")
ALLOWED_HEADERS = (
    "Accept",
    "Authorization",
    "Content-Type",
    "If-Match",
    "If-None-Match",
    "If-None-Exist",
    "Prefer",
)
EXPOSED_HEADERS = (
    "Content-Disposition",
    "Content-Length",
    "Content-Location",
    "Content-Type",
    "ETag",
    "Last-Modified",
    "Location",
    "Warning",
)


def _accepts_gzip(scope: Scope) -> bool:
    header = b""
    for name, value in scope["headers"]:
        if name == b"accept-encoding":
            header += value + b","
    return accepts_gzip(header.decode("latin-1"))


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Accept-Encoding allows gzip: listed (or `*`) with a non-zero quality (RFC 9110 12.5.3)."""
    star = False
    for item in (accept_encoding or "").lower().split(","):
        coding, _, params = item.partition(";")
        coding = coding.strip()
        q = 1.0
        for param in params.split(";"):
            key, _, val = param.partition("=")
            if key.strip() == "q":
                try:
                    q = float(val)
                except ValueError:
                    q = 0.0
        if coding in ("gzip", "x-gzip"):
            return q > 0
        if coding == "*":
            star = q > 0
    return star


def _with_vary(headers: list[tuple[bytes, bytes]], token: bytes) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    found = False
    for name, value in headers:
        if name.lower() == b"vary":
            found = True
            if token.lower() not in {v.strip().lower() for v in value.split(b",")}:
                out.append((name, value + b", " + token))
                continue
        out.append((name, value))
    if not found:
        out.append((b"vary", token))
    return out


class JSONGzip:
    """Gzip JSON responses for clients that accept it; everything else passes through untouched.

    A body known to be small is sent as it is; a streamed one is buffered until it reaches
    MINIMUM_SIZE, then compressed chunk by chunk (each chunk flushed, so streaming stays
    streaming). ETags are left as they are (as Starlette's GZipMiddleware does): a 304, which
    has no body to compress, then carries the same tag as the 200 it stands for, and caches keep
    the two encodings apart by `Vary: Accept-Encoding`.
    """

    def __init__(self, app: ASGIApp, minimum_size: int = MINIMUM_SIZE, level: int = LEVEL) -> None:
        self.app = app
        self.minimum_size = minimum_size
        self.level = level

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, _GzipSend(send, _accepts_gzip(scope), self).send)


class _GzipSend:
    def __init__(self, send: Send, accepted: bool, config: JSONGzip) -> None:
        self._send = send
        self._accepted = accepted
        self._config = config
        self._state = "start"  # start | passthrough | deciding | compressing
        self._start: Message = {}
        self._buffer = bytearray()
        self._deflate: zlib._Compress | None = None

    async def send(self, message: Message) -> None:
        if self._state == "passthrough":
            await self._send(message)
        elif self._state == "start":
            await self._on_start(message)
        elif message["type"] != "http.response.body":
            # e.g. a path-send extension message: give up on compressing this one
            self._state = "passthrough"
            await self._send(self._start)
            await self._send(message)
        elif self._state == "deciding":
            await self._decide(message)
        else:
            await self._compress(message.get("body", b""), message.get("more_body", False))

    async def _on_start(self, message: Message) -> None:
        if message["type"] != "http.response.start":
            self._state = "passthrough"
            await self._send(message)
            return
        headers = list(message.get("headers", ()))
        media, encoded = "", False
        for name, value in headers:
            if name == b"content-type":
                media = value.split(b";", 1)[0].strip().lower().decode("latin-1")
            elif name == b"content-encoding":
                encoded = True
        if media not in JSON_TYPES or encoded or message["status"] in _NOT_COMPRESSED:
            self._state = "passthrough"
            await self._send(message)
            return
        start = {**message, "headers": _with_vary(headers, b"Accept-Encoding")}
        if not self._accepted:
            self._state = "passthrough"
            await self._send(start)
            return
        self._start = start
        self._state = "deciding"

    async def _decide(self, message: Message) -> None:
        chunk: bytes = message.get("body", b"")
        more = bool(message.get("more_body", False))
        # Only small leading pieces of a stream are buffered; a whole body is used as it is.
        if self._buffer:
            self._buffer += chunk
            data = bytes(self._buffer)
        else:
            data = chunk
        if len(data) < self._config.minimum_size:
            if more:
                if not self._buffer:
                    self._buffer += chunk
                return
            self._state = "passthrough"
            await self._send(self._start)
            await self._send({"type": "http.response.body", "body": data})
            return
        self._buffer = bytearray()
        headers = [(n, v) for n, v in self._start["headers"] if n != b"content-length"]
        headers.append((b"content-encoding", b"gzip"))
        self._deflate = zlib.compressobj(self._config.level, zlib.DEFLATED, 31)
        if not more:
            body = await _run(self._deflate, data, zlib.Z_FINISH)
            headers.append((b"content-length", str(len(body)).encode()))
            await self._send({**self._start, "headers": headers})
            await self._send({"type": "http.response.body", "body": body})
            self._state = "passthrough"
            return
        self._state = "compressing"
        await self._send({**self._start, "headers": headers})
        await self._compress(data, True)

    async def _compress(self, data: bytes, more: bool) -> None:
        assert self._deflate is not None
        body = await _run(self._deflate, data, zlib.Z_SYNC_FLUSH if more else zlib.Z_FINISH)
        if body or not more:
            await self._send({"type": "http.response.body", "body": body, "more_body": more})
        if not more:
            self._state = "passthrough"


async def _run(deflate: zlib._Compress, data: bytes, mode: int) -> bytes:
    def work() -> bytes:
        return deflate.compress(data) + deflate.flush(mode)

    if len(data) > _THREAD_ABOVE:
        return await to_thread.run_sync(work)
    return work()


class CrossOriginResourcePolicy:
    """`Cross-Origin-Resource-Policy` on every response.

    A viewer page isolated with `Cross-Origin-Embedder-Policy: require-corp` (OHIF sets it to
    get SharedArrayBuffer) may load a resource of another origin only if it carries this header
    with `cross-origin` (or passes CORS).
    """

    def __init__(self, app: ASGIApp, policy: str = "cross-origin") -> None:
        self.app = app
        self.header = (b"cross-origin-resource-policy", policy.encode("latin-1"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def add_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), self.header]}
            await send(message)

        await self.app(scope, receive, add_header)


class _HeadDone(Exception):
    """The headers of a HEAD answer are out: the body the GET route goes on making is not."""


# Set by HeadAsGet on the GET scope it passes on, so that logs can name the method received.
RECEIVED_METHOD = "dicomhub.received_method"


def received_method(request: Request) -> str:
    """The request's method as the client sent it (HEAD, where routes see a GET)."""
    return str(request.scope.get(RECEIVED_METHOD) or request.method)


class HeadAsGet:
    """HEAD on every GET route (RFC 9110 9.3.2: general-purpose servers must support it).

    The routes see a GET, so the answer carries exactly the GET's headers (Content-Type,
    Content-Length, ETag, Vary...); no body is sent, and the route is stopped at its first
    body message, so a HEAD on a whole study does not read the study.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        done = False

        async def headers_only(message: Message) -> None:
            nonlocal done
            if done:
                return
            if message["type"] == "http.response.start":
                await send(message)
                return
            done = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            raise _HeadDone

        try:
            await self.app(
                {**scope, "method": "GET", RECEIVED_METHOD: "HEAD"}, receive, headers_only
            )
        except _HeadDone:
            return  # the answer is complete
        except BaseExceptionGroup as group:  # a task group around the body wraps it
            _done, rest = group.split(_HeadDone)
            if rest is not None:
                raise rest from None


def install(app: Starlette, cors_origins: Sequence[str]) -> None:
    """Gzip innermost, then CORS (only when origins are configured), CORP, HEAD as GET
    outermost (a HEAD gets every header its GET would)."""
    app.add_middleware(JSONGzip)
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=ALLOWED_METHODS,
            allow_headers=ALLOWED_HEADERS,
            expose_headers=EXPOSED_HEADERS,
            # Bearer tokens travel in Authorization, which needs no credentials mode; cookies
            # (the only thing credentials would add) are not used.
            allow_credentials=False,
            # Chrome's Private Network Access: a configured public viewer may reach an archive
            # on a private address; never for "*", which would open it to any site.
            allow_private_network="*" not in cors_origins,
            max_age=7200,
        )
    # after CORS, so preflight answers carry it too
    app.add_middleware(CrossOriginResourcePolicy)
    app.add_middleware(HeadAsGet)
