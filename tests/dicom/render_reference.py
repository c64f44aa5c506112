"""An independent rendering, straight from PS3.3, for checking dicom/render.py and /rendered.

It shares no code with dicomhub: pixel values come from pydicom (pixel_array and raw element
values), the arithmetic is the standard's: rescale (C.11.1), the window functions
(C.11.2.1.2.1 LINEAR, C.11.2.1.3.1 SIGMOID, C.11.2.1.3.2 LINEAR_EXACT), MONOCHROME1
inversion, YBR_FULL to RGB (C.7.6.3.1.2) and palette tables (C.7.9).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue


def ref_linear(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 with ymin 0 and ymax 255."""
    return np.select(
        [x <= c - 0.5 - (w - 1) / 2, x > c - 0.5 + (w - 1) / 2],
        [0.0, 255.0],
        ((x - (c - 0.5)) / (w - 1) + 0.5) * 255,
    ).astype(np.float64)


def ref_linear_exact(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """PS3.3 C.11.2.1.3.2."""
    return np.select(
        [x <= c - w / 2, x > c + w / 2], [0.0, 255.0], ((x - c) / w + 0.5) * 255
    ).astype(np.float64)


def ref_sigmoid(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """PS3.3 C.11.2.1.3.1."""
    return np.asarray(255 / (1 + np.exp(-4 * (x - c) / w)), dtype=np.float64)


def ref_minmax(x: np.ndarray) -> np.ndarray:
    """No window, no VOI LUT: the values' range end to end."""
    return np.asarray((x - x.min()) / (x.max() - x.min()) * 255, dtype=np.float64)


def to8(y: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def first(value: Any) -> float:
    """The first of a possibly multi-valued DS."""
    return float(value[0]) if isinstance(value, MultiValue) else float(value)


def rescaled(ds: Dataset, frame: int = 0) -> np.ndarray:
    """Stored values of a frame (0-based) through RescaleSlope and RescaleIntercept."""
    arr = ds.pixel_array
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        arr = arr[frame]
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    return np.asarray(arr, dtype=np.float64) * slope + intercept


def default_display(ds: Dataset, frame: int = 0) -> np.ndarray:
    """A grayscale frame as a viewer shows it by default: the stored window (LINEAR unless
    VOILUTFunction says otherwise) or the range, inverted for MONOCHROME1."""
    x = rescaled(ds, frame)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        c, w = first(ds.WindowCenter), first(ds.WindowWidth)
        function = str(ds.get("VOILUTFunction") or "LINEAR")
        y = {"LINEAR": ref_linear, "LINEAR_EXACT": ref_linear_exact, "SIGMOID": ref_sigmoid}[
            function
        ](x, c, w)
    else:
        y = ref_minmax(x)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        y = 255 - y
    return to8(y)


def ybr_full_to_rgb(ybr: np.ndarray) -> np.ndarray:
    """PS3.3 C.7.6.3.1.2, YBR_FULL to RGB."""
    y, cb, cr = (ybr[..., i].astype(np.float64) for i in range(3))
    r = y + 1.402 * (cr - 128)
    g = y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128)
    b = y + 1.772 * (cb - 128)
    return to8(np.stack([r, g, b], axis=-1))


def rgb_to_ybr_full(rgb: np.ndarray) -> np.ndarray:
    """PS3.3 C.7.6.3.1.2, RGB to YBR_FULL."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.1687 * r - 0.3313 * g + 0.5 * b + 128
    cr = 0.5 * r - 0.4187 * g - 0.0813 * b + 128
    return to8(np.stack([y, cb, cr], axis=-1))


def palette_reference(ds: Dataset) -> np.ndarray:
    """PALETTE COLOR through the stored 8- or 16-bit tables, scaled to 8 bits."""
    stored = ds.pixel_array.astype(np.int64)
    channels = []
    for colour in ("Red", "Green", "Blue"):
        entries, first_value, bits = ds[f"{colour}PaletteColorLookupTableDescriptor"].value
        raw = ds[f"{colour}PaletteColorLookupTableData"].value
        table = np.frombuffer(raw, dtype="<u2" if bits == 16 else "<u1").astype(np.float64)
        index = np.clip(stored - first_value, 0, (entries or 65536) - 1)
        channels.append(table[index] / (2**bits - 1) * 255)
    return to8(np.stack(channels, axis=-1))
