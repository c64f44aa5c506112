"""STOW-RS (PS3.18 10.5): POST /studies[/{study}], the store response, its statuses and limits."""

from __future__ import annotations

import io
import socket
import threading
import tracemalloc
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from pydicom import dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicomhub.bootstrap import build_services, prepare_storage
from dicomhub.config import Settings
from tests.conftest import LiveServer
from tests.dicomfiles import (
    CT_IMAGE,
    make_dataset,
    make_instance,
    multipart_body,
    parse_multipart,
    to_part10,
)
from tests.dicomweb.support import (
    DICOM,
    REFERENCED_SOP_CLASS,
    REFERENCED_SOP_INSTANCE,
    RETRIEVE_URL,
    WARNING_REASON,
    assert_error,
    blob_files,
    failed,
    failure_reasons,
    raw_multipart,
    referenced,
    staged_leftovers,
    stow,
    value,
)

VALIDATION_FAILURE = 43264
STUDY_MISMATCH = 43265
ALREADY_STORED = 45070
PROCESSING_FAILURE = 272
COERCED = 45056
DATASET_DOES_NOT_MATCH = 45063


def _uids(data: bytes) -> tuple[str, str, str]:
    ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def _instance_path(data: bytes) -> str:
    study, series, sop = _uids(data)
    return f"/studies/{study}/series/{series}/instances/{sop}"


def _retrieve(http: httpx.Client, url: str) -> bytes:
    r = http.get(url, headers={"Accept": "application/dicom; transfer-syntax=*"})
    assert r.status_code == 200, (url, r.status_code, r.text)
    return r.content


def _instances_with_sop(http: httpx.Client, sop: str) -> list[object]:
    r = http.get("/instances", params={"SOPInstanceUID": sop})
    assert r.status_code == 200, r.text
    found: list[object] = r.json()
    return found


MULTIPART_FORMS = [
    'multipart/related; type="application/dicom"; boundary=BOUNDARY',
    "multipart/related; type=application/dicom; boundary=BOUNDARY",
    'multipart/related; type="application/dicom"; boundary="BOUNDARY"',
    'multipart/related;type="application/dicom";boundary=BOUNDARY',
    "Multipart/Related; Type=Application/DICOM; Boundary=BOUNDARY",
    "multipart/related; boundary=BOUNDARY",
]


def test_multipart_forms_store_and_answer_dicom_json(
    http: httpx.Client, live_server: LiveServer
) -> None:
    for content_type in MULTIPART_FORMS:
        _store_one(http, live_server, content_type)


def _store_one(http: httpx.Client, live_server: LiveServer, content_type: str) -> None:
    data = make_instance()
    body, _ = multipart_body([data], boundary="BOUNDARY")
    r = http.post("/studies", content=body, headers={"Content-Type": content_type})
    assert r.status_code == 200, (content_type, r.text)
    assert r.headers["content-type"] == "application/dicom+json"
    study, series, sop = _uids(data)
    (item,) = referenced(r)
    assert value(item, REFERENCED_SOP_CLASS) == CT_IMAGE
    assert value(item, REFERENCED_SOP_INSTANCE) == sop
    url = value(item, RETRIEVE_URL)
    assert url == f"{live_server.url}/dicom-web/studies/{study}/series/{series}/instances/{sop}"
    assert item[RETRIEVE_URL]["vr"] == "UR"
    assert failed(r) == []
    assert WARNING_REASON not in item
    # The study-level RetrieveURL of the response names the one study stored.
    assert value(r.json(), RETRIEVE_URL) == f"{live_server.url}/dicom-web/studies/{study}"
    assert _retrieve(http, url) == data


def test_a_boundary_that_must_be_quoted(http: httpx.Client) -> None:
    data = make_instance()
    body, _ = multipart_body([data], boundary="a:b=c/d?e")
    r = http.post(
        "/studies",
        content=body,
        headers={
            "Content-Type": 'multipart/related; type="application/dicom"; boundary="a:b=c/d?e"'
        },
    )
    assert r.status_code == 200, r.text
    assert _retrieve(http, _instance_path(data)) == data


