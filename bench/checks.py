"""Request bodies and answer checks shared by the phases of the driver.

A check takes the response and returns None when the answer is right, else a short reason.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from urllib.parse import quote

import httpx
import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from corpus import frame_code_boxes
from measure import Check, Job

__all__ = [
    "FRAME",
    "FRAME_QUOTED",
    "JPEG",
    "JSON",
    "MULTIPART",
    "SINGLE_DICOMHUB",
    "STOW_TYPE",
    "check_image",
    "check_metadata",
    "check_single",
    "check_stow",
    "check_study_retrieve",
    "check_study_set",
    "http_problem",
    "multipart_parts",
    "qido_url",
    "reference_images",
    "stow_body",
    "stow_jobs",
    "study_uids",
]

BOUNDARY = "dicomhub-bench-5f0c2a9e7d3b41c8"
STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
JSON = {"Accept": "application/dicom+json"}
# dicomhub serves a single instance as application/dicom; the Orthanc 1.10 / DICOMweb 1.7
# plugin answers 400 to that and wants multipart/related.
SINGLE_DICOMHUB = {"Accept": "application/dicom; transfer-syntax=*"}
MULTIPART = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
# A frame as OHIF asks for it (cornerstone's WADO-RS loader): `type` unquoted. The quoted form
# is what PS3.18 writes; both servers are probed with it once (see the driver's notes).
FRAME = {"Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"}
FRAME_QUOTED = {"Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'}
JPEG = {"Accept": "image/jpeg"}
# Rendered images are compared with their source at this resolution (block means).
REFERENCE_SIDE = 64
# The right image gives 0.998 or more with the window the server used; its neighbours in a
# series 0.79-0.96.
MIN_CORRELATION = 0.98


def stow_body(instances: Iterable[bytes]) -> bytes:
    head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    chunks: list[bytes] = []
    for data in instances:
        if BOUNDARY.encode() in data:
            raise ValueError("the multipart boundary occurs inside an instance")
        chunks += [head, data, b"\r\n"]
    chunks.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(chunks)


def stow_jobs(instances: list[bytes], per_request: int) -> list[Job]:
    """POST /studies bodies of `per_request` instances each, built before any clock starts."""
    jobs = []
    for i in range(0, len(instances), per_request):
        chunk = instances[i : i + per_request]
        jobs.append(
            Job(
                "/studies",
                stow_body(chunk),
                {"Content-Type": STOW_TYPE, "Accept": "application/dicom+json"},
                check_stow(len(chunk)),
                len(chunk),
                sum(len(d) for d in chunk),
            )
        )
    return jobs


def http_problem(response: httpx.Response, expected: int = 200) -> str | None:
    if response.status_code != expected:
        return f"HTTP {response.status_code}: {response.text[:200]!r}"
    return None


def check_stow(count: int) -> Check:
    def check(response: httpx.Response) -> str | None:
        if problem := http_problem(response):
            return problem
        body = response.json()
        failed = body.get("00081198", {}).get("Value") or []
        stored = body.get("00081199", {}).get("Value") or []
        if failed or len(stored) != count:
            return f"{len(stored)} stored and {len(failed)} failed of {count}"
        return None

    return check


def study_uids(response: httpx.Response) -> list[str]:
    data = response.json()
    if not isinstance(data, list):
        raise TypeError("the answer is not a JSON array")
    return [str(item["0020000D"]["Value"][0]) for item in data]


def check_study_set(expected: frozenset[str], limit: int) -> Check:
    """Right when the answer holds min(limit, |expected|) distinct studies, all matching."""

    def check(response: httpx.Response) -> str | None:
        if problem := http_problem(response):
            return problem
        got = study_uids(response)
        unique = set(got)
        if len(unique) != len(got):
            return f"{len(got) - len(unique)} duplicate studies"
        want = min(limit, len(expected))
        if len(got) != want:
            return f"{len(got)} studies, expected {want}"
        wrong = unique - expected
        if wrong:
            return f"{len(wrong)} studies that do not match, e.g. {sorted(wrong)[0]}"
        return None

    return check


def check_metadata(expected: frozenset[str]) -> Check:
    def check(response: httpx.Response) -> str | None:
        if problem := http_problem(response):
            return problem
        data = response.json()
        sops = [str(item["00080018"]["Value"][0]) for item in data]
        if len(sops) != len(expected) or set(sops) != expected:
            return f"{len(sops)} instances ({len(set(sops) & expected)} right), expected {len(expected)}"
        return None

    return check


_BOUNDARY_PARAM = re.compile(r'boundary="?([^";,\s]+)"?', re.IGNORECASE)


def multipart_parts(response: httpx.Response) -> list[bytes]:
    ctype = response.headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/related"):
        raise ValueError(f"not multipart/related but {ctype!r}")
    match = _BOUNDARY_PARAM.search(ctype)
    if match is None:
        raise ValueError("multipart answer without a boundary")
    delimiter = b"--" + match.group(1).encode()
    body = response.content
    parts: list[bytes] = []
    pos = body.find(delimiter)
    while pos != -1:
        start = pos + len(delimiter)
        if body[start : start + 2] == b"--":
            break
        header_end = body.find(b"\r\n\r\n", start)
        if header_end == -1:
            raise ValueError("truncated part headers")
        end = body.find(b"\r\n" + delimiter, header_end + 4)
        if end == -1:
            raise ValueError("missing closing delimiter")
        parts.append(body[header_end + 4 : end])
        pos = end + 2
    return parts


def check_single(expected: bytes, multipart: bool) -> Check:
    def check(response: httpx.Response) -> str | None:
        if problem := http_problem(response):
            return problem
        if multipart:
            parts = multipart_parts(response)
            if len(parts) != 1:
                return f"{len(parts)} parts, expected 1"
            data = parts[0]
        else:
            data = response.content
        if data != expected:
            return f"{len(data)} bytes differ from the {len(expected)} stored"
        return None

    return check


def check_study_retrieve(expected_digests: Counter[str]) -> Check:
    def check(response: httpx.Response) -> str | None:
        if problem := http_problem(response):
            return problem
        parts = multipart_parts(response)
        got = Counter(hashlib.sha256(p).hexdigest() for p in parts)
        if got != expected_digests:
            right = sum((got & expected_digests).values())
            return f"{len(parts)} parts, {right} identical to the {sum(expected_digests.values())} stored"
        return None

    return check


def qido_url(level_path: str, params: list[tuple[str, str]]) -> str:
    """Query strings as a browser-based viewer sends them: `*`, `,` and `-` left as they are.

    (Orthanc 1.10 with DICOMweb 1.7 passes GET arguments to the plugin without decoding them,
    so a percent-encoded `*` matches nothing there; see the notes of the report.)
    """
    return level_path + "?" + "&".join(f"{k}={quote(v, safe='*,-^')}" for k, v in params)


def reference_images(pixels: np.ndarray, ds: Dataset) -> list[np.ndarray]:
    """What a rendering of one stored frame may look like, for `check_image`: the stored values
    scaled linearly (a full-range rendering), and the file's own linear VOI window
    (PS3.14 C.11.2.1.2.1, after the modality rescale), which clips."""
    refs = [reference_image(pixels)]
    if "WindowCenter" in ds and "WindowWidth" in ds:
        center, width = (_first(ds[k].value) for k in ("WindowCenter", "WindowWidth"))
        values = pixels * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
        windowed = np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0, 1)
        refs.append(reference_image(windowed))
    return refs


def _first(value: object) -> float:
    """The first of a multi-valued window (the one viewers apply by default)."""
    return float(str(value[0] if isinstance(value, list | tuple | MultiValue) else value))


def reference_image(pixels: np.ndarray) -> np.ndarray:
    """A frame reduced to REFERENCE_SIDE² block means."""
    rows, cols = pixels.shape
    side = REFERENCE_SIDE
    blocks = pixels[: rows - rows % side, : cols - cols % side].astype(np.float64)
    means: np.ndarray = blocks.reshape(side, rows // side, side, cols // side).mean(axis=(1, 3))
    return means


def check_image(
    references: Sequence[np.ndarray],
    *,
    size: tuple[int, int] | None = None,
    max_side: int | None = None,
    frame_number: int | None = None,
    sizes: Counter[tuple[int, int]] | None = None,
) -> Check:
    """A JPEG that decodes (Pillow) to `size` (or fits in `max_side` with the source's aspect),
    looks like its source, one of `references` (Pearson correlation of block means >=
    MIN_CORRELATION: the same picture whatever window the server applied) and, for the
    multi-frame instance, shows `frame_number` in its frame-code boxes. Decoded sizes are
    counted in `sizes`."""
    ref_aspect = references[0].shape[1] / references[0].shape[0]
    # Centred unit rows: one matrix product gives the correlation with every reference.
    refs = np.stack([r.ravel() for r in references])
    refs -= refs.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(refs, axis=1, keepdims=True)
    refs /= np.where(norms == 0, 1, norms)

    def check(response: httpx.Response) -> str | None:
        if problem := http_problem(response):
            return problem
        ctype = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "image/jpeg":
            return f"Content-Type {ctype!r}, expected image/jpeg"
        try:
            image = Image.open(io.BytesIO(response.content))
            image.load()
        except (OSError, SyntaxError) as exc:
            return f"does not decode as an image: {exc}"
        if image.format != "JPEG":
            return f"a {image.format} image, not JPEG"
        if sizes is not None:
            sizes[image.size] += 1
        width, height = image.size
        if size is not None and image.size != size:
            return f"{width}x{height}, expected {size[0]}x{size[1]}"
        if max_side is not None and (
            max(width, height) > max_side or abs(width / height - ref_aspect) > 0.05
        ):
            return f"{width}x{height} for a thumbnail of a {ref_aspect:.2f}:1 image"
        gray = image.convert("L")
        small = gray.resize((REFERENCE_SIDE, REFERENCE_SIDE), Image.Resampling.BOX)
        got = np.asarray(small, dtype=np.float64)
        if got.std() == 0:
            return "a uniform image"
        centred = got.ravel() - got.mean()
        correlation = float((refs @ (centred / np.linalg.norm(centred))).max())
        if not correlation >= MIN_CORRELATION:
            return f"does not look like its source (correlation {correlation:.2f})"
        if frame_number is not None:
            shown = _frame_code(np.asarray(gray))
            if shown != frame_number:
                return f"shows frame {shown}, expected frame {frame_number}"
        return None

    return check


def _frame_code(gray: np.ndarray) -> int:
    """The frame number written into the boxes of corpus.frame_code_boxes (inner half only,
    away from the JPEG ringing at the box edges)."""
    rows, cols = gray.shape
    number = 0
    for bit, (top, bottom, left, right) in enumerate(frame_code_boxes()):
        dy, dx = (bottom - top) / 4, (right - left) / 4
        box = gray[
            int((top + dy) * rows) : int(np.ceil((bottom - dy) * rows)),
            int((left + dx) * cols) : int(np.ceil((right - dx) * cols)),
        ]
        if box.size and box.mean() > 127:
            number |= 1 << bit
    return number
