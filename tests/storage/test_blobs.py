"""FilesystemBlobStore: staging, promotion, reads and deletes, and recovery after a crash."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomhub.errors import NotFound
from dicomhub.storage.blobs.filesystem import FilesystemBlobStore

# A child process that stages one blob, reports its id, then dies or waits to be told to exit.
CHILD = """
import os, sys
from pathlib import Path
from dicomhub.storage.blobs.filesystem import FilesystemBlobStore

store = FilesystemBlobStore(Path(sys.argv[1]))
writer = store.stage()
writer.write(sys.argv[2].encode() * 1000)
writer.finish()
print(writer.blob_id, flush=True)
if sys.argv[3] == "die":
    os._exit(1)  # a crash: no close(), no cleanup
sys.stdin.read()  # alive (holding its staging lock) until the parent closes stdin
os._exit(0)
"""


def _child(root: Path, content: str, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root), content, mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _crashed_child(root: Path, content: str) -> str:
    proc = _child(root, content, "die")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    return out.strip()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "blobs"


@pytest.fixture
def store(root: Path) -> Iterator[FilesystemBlobStore]:
    s = FilesystemBlobStore(root)
    try:
        yield s
    finally:
        s.close()


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_stage_promote_open_delete(store: FilesystemBlobStore, root: Path) -> None:
    writer = store.stage()
    writer.write(b"hello ")
    writer.write(memoryview(b"world"))
    writer.finish()
    blob_id = writer.blob_id
    assert writer.size == 11
    assert len(blob_id) == 32 and int(blob_id, 16) >= 0
    with writer.reader() as fh:
        assert fh.read() == b"hello world"

    assert not store.exists(blob_id)  # staged blobs are not part of the store yet
    with store.open(blob_id) as fh:  # ...but a reader between index commit and promote finds it
        assert fh.read() == b"hello world"

    store.promote(blob_id)
    assert store.exists(blob_id)
    assert store.path(blob_id) == root / "objects" / blob_id[:2] / blob_id[2:4] / blob_id
    assert not store.staged_path(blob_id).exists()
    with store.open(blob_id) as fh:
        assert fh.read() == b"hello world"

    assert store.delete(blob_id) is True
    assert not store.exists(blob_id)
    with pytest.raises(NotFound):
        store.open(blob_id)
    assert store.delete(blob_id) is True  # again is harmless (deletes are retried after crashes)


def test_a_staged_blob_is_not_deleted_until_promoted(
    store: FilesystemBlobStore, root: Path
) -> None:
    """Its index rows can be deleted before promote(): the delete must be asked again later."""
    writer = store.stage()
    writer.write(b"committed, not yet promoted")
    writer.finish()
    other = FilesystemBlobStore(root)  # e.g. the server, while an import holds the blob
    try:
        assert other.delete(writer.blob_id) is False
        assert store.delete(writer.blob_id) is False
        assert store.staged_path(writer.blob_id).exists()
        store.promote(writer.blob_id)
        assert other.delete(writer.blob_id) is True
        assert not store.exists(writer.blob_id)
        assert _files(root / "objects") == []
    finally:
        other.close()


def test_finish_twice_and_abort(store: FilesystemBlobStore) -> None:
    writer = store.stage()
    writer.write(b"x" * 10)
    writer.finish()
    writer.finish()
    writer.abort()
    assert not store.staged_path(writer.blob_id).exists()
    with pytest.raises(NotFound):
        store.open(writer.blob_id)

    unfinished = store.stage()
    unfinished.write(b"y")
    unfinished.abort()  # abort before finish closes the file too
    assert not store.staged_path(unfinished.blob_id).exists()


def _open_fds() -> set[str]:
    links = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the listing's own descriptor
            links.add(os.readlink(f"/proc/self/fd/{fd}"))
    return links


def test_a_sealed_blob_is_readable_and_released_by_sync_or_abort(
    store: FilesystemBlobStore,
) -> None:
    synced = store.stage()
    synced.write(b"abc")
    synced.seal()
    with pytest.raises(AssertionError):
        synced.write(b"d")  # sealed: writing is over
    with open(store.staged_path(synced.blob_id), "rb") as fh:
        assert fh.read() == b"abc"  # flushed, readable by path (the parse reads it so)
    path = str(store.staged_path(synced.blob_id))
    assert path in _open_fds()  # kept open for the fsync thread
    synced.sync()
    synced.sync_name()
    assert path not in _open_fds()
    store.promote(synced.blob_id)
    with store.open(synced.blob_id) as fh:
        assert fh.read() == b"abc"

    dropped = store.stage()
    dropped.write(b"xyz")
    dropped.seal()
    dropped.abort()  # a refused part: sealed, never synced
    assert str(store.staged_path(dropped.blob_id)) not in _open_fds()
    assert not store.staged_path(dropped.blob_id).exists()


def test_ids_are_unique_and_carry_nothing(store: FilesystemBlobStore) -> None:
    writers = [store.stage() for _ in range(50)]
    assert len({w.blob_id for w in writers}) == 50
    for w in writers:
        w.abort()


def test_another_store_reads_a_blob_staged_by_this_one(
    store: FilesystemBlobStore, root: Path
) -> None:
    writer = store.stage()
    writer.write(b"staged elsewhere")
    writer.finish()
    other = FilesystemBlobStore(root)
    try:
        with other.open(writer.blob_id) as fh:
            assert fh.read() == b"staged elsewhere"
        assert not other.exists(writer.blob_id)
        store.promote(writer.blob_id)
        assert other.exists(writer.blob_id)
    finally:
        other.close()


def test_close_removes_an_empty_staging_folder(root: Path) -> None:
    store = FilesystemBlobStore(root)
    session = store.staged_path("x").parent
    assert session.is_dir()
    store.close()
    assert not session.exists()
    store.close()  # twice is fine

    kept = FilesystemBlobStore(root)
    writer = kept.stage()
    writer.write(b"left behind")
    writer.finish()
    kept.close()  # a request still had a staged blob: the folder stays for recovery
    assert kept.staged_path(writer.blob_id).exists()
    later = FilesystemBlobStore(root)
    try:
        assert later.recover(lambda ids: []) == (0, 1)
    finally:
        later.close()
    assert not kept.staged_path(writer.blob_id).parent.exists()


def test_recover_deletes_what_a_crashed_process_staged(root: Path) -> None:
    blob_id = _crashed_child(root, "a")
    staged = [p for p in _files(root) if p.name == blob_id]
    assert len(staged) == 1 and staged[0].read_bytes() == b"a" * 1000

    asked: list[list[str]] = []

    def referenced(ids: list[str]) -> list[str]:
        asked.append(list(ids))
        return []

    store = FilesystemBlobStore(root)
    try:
        assert not store.exists(blob_id)
        assert store.recover(referenced) == (0, 1)
        assert asked == [[blob_id]]
        with pytest.raises(NotFound):
            store.open(blob_id)
        assert store.recover(referenced) == (0, 0)  # nothing left to do
    finally:
        store.close()
    assert _files(root) == []  # the dead session folder and its lock file are gone too


def test_recover_promotes_what_the_index_references(root: Path) -> None:
    kept = _crashed_child(root, "k")
    dropped = _crashed_child(root, "d")
    store = FilesystemBlobStore(root)
    try:
        assert store.recover(lambda ids: [i for i in ids if i == kept]) == (1, 1)
        assert store.exists(kept)
        with store.open(kept) as fh:
            assert fh.read() == b"k" * 1000
        assert not store.exists(dropped)
        with pytest.raises(NotFound):
            store.open(dropped)
    finally:
        store.close()
    assert _files(root) == [store.path(kept)]


def test_recover_leaves_a_live_process_alone(root: Path) -> None:
    with _child(root, "L", "wait") as proc:
        assert proc.stdout is not None and proc.stdin is not None
        try:
            blob_id = proc.stdout.readline().strip()
            assert blob_id
            store = FilesystemBlobStore(root)
            try:
                asked: list[str] = []

                def referenced(ids: list[str]) -> list[str]:
                    asked.extend(ids)
                    return []

                assert store.recover(referenced) == (0, 0)
                assert asked == []  # its blobs were not even considered
                with store.open(blob_id) as fh:  # still staged, still readable
                    assert fh.read() == b"L" * 1000
            finally:
                store.close()
        finally:
            proc.stdin.close()
            proc.wait(timeout=30)
    assert proc.returncode == 0
    # The process exited without committing: now its leftovers are recovered.
    store = FilesystemBlobStore(root)
    try:
        assert store.recover(lambda ids: []) == (0, 1)
    finally:
        store.close()


def test_recover_leaves_another_store_of_this_process_alone(
    store: FilesystemBlobStore, root: Path
) -> None:
    writer = store.stage()
    writer.write(b"in flight")
    writer.finish()
    other = FilesystemBlobStore(root)
    try:
        assert other.recover(lambda ids: []) == (0, 0)
    finally:
        other.close()
    assert store.staged_path(writer.blob_id).read_bytes() == b"in flight"
    # And the store's own recovery skips its own session.
    assert store.recover(lambda ids: []) == (0, 0)
    assert store.staged_path(writer.blob_id).exists()


def test_a_session_folder_without_a_lock_file_is_recovered(root: Path) -> None:
    """A process that died between creating its folder and locking it left no lock file."""
    orphan = root / "staging" / "deadbeef0000"
    orphan.mkdir(parents=True)
    (orphan / ("ab" * 16)).write_bytes(b"orphan")
    store = FilesystemBlobStore(root)
    try:
        assert store.recover(lambda ids: []) == (0, 1)
    finally:
        store.close()
    assert not orphan.exists()
    assert os.listdir(root / "staging") == []


# --- several processes recovering at once (two commands started together after a crash) ------

RECOVER_CHILD = """
import sys
import time
from pathlib import Path
from dicomhub.storage.blobs.filesystem import FilesystemBlobStore

