"""FHIR type-level search over HTTP: GET [base]/[type]?… and POST [base]/[type]/_search (R4 3.1.1).

Mounted after the other FHIR routes, so that /fhir/metadata and /fhir/_history keep theirs.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from anyio import to_thread
from fastapi import APIRouter, Request
from starlette.responses import Response

from dicomhub.errors import TooLarge, UnsupportedMediaType
from dicomhub.fhir.api.deps import BaseUrl, Ctx, FhirServices, Pretty
from dicomhub.fhir.api.responses import FhirResponse

router = APIRouter()

_MAX_FORM = 1024 * 1024


def _strict(request: Request) -> bool:
    """`Prefer: handling=strict` (R4 3.1.1.3.x): refuse unknown parameters instead of ignoring."""
    prefer = request.headers.get("prefer", "")
    return any(p.strip().lower() == "handling=strict" for p in prefer.split(","))


async def _run(
    request: Request,
    res_type: str,
    items: list[tuple[str, str]],
    fhir: FhirServices,
    ctx: Ctx,
    base: str,
    pretty: bool,
) -> Response:
    strict = _strict(request)
    url = str(request.url)
    bundle = await to_thread.run_sync(
        lambda: fhir.search.search(ctx, res_type, items, base, url, prefer_strict=strict)
    )
    return FhirResponse(bundle, pretty=pretty)


@router.get("/{res_type}", summary="Search a type")
async def search(
    res_type: str, request: Request, fhir: FhirServices, ctx: Ctx, base: BaseUrl, pretty: Pretty
) -> Response:
    items = parse_qsl(request.url.query, keep_blank_values=True)
    return await _run(request, res_type, items, fhir, ctx, base, pretty)


@router.post("/{res_type}/_search", summary="Search a type (parameters in a form body)")
async def search_post(
    res_type: str, request: Request, fhir: FhirServices, ctx: Ctx, base: BaseUrl, pretty: Pretty
) -> Response:
    ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    body = await request.body()
    if body and ctype != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType(
            f"POST _search takes application/x-www-form-urlencoded parameters, not {ctype}"
        )
    if len(body) > _MAX_FORM:
        raise TooLarge(f"the search form exceeds {_MAX_FORM} bytes")
    # Query string and body together (R4 3.1.1.1: the parameters may be in either).
    items = parse_qsl(request.url.query, keep_blank_values=True)
    items += parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    return await _run(request, res_type, items, fhir, ctx, base, pretty)
