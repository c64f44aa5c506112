"""WADO-RS (PS3.18 10.4): instances, metadata and bulk data of studies, series and instances."""

from __future__ import annotations

import base64
import gc
import io
import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import generate_uid

from tests.conftest import LiveServer
from tests.dicomfiles import make_dataset, make_instance, parse_multipart, to_part10
from tests.dicomweb.support import DICOM, assert_error, stow

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
PIXEL = bytes(range(256)) * 16  # 4 KiB


def _rich_dataset(study: str, series: str) -> Dataset:
    """An instance with bulk data in several places: pixel data, a private OB, an overlay, an icon."""
    ds = make_dataset(
        study_uid=study,
        series_uid=series,
        InstanceNumber=3,
        SpecificCharacterSet="ISO_IR 192",
        PatientName="Müller^Jörg=ミュラー^ヨルグ",
        StudyDescription="Thorax ∆ follow-up",
        ImagePositionPatient=[0, -12.5, 1.5],
        PixelSpacing=["0.5", "0.25"],
        WindowCenter="40",
        PatientAge="042Y",
        ImageType=["ORIGINAL", "PRIMARY", "AXIAL"],
    )
    block = ds.private_block(0x0011, "DICOMHUB TEST", create=True)
    block.add_new(0x10, "OB", PIXEL[:2000])  # large: a BulkDataURI
    block.add_new(0x11, "OB", b"\x01\x02\x03\x04")  # small: inline
    block.add_new(0x12, "LO", "private text")
    ds.add_new(0x60000010, "US", 128)  # OverlayRows
    ds.add_new(0x60000011, "US", 128)  # OverlayColumns
    ds.add_new(0x60000040, "CS", "G")  # OverlayType
    ds.add_new(0x60000050, "SS", [1, 1])  # OverlayOrigin
    ds.add_new(0x60000100, "US", 1)  # OverlayBitsAllocated
    ds.add_new(0x60000102, "US", 0)  # OverlayBitPosition
    ds.add_new(0x60003000, "OW", PIXEL[:2048])  # OverlayData
    icon = Dataset()
    icon.Rows = 64
    icon.Columns = 64
    icon.SamplesPerPixel = 1
    icon.PhotometricInterpretation = "MONOCHROME2"
    icon.BitsAllocated = 8
    icon.BitsStored = 8
    icon.HighBit = 7
    icon.PixelRepresentation = 0
    icon.add_new(0x7FE00010, "OB", PIXEL)
    ds.IconImageSequence = [icon]
    ref = Dataset()
    ref.ReferencedSOPClassUID = ds.SOPClassUID
    ref.ReferencedSOPInstanceUID = generate_uid()
    ds.ReferencedImageSequence = [ref]
    return ds


@dataclass
class Archive:
    study: str
    series_a: str
    series_b: str
    a: list[bytes]  # two plain instances in series A
    rich: bytes  # one instance in series B
    other_study: bytes

    @property
    def all_in_study(self) -> list[bytes]:
        return [*self.a, self.rich]


def _uids(data: bytes) -> tuple[str, str, str]:
    ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def _path(data: bytes) -> str:
    study, series, sop = _uids(data)
    return f"/studies/{study}/series/{series}/instances/{sop}"


@pytest.fixture
def archive(http: httpx.Client) -> Archive:
    study, series_a, series_b = generate_uid(), generate_uid(), generate_uid()
    a = [
        make_instance(study_uid=study, series_uid=series_a, InstanceNumber=i, pixel_seed=i)
        for i in (1, 2)
    ]
    rich = to_part10(_rich_dataset(study, series_b))
    other = make_instance()
    r = stow(http, [*a, rich, other])
    assert r.status_code == 200, r.text
    return Archive(study, series_a, series_b, a, rich, other)


def _parts(r: httpx.Response) -> list[tuple[dict[str, str], bytes]]:
    assert r.status_code == 200, (r.status_code, r.text)
    return parse_multipart(r.content, r.headers["content-type"])


MULTIPART_ACCEPTS = [
    'multipart/related; type="application/dicom"',
    "multipart/related; type=application/dicom",
    'multipart/related; type="application/dicom"; transfer-syntax=*',
    f'multipart/related; type="application/dicom"; transfer-syntax={EXPLICIT_LE}',
    "multipart/related",
    "*/*",
    None,
]


