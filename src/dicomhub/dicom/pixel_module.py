"""The image pixel module and its grayscale transforms, read from a header (PS3.3 C.7.6.3, C.11).

What rendering needs of a stored file, described once: size and sample layout, rescale or
Modality LUT, the stored window or VOI LUT (per frame for enhanced multi-frame instances),
MONOCHROME1 inversion and palette tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_color_lut

__all__ = [
    "VOI_FUNCTIONS",
    "FrameTransform",
    "ImageDescription",
    "Lut",
    "RenderError",
    "Window",
    "check_width",
    "describe",
]

VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")


class RenderError(ValueError):
    """A rendering parameter or an image that cannot be rendered; the message is for people."""


@dataclass(frozen=True, slots=True)
class Window:
    """A VOI window (PS3.3 C.11.2.1.2); function LINEAR, LINEAR_EXACT or SIGMOID."""

    center: float
    width: float
    function: str = "LINEAR"


@dataclass(frozen=True, slots=True, eq=False)
class Lut:
    """A Modality or VOI LUT (PS3.3 C.11.1.1.1): the first input value mapped, data, output bits."""

    first: int
    data: np.ndarray
    bits: int

    def apply(self, x: np.ndarray) -> np.ndarray:
        index = np.clip(np.rint(x) - self.first, 0, len(self.data) - 1).astype(np.intp)
        return np.asarray(self.data[index], dtype=np.float64)


@dataclass(frozen=True, slots=True)
class FrameTransform:
    """The rescale and the stored window that apply to one frame."""

    slope: float = 1.0
    intercept: float = 0.0
    window: Window | None = None


@dataclass(frozen=True, slots=True, eq=False)
class ImageDescription:
    """What rendering needs from the header, read once per stored file."""

    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric: str
    planar_configuration: int
    number_of_frames: int
    transforms: tuple[FrameTransform, ...]  # one for all frames, or one per frame
    modality_lut: Lut | None = None
    voi_lut: Lut | None = None
    invert: bool = False
    palette: np.ndarray | None = None  # (entries, 3) uint8, indexed by stored value

    def transform(self, frame: int) -> FrameTransform:
        """The transform of a 1-based frame."""
        if len(self.transforms) > 1 and 1 <= frame <= len(self.transforms):
            return self.transforms[frame - 1]
        return self.transforms[0]

    @property
    def grayscale(self) -> bool:
        return self.samples_per_pixel == 1 and self.palette is None


def check_width(width: float, function: str) -> None:
    # PS3.3 C.11.2.1.2.1: LINEAR needs a width of at least 1; the others any positive width.
    if function == "LINEAR" and width < 1:
        raise RenderError(f"a linear window needs a width of at least 1, got {width:g}")
    if width <= 0:
        raise RenderError(f"the window width must be positive, got {width:g}")


def _int(ds: Dataset, keyword: str, default: int) -> int:
    value = ds.get(keyword)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _first_float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, list | tuple) or (
        hasattr(value, "__getitem__") and not isinstance(value, str | bytes)
    ):
        if not len(value):
            return None
        value = value[0]
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def _window_of(item: Dataset) -> Window | None:
    center = _first_float(item.get("WindowCenter"))
    width = _first_float(item.get("WindowWidth"))
    if center is None or width is None:
        return None
    function = str(item.get("VOILUTFunction") or "LINEAR").strip().upper()
    function = function if function in VOI_FUNCTIONS else "LINEAR"
    try:
        check_width(width, function)
    except RenderError:
        return None  # an unusable stored window: fall back as if there were none
    return Window(center, width, function)


def _transform_of(item: Dataset, base: FrameTransform) -> FrameTransform:
    slope = _first_float(item.get("RescaleSlope"))
    intercept = _first_float(item.get("RescaleIntercept"))
    return FrameTransform(
        slope if slope is not None else base.slope,
        intercept if intercept is not None else base.intercept,
        _window_of(item) or base.window,
    )


def _group(item: Dataset, keyword: str) -> Dataset | None:
    seq = item.get(keyword)
    return seq[0] if seq else None


def _functional(item: Dataset | None, base: FrameTransform) -> FrameTransform:
    """Apply Pixel Value Transformation and Frame VOI LUT functional groups (PS3.3 C.7.6.16)."""
    if item is None:
        return base
    transformation = _group(item, "PixelValueTransformationSequence")
    if transformation is not None:
        base = _transform_of(transformation, base)
    voi = _group(item, "FrameVOILUTSequence")
    if voi is not None:
        window = _window_of(voi)
        if window is not None:
            base = FrameTransform(base.slope, base.intercept, window)
    return base


def _lut(item: Dataset, signed: bool) -> Lut | None:
    descriptor = item.get("LUTDescriptor")
    data = item.get("LUTData")
    if descriptor is None or data is None or len(descriptor) != 3:
        return None
    entries, first, bits = (int(v) for v in descriptor)
    entries = entries or 65536
    if signed and first >= 1 << 15:
        first -= 1 << 16  # the first mapped value follows the pixel representation
    if isinstance(data, bytes | bytearray):
        values = np.frombuffer(data[: len(data) - len(data) % 2], dtype="<u2")
    else:
        values = np.asarray(list(data) if not isinstance(data, int) else [data], dtype=np.int64)
    if not len(values):
        return None
    values = values[:entries].astype(np.float64)
    # Some writers declare fewer output bits than the data use.
    bits = max(bits, int(values.max()).bit_length(), 1)
    return Lut(first, values, bits)


def describe(ds: Dataset) -> ImageDescription:
    """The image pixel module and the grayscale/colour transforms of a header."""
    rows, columns = _int(ds, "Rows", 0), _int(ds, "Columns", 0)
    if rows <= 0 or columns <= 0:
        raise RenderError("the instance has no Rows and Columns: it is not an image")
    photometric = str(ds.get("PhotometricInterpretation") or "MONOCHROME2").strip().upper()
    samples = _int(ds, "SamplesPerPixel", 1)
    bits_allocated = _int(ds, "BitsAllocated", 16)
    pixel_representation = _int(ds, "PixelRepresentation", 0)
    frames = max(_int(ds, "NumberOfFrames", 1), 1)
    base = _transform_of(ds, FrameTransform())
    shared = _group(ds, "SharedFunctionalGroupsSequence")
    base = _functional(shared, base)
    transforms: tuple[FrameTransform, ...] = (base,)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame:
        transforms = tuple(_functional(item, base) for item in per_frame)
    modality_seq = ds.get("ModalityLUTSequence")
    voi_seq = ds.get("VOILUTSequence")
    signed = pixel_representation == 1
    palette = None
    if photometric == "PALETTE COLOR" and samples == 1:
        palette = _palette(ds, _int(ds, "BitsStored", bits_allocated), signed)
    shape = str(ds.get("PresentationLUTShape") or "").strip().upper()
    return ImageDescription(
        rows=rows,
        columns=columns,
        samples_per_pixel=samples,
        bits_allocated=bits_allocated,
        bits_stored=_int(ds, "BitsStored", bits_allocated),
        pixel_representation=pixel_representation,
        photometric=photometric,
        planar_configuration=_int(ds, "PlanarConfiguration", 0),
        number_of_frames=frames,
        transforms=transforms,
        modality_lut=_lut(modality_seq[0], signed) if modality_seq else None,
        voi_lut=_lut(voi_seq[0], signed) if voi_seq else None,
        invert=photometric == "MONOCHROME1" or shape == "INVERSE",
        palette=palette,
    )


def _palette(ds: Dataset, bits_stored: int, signed: bool) -> np.ndarray:
    """An (entries, 3) uint8 table over every stored value (PS3.3 C.7.6.3.1.5, C.7.9)."""
    if signed or bits_stored > 16:
        raise RenderError("PALETTE COLOR with signed or over 16-bit pixels is not supported")
    try:
        table = apply_color_lut(np.arange(1 << bits_stored), ds)
    except (ValueError, KeyError, AttributeError, IndexError) as exc:
        raise RenderError(f"the palette colour lookup tables cannot be used: {exc}") from None
    descriptor = ds.get("RedPaletteColorLookupTableDescriptor")
    bits = int(descriptor[2]) if descriptor and len(descriptor) == 3 else 16
    if table.dtype != np.uint8 or bits > 8:
        top = (1 << (16 if bits > 8 else 8)) - 1
        return np.floor(table.astype(np.float64) * 255 / top + 0.5).astype(np.uint8)
    return np.asarray(table, dtype=np.uint8)