store = FilesystemBlobStore(Path(sys.argv[1]))
print("ready", flush=True)
sys.stdin.readline()
try:
    promoted, deleted = store.recover(lambda ids: [i for i in ids if int(i, 16) % 2 == 0])
finally:
    store.close()
print(promoted, deleted, flush=True)
"""


def test_processes_recovering_at_once_share_the_work(root: Path) -> None:
    staging = root / "staging"
    for i in range(150):
        session = staging / f"dead{i:08x}"  # what a crashed process leaves: folder, lock, blob
        session.mkdir(parents=True)
        (session / ".lock").touch()
        (session / f"{i:032x}").write_bytes(b"%d" % i)
    children = [
        subprocess.Popen(
            [sys.executable, "-c", RECOVER_CHILD, str(root)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = []
    for child in children:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err[-2000:]
        results.append(tuple(int(n) for n in out.split()))
    assert tuple(map(sum, zip(*results, strict=True))) == (75, 75)
    assert os.listdir(staging) == []
    store = FilesystemBlobStore(root)
    try:
        for i in range(150):
            assert store.exists(f"{i:032x}") == (i % 2 == 0)
        assert len(_files(root / "objects")) == 75
    finally:
        store.close()


LOOPING_RECOVERY = """
import sys, time
from pathlib import Path
from dicomhub.storage.blobs.filesystem import FilesystemBlobStore

