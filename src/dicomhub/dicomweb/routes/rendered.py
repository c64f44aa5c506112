"""WADO-RS rendered resources and thumbnails: consumer-ready images (PS3.18 10.4.1.1.3, 10.4.1.1.5)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["WADO-RS rendered"])
