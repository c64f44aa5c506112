"""HTTP middlewares on a live server: gzip of JSON only, CORS for configured origins, CORP always."""

from __future__ import annotations

import asyncio
import gzip
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from pydicom.uid import generate_uid
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dicomhub.bootstrap import Services
from dicomhub.config import Settings
from dicomhub.http_middleware import HeadAsGet, JSONGzip
from tests.conftest import LiveServer
from tests.dicomfiles import make_instance
from tests.dicomweb.support import assert_error, stow

VIEWER = "http://viewer.example.org:3000"
GZIP = {"Accept-Encoding": "gzip"}
IDENTITY = {"Accept-Encoding": "identity"}
CORP = "cross-origin-resource-policy"


def _raw(http: httpx.Client, url: str, headers: dict[str, str]) -> tuple[httpx.Response, bytes]:
    """The response and its body exactly as sent (httpx would undo the gzip)."""
    with http.stream("GET", url, headers=headers) as r:
        return r, b"".join(r.iter_raw())


def _vary(r: httpx.Response) -> set[str]:
    return {v.strip().lower() for v in r.headers.get("vary", "").split(",") if v.strip()}


def _study(http: httpx.Client, count: int = 12) -> tuple[str, str]:
    study, series = generate_uid(), generate_uid()
    files = [make_instance(study_uid=study, series_uid=series) for _ in range(count)]
    assert stow(http, files).status_code == 200
    return study, series


# --- gzip ---------------------------------------------------------------------------------


def test_json_is_gzipped_for_clients_that_accept_it(http: httpx.Client) -> None:
    study, _ = _study(http)
    url = f"/studies/{study}/instances?includefield=all"
    plain, plain_body = _raw(http, url, IDENTITY)
    assert "content-encoding" not in plain.headers
    assert len(plain_body) > 1024
    assert "accept-encoding" in _vary(plain)  # the representation depends on the header

    r, body = _raw(http, url, GZIP)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/dicom+json"
    assert r.headers["content-encoding"] == "gzip"
    assert "accept-encoding" in _vary(r)
    assert int(r.headers["content-length"]) == len(body) < len(plain_body)
    assert gzip.decompress(body) == plain_body


@pytest.mark.parametrize(
    ("accept_encoding", "compressed"),
    [
        ("gzip, deflate, br, zstd", True),  # what browsers send
        ("*", True),
        ("br;q=1.0, gzip;q=0.5", True),
        ("gzip;q=0", False),
        ("br", False),
        ("identity", False),
        ("*, gzip;q=0", False),
    ],
)
def test_accept_encoding_is_honoured(
    http: httpx.Client, accept_encoding: str, compressed: bool
) -> None:
    _study(http, 8)
    r, body = _raw(http, "/instances", {"Accept-Encoding": accept_encoding})
    assert r.status_code == 200
    assert (r.headers.get("content-encoding") == "gzip") is compressed
    assert (body[:2] == b"\x1f\x8b") is compressed


def test_streamed_metadata_is_gzipped_and_revalidates(http: httpx.Client) -> None:
    study, series = _study(http, 20)
    url = f"/studies/{study}/series/{series}/metadata"
    plain, plain_body = _raw(http, url, IDENTITY)
    etag = plain.headers["etag"]

    r, body = _raw(http, url, GZIP)
    assert r.headers["content-encoding"] == "gzip"
    assert "content-length" not in r.headers  # streamed: chunked
    assert gzip.decompress(body) == plain_body
    # the same validator as the 304 below carries (RFC 9110 15.4.5)
    assert r.headers["etag"] == etag

    # If-None-Match compares weakly (RFC 9110 13.1.2), so a cache's W/ form matches too
    for tag in (etag, "W/" + etag, f'"other", {etag}'):
        again = http.get(url, headers={**GZIP, "If-None-Match": tag})
        assert again.status_code == 304, tag
        assert again.content == b""
        assert again.headers["etag"] == etag
    assert http.get(url, headers={**GZIP, "If-None-Match": '"other"'}).status_code == 200