def test_single_part_application_dicom(http: httpx.Client) -> None:
    data = make_instance()
    r = http.post("/studies", content=data, headers=DICOM)
    assert r.status_code == 200, r.text
    (item,) = referenced(r)
    assert value(item, REFERENCED_SOP_INSTANCE) == _uids(data)[2]
    assert http.get(value(item, RETRIEVE_URL), headers={"Accept": "application/dicom"}).content == (
        data
    )


def test_retrieve_url_follows_the_prefix_the_client_used(live_server: LiveServer) -> None:
    for prefix in ("/v1", "/v2"):
        data = make_instance()
        study, series, sop = _uids(data)
        with httpx.Client(base_url=live_server.url + prefix) as client:
            r = stow(client, [data])
            assert r.status_code == 200, r.text
            url = value(referenced(r)[0], RETRIEVE_URL)
            assert (
                url == f"{live_server.url}{prefix}/studies/{study}/series/{series}/instances/{sop}"
            )
            assert _retrieve(client, url) == data


def test_several_instances_of_several_studies(http: httpx.Client) -> None:
    study = generate_uid()
    series = generate_uid()
    same_study = [make_instance(study_uid=study, series_uid=series, pixel_seed=i) for i in range(3)]
    other = make_instance()
    r = stow(http, [*same_study, other])
    assert r.status_code == 200, r.text
    urls = [value(i, RETRIEVE_URL) for i in referenced(r)]
    assert [value(i, REFERENCED_SOP_INSTANCE) for i in referenced(r)] == [
        _uids(d)[2] for d in [*same_study, other]
    ]
    for data, url in zip([*same_study, other], urls, strict=True):
        assert _retrieve(http, url) == data
    # Two studies: no single study RetrieveURL at the top of the response.
    assert RETRIEVE_URL not in r.json()


def test_store_into_a_study_url(http: httpx.Client, live_server: LiveServer) -> None:
    study = generate_uid()
    good = make_instance(study_uid=study)
    wrong = make_instance()
    r = stow(http, [good, wrong], url=f"/studies/{study}")
    assert r.status_code == 202, r.text
    assert [value(i, REFERENCED_SOP_INSTANCE) for i in referenced(r)] == [_uids(good)[2]]
    (item,) = failed(r)
    assert value(item, "00081197") == STUDY_MISMATCH
    assert value(item, REFERENCED_SOP_INSTANCE) == _uids(wrong)[2]
    assert value(item, REFERENCED_SOP_CLASS) == CT_IMAGE
    assert RETRIEVE_URL not in item
    assert value(r.json(), RETRIEVE_URL) == f"{live_server.url}/dicom-web/studies/{study}"
    assert _instances_with_sop(http, _uids(wrong)[2]) == []

    only_wrong = stow(http, [make_instance()], url=f"/studies/{study}")
    assert only_wrong.status_code == 409, only_wrong.text
    assert failure_reasons(only_wrong) == [STUDY_MISMATCH]
    assert referenced(only_wrong) == []

    single = http.post(f"/studies/{study}", content=make_instance(), headers=DICOM)
    assert single.status_code == 409
    assert failure_reasons(single) == [STUDY_MISMATCH]


def _without(keyword: str) -> bytes:
    ds = make_dataset()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    delattr(ds, keyword)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _bad_uid() -> bytes:
    ds = make_dataset()
    ds.SeriesInstanceUID = "1.2.3.abc"
    return to_part10(ds)


BAD_PARTS = {
    "no-study-uid": lambda: _without("StudyInstanceUID"),
    "no-series-uid": lambda: _without("SeriesInstanceUID"),
    "no-sop-instance-uid": lambda: _without("SOPInstanceUID"),
    "no-sop-class-uid": lambda: _without("SOPClassUID"),
    "uid-with-letters": _bad_uid,
    "not-dicom": lambda: b"this is not a DICOM file, just some text\n" * 10,
}


def test_validation_failure(http: httpx.Client, settings: Settings) -> None:
    for stored, case in enumerate(sorted(BAD_PARTS), start=1):
        try:
            _one_validation_failure(http, settings, BAD_PARTS[case](), stored)
        except AssertionError as exc:
            raise AssertionError(f"{case}: {exc}") from exc