def test_retrieve_study_series_instance_as_multipart(
    http: httpx.Client, live_server: LiveServer, archive: Archive
) -> None:
    scopes = [
        (f"/studies/{archive.study}", archive.all_in_study),
        (f"/studies/{archive.study}/series/{archive.series_a}", archive.a),
        (f"/studies/{archive.study}/series/{archive.series_b}", [archive.rich]),
        (_path(archive.a[1]), [archive.a[1]]),
    ]
    for accept, (url, expected) in itertools.product(MULTIPART_ACCEPTS, scopes):
        r = http.get(url, headers={"Accept": accept} if accept else {})
        content_type = r.headers["content-type"]
        assert content_type.startswith('multipart/related; type="application/dicom"; boundary=')
        parts = _parts(r)
        assert sorted(p for _, p in parts) == sorted(expected), (url, accept)
        for part_headers, payload in parts:
            assert part_headers["content-type"] == (
                f"application/dicom; transfer-syntax={EXPLICIT_LE}"
            )
            assert part_headers["content-location"] == live_server.url + "/dicom-web" + _path(
                payload
            )
            assert int(part_headers["content-length"]) == len(payload)


def test_instances_come_in_series_and_instance_number_order(
    http: httpx.Client, archive: Archive
) -> None:
    parts = _parts(http.get(f"/studies/{archive.study}/series/{archive.series_a}"))
    assert [p for _, p in parts] == archive.a


def test_retrieve_one_instance_as_a_single_part(http: httpx.Client, archive: Archive) -> None:
    for accept in (
        "application/dicom",
        "application/dicom; transfer-syntax=*",
        f"application/dicom; transfer-syntax={EXPLICIT_LE}",
        f'application/dicom; transfer-syntax="{EXPLICIT_LE}"',
        "application/dicom; q=0.9, image/jpeg; q=0.5",
    ):
        r = http.get(_path(archive.rich), headers={"Accept": accept})
        assert r.status_code == 200, (accept, r.text)
        assert r.headers["content-type"] == f"application/dicom; transfer-syntax={EXPLICIT_LE}"
        assert r.headers["content-length"] == str(len(archive.rich))
        assert r.content == archive.rich


def test_application_dicom_is_not_acceptable_for_several_instances(
    http: httpx.Client, archive: Archive
) -> None:
    for url in (f"/studies/{archive.study}", f"/studies/{archive.study}/series/{archive.series_a}"):
        r = http.get(url, headers={"Accept": "application/dicom"})
        body = assert_error(r, 406, "not-acceptable")
        assert "multipart/related" in body["message"]


def test_unsupported_retrieve_media_types(http: httpx.Client, archive: Archive) -> None:
    for accept in (  # application/zip is served: tests/dicomweb/test_zip.py
        "image/jpeg",
        'multipart/related; type="image/jpeg"',
        'multipart/related; type="application/octet-stream"',
        "text/html",
    ):
        r = http.get(_path(archive.a[0]), headers={"Accept": accept})
        assert_error(r, 406, "not-acceptable")


def test_another_transfer_syntax_is_transcoded_or_refused_clearly(
    http: httpx.Client, archive: Archive
) -> None:
    # Transcoding itself is tested in tests/dicomweb/test_transcode.py.
    original = dcmread(io.BytesIO(archive.a[0]))
    single = http.get(
        _path(archive.a[0]), headers={"Accept": f"application/dicom; transfer-syntax={IMPLICIT_LE}"}
    )
    assert single.status_code == 200, single.text
    assert single.headers["content-type"] == f"application/dicom; transfer-syntax={IMPLICIT_LE}"
    back = dcmread(io.BytesIO(single.content))
    assert back.file_meta.TransferSyntaxUID == IMPLICIT_LE
    assert back.PixelData == original.PixelData
    lossy = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'
    body = assert_error(
        http.get(_path(archive.a[0]), headers={"Accept": lossy}), 406, "not-acceptable"
    )
    assert "lossy" in body["message"]
    assert EXPLICIT_LE in body["message"]  # says how the instance is stored
    assert "transfer-syntax=*" in body["message"]  # and what to ask for instead
    assert_error(http.get(f"/studies/{archive.study}", headers={"Accept": lossy}), 406)


