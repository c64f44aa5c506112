"""A process killed mid-store or mid-delete leaves nothing that start-up recovery cannot repair.

Each test runs the real StoreService / DeleteService in a child process and kills it at one
precise point (by replacing one method, in the child only, with os._exit). The parent then
runs the start-up path, bootstrap.prepare_storage, and checks what clients see over DICOMweb.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from dicomhub.bootstrap import Services, build_services, prepare_storage
from dicomhub.config import Settings
from dicomhub.context import RequestContext
from dicomhub.storage.schema import blob_deletion
from tests.conftest import LiveServer
from tests.dicomfiles import make_instance

CRASHED = 3

CHILD = """
import os, sys
from pathlib import Path

from dicomhub.bootstrap import build_services
from dicomhub.config import Settings
from dicomhub.context import RequestContext
from dicomhub.services.store import StoreService
from dicomhub.storage.blobs.filesystem import FilesystemBlobStore
from dicomhub.storage.index import inserts

data_dir, database_url, point, *args = sys.argv[1:]


def crash(*_args, **_kwargs):
    os._exit(3)


if point == "before-promote":  # the index has committed; the blobs are still staged
    FilesystemBlobStore.promote = crash
elif point == "before-index":  # staged, fsynced and parsed; the index never heard of it
    StoreService.index_batch = crash
elif point == "inside-transaction":  # rows inserted, the transaction not yet committed
    insert = inserts.insert_instances

    def insert_then_crash(*a, **kw):
        insert(*a, **kw)
        crash()

    inserts.insert_instances = insert_then_crash
elif point == "before-blob-removal":  # the delete has committed; the blobs are still there
    FilesystemBlobStore.delete = crash
elif point == "pause-before-promote":  # not a crash: hold still between commit and promote
    promote = FilesystemBlobStore.promote

    def paused(self, blob_id):
        print("committed", flush=True)
        sys.stdin.readline()
        promote(self, blob_id)

    FilesystemBlobStore.promote = paused
else:
    raise SystemExit(f"unknown point {point}")

settings = Settings(
    data_dir=Path(data_dir), database_url=database_url or None, sqlite_synchronous="NORMAL"
)
services = build_services(settings)
ctx = RequestContext()
if point == "before-blob-removal":
    services.delete.delete(ctx, args[0])
else:
    batch = services.store.begin(ctx)
    for name in args:
        writer = batch.part()
        writer.write(Path(name).read_bytes())
        assert batch.add(writer) is None, name
    batch.commit()