store = FilesystemBlobStore(Path(sys.argv[1]))
print("ready", flush=True)
deadline = time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    store.recover(lambda ids: [])
store.close()
"""


def test_a_store_starting_during_recovery_keeps_its_staging_folder(root: Path) -> None:
    """Recovery elsewhere must never take the folder of a store that is just starting."""
    FilesystemBlobStore(root).close()
    with subprocess.Popen(
        [sys.executable, "-c", LOOPING_RECOVERY, str(root), "3"],
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        started = 0
        while proc.poll() is None:
            store = FilesystemBlobStore(root)
            try:
                writer = store.stage()
                writer.write(b"mine")
                writer.finish()
                store.promote(writer.blob_id)
            finally:
                store.close()
            started += 1
        assert proc.returncode == 0
    assert started > 20


def test_a_folder_being_set_up_is_left_alone_unless_long_dead(root: Path) -> None:
    staging = root / "staging"
    fresh = staging / ".starting-000000000001"
    stale = staging / ".starting-000000000002"
    for folder in (fresh, stale):
        folder.mkdir(parents=True)
        (folder / ".lock").touch()
    hours_ago = time.time() - 2 * 3600
    os.utime(stale, (hours_ago, hours_ago))
    store = FilesystemBlobStore(root)
    try:
        assert store.recover(lambda ids: []) == (0, 0)
    finally:
        store.close()
    assert sorted(os.listdir(staging)) == [fresh.name]
