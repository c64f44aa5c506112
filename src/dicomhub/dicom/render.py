"""Pixel data for people: Modality LUT, VOI (window or LUT), colour, viewport, JPEG/PNG/GIF.

The grayscale pipeline follows PS3.3 C.11 (Modality LUT, then VOI LUT or window with the
functions of C.11.2.1.2/3, then MONOCHROME1 inversion); the query parameters are those of the
Retrieve Rendered Transaction (PS3.18 8.3.5.1). What the header says is read by
pixel_module.describe. Arrays in, bytes out: no I/O.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import UID

from dicomhub.dicom.pixel_module import (
    VOI_FUNCTIONS,
    FrameTransform,
    ImageDescription,
    Lut,
    RenderError,
    Window,
    check_width,
    describe,
)

__all__ = [
    "GIF",
    "IMAGE_TYPES",
    "JPEG",
    "PNG",
    "FrameTransform",
    "ImageDescription",
    "Lut",
    "RenderError",
    "Viewport",
    "Window",
    "decode_frame",
    "describe",
    "encode",
    "fit",
    "parse_quality",
    "parse_viewport",
    "parse_window",
    "render",
    "to_display",
]

JPEG = "image/jpeg"
PNG = "image/png"
GIF = "image/gif"
IMAGE_TYPES = (JPEG, PNG, GIF)  # the first is the default (PS3.18 Table 8.7.4-1)

# Integer frames are mapped through a table over their value range when it is this small.
_MAX_TABLE = 1 << 20


@dataclass(frozen=True, slots=True)
class Viewport:
    """`viewport=vw,vh[,sx,sy,sw,sh]` (PS3.18 8.3.5.1.3); a negative sw or sh flips that axis."""

    width: int | None
    height: int | None
    sx: int = 0
    sy: int = 0
    sw: int | None = None
    sh: int | None = None


# -- query parameters (PS3.18 8.3.5.1) ------------------------------------------------------


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise RenderError(f"{what} must be a number, got '{text}'") from None
    if not np.isfinite(value):
        raise RenderError(f"{what} must be a finite number, got '{text}'")
    return value


def _integer(text: str, what: str) -> int:
    value = _number(text, what)
    if value != int(value):
        raise RenderError(f"{what} must be a whole number, got '{text}'")
    return int(value)


def parse_window(text: str) -> Window:
    """`window=center,width,function` with function linear, linear-exact or sigmoid."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (2, 3):
        raise RenderError(
            f"window must be 'center,width,function' (e.g. 40,400,linear), got '{text}'"
        )
    center = _number(parts[0], "the window center")
    width = _number(parts[1], "the window width")
    function = "LINEAR"
    if len(parts) == 3 and parts[2]:
        function = parts[2].upper().replace("-", "_")
        if function not in VOI_FUNCTIONS:
            raise RenderError(
                f"the window function must be linear, linear-exact or sigmoid, got '{parts[2]}'"
            )
    check_width(width, function)
    return Window(center, width, function)


