"""WADO-RS frames: single frames and lists, as stored or transcoded (PS3.18 10.4.1.1.4)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["WADO-RS"])
