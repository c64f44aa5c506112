"""OHIF v3's own DICOMweb requests, replayed from another origin, and what OHIF reads in the answers.

The requests are those of OHIF's DICOMweb data source and the libraries it drives, as read in
their sources (stored versions at the commits shown):

- OHIF/Viewers extensions/default/src/DicomWebDataSource/qido.js (00f012e7): `mapParams` (study
  list: `limit=101`, `offset=0`, `fuzzymatching=false`, `includefield=00081030,00080060,
  00080090,00100030`, `PatientName=*x*` and `00100020=*x*` with `supportsWildcard`, the
  `StudyDate` range, `StudyInstanceUID`), `processResults` (the study tags read: 0020000D,
  00080020, 00080030, 00080050, 00100020, 00100010, 00100030, 00201208, 00081030, 00080060 /
  00080061, 00080090), `seriesInStudy` (`includefield=0008103E,00080021`) and
  `processSeriesResults` (0020000D, 0020000E, 00080060, 00200011, 00080021, 00201209, 0008103E).
- OHIF/Viewers extensions/default/src/DicomWebDataSource/index.ts (03247f58): `query.studies`,
  `query.series`, `_retrieveSeriesMetadataAsync` / `_retrieveSeriesMetadataSync` (metadata with
  `excludeTransferSyntax`), `retrieveBulkData` (BulkDataURI of each value), `getGetThumbnailSrc`
  and `fetchThumbnailWithQidoFallbackForSeries` (`/thumbnail` or `/rendered` with
  `Accept: image/jpeg`, then QIDO `instances?limit=1&includefield=00080018` for a series).
- OHIF/Viewers extensions/default/src/DicomWebDataSource/wado/retrieveMetadataLoaderAsync.js
  (03225b3d): lazy load = `searchForSeries` then `retrieveSeriesMetadata` per series;
  retrieveMetadataLoaderSync.js (52660755): `retrieveStudyMetadata`.
- OHIF/Viewers extensions/default/src/Panels/getStudiesForPatientByMRN.js: the patient's other
  studies by `00100020` (no wildcard).
- OHIF/Viewers extensions/default/src/DicomWebDataSource/utils/getWADORSImageId.js: image ids
  `{wadoRoot}/studies/{s}/series/{se}/instances/{i}/frames/{n}` (n = frame || 1).
- OHIF/Viewers platform/core/src/utils/generateAcceptHeader.ts (0f1390a8) and
  extensions/cornerstone/src/initWADOImageLoader.js (03225b3d, `beforeSend`): the frame Accept,
  `multipart/related; type="application/octet-stream"; transfer-syntax="*"`, or unquoted with
  `omitQuotationForMultipartRequest` (set in platform/app/public/config/default.js).
- cornerstonejs/cornerstone3D packages/dicomImageLoader/src/imageLoader/wadors/getPixelData.ts
  (0e685e6e) and loadImage.ts (0834304f): how a frame response is read (first line starting
  with `--` is the boundary, a `Content-Type:` line, data up to CRLF before the next boundary)
  and `getTransferSyntaxForContentType` (the part's transfer-syntax parameter, else by type).
- dcmjs-org/dicomweb-client src/api.js (0224b1f3): `Accept: application/dicom+json` for QIDO and
  metadata, `multipart/related; type="application/octet-stream"` for bulk data, query values
  escaped with encodeURIComponent.

Every request goes as a browser would send it for OHIF served from another origin: `Origin`,
`Accept-Encoding: gzip, deflate, br, zstd`, an `Authorization` bearer token (OHIF with a login),
and a CORS preflight whenever the Fetch standard asks for one.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames

from dicomhub.bootstrap import Services
from dicomhub.config import Settings
from tests.conftest import LiveServer
from tests.dicomweb.support import stow

OHIF_ORIGIN = "http://ohif.example.org:3000"
TOKEN = "Bearer eyJhbGciOiJSUzI1NiJ9.e30.c2lnbmF0dXJl"
DICOM_JSON = "application/dicom+json"
# generateAcceptHeader() with the defaults, and with omitQuotationForMultipartRequest (also
# cornerstone's own default mediaType in wadors/loadImage.ts)
FRAME_ACCEPTS = (
    'multipart/related; type="application/octet-stream"; transfer-syntax="*"',
    "multipart/related; type=application/octet-stream; transfer-syntax=*",
)
EXPLICIT_LE = "1.2.840.10008.1.2.1"
# Real files: single-frame CT (Explicit VR LE), 10-frame MR (native), 2-frame RGB RLE,
# JPEG 2000; each in a study of its own.
SAMPLES = ("CT_small.dcm", "emri_small.dcm", "SC_rgb_rle_2frame.dcm", "JPEG2000.dcm")
# Fetch standard: headers a page may send without a preflight, and the bytes that make an
# Accept value unsafe (https://fetch.spec.whatwg.org/#cors-safelisted-request-header).
_UNSAFE = set(b'"():<>?@[\\]{}\x7f') | set(range(0x00, 0x09)) | set(range(0x0A, 0x20))
# Response headers a page may always read (#cors-safelisted-response-header-name).
_READABLE = {"cache-control", "content-language", "content-length", "content-type", "expires"}
_READABLE |= {"last-modified", "pragma"}
# What JavaScript's encodeURIComponent leaves as it is, besides letters and digits.
_URI_COMPONENT = "-_.!~*'()"


@dataclass(frozen=True)
class Sample:
    name: str
    ds: Dataset
    data: bytes

    @property
    def uids(self) -> tuple[str, str, str]:
        ds = self.ds
        return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)

    @property
    def frames(self) -> int:
        return int(self.ds.get("NumberOfFrames", 1) or 1)


def _load(name: str) -> Sample:
    path = get_testdata_file(name)
    assert path is not None, name
    data = Path(path).read_bytes()
    return Sample(name, dcmread(path), data)


class Browser:
    """A page of OHIF on another origin, as the browser sends its XHRs (Fetch standard CORS)."""

    def __init__(self, client: httpx.Client, origin: str, token: str | None = TOKEN) -> None:
        self.client = client
        self.origin = origin
        self.token = token
        self.preflights = 0

    def get(self, url: str, accept: str | None = None) -> httpx.Response:
        headers: dict[str, str] = {}
        if accept is not None:
            headers["Accept"] = accept
        if self.token:
            headers["Authorization"] = self.token
        unsafe = sorted(n.lower() for n, v in headers.items() if not _safelisted(n, v))
        if unsafe:
            self._preflight(url, unsafe)
        r = self.client.get(
            url,
            headers={
                **headers,
                "Origin": self.origin,
                "Accept-Encoding": "gzip, deflate, br, zstd",
            },
        )
        # CORS check of the answer: without these headers the page never sees the response
        assert r.headers.get("access-control-allow-origin") in (self.origin, "*"), (url, r.headers)
        # OHIF runs with COEP require-corp; CORS passes it, and so does CORP for no-cors loads
        assert r.headers.get("cross-origin-resource-policy") == "cross-origin", url
        return r

    def readable(self, r: httpx.Response, name: str) -> bool:
        """What the page's script can read of the response headers."""
        exposed = r.headers.get("access-control-expose-headers", "")
        names = {n.strip().lower() for n in exposed.split(",")}
        return name.lower() in _READABLE or name.lower() in names or "*" in names

    def _preflight(self, url: str, unsafe: list[str]) -> None:
        self.preflights += 1
        r = self.client.options(
            url,
            headers={
                "Origin": self.origin,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": ",".join(unsafe),
            },
        )
        assert 200 <= r.status_code < 300, (url, r.status_code, r.text)
        assert r.headers.get("access-control-allow-origin") in (self.origin, "*")
        allowed = {h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")}
        assert set(unsafe) <= allowed or "*" in allowed, (unsafe, allowed)
        methods = {m.strip() for m in r.headers.get("access-control-allow-methods", "").split(",")}
        assert "GET" in methods or "*" in methods


def _safelisted(name: str, value: str) -> bool:
    if name.lower() != "accept":
        return name.lower() in ("accept-language", "content-language")
    raw = value.encode("latin-1")
    return len(raw) <= 128 and not (set(raw) & _UNSAFE)


def _query(params: dict[str, Any]) -> str:
    """dicomweb-client's _parseQueryParameters: key=encodeURIComponent(value) joined by &."""
    return "?" + "&".join(f"{k}={quote(str(v), safe=_URI_COMPONENT)}" for k, v in params.items())


def _string(item: dict[str, Any], tag: str) -> Any:
    """OHIF's DICOMWeb.getString: the first value, or None."""
    values = item.get(tag, {}).get("Value")
    return values[0] if values else None


def _study_params(**filters: str) -> dict[str, Any]:
    """mapParams() output in OHIF's order (named filters, then paging and includefield)."""
    return {
        **filters,
        "limit": 101,
        "offset": 0,
        "fuzzymatching": "false",
        "includefield": "00081030,00080060,00080090,00100030",
    }


@pytest.fixture
def ohif_server(settings: Settings, services: Services) -> Iterator[LiveServer]:
    cors = settings.model_copy(update={"cors_origins": [OHIF_ORIGIN]})
    with LiveServer(cors, services) as server:
        yield server


@pytest.fixture
def samples(ohif_server: LiveServer) -> list[Sample]:
    loaded = [_load(n) for n in SAMPLES]
    with httpx.Client(base_url=ohif_server.url + "/dicom-web", timeout=60) as client:
        r = stow(client, [s.data for s in loaded])
        assert r.status_code == 200, r.text
    return loaded


@pytest.fixture
def browser(ohif_server: LiveServer) -> Iterator[Browser]:
    # wadoRoot = qidoRoot = {server}/dicom-web, as OHIF's data source is configured
    with httpx.Client(base_url=ohif_server.url + "/dicom-web", timeout=60) as client:
        yield Browser(client, OHIF_ORIGIN)


def test_study_list_queries_and_the_tags_ohif_reads(
    browser: Browser, samples: list[Sample]
) -> None:
    r = browser.get("/studies" + _query(_study_params()), DICOM_JSON)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith(DICOM_JSON)
    by_uid = {_string(s, "0020000D"): s for s in r.json()}
    assert set(by_uid) == {s.uids[0] for s in samples}
    for sample in samples:
        study = by_uid[sample.uids[0]]
        ds = sample.ds
        # processResults() reads these; each must be present (empty when the data has none)
        for tag in (
            "0020000D", "00080020", "00080030", "00080050", "00100020", "00100010",
            "00100030", "00201208", "00081030", "00080061", "00080090", "00201206",
        ):  # fmt: skip
            assert tag in study, (sample.name, tag)
        assert _string(study, "00080020") == ds.get("StudyDate")
        assert (_string(study, "00100020") or "") == (ds.get("PatientID") or "")
        assert int(_string(study, "00201208")) == 1
        assert _string(study, "00080061") == ds.Modality
        name = _string(study, "00100010")
        assert (name or {}).get("Alphabetic", "") == str(ds.get("PatientName", ""))

    ct = next(s for s in samples if s.name == "CT_small.dcm")
    family = str(ct.ds.PatientName).split("^")[0]
    date = str(ct.ds.StudyDate)
    # the worklist filters, with OHIF's wildcards (supportsWildcard: *value*)
    for filters in (
        {"PatientName": f"*{family[2:8]}*"},
        {"00100020": f"*{ct.ds.PatientID}*"},
        {"ModalitiesInStudy": "CT"},
        {"StudyDate": f"19700102-{date}"},
        {"StudyDate": f"{date}-{date}"},
        {"StudyInstanceUID": ct.uids[0]},
    ):
        r = browser.get("/studies" + _query(_study_params(**filters)), DICOM_JSON)
        assert r.status_code == 200, (filters, r.text)
        assert ct.uids[0] in {_string(s, "0020000D") for s in r.json()}, filters
    # several studies at once: mapParams joins UIDs with a backslash
    uids = "\\".join(s.uids[0] for s in samples[:2])
    r = browser.get("/studies" + _query(_study_params(StudyInstanceUID=uids)), DICOM_JSON)
    assert {_string(s, "0020000D") for s in r.json()} == {s.uids[0] for s in samples[:2]}
    # getStudiesForPatientByMRN: the patient's studies by 00100020, no wildcard
    r = browser.get("/studies" + _query(_study_params(**{"00100020": ct.ds.PatientID})), DICOM_JSON)
    assert ct.uids[0] in {_string(s, "0020000D") for s in r.json()}


def test_study_browser_series_queries(browser: Browser, samples: list[Sample]) -> None:
    for sample in samples:
        study, series, _ = sample.uids
        # seriesInStudy() for the study browser, then the lazy loader's plain series search
        for url in (
            f"/studies/{study}/series" + _query({"includefield": "0008103E,00080021"}),
            f"/studies/{study}/series",
            f"/studies/{study}/series" + _query({"SeriesInstanceUID": series}),
        ):
            r = browser.get(url, DICOM_JSON)
            assert r.status_code == 200, (url, r.text)
            (found,) = r.json()
            assert _string(found, "0020000E") == series
            assert _string(found, "0020000D") == study
            assert _string(found, "00080060") == sample.ds.Modality
            assert int(_string(found, "00201209")) == 1
            assert "00200011" in found
            if "includefield" in url:
                assert "0008103E" in found and "00080021" in found


def _check_instance_metadata(item: dict[str, Any], sample: Sample, base: str) -> None:
    study, series, sop = sample.uids
    ds = sample.ds
    assert _string(item, "00080018") == sop
    assert _string(item, "0020000E") == series
    assert _string(item, "0020000D") == study
    assert _string(item, "00080016") == ds.SOPClassUID
    # what cornerstone's metadata provider builds the image from
    for tag, keyword in (
        ("00280010", "Rows"),
        ("00280011", "Columns"),
        ("00280100", "BitsAllocated"),
        ("00280101", "BitsStored"),
        ("00280103", "PixelRepresentation"),
        ("00280002", "SamplesPerPixel"),
    ):
        assert _string(item, tag) == ds[keyword].value, (sample.name, keyword)
    assert _string(item, "00280004") == ds.PhotometricInterpretation
    if sample.frames > 1:
        assert int(_string(item, "00280008")) == sample.frames
    # PixelData by reference: OHIF fetches it through the BulkDataURI (or frames)
    pixel = item["7FE00010"]
    assert "InlineBinary" not in pixel and "Value" not in pixel
    uri = pixel["BulkDataURI"]
    assert uri.startswith(f"{base}/studies/{study}/series/{series}/instances/{sop}/"), uri


def test_series_and_study_metadata(
    browser: Browser, samples: list[Sample], ohif_server: LiveServer
) -> None:
    base = ohif_server.url + "/dicom-web"
    for sample in samples:
        study, series, sop = sample.uids
        # _retrieveSeriesMetadataAsync (enableStudyLazyLoad): series metadata, one by one
        r = browser.get(f"/studies/{study}/series/{series}/metadata", DICOM_JSON)
        assert r.status_code == 200
        assert r.headers["content-type"].startswith(DICOM_JSON)
        (item,) = r.json()
        _check_instance_metadata(item, sample, base)
        # _retrieveSeriesMetadataSync: the study's metadata in one request
        r = browser.get(f"/studies/{study}/metadata", DICOM_JSON)
        assert r.status_code == 200
        assert [_string(i, "00080018") for i in r.json()] == [sop]
        assert browser.readable(r, "ETag")


def _cornerstone_frame(r: httpx.Response) -> tuple[str, bytes]:
    """getPixelData() of cornerstone's wadors loader, step by step: (transfer syntax, bytes)."""
    content_type = r.headers["content-type"]
    body = r.content
    if "multipart" not in content_type:
        return _transfer_syntax(content_type), body
    token = body.find(b"\r\n\r\n")
    assert token != -1, "invalid response - no multipart mime header"
    lines = body[:token].decode("latin-1").split("\r\n")
    boundary = next((line for line in lines if line.startswith("--")), None)
    assert boundary, "invalid response - no boundary marker"
    offset = token + 4
    end = body.find(boundary.encode("latin-1"), offset)
    assert end != -1, "invalid response - terminating boundary not found"
    # findContentType(): a line that starts with exactly "Content-Type:"
    part_type = next((line[13:].strip() for line in lines if line.startswith("Content-Type:")), "")
    assert part_type, lines
    return _transfer_syntax(part_type), body[offset : end - 2]


def _transfer_syntax(content_type: str) -> str:
    """getTransferSyntaxForContentType() of cornerstone's wadors/loadImage.ts."""
    params: dict[str, str] = {}
    for piece in content_type.split(";"):
        pair = piece.split("=")
        if len(pair) == 2:
            params[pair[0].strip()] = pair[1].strip().replace('"', "")
    by_type = {
        "image/jpeg": "1.2.840.10008.1.2.4.50",
        "image/x-dicom-rle": "1.2.840.10008.1.2.5",
        "image/x-jls": "1.2.840.10008.1.2.4.80",
        "image/jls": "1.2.840.10008.1.2.4.80",
        "image/jll": "1.2.840.10008.1.2.4.70",
        "image/jp2": "1.2.840.10008.1.2.4.90",
        "image/jpx": "1.2.840.10008.1.2.4.92",
    }
    media = content_type.split(";", maxsplit=1)[0].strip()
    if "transfer-syntax" in params:
        return params["transfer-syntax"]
    if params.get("type") in by_type:
        return by_type[params["type"]]
    return by_type.get(media, "1.2.840.10008.1.2")


def _stored_frames(sample: Sample) -> list[bytes]:
    ds = sample.ds
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
        return [bytes(f) for f in generate_frames(ds.PixelData, number_of_frames=sample.frames)]
    size = ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated // 8
    return [ds.PixelData[i * size : (i + 1) * size] for i in range(sample.frames)]


def _native_frame(sample: Sample, index: int) -> np.ndarray:
    pixels = sample.ds.pixel_array
    return pixels[index] if sample.frames > 1 else pixels


def test_frames_as_cornerstone_reads_them(browser: Browser, samples: list[Sample]) -> None:
    for sample in samples:
        study, series, sop = sample.uids
        stored_ts = str(sample.ds.file_meta.TransferSyntaxUID)
        stored = _stored_frames(sample)
        for accept in FRAME_ACCEPTS:
            for number in range(1, sample.frames + 1):
                url = f"/studies/{study}/series/{series}/instances/{sop}/frames/{number}"
                r = browser.get(url, accept)
                assert r.status_code == 200, (sample.name, accept, r.status_code, r.text[:300])
                # binary: never gzipped
                assert "content-encoding" not in r.headers
                assert "multipart" in r.headers["content-type"]
                ts, data = _cornerstone_frame(r)
                if ts == stored_ts:
                    assert data == stored[number - 1], (sample.name, number)
                else:
                    # transfer-syntax=* lets the server decompress; then it must say so and
                    # send native little-endian pixels (PS3.18 8.7.3.5.2)
                    assert ts == EXPLICIT_LE, (sample.name, ts)
                    expected = _native_frame(sample, number - 1)
                    assert len(data) == expected.nbytes, (sample.name, number)
                    lossless = stored_ts in ("1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.90")
                    if lossless and sample.ds.SamplesPerPixel == 1:  # exact pixels
                        assert data == expected.astype(expected.dtype.newbyteorder("<")).tobytes()
    assert browser.preflights > 0  # the quoted Accept and Authorization need one


def _octet_parts(r: httpx.Response) -> list[bytes]:
    """dicomweb-client's multipartDecode (message.js): the parts of a multipart body."""
    content_type = r.headers["content-type"]
    if "multipart" not in content_type:
        return [r.content]
    boundary = next(
        p.split("=", 1)[1].strip('"')
        for p in (x.strip() for x in content_type.split(";"))
        if p.lower().startswith("boundary=")
    )
    delimiter = f"--{boundary}".encode()
    parts = []
    for chunk in r.content.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        _, _, payload = chunk.partition(b"\r\n\r\n")
        parts.append(payload.removesuffix(b"\r\n"))
    return parts


def test_pixel_data_through_its_bulk_data_uri(browser: Browser, samples: list[Sample]) -> None:
    for sample in samples:
        study, series, _ = sample.uids
        (item,) = browser.get(f"/studies/{study}/series/{series}/metadata", DICOM_JSON).json()
        uri = item["7FE00010"]["BulkDataURI"]
        stored = _stored_frames(sample)
        # retrieveBulkData(): multipart octet-stream, or (singlepart: "bulkdata") no Accept
        # header of its own, which an XHR sends as */*
        for accept in ('multipart/related; type="application/octet-stream"', "*/*"):
            r = browser.get(uri, accept)
            assert r.status_code == 200, (sample.name, accept, r.text[:300])
            assert "content-encoding" not in r.headers
            parts = _octet_parts(r)
            if sample.ds.file_meta.TransferSyntaxUID.is_encapsulated:
                assert parts == stored, sample.name
            else:
                assert b"".join(parts) == b"".join(stored), sample.name


def _jpeg(r: httpx.Response, what: str) -> None:
    assert r.status_code == 200, (what, r.status_code, r.text[:300])
    assert r.headers["content-type"].split(";")[0] == "image/jpeg", what
    assert r.content[:2] == b"\xff\xd8" and r.content.rstrip(b"\x00")[-2:] == b"\xff\xd9", what
    assert "content-encoding" not in r.headers, what


def test_thumbnails_and_rendered_images(browser: Browser, samples: list[Sample]) -> None:
    for sample in samples:
        study, series, sop = sample.uids
        instance = f"/studies/{study}/series/{series}/instances/{sop}"
        # thumbnailRendering "thumbnail" / "rendered" with thumbnailRequestStrategy "fetch"
        for url in (
            f"/studies/{study}/series/{series}/thumbnail",
            f"{instance}/thumbnail",
            f"/studies/{study}/thumbnail",
            f"{instance}/rendered",
        ):
            _jpeg(browser.get(url, "image/jpeg"), f"{sample.name} {url}")
        # "thumbnail" with bulkDataRetrieve and singlepart: an XHR with its default Accept
        _jpeg(browser.get(f"{instance}/thumbnail", "*/*"), f"{sample.name} */*")
        # the fallback for a series without a thumbnail: one instance by QIDO
        query = _query({"limit": 1, "includefield": "00080018"})
        r = browser.get(f"/studies/{study}/series/{series}/instances{query}", DICOM_JSON)
        assert [_string(i, "00080018") for i in r.json()] == [sop]


def test_cors_for_ohif_on_another_origin(
    browser: Browser, samples: list[Sample], ohif_server: LiveServer
) -> None:
    study, series, sop = samples[0].uids
    frame = f"/studies/{study}/series/{series}/instances/{sop}/frames/1"
    # a page without a login sends the unquoted Accept with no preflight at all
    anonymous = Browser(browser.client, OHIF_ORIGIN, token=None)
    r = anonymous.get(frame, FRAME_ACCEPTS[1])
    assert anonymous.preflights == 0
    assert r.status_code == 200, r.text[:300]
    assert browser.readable(r, "Content-Type")  # cornerstone reads it to find the multipart
    # QIDO paging warnings and STOW locations are readable by the page
    r = browser.get("/studies" + _query({"limit": 1}), DICOM_JSON)
    assert browser.readable(r, "Warning")
    assert r.headers.get("warning", "").startswith("299")
    # a page of any other origin gets nothing it can read
    with httpx.Client(base_url=ohif_server.url + "/dicom-web") as client:
        r = client.options(
            frame,
            headers={
                "Origin": "http://elsewhere.example",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "accept,authorization",
            },
        )
        assert "access-control-allow-origin" not in r.headers
    # gzip: the metadata a browser asks for comes compressed, and decodes to the same JSON
    url = f"/studies/{study}/series/{series}/metadata"
    with browser.client.stream(
        "GET", url, headers={"Origin": OHIF_ORIGIN, "Accept-Encoding": "gzip"}
    ) as raw:
        assert raw.headers["content-encoding"] == "gzip"
        body = gzip.decompress(b"".join(raw.iter_raw()))
    assert body == browser.client.get(url, headers={"Accept-Encoding": "identity"}).content