def test_unknown_uids_are_not_found(http: httpx.Client, archive: Archive) -> None:
    unknown = generate_uid()
    study, series_a, sop = archive.study, archive.series_a, _uids(archive.a[0])[2]
    other_series = _uids(archive.other_study)[1]
    urls = [
        f"/studies/{unknown}",
        f"/studies/{study}/series/{unknown}",
        f"/studies/{study}/series/{series_a}/instances/{unknown}",
        # Existing UIDs that do not belong together.
        f"/studies/{study}/series/{other_series}",
        f"/studies/{study}/series/{archive.series_b}/instances/{sop}",
    ]
    for url in urls:
        for suffix in ("", "/metadata"):
            r = http.get(url + suffix)
            assert_error(r, 404, "not-found")
    assert_error(
        http.get(f"/studies/{study}/series/{series_a}/instances/{unknown}/bulkdata/7FE00010"),
        404,
        "not-found",
    )
    # Bulk data that the instance does not have.
    assert_error(http.get(f"{_path(archive.a[0])}/bulkdata/00091010"), 404, "not-found")
    assert_error(http.get(f"{_path(archive.a[0])}/bulkdata/00100010"), 404, "not-found")


BAD_UIDS = ["1.2.abc", "1..2", "1.2.", "x", "1." + "2" * 64, "1.2.3%20"]


def test_malformed_uids_in_the_path(http: httpx.Client, archive: Archive) -> None:
    study, series, sop = _uids(archive.a[0])
    for bad in BAD_UIDS:
        _malformed(http, study, series, sop, bad)


def _malformed(http: httpx.Client, study: str, series: str, sop: str, bad: str) -> None:
    urls = [
        f"/studies/{bad}",
        f"/studies/{bad}/metadata",
        f"/studies/{study}/series/{bad}",
        f"/studies/{study}/series/{bad}/metadata",
        f"/studies/{study}/series/{series}/instances/{bad}",
        f"/studies/{study}/series/{series}/instances/{bad}/metadata",
        f"/studies/{study}/series/{series}/instances/{bad}/bulkdata/7FE00010",
        f"/studies/{bad}/series/{series}/instances/{sop}",
    ]
    for url in urls:
        body = assert_error(http.get(url), 400, "invalid-input")
        assert "UID" in body["message"]


# -- metadata -----------------------------------------------------------------------------------


def _expected_json(data: bytes) -> dict[str, Any]:
    """pydicom's DICOM JSON of the file, every binary value inline."""
    return dcmread(io.BytesIO(data)).to_json_dict(bulk_data_element_handler=None)


def _compare(served: dict[str, Any], expected: dict[str, Any], uri_base: str, path: str) -> None:
    """`served` is `expected` apart from binary values above 1 KiB, which are BulkDataURIs."""
    assert sorted(served) == sorted(expected), path
    for key, want in expected.items():
        got = served[key]
        assert got["vr"] == want["vr"], (path, key)
        if want["vr"] in BINARY_VRS:
            value = base64.b64decode(want["InlineBinary"]) if "InlineBinary" in want else b""
            # Pixel data is always bulk data (its frames are served from there); others above 1 KiB.
            if len(value) > 1024 or (not path and key == "7FE00010"):
                assert got == {"vr": want["vr"], "BulkDataURI": f"{uri_base}/{path}{key}"}, key
            else:
                assert got == want, (path, key)
        elif want["vr"] == "SQ":
            assert len(got["Value"]) == len(want["Value"]), (path, key)
            for i, (g, w) in enumerate(zip(got["Value"], want["Value"], strict=True)):
                _compare(g, w, uri_base, f"{path}{key}/{i}/")
        else:
            assert got == want, (path, key)


def _bulk_base(root: str, data: bytes) -> str:
    return f"{root}{_path(data)}/bulkdata"