def parse_viewport(text: str) -> Viewport:
    """`viewport=vw,vh` or `vw,vh,sx,sy,sw,sh`; vw or vh may be left empty, not both."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (2, 6):
        raise RenderError(
            f"viewport must be 'vw,vh' or 'vw,vh,sx,sy,sw,sh' (e.g. 256,256), got '{text}'"
        )
    size: list[int | None] = []
    for part, what in zip(parts[:2], ("viewport width", "viewport height"), strict=True):
        if not part:
            size.append(None)
            continue
        value = _integer(part, f"the {what}")
        if not 1 <= value <= 8192:
            raise RenderError(f"the {what} must be between 1 and 8192, got {value}")
        size.append(value)
    if size == [None, None]:
        raise RenderError("viewport needs a width or a height")
    if len(parts) == 2:
        return Viewport(size[0], size[1])
    region: list[int | None] = []
    names = ("sx", "sy", "sw", "sh")
    for part, name in zip(parts[2:], names, strict=True):
        region.append(_integer(part, f"viewport {name}") if part else None)
    sx, sy, sw, sh = region
    # Offsets are positions in the image: a sign has no meaning there (Orthanc takes |value|).
    if sw == 0 or sh == 0:
        raise RenderError("the viewport's source width and height cannot be 0")
    return Viewport(size[0], size[1], abs(sx or 0), abs(sy or 0), sw, sh)


def parse_quality(text: str) -> int:
    """`quality` 1-100 (PS3.18 8.3.5.1.2)."""
    try:
        value = int(text.strip())
    except ValueError:
        raise RenderError(f"quality must be a whole number from 1 to 100, got '{text}'") from None
    if not 1 <= value <= 100:
        raise RenderError(f"quality must be from 1 to 100, got {value}")
    return value


# -- decoding -----------------------------------------------------------------------------------

_LITTLE_ENDIAN_NATIVE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}


def _native(data: bytes, desc: ImageDescription) -> np.ndarray | None:
    """The plain cases of native little-endian pixels, without pydicom's general machinery:
    whole-byte samples, grayscale, palette or interleaved RGB. None for the others."""
    bits = desc.bits_allocated
    if bits not in (8, 16, 32) or not 1 <= desc.bits_stored <= bits:
        return None
    if desc.samples_per_pixel == 3:
        if desc.photometric != "RGB" or desc.planar_configuration != 0:
            return None
    elif desc.samples_per_pixel != 1:
        return None
    signed = desc.pixel_representation == 1
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    count = desc.rows * desc.columns * desc.samples_per_pixel
    if len(data) < count * dtype.itemsize:
        raise RenderError(f"a frame needs {count * dtype.itemsize} bytes, {len(data)} are stored")
    arr = np.frombuffer(data, dtype=dtype, count=count)
    shift = bits - desc.bits_stored
    if shift:
        # Bits above BitsStored are not part of the value (PS3.5 8.1.1): drop them, keeping
        # the sign of signed values.
        arr = (arr << shift) >> shift if signed else arr & ((1 << desc.bits_stored) - 1)
    shape = (desc.rows, desc.columns) + ((3,) if desc.samples_per_pixel == 3 else ())
    return arr.reshape(shape)


def decode_frame(data: bytes, desc: ImageDescription, transfer_syntax: str) -> np.ndarray:
    """One frame's stored bytes (native, or the codestream of an encapsulated frame) to an array.

    Colour comes back as RGB (YBR_FULL and YBR_FULL_422 converted, PS3.3 C.7.6.3.1.2);
    palette and grayscale as stored values.
    """
    if transfer_syntax in _LITTLE_ENDIAN_NATIVE and (fast := _native(data, desc)) is not None:
        return fast
    uid = UID(transfer_syntax)
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        raise RenderError(f"no decoder for transfer syntax {transfer_syntax}") from None
    if not decoder.is_available:
        raise RenderError(f"the decoder for transfer syntax {transfer_syntax} is not installed")
    src = encapsulate([data]) if uid.is_encapsulated else data
    options: dict[str, Any] = {
        "rows": desc.rows,
        "columns": desc.columns,
        "samples_per_pixel": desc.samples_per_pixel,
        "bits_allocated": desc.bits_allocated,
        "bits_stored": desc.bits_stored,
        "pixel_representation": desc.pixel_representation,
        "photometric_interpretation": desc.photometric,
        "number_of_frames": 1,
        "pixel_keyword": "PixelData",
    }
    if desc.samples_per_pixel > 1:
        options["planar_configuration"] = desc.planar_configuration
    try:
        arr, _ = decoder.as_array(src, index=0, **options)
    except (ValueError, RuntimeError, TypeError, KeyError, AttributeError) as exc:
        raise RenderError(f"the pixel data cannot be decoded: {exc}") from None
    return arr


# -- display values -------------------------------------------------------------------------------


def _to_byte(y: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(y + 0.5), 0, 255).astype(np.uint8)


def _voi(x: np.ndarray, window: Window) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 (LINEAR), C.11.2.1.3.1 (SIGMOID), C.11.2.1.3.2 (LINEAR_EXACT) to 0-255."""
    c, w = window.center, window.width
    if window.function == "SIGMOID":
        with np.errstate(over="ignore"):
            return 255.0 / (1.0 + np.exp(-4.0 * (x - c) / w))
    if window.function == "LINEAR_EXACT":
        y = ((x - c) / w + 0.5) * 255.0
        return np.where(x <= c - w / 2, 0.0, np.where(x > c + w / 2, 255.0, y))
    if w == 1:  # the ramp has no width: a threshold at c - 0.5
        return np.where(x <= c - 0.5, 0.0, 255.0)
    y = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255.0
    return np.where(x <= c - 0.5 - (w - 1) / 2, 0.0, np.where(x > c - 0.5 + (w - 1) / 2, 255.0, y))


