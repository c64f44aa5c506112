"""WADO-RS retrieve as application/zip: stored files in a streamed ZIP (STORED, ZIP64 when needed)."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import zipfile
import zlib
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from dicomhub.dicomweb.zipstream import ZipLayout
from tests.conftest import LiveServer
from tests.dicomfiles import make_instance
from tests.dicomweb.support import assert_error, stow

ZIP = {"Accept": "application/zip"}
# Real files above 4 MiB (such entries take the two-pass path): a 4.3 MB JPEG 2000 image and a
# 6 MB multi-frame JPEG.
LARGE_FILES = ("RG1_J2KR.dcm", "color3d_jpeg_baseline.dcm")


def _read(name: str) -> bytes:
    path = get_testdata_file(name)
    assert path is not None, name
    return Path(path).read_bytes()


def _uids(data: bytes) -> tuple[str, str, str]:
    ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def _open_zip(r: httpx.Response, filename: str) -> zipfile.ZipFile:
    """Check the download's headers and the archive's integrity; return it opened."""
    assert r.status_code == 200, r.text[:500]
    assert r.headers["content-type"] == "application/zip"
    assert r.headers["content-disposition"] == f'attachment; filename="{filename}"'
    assert int(r.headers["content-length"]) == len(r.content)
    assert "content-encoding" not in r.headers  # never gzipped: already as small as it gets
    archive = zipfile.ZipFile(io.BytesIO(r.content))
    assert archive.testzip() is None
    for info in archive.infolist():
        assert info.compress_type == zipfile.ZIP_STORED
        # Complete local headers (no data descriptor): streaming readers can unpack too.
        assert not info.flag_bits & 0x08
        raw = r.content[info.header_offset : info.header_offset + 30]
        signature, *_, crc, packed, size, _, _ = struct.unpack("<IHHHHHIIIHH", raw)
        assert signature == 0x04034B50
        assert crc == info.CRC == zlib.crc32(archive.read(info))
        assert (packed, size) == (info.file_size, info.file_size)
    return archive


def _unzip_test(data: bytes, tmp_path: Path) -> None:
    """Info-ZIP's own integrity test, a reader independent of Python's zipfile."""
    unzip = shutil.which("unzip")
    if unzip is None:
        pytest.skip("skipped: the unzip command is not installed")
    path = tmp_path / "archive.zip"
    path.write_bytes(data)
    done = subprocess.run([unzip, "-tq", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_study_zip_holds_every_file_byte_exact_under_uid_names(
    http: httpx.Client, tmp_path: Path
) -> None:
    study = generate_uid()
    series = [generate_uid(), generate_uid()]
    files = [
        make_instance(study_uid=study, series_uid=series[i % 2], PatientName="Doe^Jane")
        for i in range(5)
    ]
    assert stow(http, files).status_code == 200

    r = http.get(f"/studies/{study}", headers=ZIP)
    archive = _open_zip(r, f"{study}.zip")
    expected = {"/".join(_uids(f)) + ".dcm": f for f in files}
    assert sorted(archive.namelist()) == sorted(expected)
    for name, data in expected.items():
        assert archive.read(name) == data
    # names carry UIDs only, never patient data
    assert not any("Doe" in n or "Jane" in n for n in archive.namelist())
    _unzip_test(r.content, tmp_path)


def test_series_zip_holds_that_series_only(http: httpx.Client) -> None:
    study, wanted, other = generate_uid(), generate_uid(), generate_uid()
    mine = [make_instance(study_uid=study, series_uid=wanted) for _ in range(3)]
    assert stow(http, [*mine, make_instance(study_uid=study, series_uid=other)]).status_code == 200

    archive = _open_zip(http.get(f"/studies/{study}/series/{wanted}", headers=ZIP), f"{wanted}.zip")
    assert sorted(archive.namelist()) == sorted("/".join(_uids(f)) + ".dcm" for f in mine)
    assert sorted(archive.read(n) for n in archive.namelist()) == sorted(mine)


def test_instance_zip_and_accept_variants(http: httpx.Client) -> None:
    data = make_instance()
    study, series, sop = _uids(data)
    assert stow(http, [data]).status_code == 200
    base = f"/studies/{study}/series/{series}"

    archive = _open_zip(http.get(f"{base}/instances/{sop}", headers=ZIP), f"{sop}.zip")
    assert archive.read(f"{study}/{series}/{sop}.dcm") == data
    # transfer-syntax=* and the stored syntax ask for the files as stored
    for accept in (
        "application/zip; transfer-syntax=*",
        'application/zip; transfer-syntax="1.2.840.10008.1.2.1"',
        # preference by quality: zip (q=1) over multipart (q=0.5)
        'multipart/related; type="application/dicom"; q=0.5, application/zip',
    ):
        r = http.get(base, headers={"Accept": accept})
        assert _open_zip(r, f"{series}.zip").read(f"{study}/{series}/{sop}.dcm") == data
    # and multipart still wins when it is preferred
    r = http.get(base, headers={"Accept": "application/zip; q=0.2, multipart/related; q=0.9"})
    assert r.headers["content-type"].startswith("multipart/related")


def test_zip_holds_files_as_stored_only(http: httpx.Client) -> None:
    data = make_instance()
    study = _uids(data)[0]
    assert stow(http, [data]).status_code == 200
    jpeg = "application/zip; transfer-syntax=1.2.840.10008.1.2.4.50"
    body = assert_error(http.get(f"/studies/{study}", headers={"Accept": jpeg}), 406)
    assert "as stored" in body["message"]


def test_zip_of_nothing_stored_is_404(http: httpx.Client) -> None:
    assert_error(http.get(f"/studies/{generate_uid()}", headers=ZIP), 404)
    assert_error(http.get(f"/studies/{generate_uid()}/series/{generate_uid()}", headers=ZIP), 404)


def test_real_files_large_and_small_round_trip(live_server: LiveServer, tmp_path: Path) -> None:
    j2k, jpeg = (_read(n) for n in LARGE_FILES)
    assert min(len(j2k), len(jpeg)) > 4 * 1024 * 1024
    study = _uids(j2k)[0]
    # small entries of another series around the large one, to mix both read paths
    files = [j2k, *(make_instance(study_uid=study, series_uid="1.2.3.4") for _ in range(2))]
    # the Azure-shaped prefixes answer the same way
    with httpx.Client(base_url=live_server.url + "/v1", timeout=120) as v1:
        assert stow(v1, [*files, jpeg]).status_code == 200
        archive = _open_zip(v1.get(f"/studies/{study}", headers=ZIP), f"{study}.zip")
    assert sorted(archive.namelist()) == sorted("/".join(_uids(f)) + ".dcm" for f in files)
    for data in files:
        assert archive.read("/".join(_uids(data)) + ".dcm") == data

    big_study, big_series, big_sop = _uids(jpeg)
    with httpx.Client(base_url=live_server.url + "/v2", timeout=120) as v2:
        r = v2.get(f"/studies/{big_study}/series/{big_series}", headers=ZIP)
    member = f"{big_study}/{big_series}/{big_sop}.dcm"
    assert _open_zip(r, f"{big_series}.zip").read(member) == jpeg
    _unzip_test(r.content, tmp_path)


def _build(members: list[tuple[str, bytes]], size_limit: int) -> bytes:
    layout = ZipLayout([(n, len(d)) for n, d in members], size_limit=size_limit)
    out = bytearray()
    crcs = []
    for i, (_, data) in enumerate(members):
        crcs.append(zlib.crc32(data))
        out += layout.header(i, crcs[-1]) + data
    out += layout.directory(crcs)
    assert len(out) == layout.size  # the Content-Length promised before the first byte
    return bytes(out)


@pytest.mark.parametrize("size_limit", [1000, 0])
def test_zip64_fields_for_large_entries_and_offsets(size_limit: int, tmp_path: Path) -> None:
    # The real threshold is 2 GiB; lowered here so that entries (1000) and then offsets and the
    # directory too (0) take the ZIP64 form with small test data.
    members = [(f"1.2.3/4.5/{i}.dcm", bytes([i]) * (500 + 400 * i)) for i in range(6)]
    data = _build(members, size_limit)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        assert [archive.read(n) for n, _ in members] == [d for _, d in members]
        extras = [i.extra for i in archive.infolist()]
    assert any(e.startswith(b"\x01\x00") for e in extras)  # a ZIP64 extended field is there
    if size_limit == 0:
        assert b"PK\x06\x06" in data[-200:] and b"PK\x06\x07" in data[-200:]
    _unzip_test(data, tmp_path)


def test_zip64_end_record_for_more_than_65535_entries(tmp_path: Path) -> None:
    members = [(f"s/{i}.dcm", str(i).encode()) for i in range(70_000)]
    data = _build(members, 0x7FFFFFFF)
    assert b"PK\x06\x06" in data[-200:]  # the ZIP64 end of central directory record
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        assert len(names) == 70_000
        assert archive.read("s/69999.dcm") == b"69999"
    _unzip_test(data, tmp_path)