def test_instance_metadata_is_the_dicom_json_of_the_file(
    http: httpx.Client, live_server: LiveServer, archive: Archive
) -> None:
    bodies = []
    for accept in (None, "application/dicom+json", "application/json", "*/*", "application/*"):
        r = http.get(
            f"{_path(archive.rich)}/metadata", headers={"Accept": accept} if accept else {}
        )
        assert r.status_code == 200, (accept, r.text)
        assert r.headers["content-type"] == "application/dicom+json"
        bodies.append(r.content)
    assert len(set(bodies)) == 1
    (served,) = json.loads(bodies[0])
    root = live_server.url + "/dicom-web"
    _compare(served, _expected_json(archive.rich), _bulk_base(root, archive.rich), "")
    # The interesting places were really covered.
    assert served["7FE00010"]["BulkDataURI"].endswith("/bulkdata/7FE00010")
    assert served["00111010"]["BulkDataURI"].endswith("/bulkdata/00111010")
    assert served["00111011"]["InlineBinary"] == base64.b64encode(b"\x01\x02\x03\x04").decode()
    assert served["60003000"]["BulkDataURI"].endswith("/bulkdata/60003000")
    icon = served["00880200"]["Value"][0]
    assert icon["7FE00010"]["BulkDataURI"].endswith("/bulkdata/00880200/0/7FE00010")
    assert served["00100010"]["Value"] == [
        {"Alphabetic": "Müller^Jörg", "Ideographic": "ミュラー^ヨルグ"}
    ]


def test_study_and_series_metadata(
    http: httpx.Client, live_server: LiveServer, archive: Archive
) -> None:
    root = live_server.url + "/dicom-web"
    scopes = [
        (f"/studies/{archive.study}/metadata", archive.all_in_study),
        (f"/studies/{archive.study}/series/{archive.series_a}/metadata", archive.a),
        (f"/studies/{archive.study}/series/{archive.series_b}/metadata", [archive.rich]),
    ]
    for url, expected in scopes:
        r = http.get(url)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/dicom+json"
        served = {m["00080018"]["Value"][0]: m for m in r.json()}
        assert sorted(served) == sorted(_uids(d)[2] for d in expected), url
        for data in expected:
            _compare(served[_uids(data)[2]], _expected_json(data), _bulk_base(root, data), "")


def test_metadata_refuses_other_media_types(http: httpx.Client, archive: Archive) -> None:
    for accept in ("application/dicom", 'multipart/related; type="application/dicom"'):
        r = http.get(f"/studies/{archive.study}/metadata", headers={"Accept": accept})
        assert_error(r, 406, "not-acceptable")


# -- bulk data ----------------------------------------------------------------------------------


def test_bulk_data_uris_return_exactly_those_bytes(http: httpx.Client, archive: Archive) -> None:
    ds = dcmread(io.BytesIO(archive.rich))
    expected = {
        "7FE00010": ds.PixelData,
        "00111010": ds[0x00111010].value,
        "60003000": ds[0x60003000].value,
        "00880200/0/7FE00010": ds.IconImageSequence[0].PixelData,
    }
    (served,) = http.get(f"{_path(archive.rich)}/metadata").json()
    uris = {
        "7FE00010": served["7FE00010"]["BulkDataURI"],
        "00111010": served["00111010"]["BulkDataURI"],
        "60003000": served["60003000"]["BulkDataURI"],
        "00880200/0/7FE00010": served["00880200"]["Value"][0]["7FE00010"]["BulkDataURI"],
    }
    for path, uri in uris.items():
        # Default: multipart/related; type="application/octet-stream", one part.
        r = http.get(uri)
        assert r.status_code == 200, (path, r.text)
        assert r.headers["content-type"].startswith(
            'multipart/related; type="application/octet-stream"; boundary='
        )
        ((part_headers, payload),) = _parts(r)
        assert part_headers["content-type"] == "application/octet-stream"
        assert payload == expected[path], path
        same = http.get(
            uri, headers={"Accept": 'multipart/related; type="application/octet-stream"'}
        )
        assert [p for _, p in _parts(same)] == [expected[path]]
        # A single part on request.
        single = http.get(uri, headers={"Accept": "application/octet-stream"})
        assert single.status_code == 200, (path, single.text)
        assert single.headers["content-type"] == "application/octet-stream"
        assert single.content == expected[path], path


def test_bulk_data_refuses_other_media_types(http: httpx.Client, archive: Archive) -> None:
    uri = f"{_path(archive.rich)}/bulkdata/7FE00010"
    for accept in ("application/dicom", "image/jpeg", 'multipart/related; type="image/jpeg"'):
        assert_error(http.get(uri, headers={"Accept": accept}), 406, "not-acceptable")


