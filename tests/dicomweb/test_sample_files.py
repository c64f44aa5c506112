"""Every sample file of pydicom and pydicom-data: stored byte-exact, or refused with a reason."""

from __future__ import annotations

from collections import defaultdict
from io import BytesIO
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread

from tests.conftest import LiveServer
from tests.dicomfiles import parse_multipart, readable, sample_files, storable

FILES = sample_files()


def _uids(path: Path) -> tuple[str, str, str]:
    ds = dcmread(path, stop_before_pixels=True, force=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def _bare_data_set(path: Path) -> bool:
    """Not Part 10 (no preamble and DICM prefix) but a data set with its identifying UIDs."""
    if readable(path):
        return False
    try:
        ds = dcmread(path, stop_before_pixels=True, force=True)
        uids = [
            str(ds[k].value)
            for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
        ]
    except Exception:  # noqa: BLE001 - not a data set at all
        return False
    return all(u and set(u) <= set("0123456789.") for u in uids)


def test_the_sample_set_is_there() -> None:
    # pydicom ships ~90 files and pydicom-data ~170; fewer means a package went missing.
    assert len(FILES) > 200
    assert sum(1 for f in FILES if storable(f)) > 150


def test_every_sample_file_round_trips_byte_exact(live_server: LiveServer) -> None:
    by_sop: dict[str, list[Path]] = defaultdict(list)
    bare: list[Path] = []
    refused: list[Path] = []
    for path in FILES:
        if storable(path):
            by_sop[_uids(path)[2]].append(path)
        elif _bare_data_set(path):
            bare.append(path)
        else:
            refused.append(path)
    assert bare, "the sample set has data sets without a Part-10 header"

    with httpx.Client(base_url=live_server.url + "/dicom-web", timeout=60) as http:
        for sop, paths in by_sop.items():
            # Files sharing a SOP Instance UID are stored one after another.
            for path in paths:
                data = path.read_bytes()
                r = http.post(
                    "/studies", content=data, headers={"Content-Type": "application/dicom"}
                )
                assert r.status_code in (200, 202), (path.name, r.status_code, r.text)
                study, series, _ = _uids(path)
                url = f"/studies/{study}/series/{series}/instances/{sop}"
                single = http.get(url, headers={"Accept": "application/dicom; transfer-syntax=*"})
                assert single.status_code == 200, (path.name, single.text)
                assert single.content == data, f"{path.name} did not come back byte-exact"
                multi = http.get(
                    url, headers={"Accept": 'multipart/related; type="application/dicom"'}
                )
                assert multi.status_code == 200
                parts = parse_multipart(multi.content, multi.headers["content-type"])
                assert [p[1] for p in parts] == [data], path.name
                assert http.get(f"{url}/metadata").status_code == 200, path.name
                assert http.delete(url).status_code == 204

        for path in bare:
            # Stored with the preamble and File Meta Information added: warning 45056,
            # and the data set bytes come back unchanged after that header.
            data = path.read_bytes()
            r = http.post("/studies", content=data, headers={"Content-Type": "application/dicom"})
            assert r.status_code == 202, (path.name, r.status_code, r.text)
            item = r.json()["00081199"]["Value"][0]
            assert item["00081196"]["Value"] == [45056], path.name
            study, series, sop = _uids(path)
            url = f"/studies/{study}/series/{series}/instances/{sop}"
            back = http.get(url, headers={"Accept": "application/dicom"}).content
            assert back.endswith(data) and back[128:132] == b"DICM", path.name
            assert dcmread(BytesIO(back)).SOPInstanceUID == sop
            assert http.delete(url).status_code == 204

        for path in refused:
            r = http.post(
                "/studies", content=path.read_bytes(), headers={"Content-Type": "application/dicom"}
            )
            assert r.status_code == 409, (path.name, r.status_code, r.text)
            failed = r.json()["00081198"]["Value"]
            assert failed[0]["00081197"]["Value"] == [43264], path.name
            assert failed[0]["00000902"]["Value"][0], path.name
        # Nothing refused was stored, and every stored file was deleted again.
        assert http.get("/instances").json() == []


@pytest.mark.parametrize("path", [f for f in FILES if readable(f) and storable(f)][:1])
def test_a_stored_sample_is_found_by_search(live_server: LiveServer, path: Path) -> None:
    _, _, sop = _uids(path)
    with httpx.Client(base_url=live_server.url + "/dicom-web") as http:
        r = http.post(
            "/studies", content=path.read_bytes(), headers={"Content-Type": "application/dicom"}
        )
        assert r.status_code in (200, 202)
        found = http.get("/instances", params={"SOPInstanceUID": sop}).json()
        assert [i["00080018"]["Value"][0] for i in found] == [sop]
