"""The change feed with the Azure DICOM service's shape: /changefeed and /changefeed/latest."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from tests.conftest import LiveServer
from tests.dicomfiles import make_instance
from tests.dicomweb.support import assert_error, stow

PREFIXES = ["/dicom-web", "/v1", "/v2"]
FIELDS = {
    "Sequence",
    "PartitionName",
    "StudyInstanceUid",
    "SeriesInstanceUid",
    "SopInstanceUid",
    "Action",
    "Timestamp",
    "State",
}


def _uids(data: bytes) -> tuple[str, str, str]:
    ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def _path(data: bytes) -> str:
    study, series, sop = _uids(data)
    return f"/studies/{study}/series/{series}/instances/{sop}"


def _feed(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    r = client.get("/changefeed", params=params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    entries: list[dict[str, Any]] = r.json()
    return entries


def _time(entry: dict[str, Any]) -> datetime:
    stamp = entry["Timestamp"]
    assert stamp.endswith("Z"), stamp
    parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert parsed.tzinfo is not None
    return parsed


@pytest.fixture
def clients(live_server: LiveServer) -> Iterator[dict[str, httpx.Client]]:
    out = {p: httpx.Client(base_url=live_server.url + p, timeout=60) for p in PREFIXES}
    yield out
    for client in out.values():
        client.close()


@pytest.mark.parametrize("prefix", PREFIXES)
def test_entries_for_stored_instances(
    clients: dict[str, httpx.Client], live_server: LiveServer, prefix: str
) -> None:
    client = clients[prefix]
    assert _feed(client) == []
    assert client.get("/changefeed/latest").json() is None
    study, series = generate_uid(), generate_uid()
    parts = [make_instance(study_uid=study, series_uid=series, pixel_seed=i) for i in range(3)]
    before = datetime.now(UTC)
    assert stow(client, parts).status_code == 200
    after = datetime.now(UTC)

    entries = _feed(client)
    assert [e["SopInstanceUid"] for e in entries] == [_uids(p)[2] for p in parts]
    sequences = [e["Sequence"] for e in entries]
    assert sequences == sorted(sequences) and len(set(sequences)) == 3
    assert all(isinstance(s, int) and s > 0 for s in sequences)
    for entry, data in zip(entries, parts, strict=True):
        assert set(entry) == FIELDS | {"Metadata"}
        assert entry["PartitionName"] == "Microsoft.Default"
        assert (entry["StudyInstanceUid"], entry["SeriesInstanceUid"]) == (study, series)
        assert entry["Action"] == "create"
        assert entry["State"] == "current"
        assert before - timedelta(seconds=1) <= _time(entry) <= after + timedelta(seconds=1)
        # The metadata is the instance's DICOM JSON, bulk data URIs under the prefix used.
        (metadata,) = client.get(f"{_path(data)}/metadata").json()
        assert entry["Metadata"] == metadata
        uri = entry["Metadata"]["7FE00010"]["BulkDataURI"]
        assert uri == f"{live_server.url}{prefix}{_path(data)}/bulkdata/7FE00010"
        bulk = client.get(uri, headers={"Accept": "application/octet-stream"})
        assert bulk.content == dcmread(io.BytesIO(data)).PixelData

    latest = client.get("/changefeed/latest")
    assert latest.status_code == 200
    assert latest.json() == entries[-1]


@pytest.mark.parametrize("prefix", PREFIXES)
def test_include_metadata(clients: dict[str, httpx.Client], prefix: str) -> None:
    client = clients[prefix]
    assert stow(client, [make_instance(), make_instance()]).status_code == 200
    full = _feed(client)
    for flag in ("false", "False", "0"):
        without = _feed(client, includeMetadata=flag)
        assert all(set(e) == FIELDS for e in without)
        assert without == [{k: v for k, v in e.items() if k != "Metadata"} for e in full]
        latest = client.get("/changefeed/latest", params={"includeMetadata": flag}).json()
        assert set(latest) == FIELDS
    assert _feed(client, includeMetadata="true") == full
    assert all(e["Metadata"]["00080018"]["Value"] == [e["SopInstanceUid"]] for e in full)
    r = client.get("/changefeed", params={"includeMetadata": "perhaps"})
    assert_error(r, 400, "invalid-input")


@pytest.mark.parametrize("prefix", PREFIXES)
def test_offset_is_the_last_sequence_seen(clients: dict[str, httpx.Client], prefix: str) -> None:
    client = clients[prefix]
    for i in range(7):
        assert stow(client, [make_instance(pixel_seed=i)]).status_code == 200
    everything = _feed(client, includeMetadata="false")
    assert len(everything) == 7
    # A consumer reading three at a time from where it left off sees each entry once.
    read: list[dict[str, Any]] = []
    offset = 0
    while page := _feed(client, offset=offset, limit=3, includeMetadata="false"):
        assert len(page) <= 3
        read += page
        offset = page[-1]["Sequence"]
    assert read == everything
    middle = everything[3]["Sequence"]
    assert _feed(client, offset=middle, includeMetadata="false") == everything[4:]
    assert _feed(client, offset=everything[-1]["Sequence"]) == []
    assert _feed(client, offset=10**15) == []


def test_a_delete_marks_the_entry_and_appends_one(clients: dict[str, httpx.Client]) -> None:
    client = clients["/v2"]
    study, series = generate_uid(), generate_uid()
    parts = [make_instance(study_uid=study, series_uid=series, pixel_seed=i) for i in range(3)]
    keep = make_instance()
    assert stow(client, [*parts, keep]).status_code == 200
    created = _feed(client)

    assert client.delete(_path(parts[1])).status_code == 204
    entries = _feed(client)
    assert len(entries) == 5
    assert [e["Sequence"] for e in entries[:4]] == [e["Sequence"] for e in created]
    deleted_create = entries[1]
    assert deleted_create["Action"] == "create"
    assert deleted_create["State"] == "deleted"
    assert deleted_create["Metadata"] is None
    # The other entries are unchanged.
    assert [entries[0], entries[2], entries[3]] == [created[0], created[2], created[3]]
    appended = entries[4]
    assert appended["Sequence"] > created[-1]["Sequence"]
    assert appended["Action"] == "delete"
    assert appended["State"] == "deleted"
    assert appended["Metadata"] is None
    assert (
        appended["StudyInstanceUid"],
        appended["SeriesInstanceUid"],
        appended["SopInstanceUid"],
    ) == _uids(parts[1])
    assert _time(appended) >= _time(created[1])
    for prefix in PREFIXES:
        assert clients[prefix].get("/changefeed/latest").json() == appended

    # Deleting the study marks the remaining entries and appends one delete for each instance.
    assert client.delete(f"/studies/{study}").status_code == 204
    entries = _feed(client)
    assert [e["State"] for e in entries[:4]] == ["deleted", "deleted", "deleted", "current"]
    tail = entries[5:]
    assert [(e["Action"], e["SopInstanceUid"]) for e in tail] == [
        ("delete", _uids(parts[0])[2]),
        ("delete", _uids(parts[2])[2]),
    ]
    assert entries[3]["Metadata"] is not None  # the instance of another study stays current

    # Stored again: a new create entry; the old ones stay deleted.
    assert stow(client, [parts[1]]).status_code == 200
    entries = _feed(client)
    again = entries[-1]
    assert (again["Action"], again["State"], again["SopInstanceUid"]) == (
        "create",
        "current",
        _uids(parts[1])[2],
    )
    assert again["Metadata"] is not None
    assert entries[1]["State"] == "deleted"


def test_page_limits(clients: dict[str, httpx.Client]) -> None:
    v1, v2, plain = clients["/v1"], clients["/v2"], clients["/dicom-web"]
    study = generate_uid()
    parts = [make_instance(study_uid=study, pixel_seed=i) for i in range(55)]
    assert stow(v2, parts).status_code == 200
    assert v2.delete(f"/studies/{study}").status_code == 204
    total = 110

    assert len(_feed(v1, includeMetadata="false")) == 10
    assert len(_feed(v1, limit=100, includeMetadata="false")) == 100
    assert len(_feed(v1, limit=1, includeMetadata="false")) == 1
    for client in (v2, plain):
        assert len(_feed(client, includeMetadata="false")) == 100
        assert len(_feed(client, limit=200, includeMetadata="false")) == total
        assert len(_feed(client, limit=1, includeMetadata="false")) == 1

    for client, too_many in ((v1, 101), (v2, 201), (plain, 201)):
        for limit in (too_many, 0, -1):
            body = assert_error(client.get("/changefeed", params={"limit": limit}), 400)
            assert "limit" in body["message"]


def _window(client: httpx.Client, **params: Any) -> list[int]:
    return [e["Sequence"] for e in _feed(client, includeMetadata="false", **params)]


def test_v2_time_window(clients: dict[str, httpx.Client]) -> None:
    v2 = clients["/v2"]
    for i in range(4):
        assert stow(v2, [make_instance(pixel_seed=i)]).status_code == 200
        time.sleep(0.02)  # distinct timestamps
    entries = _feed(v2, includeMetadata="false")
    sequences = [e["Sequence"] for e in entries]
    stamps = [e["Timestamp"] for e in entries]
    assert len(set(stamps)) == 4

    # startTime is inclusive, endTime exclusive.
    assert _window(v2, startTime=stamps[1]) == sequences[1:]
    assert _window(v2, endTime=stamps[2]) == sequences[:2]
    assert _window(v2, startTime=stamps[1], endTime=stamps[3]) == sequences[1:3]
    assert _window(v2, startTime=stamps[1], endTime=stamps[2]) == sequences[1:2]
    # Other ways of writing the zone.
    t1 = _time(entries[1])
    for written in (
        t1.isoformat(),  # +00:00
        t1.astimezone(timezone(timedelta(hours=2))).isoformat(),  # +02:00
        t1.isoformat().replace("+00:00", "Z"),
    ):
        assert _window(v2, startTime=written) == sequences[1:], written
    # "+" unescaped in the query string arrives as a space; it is still the zone.
    raw = v2.get(f"/changefeed?includeMetadata=false&startTime={t1.isoformat()}")
    assert [e["Sequence"] for e in raw.json()] == sequences[1:]
    # In a time window, offset skips rows (it is not a sequence number).
    assert _window(v2, startTime=stamps[0], offset=1) == sequences[1:]
    assert _window(v2, startTime=stamps[0], offset=2, limit=1) == sequences[2:3]
    assert _window(v2, startTime=stamps[0], offset=4) == []
    assert _window(v2, startTime=stamps[0], offset=2**62) == []
    # An empty window.
    later = (_time(entries[-1]) + timedelta(hours=1)).isoformat()
    assert _window(v2, startTime=later) == []


def test_time_window_errors(clients: dict[str, httpx.Client]) -> None:
    v1, v2 = clients["/v1"], clients["/v2"]
    assert stow(v2, [make_instance()]).status_code == 200
    stamp = _feed(v2)[0]["Timestamp"]
    for params in ({"startTime": stamp}, {"endTime": stamp}):
        body = assert_error(v1.get("/changefeed", params=params), 400, "invalid-input")
        assert "v2" in body["message"]
    for params in (
        {"startTime": "2024-01-31T10:00:00"},
        {"endTime": "2024-01-31T10:00:00"},
        {"startTime": "yesterday"},
        {"startTime": "2024-13-45T10:00:00Z"},
        {"startTime": stamp, "endTime": stamp},  # empty interval
        {"startTime": "2024-02-01T00:00:00Z", "endTime": "2024-01-01T00:00:00Z"},
    ):
        assert_error(v2.get("/changefeed", params=params), 400, "invalid-input")
    body = assert_error(v2.get("/changefeed", params={"startTime": "2024-01-31T10:00:00"}), 400)
    assert "time zone" in body["message"]