ENCAPSULATED = [
    "JPEG2000.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "emri_small_jpeg_2k_lossless.dcm",
    "SC_rgb_rle_2frame.dcm",
]


@pytest.mark.parametrize("name", ENCAPSULATED)
def test_encapsulated_pixel_data_frames(
    http: httpx.Client, live_server: LiveServer, name: str
) -> None:
    path = Path(get_testdata_file(name))  # type: ignore[arg-type]
    data = path.read_bytes()
    ds = dcmread(path)
    transfer_syntax = str(ds.file_meta.TransferSyntaxUID)
    count = int(ds.get("NumberOfFrames", 1) or 1)
    frames = list(generate_frames(ds.PixelData, number_of_frames=count))
    assert len(frames) == count

    assert http.post("/studies", content=data, headers=DICOM).status_code in (200, 202)
    (served,) = http.get(f"{_path(data)}/metadata").json()
    uri = served["7FE00010"]["BulkDataURI"]
    assert served["7FE00010"]["vr"] == "OB"
    assert uri == f"{live_server.url}/dicom-web{_path(data)}/bulkdata/7FE00010"

    parts = _parts(http.get(uri))
    assert [p for _, p in parts] == frames
    for part_headers, _ in parts:
        assert part_headers["content-type"] == (
            f"application/octet-stream; transfer-syntax={transfer_syntax}"
        )
    single = http.get(uri, headers={"Accept": "application/octet-stream"})
    if count == 1:
        assert single.status_code == 200, single.text
        assert single.content == frames[0]
    else:
        # Several frames cannot be one application/octet-stream body.
        assert_error(single, 406, "not-acceptable")

    # The instance comes back as stored: without transfer-syntax, with * and with its own.
    for accept in (
        'multipart/related; type="application/dicom"',
        'multipart/related; type="application/dicom"; transfer-syntax=*',
        f'multipart/related; type="application/dicom"; transfer-syntax={transfer_syntax}',
    ):
        ((part_headers, payload),) = _parts(http.get(_path(data), headers={"Accept": accept}))
        assert payload == data
        assert (
            part_headers["content-type"] == f"application/dicom; transfer-syntax={transfer_syntax}"
        )
    # Explicit VR Little Endian: decoded (tests/dicomweb/test_transcode.py has the pixel checks).
    explicit = f'multipart/related; type="application/dicom"; transfer-syntax={EXPLICIT_LE}'
    ((part_headers, payload),) = _parts(http.get(_path(data), headers={"Accept": explicit}))
    assert part_headers["content-type"] == f"application/dicom; transfer-syntax={EXPLICIT_LE}"
    decoded = dcmread(io.BytesIO(payload))
    assert decoded.file_meta.TransferSyntaxUID == EXPLICIT_LE
    assert not decoded["PixelData"].is_undefined_length


# -- ETag ---------------------------------------------------------------------------------------


def _etag(http: httpx.Client, url: str) -> str:
    r = http.get(url)
    assert r.status_code == 200, r.text
    etag = r.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"'), etag
    return etag


def test_metadata_etag_and_if_none_match(http: httpx.Client, archive: Archive) -> None:
    urls = [
        f"/studies/{archive.study}/metadata",
        f"/studies/{archive.study}/series/{archive.series_a}/metadata",
        f"{_path(archive.rich)}/metadata",
    ]
    for url in urls:
        etag = _etag(http, url)
        assert _etag(http, url) == etag  # stable while nothing changes
        r = http.get(url, headers={"If-None-Match": etag})
        assert r.status_code == 304
        assert r.content == b""
        assert r.headers["etag"] == etag
        listed = http.get(url, headers={"If-None-Match": f'"nope", {etag}'})
        assert listed.status_code == 304
        other = http.get(url, headers={"If-None-Match": '"something-else"'})
        assert other.status_code == 200
        assert other.json()


