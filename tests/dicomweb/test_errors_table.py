"""Every service error has an HTTP status of its own in the one table that maps them."""

from __future__ import annotations

import gc
import importlib
import pkgutil

import dicomhub
from dicomhub.dicomweb.errors import STATUS
from dicomhub.errors import DicomhubError, NotFound


def _import_everything() -> None:
    """Subclasses register when their module is imported: import every dicomhub module."""
    for info in pkgutil.walk_packages(dicomhub.__path__, "dicomhub."):
        if info.name.startswith("dicomhub.storage.migrations") or info.name == "dicomhub.__main__":
            continue  # these run on import (alembic scripts, the CLI); they define no errors
        importlib.import_module(info.name)


def _subclasses(cls: type[DicomhubError]) -> set[type[DicomhubError]]:
    found: set[type[DicomhubError]] = set()
    for sub in cls.__subclasses__():
        found.add(sub)
        found |= _subclasses(sub)
    return found


def test_every_error_class_has_a_status() -> None:
    _import_everything()
    classes = _subclasses(DicomhubError)
    assert len(classes) >= 14  # the hierarchy of dicomhub.errors at least
    missing = sorted(c.__qualname__ for c in classes if c not in STATUS)
    assert missing == []
    assert DicomhubError in STATUS


def test_statuses_are_errors_and_codes_are_distinct() -> None:
    _import_everything()
    classes = _subclasses(DicomhubError)
    assert all(400 <= STATUS[c] <= 599 for c in classes | {DicomhubError})
    codes = [c.code for c in classes]
    assert len(codes) == len(set(codes)), sorted(codes)
    assert all(c.code != DicomhubError.code for c in classes)


def test_a_new_subclass_would_be_noticed() -> None:
    """The recursive walk reaches grandchildren, so an unmapped one cannot hide."""

    class Grandchild(NotFound):
        code = "test-grandchild"

    try:
        assert Grandchild in _subclasses(DicomhubError)
        assert Grandchild not in STATUS
    finally:
        del Grandchild
        gc.collect()  # subclasses are weakly held: let it go before other tests walk the tree
    assert all(c.code != "test-grandchild" for c in _subclasses(DicomhubError))
