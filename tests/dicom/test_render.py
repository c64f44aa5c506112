"""Rendering (dicom/render.py) against an independent rendering written here from the standard.

The reference side reads the files with pydicom (pixel_array, raw element values) and applies
PS3.3 C.11 itself: rescale or Modality LUT, then the window functions of C.11.2.1.2/3 or the
VOI LUT, then MONOCHROME1 inversion; colour by the formulas of C.7.6.3.1.2 and the palette
tables as stored. Our output is decoded with Pillow and compared.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels.utils import pixel_array

from dicomhub.dicom import render
from dicomhub.dicom.render import RenderError, Viewport, Window
from tests.dicom.render_reference import (
    first,
    palette_reference,
    ref_linear,
    ref_linear_exact,
    ref_minmax,
    ref_sigmoid,
    rescaled,
    rgb_to_ybr_full,
    to8,
    ybr_full_to_rgb,
)
from tests.dicomfiles import make_dataset

# -- ours -----------------------------------------------------------------------------------------


def frame_bytes(ds: Dataset, index: int = 0) -> bytes:
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
        for i, data in enumerate(generate_frames(ds.PixelData, number_of_frames=frames)):
            if i == index:
                return data
        raise IndexError(index)
    size = len(ds.PixelData) // frames
    return ds.PixelData[index * size : (index + 1) * size]


def ours(ds: Dataset, media: str = render.PNG, *, frame: int = 1, **kwargs: Any) -> Image.Image:
    desc = render.describe(ds)
    arr = render.decode_frame(frame_bytes(ds, frame - 1), desc, ds.file_meta.TransferSyntaxUID)
    data = render.render(arr, desc, media, frame=frame, **kwargs)
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


def assert_close(got: Image.Image, expected: np.ndarray, tolerance: int = 1) -> None:
    values = pixels(got)
    assert values.shape == expected.shape
    diff = np.abs(values - expected.astype(np.int16))
    assert diff.max() <= tolerance, (
        f"max difference {diff.max()} at {np.unravel_index(diff.argmax(), diff.shape)}"
    )


def load(name: str) -> Dataset:
    return dcmread(get_testdata_file(name))


# -- grayscale ------------------------------------------------------------------------------------


def test_default_window_from_the_dataset() -> None:
    ds = load("MR_small.dcm")  # WindowCenter 600, WindowWidth 1600, no VOI LUT Function
    expected = ref_linear(rescaled(ds), first(ds.WindowCenter), first(ds.WindowWidth))
    assert_close(ours(ds), to8(expected))


def test_rescale_slope_and_intercept_come_before_the_window() -> None:
    ds = load("MR2_UNCI.dcm")  # RescaleSlope 3.77, a window in rescaled units
    assert float(ds.RescaleSlope) != 1
    expected = ref_linear(rescaled(ds), first(ds.WindowCenter), first(ds.WindowWidth))
    assert_close(ours(ds), to8(expected))


def test_without_window_the_frame_range_is_used() -> None:
    ds = load("CT_small.dcm")  # rescale intercept -1024, no window, no VOI LUT
    assert "WindowCenter" not in ds and "VOILUTSequence" not in ds
    assert_close(ours(ds), to8(ref_minmax(rescaled(ds))))


@pytest.mark.parametrize(
    ("function", "reference"),
    [("linear", ref_linear), ("linear-exact", ref_linear_exact), ("sigmoid", ref_sigmoid)],
)
def test_explicit_window_functions(function: str, reference: Any) -> None:
    ds = load("693_UNCI.dcm")  # signed, rescaled CT with its own window 40/100
    window = render.parse_window(f"300,1500,{function}")
    expected = reference(rescaled(ds), 300.0, 1500.0)
    got = ours(ds, window=window)
    assert_close(got, to8(expected))
    assert not np.array_equal(pixels(got), pixels(ours(ds)))  # the stored window is overridden


def test_voi_lut_function_in_the_dataset_is_followed() -> None:
    ds = load("MR_small.dcm")
    ds.VOILUTFunction = "SIGMOID"
    expected = ref_sigmoid(rescaled(ds), first(ds.WindowCenter), first(ds.WindowWidth))
    assert_close(ours(ds), to8(expected))


def test_linear_window_of_width_one_is_a_threshold() -> None:
    ds = load("CT_small.dcm")
    got = pixels(ours(ds, window=Window(40, 1)))
    x = rescaled(ds)
    assert set(np.unique(got)) <= {0, 255}
    assert np.array_equal(got == 255, x > 39.5)


def test_modality_lut_sequence() -> None:
    ds = load("mlut_18.dcm")
    item = ds.ModalityLUTSequence[0]
    entries, first_value, _ = item.LUTDescriptor
    first_value = first_value - 65536 if first_value > 32767 else first_value
    data = np.asarray(item.LUTData, dtype=np.float64)
    stored = ds.pixel_array.astype(np.int64)
    mapped = data[np.clip(stored - first_value, 0, entries - 1)]
    assert_close(ours(ds), to8(ref_minmax(mapped)))


def test_voi_lut_sequence() -> None:
    ds = load("vlut_04.dcm")
    item = ds.VOILUTSequence[0]
    entries, first_value, bits = item.LUTDescriptor
    data = np.asarray(item.LUTData, dtype=np.float64)
    bits = max(bits, int(data.max()).bit_length())
    stored = ds.pixel_array.astype(np.int64)
    expected = data[np.clip(stored - first_value, 0, entries - 1)] / (2**bits - 1) * 255
    assert_close(ours(ds), to8(expected))


def test_monochrome1_is_inverted() -> None:
    ds = load("RG1_UNCI.dcm")
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    expected = 255 - ref_linear(rescaled(ds), first(ds.WindowCenter), first(ds.WindowWidth))
    assert_close(ours(ds), to8(expected))


def test_a_frame_of_a_multi_frame_instance() -> None:
    ds = load("emri_small.dcm")  # 10 frames
    for frame in (1, 4, 10):
        expected = ref_minmax(rescaled(ds, frame - 1))
        assert_close(ours(ds, frame=frame), to8(expected))


def test_per_frame_functional_groups_give_each_frame_its_window() -> None:
    ds = make_dataset(rows=4, columns=4, frames=2, pixel_seed=3)
    groups = []
    for center in (1000, 3000):
        voi = Dataset()
        voi.WindowCenter = center
        voi.WindowWidth = 2000
        item = Dataset()
        item.FrameVOILUTSequence = [voi]
        groups.append(item)
    ds.PerFrameFunctionalGroupsSequence = groups
    ds.file_meta = Dataset()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    for frame, center in ((1, 1000), (2, 3000)):
        stored = ds.pixel_array[frame - 1].astype(np.float64)
        assert_close(ours(ds, frame=frame), to8(ref_linear(stored, center, 2000)))


def test_a_1_bit_frame() -> None:
    ds = load("liver_1frame.dcm")
    arr = pixel_array(get_testdata_file("liver_1frame.dcm"))
    desc = render.describe(ds)
    image = Image.open(io.BytesIO(render.render(arr, desc, render.PNG)))
    assert np.array_equal(np.asarray(image), (arr * 255).astype(np.uint8))


# -- colour ---------------------------------------------------------------------------------------


def test_rgb_passes_through() -> None:
    ds = load("SC_rgb.dcm")
    assert_close(ours(ds), ds.pixel_array, tolerance=0)


def test_16_bit_rgb_is_scaled_to_8_bits() -> None:
    ds = load("SC_rgb_16bit.dcm")
    assert_close(ours(ds), to8(ds.pixel_array.astype(np.float64) / 65535 * 255))


@pytest.mark.parametrize(
    "name", ["SC_ybr_full_uncompressed.dcm", "SC_ybr_full_422_uncompressed.dcm"]
)
def test_ybr_is_converted_to_rgb(name: str) -> None:
    ds = load(name)
    raw = pixel_array(get_testdata_file(name), raw=True)  # Y, Cb, Cr (422 upsampled)
    # Rounding differs between conversions; two grey levels cover it.
    assert_close(ours(ds), ybr_full_to_rgb(raw), tolerance=2)


def test_a_ybr_built_here_comes_back_as_its_rgb() -> None:
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, size=(6, 10, 3)).astype(np.float64)
    ybr = rgb_to_ybr_full(rgb)
    ds = make_dataset(rows=6, columns=10)
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_FULL"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelData = ybr.tobytes()
    ds.file_meta = Dataset()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    assert_close(ours(ds), rgb.astype(np.uint8), tolerance=2)


def test_palette_color() -> None:
    ds = load("OBXXXX1A.dcm")
    assert ds.PhotometricInterpretation == "PALETTE COLOR"
    assert_close(ours(ds), palette_reference(ds))


def test_window_is_ignored_for_colour() -> None:
    ds = load("SC_rgb.dcm")
    assert_close(ours(ds, window=Window(10, 20)), ds.pixel_array, tolerance=0)


# -- encodings and viewport -----------------------------------------------------------------------


def test_jpeg_is_close_to_the_reference() -> None:
    ds = load("MR_small.dcm")
    expected = to8(ref_linear(rescaled(ds), first(ds.WindowCenter), first(ds.WindowWidth)))
    got = ours(ds, render.JPEG, quality=95)
    assert got.format == "JPEG"
    diff = np.abs(pixels(got) - expected.astype(np.int16))
    assert diff.mean() < 3, diff.mean()


def test_gif_keeps_grey_levels() -> None:
    ds = load("MR_small.dcm")
    expected = to8(ref_linear(rescaled(ds), first(ds.WindowCenter), first(ds.WindowWidth)))
    got = ours(ds, render.GIF)
    assert got.format == "GIF"
    assert_close(got.convert("L"), expected)


def test_gif_of_colour() -> None:
    got = ours(load("SC_rgb.dcm"), render.GIF)
    assert got.format == "GIF" and got.size == (100, 100)


def test_quality_changes_the_jpeg_size() -> None:
    ds = load("CT_small.dcm")
    desc = render.describe(ds)
    arr = render.decode_frame(frame_bytes(ds), desc, ds.file_meta.TransferSyntaxUID)
    low = render.render(arr, desc, render.JPEG, quality=10)
    high = render.render(arr, desc, render.JPEG, quality=95)
    assert len(low) < len(high) * 0.6


@pytest.mark.parametrize(
    ("viewport", "size"),
    [
        ("64,64", (64, 64)),
        ("200,100", (100, 100)),
        ("32,", (32, 32)),
        (",256", (256, 256)),
        ("50,50,0,0,64,128", (25, 50)),
    ],
)
def test_viewport_keeps_the_aspect_ratio(viewport: str, size: tuple[int, int]) -> None:
    ds = load("CT_small.dcm")  # 128 x 128
    assert ours(ds, viewport=render.parse_viewport(viewport)).size == size


def test_viewport_of_a_tall_image() -> None:
    ds = load("JPEG2000.dcm")  # 256 wide, 1024 high
    got = ours(ds, render.JPEG, viewport=Viewport(100, 100))
    assert got.size == (25, 100)


def test_viewport_source_region_crops_and_negative_sizes_flip() -> None:
    ds = load("MR_small.dcm")  # 64 x 64
    full = to8(ref_linear(rescaled(ds), first(ds.WindowCenter), first(ds.WindowWidth)))
    region = render.parse_viewport("20,10,5,8,20,10")  # 20 x 10 from (5, 8): no scaling
    assert_close(ours(ds, viewport=region), full[8:18, 5:25])
    flipped = render.parse_viewport("20,10,5,8,-20,-10")
    assert_close(ours(ds, viewport=flipped), full[8:18, 5:25][::-1, ::-1])


def test_viewport_outside_the_image_is_an_error() -> None:
    with pytest.raises(RenderError, match="outside"):
        ours(load("MR_small.dcm"), viewport=render.parse_viewport("10,10,64,0,10,10"))


def test_thumbnail_fit_does_not_enlarge() -> None:
    ds = load("MR_small.dcm")
    assert ours(ds, viewport=Viewport(128, 128), upscale=False).size == (64, 64)
    assert ours(ds, viewport=Viewport(128, 128)).size == (128, 128)


# -- parameters -----------------------------------------------------------------------------------


def test_parse_window() -> None:
    assert render.parse_window("40,400,LINEAR") == Window(40, 400, "LINEAR")
    assert render.parse_window("40.5, 400 ,linear-exact") == Window(40.5, 400, "LINEAR_EXACT")
    assert render.parse_window("-600,1500,sigmoid") == Window(-600, 1500, "SIGMOID")
    assert render.parse_window("40,400") == Window(40, 400, "LINEAR")
    assert render.parse_window("0,0.5,linear_exact") == Window(0, 0.5, "LINEAR_EXACT")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("40", "center,width,function"),
        ("40,400,linear,x", "center,width,function"),
        ("abc,400,linear", "must be a number"),
        ("40,nan,linear", "finite"),
        ("40,0.5,linear", "at least 1"),
        ("40,0,sigmoid", "positive"),
        ("40,-3,linear-exact", "positive"),
        ("40,400,cubic", "linear, linear-exact or sigmoid"),
    ],
)
def test_bad_windows(text: str, message: str) -> None:
    with pytest.raises(RenderError, match=message):
        render.parse_window(text)


def test_parse_viewport() -> None:
    assert render.parse_viewport("256,128") == Viewport(256, 128)
    assert render.parse_viewport("256,") == Viewport(256, None)
    assert render.parse_viewport("64,64,10,20,-30,40") == Viewport(64, 64, 10, 20, -30, 40)
    assert render.parse_viewport("64,64,,,,") == Viewport(64, 64)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("256", "vw,vh"),
        ("1,2,3", "vw,vh"),
        (",", "width or a height"),
        ("0,10", "between 1 and 8192"),
        ("10,99999", "between 1 and 8192"),
        ("a,10", "must be a number"),
        ("10.5,10", "whole number"),
        ("10,10,0,0,0,10", "cannot be 0"),
    ],
)
def test_bad_viewports(text: str, message: str) -> None:
    with pytest.raises(RenderError, match=message):
        render.parse_viewport(text)


@pytest.mark.parametrize("text", ["0", "101", "x", "", "50.5"])
def test_bad_quality(text: str) -> None:
    with pytest.raises(RenderError, match="quality"):
        render.parse_quality(text)


def test_parse_quality() -> None:
    assert render.parse_quality(" 75 ") == 75


def test_not_an_image() -> None:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"
    with pytest.raises(RenderError, match="not an image"):
        render.describe(ds)


def test_undecodable_pixels() -> None:
    ds = load("JPEG2000.dcm")
    desc = render.describe(ds)
    with pytest.raises(RenderError, match="cannot be decoded"):
        render.decode_frame(b"\xff\x4f\xff\x51 not a codestream", desc, "1.2.840.10008.1.2.4.91")


@pytest.mark.parametrize(
    "name",
    [
        "693_UNCI.dcm",  # signed, 14 of 16 bits
        "MR2_UNCI.dcm",  # 12 of 16 bits
        "MR_small_implicit.dcm",
        "MR_small_bigendian.dcm",
        "SC_rgb.dcm",
        "SC_rgb_32bit.dcm",
        "color-pl.dcm",  # planar configuration 1
        "OBXXXX1A.dcm",
        "SC_ybr_full_422_uncompressed.dcm",
        "JPEG2000.dcm",
        "SC_rgb_rle.dcm",
    ],
)
def test_decoded_frames_equal_pydicoms(name: str) -> None:
    ds = load(name)
    arr = render.decode_frame(frame_bytes(ds), render.describe(ds), ds.file_meta.TransferSyntaxUID)
    assert np.array_equal(arr, ds.pixel_array)


def test_a_truncated_native_frame() -> None:
    ds = load("CT_small.dcm")
    with pytest.raises(RenderError, match="bytes"):
        render.decode_frame(frame_bytes(ds)[:100], render.describe(ds), "1.2.840.10008.1.2.1")
