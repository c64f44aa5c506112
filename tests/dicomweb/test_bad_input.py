"""Bad input of every kind: the right status, a JSON body, and nothing stored or left behind."""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from dicomhub.config import Settings
from tests.conftest import LiveServer
from tests.dicomfiles import make_dataset, make_instance, multipart_body, to_part10
from tests.dicomweb.support import (
    DICOM,
    assert_error,
    failed,
    failure_reasons,
    raw_multipart,
    referenced,
    staged_leftovers,
    stow,
    value,
)

VALIDATION_FAILURE = 43264
CT_SMALL = Path(get_testdata_file("CT_small.dcm"))  # type: ignore[arg-type]


def _uids(data: bytes) -> tuple[str, str, str]:
    ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def _snapshot(http: httpx.Client) -> dict[str, Any]:
    """Everything a client can see of the archive: QIDO at every level, every instance's bytes."""
    instances = http.get("/instances", params={"includefield": "all", "limit": 500})
    assert instances.status_code == 200, instances.text
    listing = sorted(instances.json(), key=lambda i: value(i, "00080018"))
    blobs = {}
    for item in listing:
        url = value(item, "00081190")
        r = http.get(url, headers={"Accept": "application/dicom; transfer-syntax=*"})
        assert r.status_code == 200, r.text
        blobs[value(item, "00080018")] = r.content
    return {
        "instances": listing,
        "bytes": blobs,
        "studies": http.get("/studies", params={"includefield": "all"}).json(),
        "series": http.get("/series", params={"includefield": "all"}).json(),
        "changefeed": http.get("/changefeed", params={"limit": 200}).json(),
    }


Check = Callable[[], None]


@pytest.fixture
def unchanged(http: httpx.Client, live_server: LiveServer, settings: Settings) -> Check:
    """Store a few instances; the returned check asserts the archive is as it was then."""
    study, series = generate_uid(), generate_uid()
    built = [
        make_instance(study_uid=study, series_uid=series, InstanceNumber=i, pixel_seed=i)
        for i in (1, 2)
    ]
    r = stow(http, [CT_SMALL.read_bytes(), *built, make_instance(frames=3, pixel_seed=7)])
    assert r.status_code == 200, r.text
    before = _snapshot(http)
    assert len(before["bytes"]) == 4

    def check() -> None:
        health = httpx.get(live_server.url + "/health", timeout=30)
        assert health.status_code == 200
        assert health.json()["status"] == "ok"
        assert _snapshot(http) == before
        assert staged_leftovers(settings) == []

    return check


def _refused_instance(r: httpx.Response) -> None:
    """409 with one FailedSOPSequence item carrying FailureReason 43264 and a reason."""
    assert r.status_code == 409, (r.status_code, r.text)
    assert r.headers["content-type"] == "application/dicom+json"
    assert failure_reasons(r) == [VALIDATION_FAILURE]
    assert failed(r)[0]["00000902"]["Value"][0]
    assert referenced(r) == []


def _both_ways(http: httpx.Client, data: bytes) -> list[httpx.Response]:
    """The same bytes as a single application/dicom body and as a multipart part."""
    return [http.post("/studies", content=data, headers=DICOM), stow(http, [data])]


# -- broken files -------------------------------------------------------------------------------


def _value_offset(data: bytes, tag: int) -> int:
    """Where the value of `tag` starts in an explicit VR little endian file."""
    ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
    vr = ds[tag].VR if tag in ds else "OW"
    header = (tag >> 16).to_bytes(2, "little") + (tag & 0xFFFF).to_bytes(2, "little") + vr.encode()
    assert data.count(header) == 1, hex(tag)
    start = data.index(header)
    return start + (12 if vr in ("OB", "OW", "SQ", "UN", "UT") else 8)


def truncations() -> dict[str, bytes]:
    real = CT_SMALL.read_bytes()
    pixel = _value_offset(real, 0x7FE00010)
    name = _value_offset(real, 0x00100010)
    study_uid = _value_offset(real, 0x0020000D)
    built = make_instance(rows=64, columns=64, frames=2)
    return {
        "in the preamble": real[:100],
        "in the File Meta Information": real[:200],
        "in the PatientName value": real[: name + 5],
        "in the StudyInstanceUID value": real[: study_uid + 10],
        "in the pixel data element header": real[: pixel - 5],
        "just after the pixel data element header": real[:pixel],
        "in the middle of the pixel data": real[: pixel + 16000],
        "in the last frame of a built file": built[:-100],
        "one byte short of a built file": built[:-1],
    }