def test_dicom_files_and_bulk_data_are_never_gzipped(http: httpx.Client) -> None:
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    # JSON-sized and compressible, yet binary: sent as it is
    data = make_instance(study_uid=study, series_uid=series, sop_uid=sop, rows=64, columns=64)
    assert stow(http, [data]).status_code == 200
    base = f"/studies/{study}/series/{series}"
    for url, accept in [
        (f"{base}/instances/{sop}", "application/dicom"),
        (base, 'multipart/related; type="application/dicom"'),
        (f"{base}/instances/{sop}/bulkdata/7FE00010", "application/octet-stream"),
        (f"{base}/instances/{sop}/bulkdata/7FE00010", "multipart/related"),
        (f"/studies/{study}", "application/zip"),
    ]:
        r, body = _raw(http, url, {**GZIP, "Accept": accept})
        assert r.status_code == 200, (url, accept, r.status_code)
        assert "content-encoding" not in r.headers, url
        assert "accept-encoding" not in _vary(r), url
        assert int(r.headers["content-length"]) == len(body)
    r, body = _raw(http, f"{base}/instances/{sop}", {**GZIP, "Accept": "application/dicom"})
    assert body == data


def test_small_json_and_error_bodies_pass_as_they_are(http: httpx.Client) -> None:
    r, body = _raw(http, "/studies?PatientID=nobody", GZIP)
    assert r.status_code == 200 and body == b"[]"
    assert "content-encoding" not in r.headers
    assert "accept-encoding" in _vary(r)

    r = http.get(f"/studies/{generate_uid()}/metadata", headers=GZIP)
    assert "content-encoding" not in r.headers
    assert_error(r, 404)
    r = http.get("/studies?NotAnAttribute=1", headers=GZIP)
    assert_error(r, 400)


# --- HEAD -----------------------------------------------------------------------------------


_SAME = ("content-type", "content-length", "etag", "vary", "content-encoding", CORP)


@pytest.mark.parametrize("encoding", [GZIP, IDENTITY], ids=["gzip", "identity"])
def test_head_answers_the_headers_of_get_without_a_body(
    http: httpx.Client, encoding: dict[str, str]
) -> None:
    study, series = _study(http, count=3)
    urls = [
        f"/studies/{study}/metadata",
        f"/studies/{study}/series/{series}/instances?includefield=all",
        f"/studies/{study}",  # a multipart retrieve of every file of the study
        "/changefeed",
    ]
    for url in urls:
        got, got_body = _raw(http, url, encoding)
        with http.stream("HEAD", url, headers=encoding) as head:
            head_body = b"".join(head.iter_raw())
        assert got.status_code == head.status_code == 200, url
        assert got_body and head_body == b"", url
        for name in _SAME:
            if name == "content-type" and got.headers[name].startswith("multipart/related"):
                # each answer has its own boundary
                assert (
                    head.headers[name].split("boundary=")[0]
                    == got.headers[name].split("boundary=")[0]
                )
                continue
            assert head.headers.get(name) == got.headers.get(name), (url, name)

    # the connection goes on serving after a HEAD that stopped a streamed answer
    assert http.get(f"/studies/{study}/metadata").json()
    tag = http.get(f"/studies/{study}/metadata").headers["etag"]
    assert (
        http.head(f"/studies/{study}/metadata", headers={"If-None-Match": tag}).status_code == 304
    )


def test_head_of_what_does_not_exist_or_takes_no_get(http: httpx.Client) -> None:
    r = http.head(f"/studies/{generate_uid()}/metadata")
    assert r.status_code == 404 and r.content == b""
    assert r.headers["content-type"].startswith("application/json")
    assert http.head("/studies?NotAnAttribute=1").status_code == 400
    assert http.head("/changefeed/nothing-here").status_code == 404
    root = str(http.base_url).rsplit("/dicom-web", 1)[0]
    assert http.head(root + "/health").status_code == 200
    assert http.head("/studies").status_code == 200  # QIDO is the GET of /studies
    assert http.head(root + "/admin/sync/retry").status_code == 405  # POST only


