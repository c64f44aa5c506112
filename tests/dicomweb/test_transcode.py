"""WADO-RS retrieve in another transfer syntax: instances, series and studies transcoded while sent."""

from __future__ import annotations

import io
import tracemalloc
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import generate_uid

from tests.conftest import LiveServer
from tests.dicomfiles import make_dataset, make_instance, parse_multipart, to_part10
from tests.dicomweb.pixel_samples import SAMPLES, Sample, serve_samples
from tests.dicomweb.support import assert_error, stow

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
RLE = "1.2.840.10008.1.2.5"
JLS = "1.2.840.10008.1.2.4.80"
J2K = "1.2.840.10008.1.2.4.90"
LOSSLESS = (RLE, JLS, J2K)
SMALL = [name for name, data in SAMPLES if len(data) <= 1_000_000]


@pytest.fixture(scope="module")
def sample_archive(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, dict[str, Sample]]]:
    with serve_samples(tmp_path_factory.mktemp("transcode")) as archive:
        yield archive


@pytest.fixture(scope="module")
def sample_http(sample_archive: tuple[str, dict[str, Sample]]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sample_archive[0], timeout=120) as client:
        yield client


def _read(data: bytes) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dcmread(io.BytesIO(data))


def _pixels(ds: Dataset) -> np.ndarray[Any, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(ds.pixel_array)


def _decodable(ds: Dataset) -> bool:
    try:
        _pixels(ds)
    except Exception:  # noqa: BLE001 - pydicom cannot decode this file
        return False
    return True


def _pydicom_can_encode(data: bytes, target: str) -> bool:
    """pydicom's own decompress-then-compress, the oracle for what an encoder accepts."""
    ds = _read(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = _raw(ds)  # decoded without colour conversion, interleaved
            if ds.get("PhotometricInterpretation") == "YBR_FULL_422":
                ds.PhotometricInterpretation = "YBR_FULL"
            if "PlanarConfiguration" in ds:
                ds.PlanarConfiguration = 0
            ds.compress(target, arr, generate_instance_uid=False)
    except Exception:  # noqa: BLE001 - any refusal by pydicom
        return False
    return True


def _raw(ds: Dataset) -> np.ndarray[Any, Any]:
    arr, _ = get_decoder(ds.file_meta.TransferSyntaxUID).as_array(ds, raw=True)
    return np.asarray(arr)


def _instance(
    http: httpx.Client, sample: Sample, target: str, *, single: bool = True
) -> httpx.Response:
    accept = (
        f"application/dicom; transfer-syntax={target}"
        if single
        else f'multipart/related; type="application/dicom"; transfer-syntax={target}'
    )
    return http.get(sample.url, headers={"Accept": accept})


@pytest.mark.parametrize("name", [name for name, _ in SAMPLES])
def test_every_sample_decodes_to_explicit_vr_little_endian(
    sample_http: httpx.Client, sample_archive: tuple[str, dict[str, Sample]], name: str
) -> None:
    sample = sample_archive[1][name]
    r = _instance(sample_http, sample, EXPLICIT_LE)
    if sample.syntax == EXPLICIT_LE:
        # Already there: byte-exact as stored, with its length.
        assert r.content == sample.data
        assert r.headers["content-length"] == str(len(sample.data))
        return
    if not _decodable(sample.ds):
        assert "decode" in assert_error(r, 406, "not-acceptable")["message"]
        return
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == f"application/dicom; transfer-syntax={EXPLICIT_LE}"
    back = _read(r.content)
    assert back.file_meta.TransferSyntaxUID == EXPLICIT_LE
    assert back.SOPInstanceUID == sample.ds.SOPInstanceUID
    np.testing.assert_array_equal(_pixels(back), _pixels(sample.ds))


@pytest.mark.parametrize(("name", "target"), [(n, t) for n in SMALL for t in LOSSLESS])
def test_lossless_encodings_round_trip_exactly(
    sample_http: httpx.Client,
    sample_archive: tuple[str, dict[str, Sample]],
    name: str,
    target: str,
) -> None:
    sample = sample_archive[1][name]
    if sample.syntax == target:
        return  # as stored: covered by the as-stored tests
    r = _instance(sample_http, sample, target, single=False)
    if r.status_code == 406:
        message = assert_error(r, 406, "not-acceptable")["message"]
        assert sample.ds.SOPInstanceUID in message or "decode" in message, message
        # Refused only where pydicom refuses too (its encoder profiles, its decoders).
        assert not (_decodable(sample.ds) and _pydicom_can_encode(sample.data, target)), message
        return
    ((headers, payload),) = parse_multipart(r.content, r.headers["content-type"])
    assert headers["content-type"] == f"application/dicom; transfer-syntax={target}"
    back = _read(payload)
    assert back.file_meta.TransferSyntaxUID == target
    assert back["PixelData"].is_undefined_length
    np.testing.assert_array_equal(_pixels(back), _pixels(sample.ds))


# ---- on both backends ---------------------------------------------------------------------


def _store(http: httpx.Client, *parts: bytes) -> None:
    r = stow(http, list(parts))
    assert r.status_code in (200, 202), r.text


def _path(ds: Dataset) -> str:
    return (
        f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )


def test_a_series_of_mixed_syntaxes_is_transcoded_part_by_part(http: httpx.Client) -> None:
    study, series = generate_uid(), generate_uid()
    native = make_dataset(study_uid=study, series_uid=series, InstanceNumber=1, frames=3)
    implicit = make_dataset(study_uid=study, series_uid=series, InstanceNumber=2, pixel_seed=1)
    jpeg = _read(_sample_bytes())
    jpeg.StudyInstanceUID, jpeg.SeriesInstanceUID = study, series
    jpeg.SOPInstanceUID = generate_uid()
    jpeg.file_meta.MediaStorageSOPInstanceUID = jpeg.SOPInstanceUID
    jpeg.InstanceNumber = 3
    files = [
        to_part10(native),
        to_part10(implicit, IMPLICIT_LE),
        to_part10(jpeg, str(jpeg.file_meta.TransferSyntaxUID)),
    ]
    _store(http, *files)
    originals = [_read(f) for f in files]
    for url in (f"/studies/{study}", f"/studies/{study}/series/{series}"):
        r = http.get(
            url,
            headers={"Accept": f"multipart/related; type=application/dicom; transfer-syntax={RLE}"},
        )
        assert r.status_code == 200, r.text
        assert "content-length" not in r.headers  # made while sent
        assert r.headers["content-type"].startswith('multipart/related; type="application/dicom"')
        parts = parse_multipart(r.content, r.headers["content-type"])
        assert len(parts) == 3
        for (headers, payload), original in zip(parts, originals, strict=True):
            assert headers["content-type"] == f"application/dicom; transfer-syntax={RLE}"
            assert headers["content-location"].endswith(_path(original))
            back = _read(payload)
            assert back.file_meta.TransferSyntaxUID == RLE
            np.testing.assert_array_equal(_pixels(back), _pixels(original))
    # Those already in the asked syntax come back byte-exact, with their length.
    r = http.get(
        f"/studies/{study}",
        headers={
            "Accept": f"multipart/related; type=application/dicom; transfer-syntax={EXPLICIT_LE}"
        },
    )
    parts = parse_multipart(r.content, r.headers["content-type"])
    assert parts[0][1] == files[0]
    assert parts[0][0]["content-length"] == str(len(files[0]))
    assert _read(parts[1][1]).file_meta.TransferSyntaxUID == EXPLICIT_LE
    np.testing.assert_array_equal(_pixels(_read(parts[2][1])), _pixels(originals[2]))


def _sample_bytes() -> bytes:
    path = get_testdata_file("SC_rgb_jpeg_dcmtk.dcm")
    assert isinstance(path, str)
    with open(path, "rb") as fh:
        return fh.read()


def test_implicit_vr_little_endian_on_request(http: httpx.Client) -> None:
    data = make_instance(frames=2)
    ds = _read(data)
    _store(http, data)
    r = http.get(_path(ds), headers={"Accept": f"application/dicom; transfer-syntax={IMPLICIT_LE}"})
    assert r.status_code == 200, r.text
    back = _read(r.content)
    assert back.file_meta.TransferSyntaxUID == IMPLICIT_LE
    assert back.PixelData == ds.PixelData
    assert back.PatientName == ds.PatientName


def test_lossy_and_unknown_targets_are_406_with_what_is_possible(http: httpx.Client) -> None:
    data = make_instance()
    ds = _read(data)
    _store(http, data)
    for target in ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.81"):
        for accept in (
            f"application/dicom; transfer-syntax={target}",
            f'multipart/related; type="application/dicom"; transfer-syntax={target}',
        ):
            body = assert_error(http.get(_path(ds), headers={"Accept": accept}), 406)
            assert "lossy" in body["message"] and "JPEG 2000 Lossless" in body["message"]
            assert body["code"] == "not-acceptable"
    body = assert_error(
        http.get(_path(ds), headers={"Accept": "application/dicom; transfer-syntax=1.2.3.4"}), 406
    )
    assert "cannot encode" in body["message"]
    body = assert_error(
        http.get(
            f"/studies/{ds.StudyInstanceUID}",
            headers={
                "Accept": "multipart/related; type=application/dicom; transfer-syntax=1.2.840.10008.1.2.4.70"
            },
        ),
        406,
    )
    assert "JPEG Lossless" in body["message"]


def test_an_undecodable_stored_syntax_is_406(http: httpx.Client) -> None:
    # JPEG 2000 Part 2 multi-component: stored fine, but no decoder is installed for it.
    ds = make_dataset(rows=8, columns=8)
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(60)])
    ds["PixelData"].VR = "OB"
    data = to_part10(ds, "1.2.840.10008.1.2.4.92")
    _store(http, data)
    r = http.get(_path(ds), headers={"Accept": f"application/dicom; transfer-syntax={EXPLICIT_LE}"})
    assert "no decoder" in assert_error(r, 406, "not-acceptable")["message"]
    # A frame that a decoder exists for but that is not a codestream: 406 too, before any byte.
    bad = make_dataset(rows=8, columns=8)
    bad.PixelData = encapsulate([b"\xff\x4f\xff\x51 broken"])
    bad["PixelData"].VR = "OB"
    _store(http, to_part10(bad, J2K))
    r = http.get(
        _path(bad), headers={"Accept": f"application/dicom; transfer-syntax={EXPLICIT_LE}"}
    )
    assert "cannot decode" in assert_error(r, 406, "not-acceptable")["message"]
    # As stored still works.
    r = http.get(_path(bad), headers={"Accept": "application/dicom; transfer-syntax=*"})
    assert r.status_code == 200


