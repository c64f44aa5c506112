"""Response classes: orjson for JSON bodies, with the DICOM JSON media type where PS3.18 asks."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

__all__ = ["DicomJSONResponse", "JSONResponse"]


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class DicomJSONResponse(JSONResponse):
    media_type = "application/dicom+json"
