"""Real DICOM test material: the sample files shipped with pydicom and pydicom-data, and built files."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.data import get_testdata_files
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def sample_files() -> list[Path]:
    """Every file that ships with pydicom and pydicom-data (DICOM or not)."""
    return sorted(Path(p) for p in get_testdata_files() if os.path.isfile(p))


def readable(path: Path) -> bool:
    """pydicom reads it as a Part-10 file without force."""
    try:
        dcmread(path, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - any failure means "not readable"
        return False
    return True


def storable(path: Path) -> bool:
    """Readable, with the four identifying UIDs present and syntactically valid, and not truncated."""
    from dicomhub.dicom.read import parse_part10

    with path.open("rb") as fh:
        try:
            parsed = parse_part10(fh, path.stat().st_size, lambda p: p)
        except ValueError:
            return False
    return not parsed.errors


def make_dataset(
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    sop_class: str = CT_IMAGE,
    rows: int = 8,
    columns: int = 8,
    frames: int = 1,
    pixel_seed: int = 0,
    **attributes: Any,
) -> Dataset:
    """A small, valid image instance; keyword arguments set any other attribute."""
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.PatientName = "Test^Patient"
    ds.PatientID = "PID-1"
    ds.Modality = "CT"
    ds.StudyDate = "20240115"
    ds.StudyTime = "101500"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Rows = rows
    ds.Columns = columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    rng = np.random.default_rng(pixel_seed)
    ds.PixelData = rng.integers(0, 4096, size=rows * columns * frames, dtype=np.uint16).tobytes()
    for key, value in attributes.items():
        setattr(ds, key, value)
    return ds


def to_part10(ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta = meta
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def make_instance(**kwargs: Any) -> bytes:
    return to_part10(make_dataset(**kwargs))


def multipart_body(
    parts: Sequence[bytes], *, boundary: str = "dicomhub-test-boundary"
) -> tuple[bytes, str]:
    """A multipart/related body of application/dicom parts and its Content-Type."""
    out = bytearray()
    for part in parts:
        out += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        out += part
        out += b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f'multipart/related; type="application/dicom"; boundary={boundary}'


def parse_multipart(body: bytes, content_type: str) -> list[tuple[dict[str, str], bytes]]:
    """Split a multipart response (independently of the server's writer)."""
    boundary = None
    for piece in content_type.split(";"):
        key, _, value = piece.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip('"')
    assert boundary, content_type
    delimiter = f"--{boundary}".encode()
    chunks = body.split(b"\r\n" + delimiter)
    first = chunks[0]
    assert first.startswith(delimiter), body[:80]
    chunks[0] = first[len(delimiter) :]
    parts = []
    for chunk in chunks:
        if chunk.startswith(b"--"):
            break
        head, _, payload = chunk.partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        parts.append((headers, payload))
    return parts
