"""What the UI tests need from the machine: the installed OHIF viewer and Chromium."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import IN_CI

REPO = Path(__file__).resolve().parents[2]
# Where `make viewer` installs the viewer; DICOMHUB_VIEWER_DIR names another install.
VIEWER_DIR = Path(os.environ.get("DICOMHUB_VIEWER_DIR") or REPO / ".viewer" / "dist").resolve()
CHROMIUM = (
    os.environ.get("DICOMHUB_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
)


def _missing(problem: str) -> None:
    """Skip on a developer's machine; under CI every test must run, so fail."""
    if IN_CI:
        pytest.fail(f"{problem}; CI must run every test")
    pytest.skip(f"skipped: {problem}")


def require_viewer() -> Path:
    if not (VIEWER_DIR / "index.html").is_file():
        _missing(f"the OHIF viewer is not installed in {VIEWER_DIR} (run `make viewer`; needs npm)")
    return VIEWER_DIR


def require_chromium() -> str:
    if not Path(CHROMIUM).is_file():
        _missing("Chromium is not installed (apt-get install chromium)")
    if importlib.util.find_spec("playwright") is None:
        _missing("the Python package playwright is not installed (pip install -e '.[test]')")
    return CHROMIUM
