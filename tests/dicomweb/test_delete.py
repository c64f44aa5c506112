"""DELETE of studies, series and instances: index, computed counts, blobs and re-storing."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from dicomhub.config import Settings
from tests.conftest import LiveServer
from tests.dicomfiles import MR_IMAGE, make_instance
from tests.dicomweb.support import (
    assert_error,
    blob_files,
    failed,
    referenced,
    staged_leftovers,
    stow,
    value,
)


def _uids(data: bytes) -> tuple[str, str, str]:
    ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def _path(data: bytes) -> str:
    study, series, sop = _uids(data)
    return f"/studies/{study}/series/{series}/instances/{sop}"


@dataclass
class Archive:
    study: str
    ct_series: str
    mr_series: str
    ct: list[bytes]  # three CT instances
    mr: list[bytes]  # two MR instances
    other: list[bytes]  # another study of two instances

    @property
    def everything(self) -> list[bytes]:
        return [*self.ct, *self.mr, *self.other]


@pytest.fixture
def archive(http: httpx.Client) -> Archive:
    study, ct_series, mr_series = generate_uid(), generate_uid(), generate_uid()
    ct = [
        make_instance(study_uid=study, series_uid=ct_series, InstanceNumber=i, pixel_seed=i)
        for i in (1, 2, 3)
    ]
    mr = [
        make_instance(
            study_uid=study,
            series_uid=mr_series,
            sop_class=MR_IMAGE,
            Modality="MR",
            InstanceNumber=i,
            pixel_seed=10 + i,
        )
        for i in (1, 2)
    ]
    other_study, other_series = generate_uid(), generate_uid()
    other = [
        make_instance(
            study_uid=other_study, series_uid=other_series, PatientID="OTHER", pixel_seed=i
        )
        for i in (20, 21)
    ]
    r = stow(http, [*ct, *mr, *other])
    assert r.status_code == 200, r.text
    return Archive(study, ct_series, mr_series, ct, mr, other)


def _study(http: httpx.Client, study: str) -> dict[str, Any] | None:
    r = http.get(
        "/studies", params={"StudyInstanceUID": study, "includefield": "SOPClassesInStudy"}
    )
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()
    assert len(found) <= 1
    return found[0] if found else None


def _series_counts(http: httpx.Client, study: str) -> dict[str, int]:
    r = http.get(f"/studies/{study}/series")
    assert r.status_code == 200, r.text
    return {value(s, "0020000E"): value(s, "00201209") for s in r.json()}


def _sops(http: httpx.Client) -> set[str]:
    r = http.get("/instances", params={"limit": 500})
    assert r.status_code == 200, r.text
    return {value(i, "00080018") for i in r.json()}


def _snapshot(http: httpx.Client, data: list[bytes]) -> list[Any]:
    """QIDO and WADO views of these instances, to show they were left alone."""
    out: list[Any] = []
    for d in data:
        study, _, sop = _uids(d)
        r = http.get(_path(d), headers={"Accept": "application/dicom"})
        assert r.status_code == 200
        assert r.content == d
        out.append(http.get("/instances", params={"SOPInstanceUID": sop}).json())
        out.append(http.get(f"{_path(d)}/metadata").json())
        out.append(http.get("/studies", params={"StudyInstanceUID": study}).json())
    return out


def _blob_contents(settings: Settings) -> list[bytes]:
    return sorted(p.read_bytes() for p in blob_files(settings))


def _gone(http: httpx.Client, data: bytes) -> None:
    assert _uids(data)[2] not in _sops(http)
    assert_error(http.get(_path(data)), 404, "not-found")
    assert_error(http.get(f"{_path(data)}/metadata"), 404, "not-found")


def test_delete_an_instance(http: httpx.Client, settings: Settings, archive: Archive) -> None:
    others = _snapshot(http, archive.other)
    r = http.delete(_path(archive.ct[1]))
    assert r.status_code == 204
    assert r.content == b""
    _gone(http, archive.ct[1])
    remaining = [archive.ct[0], archive.ct[2], *archive.mr, *archive.other]
    assert _sops(http) == {_uids(d)[2] for d in remaining}
    study = _study(http, archive.study)
    assert study is not None
    assert value(study, "00201206") == 2
    assert value(study, "00201208") == 4
    assert _series_counts(http, archive.study) == {archive.ct_series: 2, archive.mr_series: 2}
    series_instances = http.get(f"/studies/{archive.study}/series/{archive.ct_series}/instances")
    assert len(series_instances.json()) == 2
    assert _blob_contents(settings) == sorted(remaining)
    assert _snapshot(http, archive.other) == others
    assert staged_leftovers(settings) == []


def test_delete_a_series(http: httpx.Client, settings: Settings, archive: Archive) -> None:
    before = _study(http, archive.study)
    assert before is not None
    assert before["00080061"]["Value"] == ["CT", "MR"]
    assert len(before["00080062"]["Value"]) == 2
    others = _snapshot(http, archive.other)

    assert http.delete(f"/studies/{archive.study}/series/{archive.mr_series}").status_code == 204
    for data in archive.mr:
        _gone(http, data)
    assert_error(http.get(f"/studies/{archive.study}/series/{archive.mr_series}"), 404)
    assert _series_counts(http, archive.study) == {archive.ct_series: 3}
    assert http.get("/series", params={"SeriesInstanceUID": archive.mr_series}).json() == []
    study = _study(http, archive.study)
    assert study is not None
    assert value(study, "00201206") == 1
    assert value(study, "00201208") == 3
    assert study["00080061"]["Value"] == ["CT"]
    assert study["00080062"]["Value"] == ["1.2.840.10008.5.1.4.1.1.2"]
    # Study metadata no longer lists the deleted series.
    metadata = http.get(f"/studies/{archive.study}/metadata").json()
    assert {value(m, "0020000E") for m in metadata} == {archive.ct_series}
    assert _blob_contents(settings) == sorted([*archive.ct, *archive.other])
    assert _snapshot(http, archive.other) == others


def test_delete_a_study(http: httpx.Client, settings: Settings, archive: Archive) -> None:
    others = _snapshot(http, archive.other)
    assert http.delete(f"/studies/{archive.study}").status_code == 204
    for data in [*archive.ct, *archive.mr]:
        _gone(http, data)
    assert _study(http, archive.study) is None
    assert http.get(f"/studies/{archive.study}/series").json() == []
    assert_error(http.get(f"/studies/{archive.study}"), 404, "not-found")
    assert_error(http.get(f"/studies/{archive.study}/metadata"), 404, "not-found")
    assert [value(s, "0020000D") for s in http.get("/studies").json()] == [
        _uids(archive.other[0])[0]
    ]
    assert _blob_contents(settings) == sorted(archive.other)
    assert _snapshot(http, archive.other) == others


def test_deleting_the_last_instances_removes_series_and_study(
    http: httpx.Client, settings: Settings, archive: Archive
) -> None:
    for data in archive.mr:
        assert http.delete(_path(data)).status_code == 204
    assert _series_counts(http, archive.study) == {archive.ct_series: 3}
    for data in archive.ct:
        assert http.delete(_path(data)).status_code == 204
    assert _study(http, archive.study) is None
    assert http.get("/series", params={"StudyInstanceUID": archive.study}).json() == []
    assert _blob_contents(settings) == sorted(archive.other)


def test_unknown_targets_are_not_found(http: httpx.Client, archive: Archive) -> None:
    unknown = generate_uid()
    study, series, _ = _uids(archive.ct[0])
    other_study, other_series, other_sop = _uids(archive.other[0])
    urls = [
        f"/studies/{unknown}",
        f"/studies/{study}/series/{unknown}",
        f"/studies/{study}/series/{series}/instances/{unknown}",
        # Existing UIDs in the wrong places delete nothing.
        f"/studies/{study}/series/{other_series}",
        f"/studies/{study}/series/{series}/instances/{other_sop}",
        f"/studies/{other_study}/series/{series}",
    ]
    for url in urls:
        assert_error(http.delete(url), 404, "not-found")
    assert len(_sops(http)) == len(archive.everything)
    # The second delete of the same thing finds nothing.
    assert http.delete(_path(archive.ct[0])).status_code == 204
    assert_error(http.delete(_path(archive.ct[0])), 404, "not-found")
    assert http.delete(f"/studies/{study}").status_code == 204
    assert_error(http.delete(f"/studies/{study}"), 404, "not-found")
    assert _sops(http) == {_uids(d)[2] for d in archive.other}


def test_malformed_uids_are_refused(http: httpx.Client, archive: Archive) -> None:
    study, series, _ = _uids(archive.ct[0])
    for url in (
        "/studies/1.2.abc",
        f"/studies/{study}/series/1..2",
        f"/studies/{study}/series/{series}/instances/{'9' * 65}",
    ):
        assert_error(http.delete(url), 400, "invalid-input")
    assert len(_sops(http)) == len(archive.everything)


def test_a_deleted_instance_can_be_stored_again(
    http: httpx.Client, settings: Settings, archive: Archive
) -> None:
    data = archive.ct[0]
    assert http.delete(_path(data)).status_code == 204
    r = stow(http, [data])
    assert r.status_code == 200, r.text
    assert failed(r) == []
    assert value(referenced(r)[0], "00081155") == _uids(data)[2]
    assert http.get(_path(data), headers={"Accept": "application/dicom"}).content == data
    study = _study(http, archive.study)
    assert study is not None
    assert value(study, "00201208") == 5
    assert _blob_contents(settings) == sorted(archive.everything)
    # Deleting a whole study and storing it again works the same way.
    assert http.delete(f"/studies/{archive.study}").status_code == 204
    assert stow(http, [*archive.ct, *archive.mr]).status_code == 200
    assert _sops(http) == {_uids(d)[2] for d in archive.everything}
    assert _blob_contents(settings) == sorted(archive.everything)


@pytest.mark.parametrize("prefix", ["/v1", "/v2"])
def test_delete_under_versioned_prefixes(
    live_server: LiveServer, settings: Settings, archive: Archive, prefix: str
) -> None:
    with httpx.Client(base_url=live_server.url + prefix) as client:
        assert client.delete(_path(archive.ct[0])).status_code == 204
        assert (
            client.delete(f"/studies/{archive.study}/series/{archive.mr_series}").status_code == 204
        )
        assert client.delete(f"/studies/{archive.study}").status_code == 204
        assert_error(client.delete(f"/studies/{archive.study}"), 404, "not-found")
        assert _sops(client) == {_uids(d)[2] for d in archive.other}
    assert _blob_contents(settings) == sorted(archive.other)