def _one_validation_failure(
    http: httpx.Client, settings: Settings, bad: bytes, stored: int
) -> None:
    good = make_instance()
    r = stow(http, [bad, good])
    assert r.status_code == 202, r.text
    assert failure_reasons(r) == [VALIDATION_FAILURE]
    (item,) = failed(r)
    assert item["00000902"]["Value"][0], item  # a reason people can read
    assert RETRIEVE_URL not in item
    assert [value(i, REFERENCED_SOP_INSTANCE) for i in referenced(r)] == [_uids(good)[2]]

    alone = stow(http, [bad])
    assert alone.status_code == 409, alone.text
    assert failure_reasons(alone) == [VALIDATION_FAILURE]
    assert "00081199" not in alone.json()
    # Only the good instances were stored; nothing of the bad ones is kept anywhere.
    assert len(http.get("/instances").json()) == stored
    assert len(blob_files(settings)) == stored
    assert staged_leftovers(settings) == []


def test_a_failed_instance_names_its_uids(http: httpx.Client) -> None:
    ds = make_dataset()
    ds.SeriesInstanceUID = "1.2.3.abc"
    r = stow(http, [to_part10(ds)])
    (item,) = failed(r)
    assert value(item, REFERENCED_SOP_INSTANCE) == ds.SOPInstanceUID
    assert value(item, REFERENCED_SOP_CLASS) == CT_IMAGE
    assert "SeriesInstanceUID" in item["00000902"]["Value"][0]


def test_the_same_instance_twice_in_one_request(http: httpx.Client, settings: Settings) -> None:
    data = make_instance()
    r = stow(http, [data, data])
    assert r.status_code == 202, r.text
    assert len(referenced(r)) == 1
    assert failure_reasons(r) == [ALREADY_STORED]
    assert value(failed(r)[0], REFERENCED_SOP_INSTANCE) == _uids(data)[2]
    assert len(_instances_with_sop(http, _uids(data)[2])) == 1
    assert len(blob_files(settings)) == 1
    assert staged_leftovers(settings) == []


def test_the_same_instance_across_requests(http: httpx.Client, settings: Settings) -> None:
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    first = make_instance(study_uid=study, series_uid=series, sop_uid=sop, pixel_seed=1)
    # Same identity, other content: the first stays, the second is refused.
    second = make_instance(study_uid=study, series_uid=series, sop_uid=sop, pixel_seed=2)
    assert stow(http, [first]).status_code == 200
    for again in (first, second):
        r = stow(http, [again])
        assert r.status_code == 409, r.text
        assert failure_reasons(r) == [ALREADY_STORED]
        single = http.post("/studies", content=again, headers=DICOM)
        assert single.status_code == 409
        assert failure_reasons(single) == [ALREADY_STORED]
    assert len(_instances_with_sop(http, sop)) == 1
    (blob,) = blob_files(settings)
    assert blob.read_bytes() == first
    assert _retrieve(http, _instance_path(first)) == first
    assert staged_leftovers(settings) == []
    feed = http.get("/changefeed").json()
    assert [(e["SopInstanceUid"], e["Action"]) for e in feed] == [(sop, "create")]


def test_a_part_that_is_not_application_dicom(http: httpx.Client) -> None:
    for part_type in ("text/plain", "application/dicom+json", "image/jpeg"):
        _wrong_part_type(http, part_type)


def _wrong_part_type(http: httpx.Client, part_type: str) -> None:
    wrong = make_instance()
    right = make_instance()
    body = raw_multipart([({"Content-Type": part_type}, wrong), (DICOM, right)], boundary="XyZ")
    r = http.post(
        "/studies",
        content=body,
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=XyZ'},
    )
    assert r.status_code == 202, r.text
    assert failure_reasons(r) == [PROCESSING_FAILURE]
    assert part_type in failed(r)[0]["00000902"]["Value"][0]
    assert [value(i, REFERENCED_SOP_INSTANCE) for i in referenced(r)] == [_uids(right)[2]]
    assert _instances_with_sop(http, _uids(wrong)[2]) == []


def test_a_part_without_headers_is_taken_as_dicom(http: httpx.Client) -> None:
    data = make_instance()
    body = raw_multipart([({}, data)], boundary="XyZ")
    r = http.post(
        "/studies",
        content=body,
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=XyZ'},
    )
    assert r.status_code == 200, r.text
    assert _retrieve(http, _instance_path(data)) == data