def _grayscale(
    arr: np.ndarray, desc: ImageDescription, frame: int, window: Window | None
) -> np.ndarray:
    transform = desc.transform(frame)
    index: np.ndarray | None = None
    if arr.dtype.kind in "iu" and arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        start = 0 if lo >= 0 and hi < _MAX_TABLE else lo
        if hi - start < _MAX_TABLE:
            # Map each possible value once (a table from `start` to hi), then index it by the
            # pixels; from 0 when that fits, so that the pixels index it without a copy.
            wide = np.int64 if arr.dtype.itemsize >= 4 else np.int32
            index = arr if start == 0 else np.subtract(arr, start, dtype=wide)
            x = np.arange(start, hi + 1, dtype=np.float64)
    if index is None:
        x = arr.astype(np.float64)
    if desc.modality_lut is not None:
        values = desc.modality_lut.apply(x)
    else:
        values = x * transform.slope + transform.intercept
    chosen = window or transform.window
    if chosen is not None:
        y = _voi(values, chosen)
    elif desc.voi_lut is not None:
        lut = desc.voi_lut
        y = lut.apply(values) * (255.0 / ((1 << lut.bits) - 1))
    else:
        # No window and no VOI LUT: the frame's own range, end to end (as Orthanc does).
        if index is None:
            present = values
        elif desc.modality_lut is not None:
            present = values[index]
        else:  # a rescale is monotonic: the ends of the stored range are the ends
            present = values[[lo - start, hi - start]]
        vmin, vmax = float(present.min()), float(present.max())
        span = vmax - vmin
        y = (values - vmin) * (255.0 / span) if span > 0 else np.zeros_like(values)
    if desc.invert:
        y = 255.0 - y
    out = _to_byte(y)
    return np.take(out, index) if index is not None else out


def to_display(
    arr: np.ndarray, desc: ImageDescription, frame: int = 1, window: Window | None = None
) -> np.ndarray:
    """A decoded frame as 8-bit display values: (rows, columns) gray or (rows, columns, 3) RGB.

    `window` overrides the stored VOI (it applies to Modality LUT output, PS3.18 8.3.5.1.4);
    colour images ignore it.
    """
    if desc.palette is not None:
        index = np.clip(arr, 0, len(desc.palette) - 1)
        return np.asarray(desc.palette[index])
    if arr.ndim == 3:
        if arr.dtype == np.uint8:
            return arr
        top = float((1 << min(desc.bits_stored, 32)) - 1)
        return _to_byte(arr.astype(np.float64) * (255.0 / top))
    return _grayscale(arr, desc, frame, window)


# -- geometry and encoding ------------------------------------------------------------------------


def fit(pixels: np.ndarray, viewport: Viewport | None, *, upscale: bool = True) -> Image.Image:
    """Crop to the viewport's source region, flip for negative sw/sh, scale into vw x vh keeping
    the aspect ratio (PS3.18 8.3.5.1.3). Without a viewport the image keeps its size."""
    image = Image.fromarray(pixels)
    if viewport is None:
        return image
    width, height = image.size
    sw, sh = viewport.sw, viewport.sh
    if viewport.sx or viewport.sy or sw is not None or sh is not None:
        if viewport.sx >= width or viewport.sy >= height:
            raise RenderError(
                f"the viewport's source region starts outside the {width}x{height} image"
            )
        right = min(width, viewport.sx + abs(sw)) if sw is not None else width
        bottom = min(height, viewport.sy + abs(sh)) if sh is not None else height
        image = image.crop((viewport.sx, viewport.sy, right, bottom))
        if sw is not None and sw < 0:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if sh is not None and sh < 0:
            image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
        width, height = image.size
    scales = []
    if viewport.width is not None:
        scales.append(viewport.width / width)
    if viewport.height is not None:
        scales.append(viewport.height / height)
    scale = min(scales)
    if not upscale:
        scale = min(scale, 1.0)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def encode(image: Image.Image, media_type: str, quality: int | None = None) -> bytes:
    """JPEG (quality 1-100, default 90), PNG or GIF bytes."""
    out = io.BytesIO()
    if media_type == JPEG:
        image.save(out, "JPEG", quality=quality or 90)
    elif media_type == PNG:
        image.save(out, "PNG", compress_level=3)
    elif media_type == GIF:
        if image.mode == "RGB":
            image = image.quantize(256)
        image.save(out, "GIF")
    else:
        raise RenderError(f"cannot encode {media_type}")
    return out.getvalue()


def render(
    arr: np.ndarray,
    desc: ImageDescription,
    media_type: str,
    *,
    frame: int = 1,
    window: Window | None = None,
    viewport: Viewport | None = None,
    quality: int | None = None,
    upscale: bool = True,
) -> bytes:
    """A decoded frame to an encoded image: display values, viewport, encoding."""
    return encode(
        fit(to_display(arr, desc, frame, window), viewport, upscale=upscale), media_type, quality
    )