def test_errors_of_a_head_are_logged_as_head(
    http: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    """The routes see a GET; the log names what the client sent."""
    missing = generate_uid()
    root = str(http.base_url).rsplit("/dicom-web", 1)[0]
    with caplog.at_level("INFO"):
        assert http.head(f"/studies/{missing}/metadata").status_code == 404
        assert http.head("/studies?NotAnAttribute=1").status_code == 400
        assert http.head(root + "/fhir/Patient/no-such-patient").status_code == 404
    logged = [r.getMessage() for r in caplog.records if "->" in r.getMessage()]
    assert f"HEAD /dicom-web/studies/{missing}/metadata -> 404" in " ".join(logged), logged
    assert any(m.startswith("HEAD /dicom-web/studies -> 400") for m in logged), logged
    assert any(m.startswith("HEAD /fhir/Patient/no-such-patient -> 404") for m in logged), logged
    assert not any(m.startswith("GET ") for m in logged), logged


def _head(app: ASGIApp) -> list[Message]:
    """What `HeadAsGet(app)` sends for a HEAD."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "HEAD", "path": "/", "headers": []}
    asyncio.run(HeadAsGet(app)(scope, receive, send))
    return sent


def _streaming_app(made: list[int], *, in_task_group: bool) -> ASGIApp:
    """An app that streams ten body pieces, counting those it made; a GET route only."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["method"] == "GET"
        await send({"type": "http.response.start", "status": 200, "headers": []})

        async def body() -> None:
            for i in range(10):
                made.append(i)
                await send({"type": "http.response.body", "body": b"x", "more_body": i < 9})

        if in_task_group:  # as a route streaming from a task group that does not collapse
            async with anyio.create_task_group() as group:
                group.start_soon(body)
        else:
            await body()

    return app


@pytest.mark.parametrize("in_task_group", [False, True], ids=["plain", "task-group"])
def test_head_stops_the_route_at_its_first_body_piece(in_task_group: bool) -> None:
    made: list[int] = []
    sent = _head(_streaming_app(made, in_task_group=in_task_group))
    assert made == [0]
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[1] == {"type": "http.response.body", "body": b"", "more_body": False}


def test_head_lets_other_errors_of_the_route_through() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        async def fails() -> None:
            raise ValueError("broken route")

        async with anyio.create_task_group() as group:
            group.start_soon(fails)

    with pytest.raises(BaseExceptionGroup) as caught:
        _head(app)
    assert caught.value.subgroup(ValueError) is not None


def test_fhir_and_change_feed_json_are_gzipped(live_server: LiveServer) -> None:
    with httpx.Client(base_url=live_server.url, timeout=60) as client:
        client.post(
            "/dicom-web/studies",
            content=make_instance(),
            headers={"Content-Type": "application/dicom"},
        ).raise_for_status()
        for url, media in [
            ("/fhir/metadata", "application/fhir+json"),
            ("/dicom-web/changefeed?includeMetadata=true", "application/json"),
        ]:
            r, body = _raw(client, url, GZIP)
            assert r.status_code == 200, url
            assert r.headers["content-type"].startswith(media), url
            assert r.headers["content-encoding"] == "gzip", url
            _plain, plain_body = _raw(client, url, IDENTITY)
            assert gzip.decompress(body) == plain_body, url


# JSONGzip's buffering and header rules, on small ASGI apps that stream in controlled pieces.


def _app(
    chunks: list[bytes],
    *,
    status: int = 200,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> JSONGzip:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": headers or [(b"content-type", b"application/json")],
            }
        )
        for i, chunk in enumerate(chunks):
            await send(
                {"type": "http.response.body", "body": chunk, "more_body": i < len(chunks) - 1}
            )

    return JSONGzip(app)


def _call(app: JSONGzip, accept_encoding: str = "gzip") -> tuple[int, dict[str, str], bytes]:
    messages: list[Message] = []

    async def run() -> None:
        scope = {
            "type": "http",
            "method": "GET",
            "path": "/",
            "headers": [(b"accept-encoding", accept_encoding.encode())],
        }

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message) -> None:
            messages.append(message)

        await app(scope, receive, send)

    asyncio.run(run())
    start, *bodies = messages
    assert all(m["type"] == "http.response.body" for m in bodies)
    assert not bodies[-1].get("more_body", False)
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, b"".join(m["body"] for m in bodies)


def test_a_stream_of_small_pieces_is_buffered_then_compressed() -> None:
    pieces = [b"[", *(b'{"a": %d},' % i for i in range(400)), b"{}]"]
    _status, headers, body = _call(_app(pieces))
    assert headers["content-encoding"] == "gzip"
    assert "content-length" not in headers
    assert gzip.decompress(body) == b"".join(pieces)