os._exit(0)  # reached only when pausing: every other point crashes on the way
"""


def _run_child(settings: Settings, point: str, *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMHUB_")}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(settings.data_dir),
            settings.database_url or "",
            point,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert proc.returncode == CRASHED, proc.stderr[-3000:]


def _write_instances(tmp_path: Path, count: int) -> tuple[str, str, list[tuple[str, Path]]]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    study, series = str(generate_uid()), str(generate_uid())
    out = []
    for i in range(count):
        sop = str(generate_uid())
        path = tmp_path / f"instance{i}.dcm"
        path.write_bytes(
            make_instance(
                study_uid=study, series_uid=series, sop_uid=sop, InstanceNumber=i + 1, pixel_seed=i
            )
        )
        out.append((sop, path))
    return study, series, out


def _staged_files(settings: Settings) -> list[Path]:
    return sorted(
        p for p in (settings.blob_dir / "staging").rglob("*") if p.is_file() and p.name != ".lock"
    )


def _all_files(settings: Settings) -> list[Path]:
    return sorted(p for p in settings.blob_dir.rglob("*") if p.is_file())


def _retrieve(http: httpx.Client, study: str, series: str, sop: str) -> httpx.Response:
    return http.get(
        f"/studies/{study}/series/{series}/instances/{sop}",
        headers={"Accept": "application/dicom; transfer-syntax=*"},
    )


def _study_uids(http: httpx.Client) -> list[str]:
    r = http.get("/studies")
    assert r.status_code == 200, r.text
    return [s["0020000D"]["Value"][0] for s in r.json()]


def test_killed_before_promote_is_completed_on_start(
    settings: Settings, services: Services, http: httpx.Client, tmp_path: Path
) -> None:
    study, series, files = _write_instances(tmp_path, 3)
    _run_child(settings, "before-promote", *(str(p) for _, p in files))

    stored = services.retrieve.instances(RequestContext(), study)
    assert sorted(s.sop_instance_uid for s in stored) == sorted(sop for sop, _ in files)
    assert not any(services.blobs.exists(s.blob_id) for s in stored)  # nothing was promoted
    assert {p.name for p in _staged_files(settings)} == {s.blob_id for s in stored}
    # Even before recovery, the index's promise holds: the staged bytes are served.
    sop, path = files[0]
    assert _retrieve(http, study, series, sop).content == path.read_bytes()

    prepare_storage(settings)

    assert _staged_files(settings) == []
    assert all(services.blobs.exists(s.blob_id) for s in stored)
    assert _study_uids(http) == [study]
    for sop, path in files:
        r = _retrieve(http, study, series, sop)
        assert r.status_code == 200
        assert r.content == path.read_bytes()
    # Running recovery again changes nothing.
    prepare_storage(settings)
    assert all(services.blobs.exists(s.blob_id) for s in stored)


@pytest.mark.parametrize("point", ["before-index", "inside-transaction"])
def test_killed_before_the_index_commit_leaves_nothing(
    settings: Settings, tmp_path: Path, point: str
) -> None:
    prepare_storage(settings)  # an existing archive, then the crash
    study, _, files = _write_instances(tmp_path, 2)
    _run_child(settings, point, *(str(p) for _, p in files))
    assert len(_staged_files(settings)) == 2  # fsynced bytes of the dead process

    prepare_storage(settings)

    assert _all_files(settings) == []  # not a byte of the failed store is left
    services = build_services(settings)
    try:
        with (
            LiveServer(settings, services) as server,
            httpx.Client(base_url=server.url + "/dicom-web") as http,
        ):
            assert _study_uids(http) == []
            assert http.get("/instances").json() == []
            assert http.get("/changefeed").json() == []
            # The same instances can be stored now: nothing half-made blocks them.
            for _, path in files:
                r = http.post(
                    "/studies",
                    content=path.read_bytes(),
                    headers={"Content-Type": "application/dicom"},
                )
                assert r.status_code == 200, r.text
            assert _study_uids(http) == [study]
    finally:
        services.close()


def test_interrupted_delete_is_finished_on_start(
    settings: Settings, services: Services, http: httpx.Client, tmp_path: Path
) -> None:
    ctx = RequestContext()
    study, series, files = _write_instances(tmp_path / "a", 2)
    other_study, other_series, others = _write_instances(tmp_path / "b", 1)
    for _, path in files + others:
        with path.open("rb") as fh:
            assert services.store.store_file(ctx, fh).stored
    doomed = [s.blob_id for s in services.retrieve.instances(ctx, study)]
    kept = services.retrieve.instances(ctx, other_study)[0].blob_id

    _run_child(settings, "before-blob-removal", study)

    with services.db.read() as conn:
        queued = set(conn.execute(select(blob_deletion.c.blob_id)).scalars())
    assert queued == set(doomed)
    assert all(services.blobs.exists(b) for b in doomed)  # the files outlived their rows
    assert _study_uids(http) == [other_study]

    prepare_storage(settings)

    with services.db.read() as conn:
        assert conn.execute(select(blob_deletion.c.blob_id)).all() == []
    assert not any(services.blobs.exists(b) for b in doomed)
    assert services.blobs.exists(kept)
    assert _retrieve(http, other_study, other_series, others[0][0]).content == (
        others[0][1].read_bytes()
    )
    assert _retrieve(http, study, series, files[0][0]).status_code == 404
    objects = [p for p in _all_files(settings) if "objects" in p.parts]
    assert [p.name for p in objects] == [kept]


def test_a_delete_between_index_commit_and_promote_leaves_no_blob(
    settings: Settings, services: Services, tmp_path: Path
) -> None:
    """A live process has committed an instance and not yet promoted its blob when a client
    deletes the instance: the deleted bytes must not end up in objects/ for good."""
    study, _, files = _write_instances(tmp_path, 1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMHUB_")}
    args = [str(settings.data_dir), settings.database_url or "", "pause-before-promote"]
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, *args, str(files[0][1])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            assert proc.stdout.readline().strip() == "committed"
            # The instance is in the index (and served from staging): a client deletes it.
            assert services.delete.delete(RequestContext(), study) == 1
        finally:
            proc.stdin.write("go\n")
            proc.stdin.flush()
            proc.wait(timeout=60)
    assert proc.returncode == 0
    # The deleted instance's bytes were promoted after the delete: they are still queued...
    with services.db.read() as conn:
        queued = list(conn.execute(select(blob_deletion.c.blob_id)).scalars())
    assert len(queued) == 1
    assert services.blobs.exists(queued[0])
    # ...and go with the next purge (the next delete, or start-up), never to linger.
    assert services.delete.purge_blobs() == 1
    with services.db.read() as conn:
        assert conn.execute(select(blob_deletion.c.blob_id)).all() == []
    assert [p for p in _all_files(settings) if "objects" in p.parts] == []