def test_truncated_files(http: httpx.Client, unchanged: Check) -> None:
    for where, data in truncations().items():
        for r in _both_ways(http, data):
            try:
                _refused_instance(r)
            except AssertionError as exc:
                raise AssertionError(f"truncated {where}: {exc}") from exc
            unchanged()
    # In a batch the broken part fails alone; the archive gains only the good instance.
    good = make_instance()
    r = stow(http, [truncations()["in the middle of the pixel data"], good])
    assert r.status_code == 202
    assert failure_reasons(r) == [VALIDATION_FAILURE]
    assert [value(i, "00081155") for i in referenced(r)] == [_uids(good)[2]]
    assert http.delete(value(referenced(r)[0], "00081190")).status_code == 204


def _dicm_then_garbage() -> bytes:
    return b"\0" * 128 + b"DICM" + bytes(range(256)) * 4


def test_not_dicom(http: httpx.Client, unchanged: Check) -> None:
    samples = {
        "text": b"hello, this is not DICOM\n" * 20,
        "json": b'{"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]}}',
        "png": b"\x89PNG\r\n\x1a\n" + bytes(600),
        "zeros": bytes(2048),
        "one byte": b"\x00",
        "DICM then garbage": _dicm_then_garbage(),
        "a multipart body sent as application/dicom": multipart_body([make_instance()])[0],
    }
    for what, data in samples.items():
        for r in _both_ways(http, data):
            try:
                _refused_instance(r)
            except AssertionError as exc:
                raise AssertionError(f"{what}: {exc}") from exc
            assert "00081150" in failed(r)[0]
            unchanged()


def _missing(keyword: str) -> bytes:
    ds = make_dataset()
    data = to_part10(ds)
    delattr(ds, keyword)
    meta = dcmread(io.BytesIO(data)).file_meta
    ds.file_meta = meta
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _bad_uid(keyword: str, uid: str) -> bytes:
    ds = make_dataset()
    setattr(ds, keyword, uid)
    return to_part10(ds)


def test_missing_and_malformed_uids(http: httpx.Client, unchanged: Check) -> None:
    cases = {
        "no StudyInstanceUID": _missing("StudyInstanceUID"),
        "no SeriesInstanceUID": _missing("SeriesInstanceUID"),
        "no SOPInstanceUID": _missing("SOPInstanceUID"),
        "no SOPClassUID": _missing("SOPClassUID"),
        "letters in StudyInstanceUID": _bad_uid("StudyInstanceUID", "1.2.3.4a"),
        "letters in SOPInstanceUID": _bad_uid("SOPInstanceUID", "abc.def"),
        "empty component": _bad_uid("SeriesInstanceUID", "1.2..3"),
        "too long": _bad_uid("SOPInstanceUID", "1." + "2" * 70),
    }
    for what, data in cases.items():
        for r in _both_ways(http, data):
            try:
                _refused_instance(r)
            except AssertionError as exc:
                raise AssertionError(f"{what}: {exc}") from exc
            unchanged()
    # In the URL, a malformed UID is a malformed request.
    for bad in ("1.2.3.4a", "1..2", "abc", "1.2.3%0A"):  # %0A: a newline
        r = http.post(f"/studies/{bad}", content=make_instance(), headers=DICOM)
        body = assert_error(r, 400, "invalid-input")
        assert "StudyInstanceUID" in body["message"]
        unchanged()


def test_empty_bodies(http: httpx.Client, unchanged: Check) -> None:
    assert_error(http.post("/studies", content=b"", headers=DICOM), 400, "invalid-input")
    unchanged()
    multipart = 'multipart/related; type="application/dicom"; boundary=XyZ'
    assert_error(
        http.post("/studies", content=b"", headers={"Content-Type": multipart}),
        400,
        "invalid-input",
    )
    unchanged()
    # An empty part is an instance that is not DICOM.
    r = http.post(
        "/studies",
        content=raw_multipart([(DICOM, b"")], boundary="XyZ"),
        headers={"Content-Type": multipart},
    )
    _refused_instance(r)
    unchanged()


def test_wrong_content_types(http: httpx.Client, unchanged: Check) -> None:
    data = make_instance()
    body, _ = multipart_body([data], boundary="XyZ")
    for content_type in (
        "application/json",
        "application/dicom+json",
        "application/xml",
        "text/plain; charset=utf-8",
        "image/jpeg",
        "application/octet-stream",
        'multipart/related; type="application/dicom+json"; boundary=XyZ',
        'multipart/related; type="application/dicom+xml"; boundary=XyZ',
        "multipart/mixed; boundary=XyZ",
        "multipart/form-data; boundary=XyZ",
        "nonsense",
        "",
    ):
        r = http.post("/studies", content=body, headers={"Content-Type": content_type})
        assert_error(r, 415, "unsupported-media-type")
        unchanged()