def test_a_small_stream_is_sent_as_it_is() -> None:
    pieces = [b"[", b"1,", b"2", b"]"]
    _status, headers, body = _call(_app(pieces))
    assert "content-encoding" not in headers
    assert body == b"[1,2]"
    assert headers["vary"] == "Accept-Encoding"


def test_vary_is_merged_and_length_recomputed() -> None:
    headers = [
        (b"content-type", b"application/dicom+json; charset=utf-8"),
        (b"vary", b"Origin"),
        (b"etag", b'"abc"'),
        (b"content-length", b"5000"),
    ]
    _status, out, body = _call(_app([b"x" * 5000], headers=headers))
    assert out["vary"] == "Origin, Accept-Encoding"
    assert out["etag"] == '"abc"'
    assert out["content-encoding"] == "gzip"
    assert int(out["content-length"]) == len(body)
    assert gzip.decompress(body) == b"x" * 5000


@pytest.mark.parametrize(
    "headers",
    [
        [(b"content-type", b"application/octet-stream")],
        [(b"content-type", b"image/jpeg")],
        [(b"content-type", b"application/json"), (b"content-encoding", b"br")],
    ],
)
def test_other_bodies_are_not_touched(headers: list[tuple[bytes, bytes]]) -> None:
    _status, out, body = _call(_app([b"x" * 5000], headers=headers))
    assert body == b"x" * 5000
    assert out.get("content-encoding") in (None, "br")
    assert "vary" not in out


@pytest.mark.parametrize("status_code", [206, 304])
def test_partial_and_not_modified_are_not_touched(status_code: int) -> None:
    status, out, body = _call(_app([b"x" * 5000], status=status_code))
    assert status == status_code and body == b"x" * 5000
    assert "content-encoding" not in out


# --- CORS and CORP -------------------------------------------------------------------------


@pytest.fixture
def cors_server(settings: Settings, services: Services) -> Iterator[LiveServer]:
    with LiveServer(settings.model_copy(update={"cors_origins": [VIEWER]}), services) as server:
        yield server


@pytest.fixture
def cors_http(cors_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=cors_server.url + "/dicom-web", timeout=60) as client:
        yield client


def _preflight(
    http: httpx.Client, url: str, origin: str, method: str = "GET", **extra: str
) -> httpx.Response:
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "accept,authorization",
        **extra,
    }
    return http.options(url, headers=headers)


def _tokens(r: httpx.Response, name: str) -> set[str]:
    return {v.strip().lower() for v in r.headers.get(name, "").split(",") if v.strip()}


def test_preflight_from_a_configured_origin_passes(cors_http: httpx.Client) -> None:
    study, series = _study(cors_http, 1)
    url = f"/studies/{study}/series/{series}/metadata"
    for method in ("GET", "POST", "PUT", "DELETE"):
        r = _preflight(cors_http, url, VIEWER, method)
        assert r.status_code == 200, (method, r.text)
        assert r.headers["access-control-allow-origin"] == VIEWER
        assert method.lower() in _tokens(r, "access-control-allow-methods")
        assert {"accept", "authorization", "content-type"} <= _tokens(
            r, "access-control-allow-headers"
        )
        assert int(r.headers["access-control-max-age"]) > 0
        assert "origin" in _vary(r)
        assert r.headers[CORP] == "cross-origin"
        assert "access-control-allow-credentials" not in r.headers


def test_responses_to_a_configured_origin_expose_what_clients_read(
    cors_http: httpx.Client,
) -> None:
    study, series = _study(cors_http, 3)
    r = cors_http.get(
        f"/studies/{study}/series/{series}/metadata",
        headers={"Origin": VIEWER, "Accept": "application/dicom+json", **GZIP},
    )
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == VIEWER
    assert {
        "content-location",
        "warning",
        "etag",
        "content-type",
        "content-length",
        "location",
        "content-disposition",
    } <= _tokens(r, "access-control-expose-headers")
    assert {"origin", "accept-encoding"} <= _vary(r)
    assert r.headers[CORP] == "cross-origin"
    # errors carry the CORS headers too, so the page can read the JSON message
    r = cors_http.get(f"/studies/{generate_uid()}", headers={"Origin": VIEWER})
    assert r.headers["access-control-allow-origin"] == VIEWER
    assert_error(r, 404)


