"""WADO-RS frames (PS3.18 10.4.1.1.4): every sample file's frames equal pydicom's, as stored or decoded."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames

from tests.conftest import LiveServer
from tests.dicomfiles import (
    make_dataset,
    make_instance,
    parse_multipart,
    to_part10,
)
from tests.dicomweb.pixel_samples import (
    NAMES,
    Sample,
    pixel_array,
    quiet_read,
    serve_samples,
)
from tests.dicomweb.support import assert_error, stow

EXPLICIT_LE = "1.2.840.10008.1.2.1"
NATIVE_LE = {"1.2.840.10008.1.2", EXPLICIT_LE, "1.2.840.10008.1.2.1.99"}
OCTETS = "multipart/related; type=application/octet-stream"
AS_STORED = f"{OCTETS}; transfer-syntax=*"


@pytest.fixture(scope="module")
def sample_archive(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, dict[str, Sample]]]:
    with serve_samples(tmp_path_factory.mktemp("frames")) as archive:
        yield archive


@pytest.fixture(scope="module")
def sample_http(sample_archive: tuple[str, dict[str, Sample]]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sample_archive[0], timeout=120) as client:
        yield client


def _parts(r: httpx.Response) -> list[tuple[dict[str, str], bytes]]:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("multipart/related"), r.headers
    return parse_multipart(r.content, r.headers["content-type"])


def _all(sample: Sample) -> str:
    return ",".join(str(i) for i in range(1, sample.count + 1))


def _stored_frames(sample: Sample) -> list[bytes]:
    """The frames as pydicom finds them in the file: fragments joined, or native slices."""
    ds = sample.ds
    if sample.syntax not in NATIVE_LE | {"1.2.840.10008.1.2.2"}:
        return list(generate_frames(ds.PixelData, number_of_frames=sample.count))
    bits = ds.Rows * ds.Columns * (ds.get("SamplesPerPixel") or 1) * ds.BitsAllocated
    if ds.get("PhotometricInterpretation") == "YBR_FULL_422":
        bits = bits * 2 // 3
    if bits % 8 == 0:
        n = bits // 8
        return [ds.PixelData[i * n : (i + 1) * n] for i in range(sample.count)]
    unpacked = np.unpackbits(np.frombuffer(ds.PixelData, np.uint8), bitorder="little")
    return [
        np.packbits(unpacked[i * bits : (i + 1) * bits], bitorder="little").tobytes()
        for i in range(sample.count)
    ]


@pytest.mark.parametrize("name", NAMES)
def test_frames_as_stored_are_pydicoms_frames(
    sample_http: httpx.Client, sample_archive: tuple[str, dict[str, Sample]], name: str
) -> None:
    sample = sample_archive[1][name]
    r = sample_http.get(f"{sample.url}/frames/{_all(sample)}", headers={"Accept": AS_STORED})
    try:
        expected = _stored_frames(sample)
    except Exception:  # noqa: BLE001 - pydicom cannot split the fragments either: a clear 406
        assert_error(r, 406, "not-acceptable")
        return
    parts = _parts(r)
    assert [p for _, p in parts] == expected
    label = EXPLICIT_LE if sample.syntax in NATIVE_LE else sample.syntax
    for headers, _ in parts:
        assert headers["content-type"] == f"application/octet-stream; transfer-syntax={label}"


@pytest.mark.parametrize("name", NAMES)
def test_frames_decoded_equal_pydicomspixel_array(
    sample_http: httpx.Client, sample_archive: tuple[str, dict[str, Sample]], name: str
) -> None:
    sample = sample_archive[1][name]
    # No transfer-syntax: Explicit VR Little Endian, the default of application/octet-stream.
    r = sample_http.get(f"{sample.url}/frames/{_all(sample)}", headers={"Accept": OCTETS})
    try:
        expected = pixel_array(sample.ds)
    except Exception:  # noqa: BLE001 - pydicom cannot decode it: neither can we, and we say so
        body = assert_error(r, 406, "not-acceptable")
        assert "decode" in body["message"] or "told apart" in body["message"], body
        return
    parts = _parts(r)
    assert len(parts) == sample.count
    for headers, _ in parts:
        assert headers["content-type"] == f"application/octet-stream; transfer-syntax={EXPLICIT_LE}"
    if sample.syntax in NATIVE_LE:
        # Little-endian native frames are served as stored, byte for byte.
        assert [p for _, p in parts] == _stored_frames(sample)
        return
    ds = sample.ds
    for i, (_, payload) in enumerate(parts):
        if ds.BitsAllocated == 1:
            got = np.unpackbits(np.frombuffer(payload, np.uint8), bitorder="little")
            got = got[: ds.Rows * ds.Columns].reshape(expected[i].shape)
        else:
            dtype = expected.dtype.newbyteorder("<")
            got = np.frombuffer(payload, dtype=dtype).reshape(expected[i].shape)
        np.testing.assert_array_equal(got, expected[i], err_msg=f"{name} frame {i + 1}")


SINGLE_FRAME_CHECKS = [
    "CT_small.dcm",  # native
    "MR_small_RLE.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline, YBR_FULL
    "JPEG2000.dcm",
    "emri_small_jpeg_ls_lossless.dcm",  # multi-frame JPEG-LS
]


@pytest.mark.parametrize("name", SINGLE_FRAME_CHECKS)
def test_single_part_octet_stream_for_one_frame(
    sample_http: httpx.Client, sample_archive: tuple[str, dict[str, Sample]], name: str
) -> None:
    sample = sample_archive[1][name]
    stored = sample_http.get(
        f"{sample.url}/frames/1", headers={"Accept": "application/octet-stream; transfer-syntax=*"}
    )
    assert stored.status_code == 200, stored.text
    label = EXPLICIT_LE if sample.syntax in NATIVE_LE else sample.syntax
    assert stored.headers["content-type"] == f"application/octet-stream; transfer-syntax={label}"
    assert stored.content == _stored_frames(sample)[0]
    assert stored.headers["content-length"] == str(len(stored.content))

    decoded = sample_http.get(
        f"{sample.url}/frames/1", headers={"Accept": "application/octet-stream"}
    )
    assert decoded.status_code == 200, decoded.text
    expected = pixel_array(sample.ds)[0]
    got = np.frombuffer(decoded.content, expected.dtype.newbyteorder("<")).reshape(expected.shape)
    np.testing.assert_array_equal(got, expected)
    # Several frames cannot be one single-part body.
    if sample.count > 1:
        r = sample_http.get(
            f"{sample.url}/frames/1,2", headers={"Accept": "application/octet-stream"}
        )
        assert "multipart" in assert_error(r, 406, "not-acceptable")["message"]


@pytest.mark.parametrize(
    ("name", "media_type", "syntax"),
    [
        ("SC_rgb_jpeg_dcmtk.dcm", "image/jpeg", "1.2.840.10008.1.2.4.50"),
        ("SC_rgb_jls_lossy_sample.dcm", "image/jls", "1.2.840.10008.1.2.4.81"),
        ("emri_small_jpeg_ls_lossless.dcm", "image/x-jls", "1.2.840.10008.1.2.4.80"),
        ("JPEG2000.dcm", "image/jp2", "1.2.840.10008.1.2.4.91"),
        ("MR_small_RLE.dcm", "image/x-dicom-rle", "1.2.840.10008.1.2.5"),
        ("MR_small_RLE.dcm", "image/dicom-rle", "1.2.840.10008.1.2.5"),
    ],
)
def test_compressed_frames_in_their_own_media_type(
    sample_http: httpx.Client,
    sample_archive: tuple[str, dict[str, Sample]],
    name: str,
    media_type: str,
    syntax: str,
) -> None:
    sample = sample_archive[1][name]
    assert sample.syntax == syntax
    for accept in (
        f"multipart/related; type={media_type}",
        f'multipart/related; type="{media_type}"; transfer-syntax={syntax}',
        f"multipart/related; type={media_type}; transfer-syntax=*",
    ):
        r = sample_http.get(f"{sample.url}/frames/1", headers={"Accept": accept})
        (part,) = _parts(r)
        assert part[0]["content-type"] == f"{media_type}; transfer-syntax={syntax}", accept
        assert part[1] == _stored_frames(sample)[0]
        assert f'type="{media_type}"' in r.headers["content-type"]
    # */* and no Accept at all: as stored, in the stored syntax's media type.
    for headers in ({"Accept": "*/*"}, {}):
        (part,) = _parts(sample_http.get(f"{sample.url}/frames/1", headers=headers))
        assert part[0]["content-type"].endswith(f"; transfer-syntax={syntax}")
        assert part[1] == _stored_frames(sample)[0]
    # image/*: whichever image type the frames are stored in.
    (part,) = _parts(
        sample_http.get(
            f"{sample.url}/frames/1", headers={"Accept": "multipart/related; type=image/*"}
        )
    )
    assert part[0]["content-type"].endswith(f"; transfer-syntax={syntax}")
    # Single part in the media type, for one frame.
    single = sample_http.get(f"{sample.url}/frames/1", headers={"Accept": media_type})
    assert single.status_code == 200, single.text
    assert single.content == _stored_frames(sample)[0]


@pytest.mark.parametrize(
    ("name", "media_type", "syntax"),
    [
        ("CT_small.dcm", "image/jp2", "1.2.840.10008.1.2.4.90"),
        ("CT_small.dcm", "image/jls", "1.2.840.10008.1.2.4.80"),
        ("emri_small.dcm", "image/x-dicom-rle", "1.2.840.10008.1.2.5"),
        ("SC_rgb_jpeg_dcmtk.dcm", "image/jp2", "1.2.840.10008.1.2.4.90"),
        ("emri_small_jpeg_2k_lossless.dcm", "image/jls", "1.2.840.10008.1.2.4.80"),
        ("SC_rgb_rle_2frame.dcm", "image/jp2", "1.2.840.10008.1.2.4.90"),
    ],
)
def test_frames_encoded_losslessly_on_request(
    sample_http: httpx.Client,
    sample_archive: tuple[str, dict[str, Sample]],
    name: str,
    media_type: str,
    syntax: str,
) -> None:
    sample = sample_archive[1][name]
    r = sample_http.get(
        f"{sample.url}/frames/{_all(sample)}",
        headers={"Accept": f"multipart/related; type={media_type}"},
    )
    parts = _parts(r)
    expected = pixel_array(sample.ds)
    for i, (headers, payload) in enumerate(parts):
        assert headers["content-type"] == f"{media_type}; transfer-syntax={syntax}"
        # Decode the served codestream with pydicom as a one-frame instance of that syntax.
        ds = quiet_read(sample.data)
        ds.file_meta.TransferSyntaxUID = syntax
        ds.PixelData = encapsulate([payload])
        ds.NumberOfFrames = 1
        if "PhotometricInterpretation" in ds and ds.PhotometricInterpretation == "YBR_FULL_422":
            ds.PhotometricInterpretation = "YBR_FULL"
        np.testing.assert_array_equal(pixel_array(ds)[0], expected[i])


def test_lossy_or_unencodable_frame_syntaxes_are_406_with_reasons(
    sample_http: httpx.Client, sample_archive: tuple[str, dict[str, Sample]]
) -> None:
    sample = sample_archive[1]["CT_small.dcm"]
    r = sample_http.get(
        f"{sample.url}/frames/1", headers={"Accept": "multipart/related; type=image/jpeg"}
    )
    message = assert_error(r, 406, "not-acceptable")["message"]
    assert "JPEG Lossless" in message and "transfer-syntax=*" in message
    lossy = "multipart/related; type=image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50"
    message = assert_error(
        sample_http.get(f"{sample.url}/frames/1", headers={"Accept": lossy}), 406
    )["message"]
    assert "lossy" in message
    mismatch = "multipart/related; type=image/jp2; transfer-syntax=1.2.840.10008.1.2.4.50"
    message = assert_error(
        sample_http.get(f"{sample.url}/frames/1", headers={"Accept": mismatch}), 406
    )["message"]
    assert "not a transfer syntax of image/jp2" in message
    # A later, satisfiable media range is used instead.
    both = f"{lossy}, {AS_STORED}"
    (part,) = _parts(sample_http.get(f"{sample.url}/frames/1", headers={"Accept": both}))
    assert part[1] == _stored_frames(sample)[0]
    assert_error(sample_http.get(f"{sample.url}/frames/1", headers={"Accept": "text/html"}), 406)
    # Native frames are not an image type.
    message = assert_error(
        sample_http.get(f"{sample.url}/frames/1", headers={"Accept": "image/*"}), 406
    )["message"]
    assert "application/octet-stream, not image/*" in message


# ---- on both backends: the route, its errors and its clients ------------------------------


def _store(http: httpx.Client, data: bytes) -> str:
    r = stow(http, [data])
    assert r.status_code in (200, 202), r.text
    ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
    return f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def test_native_frames_and_lists(http: httpx.Client) -> None:
    data = make_instance(rows=16, columns=16, frames=5)
    ds = dcmread(io.BytesIO(data))
    url = _store(http, data)
    frame_len = 16 * 16 * 2
    stored = [ds.PixelData[i * frame_len : (i + 1) * frame_len] for i in range(5)]
    for accept in (AS_STORED, OCTETS, 'multipart/related; type="application/octet-stream"', "*/*"):
        parts = _parts(http.get(f"{url}/frames/1,3,5", headers={"Accept": accept}))
        assert [p for _, p in parts] == [stored[0], stored[2], stored[4]], accept
        for headers, payload in parts:
            assert (
                headers["content-type"]
                == f"application/octet-stream; transfer-syntax={EXPLICIT_LE}"
            )
            assert headers["content-length"] == str(len(payload))
    # Order as asked, repeats allowed.
    parts = _parts(http.get(f"{url}/frames/4,2,4", headers={"Accept": AS_STORED}))
    assert [p for _, p in parts] == [stored[3], stored[1], stored[3]]
    single = http.get(f"{url}/frames/2", headers={"Accept": "application/octet-stream"})
    assert single.status_code == 200
    assert single.content == stored[1]
    assert (
        single.headers["content-type"] == f"application/octet-stream; transfer-syntax={EXPLICIT_LE}"
    )
    # No Accept header: multipart, as stored.
    assert [p for _, p in _parts(http.get(f"{url}/frames/5"))] == [stored[4]]


@pytest.mark.parametrize("frames", ["0", "1,0", "-1", "a", "1,,2", "1.5", ",", "1;2", "%201x"])
def test_malformed_frame_lists_are_400(http: httpx.Client, frames: str) -> None:
    url = _store(http, make_instance(frames=2))
    body = assert_error(http.get(f"{url}/frames/{frames}"), 400, "invalid-input")
    assert "frame" in body["message"]


def test_frames_beyond_the_instance_are_404(http: httpx.Client) -> None:
    url = _store(http, make_instance(frames=3))
    body = assert_error(http.get(f"{url}/frames/2,4"), 404, "not-found")
    assert "frame 4" in body["message"] and "3 frames" in body["message"]
    single = _store(http, make_instance())
    assert "1 frame" in assert_error(http.get(f"{single}/frames/2"), 404)["message"]


def test_instances_without_pixel_data_have_no_frames(http: httpx.Client) -> None:
    ds = make_dataset_without_pixels()
    url = _store(http, to_part10(ds))
    body = assert_error(http.get(f"{url}/frames/1"), 404, "not-found")
    assert "no pixel data" in body["message"]
    # Unknown instances and bad UIDs are refused like the other WADO-RS routes.
    assert_error(http.get("/studies/1.2.3/series/1.2.4/instances/1.2.5/frames/1"), 404)
    assert_error(http.get("/studies/1.2.3/series/1.2.4/instances/x/frames/1"), 400)


def make_dataset_without_pixels() -> Dataset:
    ds = make_dataset(sop_class="1.2.840.10008.5.1.4.1.1.88.11")  # Basic Text SR
    for keyword in (
        "PixelData",
        "Rows",
        "Columns",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
        "SamplesPerPixel",
        "PhotometricInterpretation",
    ):
        delattr(ds, keyword)
    ds.Modality = "SR"
    return ds


@pytest.mark.parametrize("prefix", ["/v1", "/v2", "/dicom-web"])
def test_frames_under_every_prefix(live_server: LiveServer, prefix: str) -> None:
    path = Path(get_testdata_file("emri_small_jpeg_2k_lossless.dcm"))  # type: ignore[arg-type]
    data = path.read_bytes()
    ds = dcmread(path)
    expected = list(generate_frames(ds.PixelData, number_of_frames=10))
    with httpx.Client(base_url=live_server.url + prefix, timeout=60) as http:
        url = _store(http, data)
        parts = _parts(http.get(f"{url}/frames/2,10", headers={"Accept": AS_STORED}))
        assert [p for _, p in parts] == [expected[1], expected[9]]
        decoded = _parts(http.get(f"{url}/frames/3", headers={"Accept": OCTETS}))
        arr = pixel_array(ds)[2]
        np.testing.assert_array_equal(np.frombuffer(decoded[0][1], "<u2").reshape(arr.shape), arr)


def test_dicomweb_client_retrieves_frames(live_server: LiveServer) -> None:
    client = DICOMwebClient(url=f"{live_server.url}/dicom-web")
    ds = dcmread(get_testdata_file("emri_small_RLE.dcm"))
    client.store_instances([ds])
    uids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    expected = list(generate_frames(ds.PixelData, number_of_frames=10))
    # Its default Accept is multipart/related; type="*/*": frames as stored.
    assert client.retrieve_instance_frames(*uids, frame_numbers=[1, 4]) == [
        expected[0],
        expected[3],
    ]
    rle = client.retrieve_instance_frames(
        *uids, frame_numbers=[2], media_types=(("image/x-dicom-rle", "1.2.840.10008.1.2.5"),)
    )
    assert rle == [expected[1]]
    decoded = client.retrieve_instance_frames(
        *uids, frame_numbers=[5, 6], media_types=(("application/octet-stream", EXPLICIT_LE),)
    )
    arr = pixel_array(ds)
    for got, want in zip(decoded, arr[4:6], strict=True):
        np.testing.assert_array_equal(np.frombuffer(got, "<u2").reshape(want.shape), want)


def test_frames_over_the_inline_limit_stream_by_range(http: httpx.Client) -> None:
    # 2 frames of 1100 x 2048 x 16 bits: 4.3 MiB each, above the 4 MiB read up front.
    data = make_instance(rows=1100, columns=2048, frames=2)
    ds = dcmread(io.BytesIO(data))
    url = _store(http, data)
    size = 1100 * 2048 * 2
    stored = [ds.PixelData[:size], ds.PixelData[size:]]
    r = http.get(f"{url}/frames/2,1", headers={"Accept": AS_STORED})
    assert r.headers["content-length"] == str(len(r.content))
    assert [p for _, p in _parts(r)] == [stored[1], stored[0]]
    single = http.get(f"{url}/frames/2", headers={"Accept": "application/octet-stream"})
    assert single.status_code == 200
    assert single.headers["content-length"] == str(size)
    assert single.content == stored[1]
