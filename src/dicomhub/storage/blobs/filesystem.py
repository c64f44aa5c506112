"""Blobs as files: written to staging/, fsynced, renamed into objects/ after the index commit."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

from dicomhub.errors import NotFound, StorageFull
from dicomhub.storage.blobs.base import new_blob_id

__all__ = ["FilesystemBlobStore"]


_STARTING = ".starting-"


def _starting(session: Path) -> bool:
    """A folder still being set up; left alone unless its process died long ago."""
    if not session.name.startswith(_STARTING):
        return False
    try:
        return time.time() - session.stat().st_mtime < 3600
    except FileNotFoundError:
        return True


def _raise_storage(exc: OSError) -> None:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        raise StorageFull("the data folder's disk is full") from exc


def _fsync(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:
        _raise_storage(exc)
        raise


class _FileWriter:
    def __init__(self, store: FilesystemBlobStore) -> None:
        self.blob_id = new_blob_id()
        self.size = 0
        self._path = store.staged_path(self.blob_id)
        self._folder = store.staging_fd
        self._fh: BinaryIO | None = open(self._path, "wb")  # noqa: SIM115 - closed in close/abort
        self._sealed: BinaryIO | None = None  # kept open for sync()

    def write(self, data: bytes | memoryview) -> None:
        assert self._fh is not None, "write after close"
        try:
            self._fh.write(data)
        except OSError as exc:
            _raise_storage(exc)
            raise
        self.size += len(data)

    def close(self) -> None:
        if self._fh is None:
            return
        try:
            self._fh.close()
        except OSError as exc:
            _raise_storage(exc)
            raise
        finally:
            self._fh = None

    def seal(self) -> None:
        # An fsync thread that opened the file itself would wait twice for the GIL (after the
        # open, then after the fsync), the first time behind the parse of this very part.
        fh = self._fh
        if fh is None:
            return
        try:
            fh.flush()
        except OSError as exc:
            _raise_storage(exc)
            raise
        self._fh, self._sealed = None, fh

    def sync(self) -> None:
        fh, self._sealed = self._sealed, None
        if fh is None:
            fh = open(self._path, "rb")  # noqa: SIM115 - closed below
        try:
            _fsync(fh.fileno())
        finally:
            fh.close()

    def sync_name(self) -> None:
        # fsync of a file makes its bytes durable, not its directory entry (fsync(2)): without
        # this a power loss could drop a blob the index already names. Renames into objects/
        # need no such care: a lost rename leaves the blob staged, and recovery promotes it.
        _fsync(self._folder)

    def finish(self) -> None:
        self.close()
        self.sync()
        self.sync_name()

    def reader(self) -> BinaryIO:
        return open(self._path, "rb")

    def abort(self) -> None:
        for fh in (self._fh, self._sealed):
            if fh is not None:
                with contextlib.suppress(OSError):  # a full disk failing the flush: dropped anyway
                    fh.close()
        self._fh = self._sealed = None
        self._path.unlink(missing_ok=True)


class FilesystemBlobStore:
    """`objects/ab/cd/<id>` for committed blobs, `staging/<session>/<id>` until the index knows them.

    Each process stages into its own session folder and holds a lock on it, so that
    recovery (by any process, at any time) only touches the leftovers of dead processes.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._objects = root / "objects"
        self._staging_root = root / "staging"
        self._objects.mkdir(parents=True, exist_ok=True)
        self._staging_root.mkdir(parents=True, exist_ok=True)
        # The folder gets its visible name only once locked: a recovery running in another
        # process would otherwise take it for a dead process's folder and remove it.
        session = new_blob_id()[:12]
        starting = self._staging_root / f"{_STARTING}{session}"
        starting.mkdir()
        self._lock = open(starting / ".lock", "w")  # noqa: SIM115 - held for the process lifetime
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._staging = self._staging_root / session
        starting.rename(self._staging)
        # Opened once: each store fsyncs this folder (the name of its staged blob).
        self.staging_fd = os.open(self._staging, os.O_RDONLY | os.O_DIRECTORY)

    def close(self) -> None:
        """Release this process's staging folder (empty once every request finished)."""
        if self._lock.closed:
            return
        os.close(self.staging_fd)
        try:
            # Removed before the lock goes, so that no recovery is working on it meanwhile.
            if not any(p.name != ".lock" for p in self._staging.iterdir()):
                shutil.rmtree(self._staging, ignore_errors=True)
        finally:
            self._lock.close()

    def staged_path(self, blob_id: str) -> Path:
        return self._staging / blob_id

    def path(self, blob_id: str) -> Path:
        return self._objects / blob_id[:2] / blob_id[2:4] / blob_id

    def stage(self) -> _FileWriter:
        try:
            return _FileWriter(self)
        except OSError as exc:
            _raise_storage(exc)
            raise

    def promote(self, blob_id: str) -> None:
        target = self.path(blob_id)
        # A crash before this rename is repaired by recover(): the index already names the blob.
        try:
            os.replace(self.staged_path(blob_id), target)
        except FileNotFoundError:
            # The first blob of its folder (one in 65,536): a mkdir tried on every store costs
            # a failing system call each time.
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.staged_path(blob_id), target)

    def open(self, blob_id: str) -> BinaryIO:
        try:
            return open(self.path(blob_id), "rb")
        except FileNotFoundError:
            # Between the index commit and promote() the blob is still staged (maybe by another process).
            for session in self._staging_root.iterdir():
                try:
                    return open(session / blob_id, "rb")
                except (FileNotFoundError, NotADirectoryError):
                    continue
            raise NotFound(f"blob {blob_id} is missing from the data folder") from None

    def delete(self, blob_id: str) -> bool:
        # Staging first: promote() renames atomically, so a blob not staged now is in objects/.
        for session in self._staging_root.iterdir():
            if (session / blob_id).exists():
                return False  # committed but not yet promoted; promote() would bring it back
        self.path(blob_id).unlink(missing_ok=True)
        return True

    def exists(self, blob_id: str) -> bool:
        return self.path(blob_id).exists()

    def recover(self, referenced: Callable[[list[str]], Iterable[str]]) -> tuple[int, int]:
        """Finish what dead processes left staged: promote blobs the index names, delete the rest."""
        promoted = deleted = 0
        for session in self._staging_root.iterdir():
            if session == self._staging or not session.is_dir() or _starting(session):
                continue
            try:
                lock = open(session / ".lock", "a")  # noqa: SIM115
            except OSError:
                continue  # gone: another process recovered it
            with lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its process is alive, or another recovery is at work on it
                try:
                    ids = [p.name for p in session.iterdir() if p.name != ".lock"]
                except FileNotFoundError:
                    continue  # another recovery finished it before we got the lock
                keep = set(referenced(ids)) if ids else set()
                for blob_id in ids:
                    if blob_id in keep:
                        target = self.path(blob_id)
                        target.parent.mkdir(parents=True, exist_ok=True)
                        os.replace(session / blob_id, target)
                        promoted += 1
                    else:
                        (session / blob_id).unlink(missing_ok=True)
                        deleted += 1
                # Removed while locked: no other recovery can start on it meanwhile.
                shutil.rmtree(session, ignore_errors=True)
        return promoted, deleted