def test_other_origins_are_refused(cors_http: httpx.Client) -> None:
    r = _preflight(cors_http, "/studies", "http://evil.example")
    assert r.status_code == 400
    assert "access-control-allow-origin" not in r.headers
    r = cors_http.get("/studies", headers={"Origin": "http://evil.example"})
    assert r.status_code == 200  # the browser, not the server, withholds the body
    assert "access-control-allow-origin" not in r.headers
    # an unknown header in the preflight is refused as well
    r = _preflight(cors_http, "/studies", VIEWER, **{"Access-Control-Request-Headers": "x-unknown"})
    assert r.status_code == 400


def test_private_network_access_only_for_listed_origins(
    cors_http: httpx.Client, settings: Settings, services: Services
) -> None:
    pna = {"Access-Control-Request-Private-Network": "true"}
    r = _preflight(cors_http, "/studies", VIEWER, **pna)
    assert r.status_code == 200
    assert r.headers["access-control-allow-private-network"] == "true"

    with (
        LiveServer(settings.model_copy(update={"cors_origins": ["*"]}), services) as server,
        httpx.Client(base_url=server.url + "/dicom-web") as anyone,
    ):
        r = anyone.get("/studies", headers={"Origin": "http://any.example"})
        assert r.headers["access-control-allow-origin"] == "*"
        assert _preflight(anyone, "/studies", "http://any.example").status_code == 200
        # "*" must not open the private network to every site on the internet
        r = _preflight(anyone, "/studies", "http://any.example", **pna)
        assert r.status_code == 400
        assert "access-control-allow-private-network" not in r.headers


def test_no_cors_by_default_but_corp_everywhere(live_server: LiveServer) -> None:
    with httpx.Client(base_url=live_server.url, timeout=60) as client:
        data = make_instance()
        r = client.post(
            "/dicom-web/studies", content=data, headers={"Content-Type": "application/dicom"}
        )
        assert r.status_code == 200
        assert r.headers[CORP] == "cross-origin"
        study = r.json()["00081199"]["Value"][0]["00081190"]["Value"][0].split("/studies/")[1]
        study = study.split("/")[0]
        for url in [
            "/dicom-web/studies",
            f"/dicom-web/studies/{study}",
            f"/dicom-web/studies/{generate_uid()}",
            "/v1/changefeed",
            "/health",
            "/fhir/metadata",
            "/",
        ]:
            r = client.get(url, headers={"Origin": VIEWER})
            assert r.headers[CORP] == "cross-origin", url
            assert "access-control-allow-origin" not in r.headers, url
        r = _preflight(client, "/dicom-web/studies", VIEWER)
        assert "access-control-allow-origin" not in r.headers


# --- the setting ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "origins"),
    [
        ("https://Viewer.Example.org/, http://localhost:3000", ["https://viewer.example.org", "http://localhost:3000"]),
        ('["http://127.0.0.1:8042"]', ["http://127.0.0.1:8042"]),
        ("http://a.example, *", ["*"]),
        ("", []),
    ],
)  # fmt: skip
def test_cors_origins_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str, origins: list[str]
) -> None:
    monkeypatch.setenv("DICOMHUB_CORS_ORIGINS", value)
    assert Settings().cors_origins == origins


@pytest.mark.parametrize("bad", ["viewer.example.org", "http://a.example/path", "null", "http://"])
def test_cors_origins_that_are_not_origins_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="cors_origins"):
        Settings(cors_origins=[bad])


def test_serve_takes_cors_origins_from_the_command_line(tmp_path: Path) -> None:
    # A bad value stops `serve` before it binds: the option reaches the settings' checks.
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMHUB_")}
    dicomhub = Path(sys.executable).parent / "dicomhub"
    done = subprocess.run(
        [str(dicomhub), "serve", "--data-dir", str(tmp_path), "--cors-origins", "not-an-origin"],
        env={**env, "COLUMNS": "400"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "cors_origins" in done.stderr and "not-an-origin" in done.stderr
