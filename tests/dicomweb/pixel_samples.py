"""The sample files with pixel data, stored once in an archive served for a test module."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicomhub.bootstrap import build_services, prepare_storage
from dicomhub.config import Settings
from dicomhub.dicom.read import parse_part10
from dicomhub.dicom.validate import Finding
from tests.conftest import LiveServer
from tests.dicomfiles import readable, sample_files, storable
from tests.dicomweb.support import DICOM


@dataclass
class Sample:
    name: str
    data: bytes
    ds: Dataset

    @property
    def syntax(self) -> str:
        return str(self.ds.file_meta.TransferSyntaxUID)

    @property
    def count(self) -> int:
        return int(self.ds.get("NumberOfFrames") or 1)

    @property
    def url(self) -> str:
        ds = self.ds
        return (
            f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}"
        )


def quiet_read(data: bytes) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dcmread(io.BytesIO(data))


def pixel_array(ds: Dataset) -> np.ndarray[Any, Any]:
    """What pydicom decodes (its defaults: YBR as RGB), every frame on the first axis."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        arr = ds.pixel_array
    count = int(ds.get("NumberOfFrames") or 1)
    return arr if count > 1 else arr[np.newaxis]


def _errors(data: bytes) -> list[Finding]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return parse_part10(io.BytesIO(data), len(data), lambda p: p).errors


def _resaved(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def _image_samples() -> list[tuple[str, bytes]]:
    """Every sample file with pixel data that can be stored. Files lacking only valid
    identifying UIDs get new ones (the JPEG-LS near-lossless samples have none), and a
    repeated SOP Instance UID is replaced, so that all can sit in one archive."""
    seen: set[str] = set()
    out = []
    for path in sample_files():
        with warnings.catch_warnings():
            # pydicom warns about odd files it reads anyway; the server stores and serves them.
            warnings.simplefilter("ignore")
            if not readable(path):
                continue
            ds = dcmread(path)
            usable = storable(path)
        if "PixelData" not in ds or "Rows" not in ds:
            continue
        if not str(ds.get("NumberOfFrames", "1")).strip().isdigit():
            continue  # badVR.dcm: NumberOfFrames '1A' leaves the frame count unknown
        data = path.read_bytes()
        if not usable:
            if not all("UID" in e.message for e in _errors(data)):
                continue  # truncated files: refused at store, see test_sample_files.py
            for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
                if not set(str(ds.get(keyword, ""))) <= set("0123456789.") or not ds.get(keyword):
                    setattr(ds, keyword, generate_uid())
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            data = _resaved(ds)
        if str(ds.SOPInstanceUID) in seen:
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            data = _resaved(ds)
        seen.add(str(ds.SOPInstanceUID))
        out.append((path.name, data))
    return out


SAMPLES = _image_samples()
NAMES = [name for name, _ in SAMPLES]


@contextmanager
def serve_samples(folder: Path) -> Iterator[tuple[str, dict[str, Sample]]]:
    """An archive on SQLite holding every sample: its DICOMweb root URL and the samples by name.

    The pixel matrices run on SQLite only: frames come from blobs, not from the database; the
    test modules also test each route on both backends.
    """
    settings = Settings(data_dir=folder / "data")
    prepare_storage(settings)
    services = build_services(settings)
    samples = {}
    try:
        with LiveServer(settings, services) as server:
            with (
                httpx.Client(base_url=server.url + "/dicom-web", timeout=120) as http,
                warnings.catch_warnings(),
            ):
                # The server runs in this process: its parsing must not meet pytest's
                # warnings-as-errors for the odd files pydicom reads with a warning.
                warnings.simplefilter("ignore")
                for name, data in SAMPLES:
                    r = http.post("/studies", content=data, headers=DICOM)
                    assert r.status_code in (200, 202), (name, r.text)
                    samples[name] = Sample(name, data, quiet_read(data))
            yield server.url + "/dicom-web", samples
    finally:
        services.close()