def _multipart(boundary: str = "XyZ") -> dict[str, str]:
    return {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'}


def test_malformed_multipart(http: httpx.Client, unchanged: Check) -> None:
    first, second = make_instance(), make_instance()
    complete = raw_multipart([(DICOM, first), (DICOM, second)], boundary="XyZ")
    cases = {
        # Two complete parts and no closing delimiter: nothing of the request is kept.
        "missing closing boundary": complete[: -len(b"--XyZ--\r\n")],
        "cut inside the last part": complete[: len(complete) // 2 + 100],
        "garbage instead of a boundary": b"this is no boundary\r\n\r\n" + first,
        "boundary mismatch": raw_multipart([(DICOM, first)], boundary="OTHER"),
        "no delimiter at all": first,
        "header block never ends": b"--XyZ\r\nContent-Type: application/dicom\r\n" + b"x" * 100,
    }
    for what, body in cases.items():
        r = http.post("/studies", content=body, headers=_multipart())
        try:
            body_json = assert_error(r, 400, "invalid-input")
        except AssertionError as exc:
            raise AssertionError(f"{what}: {exc}") from exc
        assert "multipart" in body_json["message"], what
        unchanged()
    for header in (
        "multipart/related; type=application/dicom",  # no boundary
        "multipart/related; type=application/dicom; boundary=",
        f"multipart/related; type=application/dicom; boundary={'b' * 300}",
    ):
        r = http.post("/studies", content=complete, headers={"Content-Type": header})
        assert_error(r, 400, "invalid-input")
        unchanged()


def test_a_client_that_goes_away_mid_upload(
    live_server: LiveServer, settings: Settings, unchanged: Check
) -> None:
    data = make_instance(rows=256, columns=256, frames=4)
    body, content_type = multipart_body([make_instance(), data])
    for sent in (len(body) // 3, len(body) - 10):
        with socket.create_connection(("127.0.0.1", live_server.port), timeout=30) as sock:
            sock.sendall(
                (
                    "POST /dicom-web/studies HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
                ).encode()
                + body[:sent]
            )
        # The server learns of the disconnect on its own time; then nothing may stay staged.
        deadline = time.monotonic() + 10
        while staged_leftovers(settings) and time.monotonic() < deadline:
            time.sleep(0.05)
        unchanged()


# -- absurd query parameters --------------------------------------------------------------------


def test_absurd_limit_and_offset_in_searches(http: httpx.Client, unchanged: Check) -> None:
    for path in ("/studies", "/series", "/instances"):
        for params in (
            {"limit": "-1"},
            {"limit": "abc"},
            {"limit": "0"},
            {"limit": "1.5"},
            {"limit": ""},
            {"offset": "-5"},
            {"offset": "abc"},
            {"offset": "99999999999999999999"},
            {"offset": str(2**63)},
        ):
            r = http.get(path, params=params)
            body = assert_error(r, 400, "invalid-input")
            assert next(iter(params)) in body["message"], (path, params)
        # Too large a limit is capped, with a warning (PS3.18 8.3.4.4).
        r = http.get(path, params={"limit": str(10**12)})
        assert r.status_code == 200, r.text
        assert "299" in r.headers["warning"]
        assert len(r.json()) >= 1
        r = http.get(path, params={"offset": str(2**31 - 1)})
        assert r.status_code == 200
        assert r.json() == []
    unchanged()


def test_absurd_limit_and_offset_in_the_change_feed(
    live_server: LiveServer, unchanged: Check
) -> None:
    for prefix in ("/dicom-web", "/v1", "/v2"):
        with httpx.Client(base_url=live_server.url + prefix) as client:
            for params in (
                {"limit": "-1"},
                {"limit": "abc"},
                {"limit": "0"},
                {"limit": str(10**12)},
                {"offset": "-5"},
                {"offset": "abc"},
                {"offset": "99999999999999999999"},
                {"includeMetadata": "maybe"},
            ):
                r = client.get("/changefeed", params=params)
                assert_error(r, 400, "invalid-input")
            assert client.get("/changefeed", params={"offset": str(2**62)}).json() == []
    unchanged()


# -- other odd requests -------------------------------------------------------------------------


def test_odd_requests_get_json_errors(
    http: httpx.Client, live_server: LiveServer, unchanged: Check
) -> None:
    study = _uids(CT_SMALL.read_bytes())[0]
    assert_error(http.put(f"/studies/{study}", content=b"x"), 405)
    assert_error(http.patch("/studies"), 405)
    assert_error(http.get("/no-such-route"), 404)
    assert_error(httpx.get(live_server.url + "/v3/studies"), 404)
    assert_error(http.get("/studies", params={"NoSuchAttribute": "1"}), 400, "invalid-input")
    assert_error(http.get("/studies", params={"includefield": "Nonsense"}), 400, "invalid-input")
    assert_error(http.get("/studies", params={"StudyDate": "not-a-date"}), 400, "invalid-input")
    assert_error(
        http.get("/studies", headers={"Accept": "application/dicom"}), 406, "not-acceptable"
    )
    unchanged()
