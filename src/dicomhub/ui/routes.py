"""Routes of the web UI (/) and of the bundled OHIF viewer (/viewer)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["web UI"], include_in_schema=False)
