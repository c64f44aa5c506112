"""Thumbnails on disk, one folder per stored file: a new or replaced instance has a new blob id,
so a cached thumbnail can never outlive or misrepresent the file it was made from."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = ["ThumbnailCache"]

log = logging.getLogger(__name__)

_EXTENSIONS = {"image/jpeg": ".jpg", "image/png": ".png", "image/gif": ".gif"}


class ThumbnailCache:
    """`{root}/{blob id[:2]}/{blob id}/{hash of the parameters}.{ext}`, at most `variants` a file."""

    def __init__(self, root: Path, *, variants: int = 8) -> None:
        self.root = root
        self.variants = variants

    def _folder(self, blob_id: str) -> Path:
        return self.root / blob_id[:2] / blob_id

    @staticmethod
    def _name(key: str, media_type: str) -> str:
        digest = hashlib.sha256(key.encode()).hexdigest()[:24]
        return digest + _EXTENSIONS.get(media_type, ".bin")

    def get(self, blob_id: str, key: str, media_type: str) -> bytes | None:
        try:
            return (self._folder(blob_id) / self._name(key, media_type)).read_bytes()
        except FileNotFoundError:
            return None
        except OSError:
            log.warning("cannot read a cached thumbnail of blob %s", blob_id, exc_info=True)
            return None

    def put(
        self, blob_id: str, key: str, media_type: str, data: bytes, stored: Callable[[], bool]
    ) -> bool:
        """Keep a thumbnail; `stored` tells whether the blob still exists once it is written."""
        folder = self._folder(blob_id)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if sum(1 for _ in folder.iterdir()) >= self.variants:
                return False  # many viewports asked for one file: serve them uncached
            target = folder / self._name(key, media_type)
            temp = folder / f".{target.name}.{secrets.token_hex(4)}.tmp"
            temp.write_bytes(data)
            os.replace(temp, target)  # readers see the whole file or none
        except OSError:
            log.warning("cannot cache a thumbnail of blob %s", blob_id, exc_info=True)
            return False
        # A delete that ran meanwhile removed the folder before this write: remove it again.
        if not stored():
            self.drop([blob_id])
            return False
        return True

    def drop(self, blob_ids: Iterable[str]) -> None:
        """Forget every thumbnail of these blobs (called when their files are deleted)."""
        for blob_id in blob_ids:
            folder = self._folder(blob_id)
            shutil.rmtree(folder, ignore_errors=True)
            # The prefix folder goes only when empty; other blobs may share it.
            with contextlib.suppress(OSError):
                folder.parent.rmdir()
