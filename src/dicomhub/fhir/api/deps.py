"""Request-scoped values of the FHIR API: the services, the caller's context, the base URL."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import Depends, Request

from dicomhub.context import Origin, RequestContext
from dicomhub.errors import InvalidInput, TooLarge, UnsupportedMediaType
from dicomhub.fhir.api.responses import check_format

__all__ = ["BaseUrl", "Ctx", "FhirServices", "Pretty", "read_json"]

_MAX_BODY = 64 * 1024 * 1024


async def _services(request: Request) -> Any:
    return request.app.state.fhir


async def _context(request: Request) -> RequestContext:
    client = request.client
    return RequestContext(origin=Origin.FHIR, remote=client.host if client else None)


async def _base(request: Request) -> str:
    """The FHIR base URL as the client reached it (R4 2.1.0.1), or the configured public one."""
    public: str | None = request.app.state.public_url
    if public:
        return public.rstrip("/") + "/fhir"
    return str(request.base_url).rstrip("/") + "/fhir"


async def _pretty(request: Request) -> bool:
    check_format(request.query_params.get("_format"), request.headers.get("accept"))
    return request.query_params.get("_pretty", "").lower() == "true"


async def read_json(request: Request) -> Any:
    """The request body as JSON; 415 for other media types, 400 when it does not parse."""
    ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if ctype not in ("application/fhir+json", "application/json", "application/json+fhir", ""):
        raise UnsupportedMediaType(f"{ctype} bodies are not supported; send application/fhir+json")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > _MAX_BODY:
        raise TooLarge(f"the body exceeds {_MAX_BODY} bytes")
    body = await request.body()
    if not body:
        raise InvalidInput("the request has no body")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the body is not valid JSON: {exc}") from None


FhirServices = Annotated[Any, Depends(_services)]
Ctx = Annotated[RequestContext, Depends(_context)]
BaseUrl = Annotated[str, Depends(_base)]
Pretty = Annotated[bool, Depends(_pretty)]