def test_an_instance_without_pixel_data_changes_encoding_only(http: httpx.Client) -> None:
    ds = make_dataset(sop_class="1.2.840.10008.5.1.4.1.1.88.11", Modality="SR")
    for keyword in ("PixelData", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit"):
        delattr(ds, keyword)
    data = to_part10(ds, IMPLICIT_LE)
    _store(http, data)
    for target in (EXPLICIT_LE, J2K):
        r = http.get(_path(ds), headers={"Accept": f"application/dicom; transfer-syntax={target}"})
        assert r.status_code == 200, r.text
        back = _read(r.content)
        assert back.file_meta.TransferSyntaxUID == target
        assert back.SOPInstanceUID == ds.SOPInstanceUID and back.PatientName == ds.PatientName


def test_transcoding_under_the_v1_prefix_and_with_dicomweb_client(live_server: LiveServer) -> None:
    path = get_testdata_file("emri_small_jpeg_ls_lossless.dcm")
    assert isinstance(path, str)
    original = dcmread(path)
    client = DICOMwebClient(url=f"{live_server.url}/v1")
    client.store_instances([original])
    back = client.retrieve_instance(
        original.StudyInstanceUID,
        original.SeriesInstanceUID,
        original.SOPInstanceUID,
        media_types=(("application/dicom", EXPLICIT_LE),),
    )
    assert back.file_meta.TransferSyntaxUID == EXPLICIT_LE
    np.testing.assert_array_equal(_pixels(back), _pixels(original))
    series = client.retrieve_series(
        original.StudyInstanceUID,
        original.SeriesInstanceUID,
        media_types=(("application/dicom", J2K),),
    )
    assert [s.file_meta.TransferSyntaxUID for s in series] == [J2K]
    np.testing.assert_array_equal(_pixels(series[0]), _pixels(original))


def test_a_large_instance_is_transcoded_in_bounded_memory(http: httpx.Client) -> None:
    # 64 frames of 512 x 512 x 16 bits: 32 MiB of pixel data, streamed out as RLE.
    data = make_instance(rows=512, columns=512, frames=64)
    ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
    _store(http, data)
    del data
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        received = 0
        items = 0
        with http.stream(
            "GET", _path(ds), headers={"Accept": f"application/dicom; transfer-syntax={RLE}"}
        ) as r:
            assert r.status_code == 200
            for chunk in r.iter_raw():
                received += len(chunk)
                items += chunk.count(b"\xfe\xff\x00\xe0")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert received > 16 * 1024 * 1024  # random 12-bit pixels compress little
    assert items >= 65  # the offset table and one fragment per frame
    # The server and this client share the process: together they held a few frames at most.
    assert peak < 12 * 1024 * 1024, peak