def test_etag_changes_when_instances_are_added_or_deleted(
    http: httpx.Client, archive: Archive
) -> None:
    study_url = f"/studies/{archive.study}/metadata"
    series_url = f"/studies/{archive.study}/series/{archive.series_a}/metadata"
    rich_url = f"{_path(archive.rich)}/metadata"
    rich_etag = _etag(http, rich_url)
    # Every ETag a client has seen, with the metadata it stood for.
    seen: dict[tuple[str, str], list[Any]] = {}
    current: dict[str, str] = {}

    def check(url: str) -> None:
        r = http.get(url)
        assert r.status_code == 200, r.text
        etag, body = r.headers["etag"], sorted(r.json(), key=lambda m: m["00080018"]["Value"][0])
        assert etag != current.get(url), f"{url}: the ETag did not change with the content"
        if (url, etag) in seen:
            # The same ETag again is only right for the same content.
            assert seen[url, etag] == body, f"{url}: ETag {etag} reused for other content"
        seen[url, etag] = body
        current[url] = etag
        # A client holding an ETag of another state must get the new content.
        for (u, old), old_body in seen.items():
            if u == url and old_body != body:
                assert http.get(url, headers={"If-None-Match": old}).status_code == 200

    check(study_url)
    check(series_url)
    added = make_instance(study_uid=archive.study, series_uid=archive.series_a, pixel_seed=9)
    assert stow(http, [added]).status_code == 200
    check(study_url)
    check(series_url)
    assert _etag(http, rich_url) == rich_etag  # another series: unchanged

    # Delete the newest instance, then store another one in its place.
    assert http.delete(_path(added)).status_code == 204
    check(study_url)
    check(series_url)
    again = make_instance(study_uid=archive.study, series_uid=archive.series_a, pixel_seed=10)
    assert stow(http, [again]).status_code == 200
    check(study_url)
    check(series_url)

    assert http.delete(_path(archive.a[0])).status_code == 204
    check(study_url)
    check(series_url)
    assert _etag(http, rich_url) == rich_etag


# -- URL prefixes -------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["/v1", "/v2"])
def test_versioned_prefixes_answer_with_their_own_urls(
    live_server: LiveServer, archive: Archive, prefix: str
) -> None:
    root = live_server.url + prefix
    with httpx.Client(base_url=root, timeout=60) as client:
        r = client.get(f"/studies/{archive.study}")
        parts = _parts(r)
        assert sorted(p for _, p in parts) == sorted(archive.all_in_study)
        for part_headers, payload in parts:
            assert part_headers["content-location"] == root + _path(payload)
        single = client.get(_path(archive.rich), headers={"Accept": "application/dicom"})
        assert single.content == archive.rich

        (served,) = client.get(f"{_path(archive.rich)}/metadata").json()
        _compare(served, _expected_json(archive.rich), _bulk_base(root, archive.rich), "")
        series = client.get(f"/studies/{archive.study}/series/{archive.series_a}/metadata")
        assert len(series.json()) == 2
        uri = served["60003000"]["BulkDataURI"]
        assert uri.startswith(root + "/studies/")
        bulk = client.get(uri, headers={"Accept": "application/octet-stream"})
        assert bulk.content == dcmread(io.BytesIO(archive.rich))[0x60003000].value
        assert_error(client.get(f"/studies/{generate_uid()}"), 404, "not-found")
        assert_error(client.get("/studies/1.2.x"), 400, "invalid-input")


# -- clients that stop reading ------------------------------------------------------------------


def test_a_client_that_stops_reading_leaves_no_file_open(http: httpx.Client) -> None:
    # pytest turns a ResourceWarning from an unclosed blob file into an error of this test.
    data = make_instance(rows=512, columns=512, frames=8)  # 4 MiB
    assert stow(http, [data]).status_code == 200
    study, series, _ = _uids(data)
    for url, accept in (
        (_path(data), "application/dicom"),
        (_path(data), 'multipart/related; type="application/dicom"'),
        (f"/studies/{study}/series/{series}", 'multipart/related; type="application/dicom"'),
        (f"{_path(data)}/bulkdata/7FE00010", "application/octet-stream"),
    ):
        for _ in range(3):
            with http.stream("GET", url, headers={"Accept": accept}) as r:
                assert r.status_code == 200
                next(r.iter_raw(65536))
        # And one client that reads everything and hangs up at once.
        with httpx.Client(base_url=http.base_url) as client:
            assert len(client.get(url, headers={"Accept": accept}).content) >= len(data) - 1024
    time.sleep(0.5)  # let the server notice the closed connections
    gc.collect()
    assert http.get(_path(data), headers={"Accept": "application/dicom"}).content == data