def test_a_bare_data_set_is_stored_with_a_coercion_warning(http: httpx.Client) -> None:
    ds = make_dataset()
    buf = io.BytesIO()
    ds.save_as(buf, implicit_vr=False, little_endian=True)  # no preamble, no File Meta
    bare = buf.getvalue()
    assert bare[128:132] != b"DICM"
    r = stow(http, [bare])
    assert r.status_code == 202, r.text
    (item,) = referenced(r)
    assert value(item, WARNING_REASON) == COERCED
    assert "preamble" in item["00000902"]["Value"][0]
    assert failed(r) == []
    stored = _retrieve(http, value(item, RETRIEVE_URL))
    # A Part-10 header was put in front; the data set itself is kept byte for byte.
    assert stored[128:132] == b"DICM"
    assert stored.endswith(bare)
    back = dcmread(io.BytesIO(stored))
    assert back.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert back.PixelData == ds.PixelData


def _with_invalid_ds() -> tuple[bytes, str]:
    ds = make_dataset(SliceThickness="123.456")
    data = to_part10(ds)
    assert data.count(b"123.456 ") == 1
    return data.replace(b"123.456 ", b"12x.45y "), ds.SOPInstanceUID


def test_an_invalid_value_is_stored_with_a_warning(http: httpx.Client) -> None:
    data, sop = _with_invalid_ds()
    r = stow(http, [data, make_instance()])
    assert r.status_code == 202, r.text
    first, second = referenced(r)
    assert value(first, REFERENCED_SOP_INSTANCE) == sop
    assert value(first, WARNING_REASON) == DATASET_DOES_NOT_MATCH
    assert "0018,0050" in first["00000902"]["Value"][0]
    assert WARNING_REASON not in second
    assert failed(r) == []
    assert _retrieve(http, value(first, RETRIEVE_URL)) == data
    metadata = http.get(f"{_instance_path(data)}/metadata").json()
    assert metadata[0]["00180050"] == {"vr": "DS"}


def test_unsupported_content_type(http: httpx.Client, settings: Settings) -> None:
    data = make_instance()
    body, _ = multipart_body([data], boundary="XyZ")
    for content_type in (
        "application/json",
        "application/dicom+json",
        'multipart/related; type="application/dicom+json"; boundary=XyZ',
        "multipart/related; type=application/octet-stream; boundary=XyZ",
        "multipart/form-data; boundary=XyZ",
        "text/plain",
        None,
    ):
        headers = {"Content-Type": content_type} if content_type else {}
        for url in ("/studies", f"/studies/{_uids(data)[0]}"):
            r = http.post(url, content=body, headers=headers)
            assert_error(r, 415, "unsupported-media-type")
    assert http.get("/instances").json() == []
    assert staged_leftovers(settings) == []


def test_multipart_without_a_boundary(http: httpx.Client) -> None:
    body, _ = multipart_body([make_instance()])
    r = http.post(
        "/studies",
        content=body,
        headers={"Content-Type": 'multipart/related; type="application/dicom"'},
    )
    body_json = assert_error(r, 400, "invalid-input")
    assert "boundary" in body_json["message"]


def test_multipart_without_parts(http: httpx.Client, settings: Settings) -> None:
    r = http.post(
        "/studies",
        content=b"--XyZ--\r\n",
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=XyZ'},
    )
    assert_error(r, 400, "invalid-input")
    assert http.get("/instances").json() == []
    assert staged_leftovers(settings) == []


def test_the_response_status_follows_the_outcomes(http: httpx.Client) -> None:
    assert stow(http, [make_instance(), make_instance()]).status_code == 200
    assert stow(http, [make_instance(), b"junk"]).status_code == 202
    assert stow(http, [b"junk", b"more junk"]).status_code == 409
    data, _ = _with_invalid_ds()
    assert stow(http, [data]).status_code == 202  # stored, with a warning


# -- request size limit -------------------------------------------------------------------------

LIMIT = 64 * 1024


@pytest.fixture
def small_server(settings: Settings) -> Iterator[tuple[LiveServer, Settings]]:
    """A server whose max_request_bytes is 64 KiB."""
    small = settings.model_copy(update={"max_request_bytes": LIMIT})
    prepare_storage(small)
    services = build_services(small)
    try:
        with LiveServer(small, services) as server:
            yield server, small
    finally:
        services.close()


