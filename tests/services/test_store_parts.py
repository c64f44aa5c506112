"""Parts small enough are parsed from the bytes kept while they were written, larger ones
from the staged file: both paths must store exactly the same thing."""

from __future__ import annotations

import contextlib
import io
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from dicomhub.bootstrap import Services, build_services, prepare_storage
from dicomhub.config import Settings
from dicomhub.context import RequestContext
from dicomhub.services.store import OPEN_UNTIL_SYNCED, StagedPart
from dicomhub.storage.blobs.filesystem import FilesystemBlobStore
from tests.dicomfiles import make_dataset, make_instance, readable, sample_files


@pytest.fixture
def two_stores(tmp_path: Path) -> Iterator[tuple[Services, Services]]:
    """Two SQLite archives: the default one, and one that keeps no part in memory."""
    built = []
    for name in ("memory", "file"):
        settings = Settings(data_dir=tmp_path / name, sqlite_synchronous="NORMAL")
        prepare_storage(settings)
        built.append(build_services(settings))
    built[1].store.keep_in_memory = 0
    try:
        yield built[0], built[1]
    finally:
        for services in built:
            services.close()


def _store_all(services: Services, files: list[bytes]) -> list[tuple[Any, ...]]:
    outcomes = []
    for data in files:
        outcome = services.store.store_file(RequestContext(), io.BytesIO(data))
        outcomes.append(
            (outcome.status, outcome.sop_instance_uid, outcome.failure_reason, outcome.message)
        )
    return outcomes


def _index(services: Services) -> dict[str, tuple[Any, ...]]:
    """What the index holds per instance: everything the parse produced."""
    with services.db.read() as conn:
        rows = conn.execute(
            text(
                "SELECT i.sop_instance_uid, i.sop_class_uid, i.transfer_syntax_uid, i.size, "
                "i.instance_number, i.number_of_frames, i.frames, i.attributes, m.json, "
                "se.series_uid, se.modality, se.attributes, st.study_uid, st.patient_id, "
                "st.patient_name_norm, st.study_date, st.attributes "
                "FROM instance i "
                "JOIN instance_metadata m ON m.instance_key = i.instance_key "
                "JOIN series se ON se.series_key = i.series_key "
                "JOIN study st ON st.study_key = i.study_key"
            )
        ).all()
    return {r[0]: tuple(r[1:]) for r in rows}


def _bare_data_set() -> bytes:
    """A data set without preamble or File Meta Information: stored with a header added."""
    buf = io.BytesIO()
    make_dataset().save_as(buf, implicit_vr=False, little_endian=True)
    return buf.getvalue()


def test_every_sample_file_is_stored_alike_from_memory_and_from_the_staged_file(
    two_stores: tuple[Services, Services],
) -> None:
    memory, from_file = two_stores
    files = [p.read_bytes() for p in sample_files() if readable(p)]
    files += [_bare_data_set(), b"not DICOM at all", b"\0" * 128 + b"DICM" + b"\x02\x00"]
    memory.store.keep_in_memory = max(len(f) for f in files)  # every file from memory

    outcomes = _store_all(memory, files)
    assert _store_all(from_file, files) == outcomes
    stored = _index(memory)
    assert stored == _index(from_file)
    # Not vacuous: most files were stored, some were refused, one had its header added.
    assert len(stored) > 50
    assert any(o[0].value == "failed" for o in outcomes)
    assert any(o[0].value == "stored-with-warnings" and "preamble" in o[3] for o in outcomes)


def test_a_part_keeps_its_bytes_only_up_to_the_limit_and_hands_them_out_once(
    tmp_path: Path,
) -> None:
    blobs = FilesystemBlobStore(tmp_path / "blobs")
    small = StagedPart(blobs.stage(), keep=10)
    small.write(b"12345")
    small.write(memoryview(b"--67890--")[2:7])
    assert small.take() == b"1234567890"
    assert small.take() is None  # the parse needs them once; not held any longer

    reused = bytearray(b"abcde")
    copied = StagedPart(blobs.stage(), keep=10)
    copied.write(memoryview(reused))
    reused[:] = b"zzzzz"  # the writer's buffer, filled again for the next chunk
    assert copied.take() == b"abcde"

    large = StagedPart(blobs.stage(), keep=10)
    large.write(b"123456")
    large.write(b"78901")
    assert large.size == 11
    assert large.take() is None  # parsed from the staged file instead
    for part in (small, copied, large):
        part.writer.close()
    with large.writer.reader() as fh:
        assert fh.read() == b"12345678901"  # the file has every byte either way
    blobs.close()


def test_parts_sealed_as_they_arrive_are_stored_or_dropped_whole(
    two_stores: tuple[Services, Services],
) -> None:
    """What the STOW route does: seal each part when its last byte is in, check it later."""
    services = two_stores[0]
    good, other = (make_instance(sop_uid=f"1.2.3.4.{n}") for n in (1, 2))
    batch = services.store.begin(RequestContext())
    parts = []
    for data in (good, other):
        part = batch.part()
        part.write(data)
        batch.seal(part)
        parts.append(part)
    assert batch.add(parts[0]) is None
    assert batch.add(parts[1], "part Content-Type text/plain is not application/dicom")
    outcome = batch.commit()
    assert [i.status for i in outcome.instances] == ["stored", "failed"]
    assert set(_index(services)) == {"1.2.3.4.1"}

    staging = services.blobs.staged_path("x").parent
    gone = services.store.begin(RequestContext())
    part = gone.part()
    part.write(other)
    gone.seal(part)
    gone.abort()  # the client went away after the part came in
    assert [p.name for p in staging.iterdir()] == [".lock"]
    assert set(_index(services)) == {"1.2.3.4.1"}


def test_a_request_of_many_parts_on_a_slow_disk_keeps_few_files_open(
    two_stores: tuple[Services, Services],
) -> None:
    """Sealed files stay open for their fsyncs, but not when hundreds of fsyncs wait."""
    services = two_stores[0]
    gate = threading.Event()
    slow = ThreadPoolExecutor(max_workers=1)  # a disk whose first fsync takes a while
    slow.submit(gate.wait)
    services.store.syncer.shutdown()
    services.store.syncer = slow
    staging = str(services.blobs.staged_path("x").parent)

    def open_staged() -> int:
        links = []
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(FileNotFoundError):  # the listing's own descriptor
                links.append(os.readlink(f"/proc/self/fd/{fd}"))
        return sum(1 for link in links if os.path.dirname(link) == staging and ".lock" not in link)

    batch = services.store.begin(RequestContext())
    parts = []
    try:
        for n in range(300):
            part = batch.part()
            part.write(make_instance(sop_uid=f"1.2.3.5.{n}"))
            batch.seal(part)
            parts.append(part)
        held = open_staged()
    finally:
        gate.set()  # the fixture's close() waits for the executor
    assert held == OPEN_UNTIL_SYNCED  # the first parts' files; the rest closed
    for part in parts:
        assert batch.add(part) is None
    assert all(i.stored for i in batch.commit().instances)
    assert open_staged() == 0
    assert len(_index(services)) == 300
