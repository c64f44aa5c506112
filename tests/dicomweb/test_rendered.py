"""Rendered resources and thumbnails over HTTP (PS3.18 10.4.1.1.3; Sup 203 thumbnails).

Images are compared with tests/dicom/render_reference.py, an independent rendering written from
the standard's formulas: PNG exactly (within one grey level for rounding), JPEG within a
tolerance.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import generate_uid

from dicomhub.config import Settings
from tests.conftest import LiveServer
from tests.dicom.render_reference import (
    default_display,
    palette_reference,
    ref_linear_exact,
    ref_sigmoid,
    rescaled,
    rgb_to_ybr_full,
    to8,
)
from tests.dicomfiles import make_dataset, parse_multipart, to_part10
from tests.dicomweb.support import assert_error, stow

# Pixel matrices over many files, where the index backend plays no part, run on SQLite only;
# the tests without this mark cover every route on both backends.
SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

PNG = {"Accept": "image/png"}
JPEG_PARTS = {"Accept": 'multipart/related; type="image/jpeg"'}
PNG_PARTS = {"Accept": "multipart/related; type=image/png"}
PDF_CLASS = "1.2.840.10008.5.1.4.1.1.104.1"
VIDEO_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.4.1"  # Video Photographic Image Storage
MPEG4 = "1.2.840.10008.1.2.4.102"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def path(ds: Dataset) -> str:
    return (
        f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )


def store_files(http: httpx.Client, *names: str) -> list[Dataset]:
    files = [Path(get_testdata_file(n)).read_bytes() for n in names]
    r = stow(http, files)
    assert r.status_code == 200, r.text
    return [dcmread(io.BytesIO(f)) for f in files]


def store_datasets(
    http: httpx.Client, *datasets: Dataset, transfer_syntax: str | None = None
) -> None:
    parts = [
        to_part10(ds, transfer_syntax) if transfer_syntax else to_part10(ds) for ds in datasets
    ]
    r = stow(http, parts)
    # 202: stored with a warning (a video's frames cannot be told apart, for one)
    assert r.status_code in (200, 202), r.text
    assert "00081198" not in r.json(), r.text


def image(r: httpx.Response, media_type: str = "image/png") -> Image.Image:
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.headers["content-type"] == media_type
    decoded = Image.open(io.BytesIO(r.content))
    decoded.load()
    return decoded


def assert_close(got: Image.Image, expected: np.ndarray, tolerance: int = 1) -> None:
    values = np.asarray(got).astype(np.int16)
    assert values.shape == expected.shape
    assert np.abs(values - expected.astype(np.int16)).max() <= tolerance


def parts(r: httpx.Response) -> list[tuple[dict[str, str], bytes]]:
    assert r.status_code == 200, (r.status_code, r.text)
    return parse_multipart(r.content, r.headers["content-type"])


# -- instance and frame rendering -----------------------------------------------------------------


def test_rendered_instance_in_each_media_type(http: httpx.Client) -> None:
    (ds,) = store_files(http, "MR_small.dcm")
    expected = default_display(ds)
    url = path(ds) + "/rendered"
    assert_close(image(http.get(url, headers=PNG)), expected)
    jpeg = image(http.get(url, headers={"Accept": "image/jpeg"}), "image/jpeg")
    assert np.abs(np.asarray(jpeg).astype(np.int16) - expected).mean() < 4
    gif = image(http.get(url, headers={"Accept": "image/gif"}), "image/gif")
    assert_close(gif.convert("L"), expected)
    for accept in ("*/*", "image/*", None, "text/html, image/*;q=0.5"):
        r = http.get(url, headers={"Accept": accept} if accept else {})
        assert r.headers["content-type"] == "image/jpeg", accept  # the default (PS3.18 8.7.4)
    weighted = http.get(url, headers={"Accept": "image/jpeg;q=0.5, image/png"})
    assert weighted.headers["content-type"] == "image/png"
    # the accept query parameter wins over the header (PS3.18 8.3.3.1)
    assert image(http.get(url, params={"accept": "image/gif"}, headers=PNG), "image/gif")


@SQLITE_ONLY
def test_stored_windows_rescale_and_monochrome1(http: httpx.Client) -> None:
    datasets = store_files(http, "CT_small.dcm", "MR2_UNCI.dcm", "MR_small_bigendian.dcm")
    mono1 = make_dataset(rows=16, columns=24, PhotometricInterpretation="MONOCHROME1")
    mono1.WindowCenter, mono1.WindowWidth = 2000, 3000
    mono1.RescaleSlope, mono1.RescaleIntercept = 2, -100
    store_datasets(http, mono1)
    for ds in [*datasets, mono1]:
        got = image(http.get(path(ds) + "/rendered", headers=PNG))
        assert_close(got, default_display(ds))


@SQLITE_ONLY
def test_explicit_window_linear_exact_and_sigmoid(http: httpx.Client) -> None:
    (ds,) = store_files(http, "CT_small.dcm")
    url = path(ds) + "/rendered"
    exact = image(http.get(url, params={"window": "100,600,linear-exact"}, headers=PNG))
    assert_close(exact, to8(ref_linear_exact(rescaled(ds), 100, 600)))
    sigmoid = image(http.get(url, params={"window": "100,600,SIGMOID"}, headers=PNG))
    assert_close(sigmoid, to8(ref_sigmoid(rescaled(ds), 100, 600)))


@SQLITE_ONLY
def test_colour_rgb_ybr_and_palette(http: httpx.Client) -> None:
    rgb_ds, palette_ds = store_files(http, "SC_rgb.dcm", "OBXXXX1A.dcm")
    assert_close(image(http.get(path(rgb_ds) + "/rendered", headers=PNG)), rgb_ds.pixel_array, 0)
    assert_close(
        image(http.get(path(palette_ds) + "/rendered", headers=PNG)), palette_reference(palette_ds)
    )
    rgb = np.random.default_rng(5).integers(0, 256, size=(12, 20, 3)).astype(np.uint8)
    ybr = make_dataset(rows=12, columns=20, SamplesPerPixel=3, PhotometricInterpretation="YBR_FULL")
    ybr.PlanarConfiguration, ybr.BitsAllocated, ybr.BitsStored, ybr.HighBit = 0, 8, 8, 7
    ybr.PixelData = rgb_to_ybr_full(rgb).tobytes()
    store_datasets(http, ybr)
    assert_close(image(http.get(path(ybr) + "/rendered", headers=PNG)), rgb, tolerance=2)


@SQLITE_ONLY
def test_compressed_frames_are_decoded(http: httpx.Client) -> None:
    names = ["MR_small_jp2klossless.dcm", "emri_small_jpeg_ls_lossless.dcm", "SC_rgb_rle.dcm"]
    j2k, jls, rle = store_files(http, *names)
    assert_close(image(http.get(path(j2k) + "/rendered", headers=PNG)), default_display(j2k))
    frame = image(http.get(path(jls) + "/frames/5/rendered", headers=PNG))
    assert_close(frame, default_display(jls, 4))
    assert_close(image(http.get(path(rle) + "/rendered", headers=PNG)), rle.pixel_array, 0)


def test_viewport_and_quality(http: httpx.Client) -> None:
    (ds,) = store_files(http, "JPEG2000.dcm")  # 256 wide, 1024 high
    url = path(ds) + "/rendered"
    jpeg = {"Accept": "image/jpeg"}
    assert image(http.get(url, headers=jpeg), "image/jpeg").size == (256, 1024)
    assert image(
        http.get(url, params={"viewport": "100,100"}, headers=jpeg), "image/jpeg"
    ).size == (
        25,
        100,
    )
    cropped = http.get(url, params={"viewport": "64,64,0,0,128,128"}, headers=jpeg)
    assert image(cropped, "image/jpeg").size == (64, 64)
    low = http.get(url, params={"quality": "5"}, headers=jpeg)
    high = http.get(url, params={"quality": "95"}, headers=jpeg)
    assert len(low.content) < len(high.content) * 0.5


def test_bad_parameters_are_400(http: httpx.Client) -> None:
    (ds,) = store_files(http, "CT_small.dcm")
    url = path(ds) + "/rendered"
    cases = {
        "window": ["40", "a,400,linear", "40,0,linear", "40,400,cubic"],
        "viewport": ["64", "0,64", "x,64", ",", "64,64,200,0,10,10"],
        "quality": ["0", "101", "high"],
    }
    for name, values in cases.items():
        for value in values:
            body = assert_error(http.get(url, params={name: value}), 400, "invalid-input")
            assert name in body["message"] or "viewport" in body["message"], body
    assert_error(http.get(path(ds) + "/frames/0/rendered"), 400)
    assert_error(http.get(path(ds) + "/frames/1,x/rendered"), 400)
    assert_error(http.get(f"/studies/{ds.StudyInstanceUID}/series/1.2.x/rendered"), 400)


def test_unsupported_accept_is_406(http: httpx.Client) -> None:
    (ds,) = store_files(http, "CT_small.dcm")
    for accept in ("application/dicom", "text/html", "image/jp2", "video/mp4", "application/pdf"):
        body = assert_error(
            http.get(path(ds) + "/rendered", headers={"Accept": accept}), 406, "not-acceptable"
        )
        assert "image/jpeg" in body["message"]
    assert_error(http.get(path(ds) + "/thumbnail", headers={"Accept": "application/dicom"}), 406)


def test_missing_things_are_404(http: httpx.Client) -> None:
    (ds,) = store_files(http, "CT_small.dcm")
    assert_error(http.get(path(ds) + "/frames/2/rendered"), 404)
    unknown = f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/1.2.3"
    assert_error(http.get(unknown + "/rendered"), 404)
    assert_error(http.get(f"/studies/{generate_uid()}/thumbnail"), 404)


def test_frames_of_a_multi_frame_instance(http: httpx.Client) -> None:
    (ds,) = store_files(http, "emri_small.dcm")  # 10 frames
    base = path(ds)
    for frame in (1, 7, 10):
        got = image(http.get(f"{base}/frames/{frame}/rendered", headers=PNG))
        assert_close(got, default_display(ds, frame - 1))
    # The instance's single image is its first frame.
    assert_close(image(http.get(f"{base}/rendered", headers=PNG)), default_display(ds, 0))
    # Several frames: multipart/related, one part a frame, in the order asked.
    listed = parts(http.get(f"{base}/frames/3,1,9/rendered", headers=PNG_PARTS))
    assert [h["content-location"].rsplit("/frames/", 1)[1] for h, _ in listed] == [
        "3/rendered",
        "1/rendered",
        "9/rendered",
    ]
    for (headers, body), frame in zip(listed, (3, 1, 9), strict=True):
        assert headers["content-type"] == "image/png"
        assert_close(Image.open(io.BytesIO(body)), default_display(ds, frame - 1))
    body = assert_error(http.get(f"{base}/frames/1,2/rendered", headers=PNG), 406)
    assert "multipart/related" in body["message"]
    # The whole instance as multipart: every frame.
    assert len(parts(http.get(f"{base}/rendered", headers=JPEG_PARTS))) == 10


def test_study_and_series_rendered(http: httpx.Client) -> None:
    study, series_a, series_b = generate_uid(), generate_uid(), generate_uid()
    a = [
        make_dataset(study_uid=study, series_uid=series_a, InstanceNumber=i, pixel_seed=i)
        for i in (1, 2, 3)
    ]
    b = make_dataset(study_uid=study, series_uid=series_b, SeriesNumber=2, pixel_seed=9)
    store_datasets(http, *a, b)
    series_parts = parts(
        http.get(f"/studies/{study}/series/{series_a}/rendered", headers=PNG_PARTS)
    )
    assert len(series_parts) == 3
    for (headers, body), ds in zip(series_parts, a, strict=True):
        assert headers["content-location"].endswith(path(ds) + "/rendered")
        assert_close(Image.open(io.BytesIO(body)), default_display(ds))
    study_parts = parts(http.get(f"/studies/{study}/rendered", headers=JPEG_PARTS))
    assert len(study_parts) == 4
    assert {h["content-type"] for h, _ in study_parts} == {"image/jpeg"}
    # One image asked of a series: its representative (middle) instance.
    assert_close(
        image(http.get(f"/studies/{study}/series/{series_a}/rendered", headers=PNG)),
        default_display(a[1]),
    )
    assert image(http.get(f"/studies/{study}/rendered"), "image/jpeg").size == (8, 8)


# -- documents and video ---------------------------------------------------------------------------


def pdf_dataset(study: str | None = None) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = PDF_CLASS
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "Test^Document"
    ds.PatientID = "PID-2"
    ds.Modality = "DOC"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = "Report"
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = PDF  # odd length: stored with a pad byte
    ds.EncapsulatedDocumentLength = len(PDF)
    return ds


def test_encapsulated_pdf_is_returned_as_pdf(http: httpx.Client) -> None:
    assert len(PDF) % 2 == 1
    ds = pdf_dataset()
    store_datasets(http, ds)
    url = path(ds) + "/rendered"
    for accept in ("application/pdf", "*/*", None):
        r = http.get(url, headers={"Accept": accept} if accept else {})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/pdf"
        assert r.content == PDF
    body = assert_error(http.get(url, headers={"Accept": "image/jpeg"}), 406)
    assert "application/pdf" in body["message"]
    assert_error(http.get(path(ds) + "/frames/1/rendered"), 406)
    assert_error(http.get(path(ds) + "/thumbnail"), 406)


def test_a_study_with_images_and_a_pdf(http: httpx.Client) -> None:
    study = generate_uid()
    pdf = pdf_dataset(study)  # series number 1
    img = make_dataset(study_uid=study, SeriesNumber=2)
    store_datasets(http, pdf, img)
    r = http.get(f"/studies/{study}/rendered", headers=JPEG_PARTS)
    assert len(parts(r)) == 1  # the PDF has no image/jpeg representation
    assert "1 instance(s)" in r.headers["warning"]
    everything = parts(
        http.get(f"/studies/{study}/rendered", headers={"Accept": "multipart/related"})
    )
    assert sorted(h["content-type"] for h, _ in everything) == ["application/pdf", "image/jpeg"]
    # The first series by number holds no image: the thumbnail comes from the next one.
    assert_close(image(http.get(f"/studies/{study}/thumbnail", headers=PNG)), default_display(img))
    assert_close(image(http.get(f"/studies/{study}/rendered", headers=PNG)), default_display(img))
    assert (
        http.get(f"/studies/{study}/rendered", headers={"Accept": "application/pdf"}).content == PDF
    )


@pytest.mark.parametrize("with_offset_table", [True, False])
def test_mpeg4_video_is_returned_as_stored(http: httpx.Client, with_offset_table: bool) -> None:
    stream = bytes(range(256)) * 40 + b"\x00\x00\x01\xb7"
    fragments = [stream[:3000], stream[3000:7000], stream[7000:]]
    ds = make_dataset(sop_class=VIDEO_CLASS, rows=16, columns=16, frames=3)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 3, "YBR_PARTIAL_420"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PlanarConfiguration = 8, 8, 7, 0
    if with_offset_table:  # one offset-table entry for three frames: not split at store time
        ds.PixelData = encapsulate([stream], fragments_per_frame=3, has_bot=True)
    else:  # three fragments for three frames: indexed as frames at store time
        ds.PixelData = encapsulate(fragments, has_bot=False)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    store_datasets(http, ds, transfer_syntax=MPEG4)
    r = http.get(path(ds) + "/rendered", headers={"Accept": "video/mp4"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "video/mp4"
    assert r.content == stream
    assert http.get(path(ds) + "/rendered").headers["content-type"] == "video/mp4"
    assert_error(http.get(path(ds) + "/rendered", headers={"Accept": "image/jpeg"}), 406)
    assert_error(http.get(path(ds) + "/thumbnail"), 406)


# -- thumbnails ------------------------------------------------------------------------------------


def thumbnail_files(settings: Settings) -> list[Path]:
    root = settings.data_dir / "cache" / "thumbnails"
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_thumbnails_at_each_level(http: httpx.Client) -> None:
    study, first_series, second_series = generate_uid(), generate_uid(), generate_uid()
    # Stored first, but numbered 2: the study's thumbnail comes from series number 1.
    later = [
        make_dataset(study_uid=study, series_uid=second_series, SeriesNumber=2, pixel_seed=20 + i)
        for i in range(2)
    ]
    earlier = [
        make_dataset(
            study_uid=study,
            series_uid=first_series,
            SeriesNumber=1,
            InstanceNumber=n,
            pixel_seed=n,
        )
        for n in (5, 1, 3)  # stored out of order: the middle one by InstanceNumber is 3
    ]
    store_datasets(http, *later, *earlier)
    middle = earlier[2]
    study_thumb = image(http.get(f"/studies/{study}/thumbnail", headers=PNG))
    assert_close(study_thumb, default_display(middle))  # 8x8: small images are not enlarged
    series_thumb = image(
        http.get(f"/studies/{study}/series/{second_series}/thumbnail", headers=PNG)
    )
    assert_close(series_thumb, default_display(later[1]))
    instance_thumb = image(http.get(path(earlier[0]) + "/thumbnail", headers=PNG))
    assert_close(instance_thumb, default_display(earlier[0]))
    # JPEG unless only PNG (or GIF) is acceptable
    assert image(http.get(path(earlier[0]) + "/thumbnail"), "image/jpeg").size == (8, 8)
    assert image(
        http.get(path(earlier[0]) + "/thumbnail", params={"viewport": "4,4"}), "image/jpeg"
    ).size == (4, 4)


@SQLITE_ONLY
def test_thumbnail_of_a_large_and_a_multi_frame_instance(http: httpx.Client) -> None:
    large, multi = store_files(http, "JPEG2000.dcm", "emri_small.dcm")
    got = image(http.get(path(large) + "/thumbnail"), "image/jpeg")
    assert got.size == (32, 128)  # 128 on the long side, the aspect kept
    # The middle frame (6 of 10), by itself and through the frame resource.
    assert_close(
        image(http.get(path(multi) + "/thumbnail", headers=PNG)), default_display(multi, 5)
    )
    frame = image(http.get(path(multi) + "/frames/2/thumbnail", headers=PNG))
    assert_close(frame, default_display(multi, 1))


def test_thumbnails_are_cached_on_disk(http: httpx.Client, settings: Settings) -> None:
    ds = make_dataset(rows=16, columns=16)
    store_datasets(http, ds)
    url = path(ds) + "/thumbnail"
    first = http.get(url)
    assert first.status_code == 200
    (cached,) = thumbnail_files(settings)
    assert cached.read_bytes() == first.content
    # What is served comes from the cache file: change it and the change shows.
    cached.write_bytes(first.content + b"cached")
    assert http.get(url).content == first.content + b"cached"
    etag = first.headers["etag"]
    assert http.get(url, headers={"If-None-Match": etag}).status_code == 304


def test_a_deleted_instance_leaves_no_thumbnail(http: httpx.Client, settings: Settings) -> None:
    ds = make_dataset(rows=16, columns=16, pixel_seed=1)
    store_datasets(http, ds)
    url = path(ds) + "/thumbnail"
    old = http.get(url, headers=PNG)
    assert old.status_code == 200 and thumbnail_files(settings)
    assert http.delete(path(ds)).status_code == 204
    assert thumbnail_files(settings) == []
    assert_error(http.get(url), 404)
    # Stored again under the same UIDs with other pixels: a new thumbnail, never the old one.
    replacement = make_dataset(
        study_uid=ds.StudyInstanceUID,
        series_uid=ds.SeriesInstanceUID,
        sop_uid=ds.SOPInstanceUID,
        rows=16,
        columns=16,
        pixel_seed=2,
    )
    store_datasets(http, replacement)
    new = image(http.get(url, headers=PNG))
    assert_close(new, default_display(replacement))
    assert new.tobytes() != Image.open(io.BytesIO(old.content)).tobytes()


# -- a third-party client --------------------------------------------------------------------------


def test_dicomweb_client_rendered(live_server: LiveServer, http: httpx.Client) -> None:
    (ds,) = store_files(http, "emri_small.dcm")
    client = DICOMwebClient(url=f"{live_server.url}/dicom-web")
    uids: dict[str, Any] = {
        "study_instance_uid": ds.StudyInstanceUID,
        "series_instance_uid": ds.SeriesInstanceUID,
        "sop_instance_uid": ds.SOPInstanceUID,
    }
    png = client.retrieve_instance_rendered(**uids, media_types=("image/png",))
    assert_close(Image.open(io.BytesIO(png)), default_display(ds, 0))
    frame = client.retrieve_instance_frames_rendered(
        **uids, frame_numbers=[4], media_types=("image/png",)
    )
    assert_close(Image.open(io.BytesIO(frame)), default_display(ds, 3))
    jpeg = client.retrieve_series_rendered(
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        media_types=("image/jpeg",),
        params={"quality": 80},
    )
    assert Image.open(io.BytesIO(jpeg)).format == "JPEG"