def _raw_request(port: int, head: str, body: bytes = b"") -> tuple[int, bytes]:
    """Send a hand-written request; (status, body) of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode("latin-1") + body)
        received = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
            head_end = received.find(b"\r\n\r\n")
            if head_end >= 0:
                headers = received[:head_end].decode("latin-1").lower()
                length = next(
                    int(line.split(":", 1)[1])
                    for line in headers.split("\r\n")
                    if line.startswith("content-length:")
                )
                if len(received) >= head_end + 4 + length:
                    break
    status = int(received.split(b" ", 2)[1])
    return status, received[received.find(b"\r\n\r\n") + 4 :]


def test_a_declared_length_over_the_limit_is_refused_before_reading(
    small_server: tuple[LiveServer, Settings],
) -> None:
    server, small = small_server
    # The body is never sent: the answer must come from the Content-Length header alone.
    for content_type in ("application/dicom", "multipart/related; boundary=XyZ"):
        status, body = _raw_request(
            server.port,
            "POST /dicom-web/studies HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: 1000000000\r\n\r\n",
        )
        assert status == 413
        assert b'"code":"too-large"' in body
    assert staged_leftovers(small) == []


def test_a_body_over_the_limit_is_refused(small_server: tuple[LiveServer, Settings]) -> None:
    server, small = small_server
    big = make_instance(rows=256, columns=256)  # 128 KiB of pixels
    small_enough = make_instance(rows=64, columns=64)  # 8 KiB
    with httpx.Client(base_url=server.url + "/dicom-web", timeout=60) as client:
        r = client.post("/studies", content=big, headers=DICOM)
        assert_error(r, 413, "too-large")
        r = stow(client, [small_enough, big])
        assert_error(r, 413, "too-large")

        def chunks(data: bytes) -> Iterator[bytes]:
            for start in range(0, len(data), 8192):
                yield data[start : start + 8192]

        # Without Content-Length (chunked), the limit is enforced while reading.
        r = client.post("/studies", content=chunks(big), headers=DICOM)
        assert "content-length" not in r.request.headers
        assert_error(r, 413, "too-large")
        body, content_type = multipart_body([small_enough, big])
        r = client.post("/studies", content=chunks(body), headers={"Content-Type": content_type})
        assert_error(r, 413, "too-large")

        # Nothing of a refused request is stored, not even its parts before the limit.
        assert client.get("/instances").json() == []
        assert blob_files(small) == []
        assert staged_leftovers(small) == []
        # Below the limit, chunked or not, storing works.
        assert stow(client, [small_enough]).status_code == 200
        other = make_instance(rows=64, columns=64)
        assert client.post("/studies", content=chunks(other), headers=DICOM).status_code == 200
        assert len(client.get("/instances").json()) == 2


# -- many, concurrent and large ----------------------------------------------------------------


def test_concurrent_stores_of_one_instance_store_it_once(
    live_server: LiveServer, settings: Settings
) -> None:
    data = make_instance()
    body, content_type = multipart_body([data])
    threads = 6
    barrier = threading.Barrier(threads)

    def post(_: int) -> httpx.Response:
        with httpx.Client(base_url=live_server.url + "/dicom-web", timeout=60) as client:
            barrier.wait()
            return client.post("/studies", content=body, headers={"Content-Type": content_type})

    with ThreadPoolExecutor(threads) as pool:
        responses = list(pool.map(post, range(threads)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [409] * (threads - 1), [r.text for r in responses]
    for r in responses:
        if r.status_code == 409:
            assert failure_reasons(r) == [ALREADY_STORED]
    with httpx.Client(base_url=live_server.url + "/dicom-web") as client:
        assert len(_instances_with_sop(client, _uids(data)[2])) == 1
        assert len(client.get("/changefeed").json()) == 1
        assert _retrieve(client, _instance_path(data)) == data
    (blob,) = blob_files(settings)
    assert blob.read_bytes() == data
    assert staged_leftovers(settings) == []


def test_fifty_instances_in_one_request(http: httpx.Client, settings: Settings) -> None:
    study, series = generate_uid(), generate_uid()
    parts = [
        make_instance(study_uid=study, series_uid=series, InstanceNumber=i, pixel_seed=i)
        for i in range(1, 51)
    ]
    r = stow(http, parts)
    assert r.status_code == 200, r.text
    assert [value(i, REFERENCED_SOP_INSTANCE) for i in referenced(r)] == [
        _uids(p)[2] for p in parts
    ]
    found = http.get(f"/studies/{study}/series/{series}/instances", params={"limit": 100}).json()
    assert len(found) == 50
    (series_row,) = http.get(f"/studies/{study}/series").json()
    assert value(series_row, "00201209") == 50
    assert len(blob_files(settings)) == 50
    multi = http.get(
        f"/studies/{study}", headers={"Accept": "multipart/related; type=application/dicom"}
    )
    assert sorted(
        p for _, p in parse_multipart(multi.content, multi.headers["content-type"])
    ) == sorted(parts)


def test_a_large_instance_is_streamed_and_round_trips(http: httpx.Client) -> None:
    # 512 x 512 x 16 bit x 100 frames: 50 MiB of pixel data.
    data = make_instance(rows=512, columns=512, frames=100)
    assert len(data) > 50 * 1024 * 1024
    body, content_type = multipart_body([data])

    def chunks() -> Iterator[bytes]:
        view = memoryview(body)
        for start in range(0, len(body), 1024 * 1024):
            yield bytes(view[start : start + 1024 * 1024])

    tracemalloc.start()
    try:
        r = http.post(
            "/studies",
            content=chunks(),
            headers={"Content-Type": content_type, "Content-Length": str(len(body))},
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.status_code == 200, r.text
    # Client and server together never held more than a fraction of the body at once.
    assert peak < 16 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB while storing 50 MiB"
    assert _retrieve(http, value(referenced(r)[0], RETRIEVE_URL)) == data
    frames = http.get(
        f"{_instance_path(data)}/bulkdata/7FE00010", headers={"Accept": "application/octet-stream"}
    )
    assert frames.status_code == 200
    assert frames.content == dcmread(io.BytesIO(data)).PixelData


def test_a_series_cannot_move_to_another_study(http: httpx.Client, settings: Settings) -> None:
    series = generate_uid()
    first = make_instance(series_uid=series)
    assert stow(http, [first]).status_code == 200
    elsewhere = make_instance(series_uid=series)  # same series, another study
    r = stow(http, [elsewhere, make_instance()])
    assert r.status_code == 202, r.text
    assert failure_reasons(r) == [VALIDATION_FAILURE]
    assert f"belongs to study {_uids(first)[0]}" in failed(r)[0]["00000902"]["Value"][0]
    assert _instances_with_sop(http, _uids(elsewhere)[2]) == []
    assert len(blob_files(settings)) == 2
    assert staged_leftovers(settings) == []


def test_a_series_cannot_span_two_studies_within_one_request(
    http: httpx.Client, settings: Settings
) -> None:
    series = generate_uid()
    first = make_instance(series_uid=series)
    elsewhere = make_instance(series_uid=series)  # same series, another study, same request
    r = stow(http, [first, elsewhere])
    assert r.status_code == 202, r.text
    assert failure_reasons(r) == [VALIDATION_FAILURE]
    assert f"belongs to study {_uids(first)[0]}" in failed(r)[0]["00000902"]["Value"][0]
    assert [value(i, REFERENCED_SOP_INSTANCE) for i in referenced(r)] == [_uids(first)[2]]
    assert _instances_with_sop(http, _uids(elsewhere)[2]) == []
    assert len(blob_files(settings)) == 1


def test_within_one_request_the_last_instance_sets_study_and_series_attributes(
    http: httpx.Client,
) -> None:
    study, series = generate_uid(), generate_uid()
    parts = [
        make_instance(
            study_uid=study,
            series_uid=series,
            StudyDescription=f"description {n}",
            SeriesDescription=f"series {n}",
            InstanceNumber=n,
        )
        for n in (1, 2, 3)
    ]
    assert stow(http, parts).status_code == 200
    found = http.get(
        "/studies",
        params={"StudyInstanceUID": study, "includefield": "StudyDescription"},
    ).json()
    assert [value(s, "00081030") for s in found] == ["description 3"]
    assert [value(s, "00201208") for s in found] == [3]
    series_found = http.get(
        f"/studies/{study}/series", params={"includefield": "SeriesDescription"}
    ).json()
    assert [value(s, "0008103E") for s in series_found] == ["series 3"]
    assert [value(s, "00201209") for s in series_found] == [3]
