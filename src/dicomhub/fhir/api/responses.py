"""FHIR JSON responses: application/fhir+json, stored bodies sent as they are, `_pretty`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.background import BackgroundTask
from starlette.responses import Response

from dicomhub.errors import NotAcceptable

__all__ = ["FHIR_JSON", "FhirResponse", "check_format", "raw_response"]

FHIR_JSON = "application/fhir+json; charset=utf-8"
_JSON_FORMATS = {"json", "application/json", "application/fhir+json", "application/json+fhir"}


class FhirResponse(Response):
    media_type = FHIR_JSON

    def __init__(
        self,
        content: Any,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        *,
        pretty: bool = False,
        background: BackgroundTask | None = None,
    ) -> None:
        self._pretty = pretty
        super().__init__(content, status_code, headers, None, background)

    def render(self, content: Any) -> bytes:
        if content is None:
            return b""
        if isinstance(content, bytes):
            return (
                orjson.dumps(orjson.loads(content), option=orjson.OPT_INDENT_2)
                if self._pretty
                else content
            )
        return orjson.dumps(content, option=orjson.OPT_INDENT_2 if self._pretty else 0)


def raw_response(
    body: bytes,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
    *,
    pretty: bool = False,
) -> Response:
    """A stored resource as it is: no parse and re-serialization on the read path."""
    return FhirResponse(body, status_code, headers, pretty=pretty)


def check_format(format_param: str | None, accept: str | None) -> None:
    """406 for XML or RDF: only JSON is served (R4 3.1.0.1.9, `_format` overrides Accept)."""
    if format_param:
        wanted = format_param.split(";")[0].strip().lower()
        if wanted not in _JSON_FORMATS:
            raise NotAcceptable(f"_format={format_param} is not supported; this server speaks JSON")
        return
    if not accept:
        return
    for item in accept.split(","):
        mime = item.split(";")[0].strip().lower()
        if mime in _JSON_FORMATS or mime in ("*/*", "application/*", ""):
            return
    raise NotAcceptable(f"cannot answer in {accept}; this server speaks application/fhir+json")
