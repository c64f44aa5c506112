"""FHIR R4 RESTful API: capabilities, CRUD, versions, history, conditional interactions, Bundles."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import parse_qsl, urlencode

from anyio import to_thread
from fastapi import APIRouter, Request
from starlette.responses import Response

from dicomhub.errors import InvalidInput
from dicomhub.fhir.api.bundles import history_bundle
from dicomhub.fhir.api.deps import BaseUrl, Ctx, FhirServices, Pretty, read_json
from dicomhub.fhir.api.responses import FhirResponse, raw_response
from dicomhub.fhir.service import Written

router = APIRouter()


def _headers(base: str, w: Written) -> dict[str, str]:
    return {
        "ETag": f'W/"{w.version}"',
        "Last-Modified": w.last_updated.strftime("%a, %d %b %Y %H:%M:%S GMT"),
        "Location": f"{base}/{w.res_type}/{w.res_id}/_history/{w.version}",
    }


def _written(request: Request, base: str, w: Written, pretty: bool) -> Response:
    status = 201 if w.created else 200
    headers = _headers(base, w)
    prefer = request.headers.get("prefer", "")
    if "return=minimal" in prefer:
        return Response(status_code=status, headers=headers)
    if "return=OperationOutcome" in prefer:
        from dicomhub.fhir.api.errors import operation_outcome

        text = "created" if w.created else ("already there" if w.existing else "updated")
        outcome = operation_outcome(
            f"{w.res_type}/{w.res_id} {text}", "informational", severity="information"
        )
        return FhirResponse(outcome, status, headers, pretty=pretty)
    assert w.body is not None
    return raw_response(w.body, status, headers, pretty=pretty)


def _since(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{name}={value} is not an instant") from None
    if moment.tzinfo is None:
        raise InvalidInput(f"{name} needs a time zone (R4 3.1.0.9)")
    return moment


def _int(value: str | None, name: str, default: int, high: int) -> int:
    if value is None:
        return default
    if not value.isdigit():
        raise InvalidInput(f"{name} must be a whole number, not '{value}'")
    return min(int(value), high)


@router.get("/metadata", summary="CapabilityStatement")
async def metadata(fhir: FhirServices, base: BaseUrl, pretty: Pretty) -> Response:
    return FhirResponse(fhir.capabilities(base), pretty=pretty)


@router.post("", summary="Process a transaction or batch Bundle")
@router.post("/", include_in_schema=False)
async def bundle(request: Request, fhir: FhirServices, ctx: Ctx, pretty: Pretty) -> Response:
    body = await read_json(request)
    answer = await to_thread.run_sync(fhir.bundles.process, ctx, body)
    return FhirResponse(answer, pretty=pretty)


async def _history(
    request: Request,
    fhir: FhirServices,
    ctx: Ctx,
    base: BaseUrl,
    pretty: bool,
    res_type: str | None = None,
    res_id: str | None = None,
) -> Response:
    q = request.query_params
    count = _int(q.get("_count"), "_count", 100, 1000)
    offset = _int(q.get("_offset"), "_offset", 0, 2**31 - 1)
    since = _since(q.get("_since"), "_since")
    at = _since(q.get("_at"), "_at")
    rows, total = await to_thread.run_sync(
        lambda: fhir.service.history(
            ctx, res_type=res_type, res_id=res_id, since=since, at=at, count=count, offset=offset
        )
    )
    return FhirResponse(
        history_bundle(base, str(request.url), rows, total, count, offset), pretty=pretty
    )


@router.get("/_history", summary="History of every resource")
async def system_history(
    request: Request, fhir: FhirServices, ctx: Ctx, base: BaseUrl, pretty: Pretty
) -> Response:
    return await _history(request, fhir, ctx, base, pretty)


@router.post("/{res_type}", summary="Create (If-None-Exist: conditional create)")
async def create(
    res_type: str, request: Request, fhir: FhirServices, ctx: Ctx, base: BaseUrl, pretty: Pretty
) -> Response:
    resource = await read_json(request)
    if isinstance(resource, dict) and resource.get("resourceType") not in (None, res_type):
        raise InvalidInput(
            f"the resource is a {resource.get('resourceType')}, the URL names {res_type}"
        )
    fhir.service.check_type(res_type)
    condition = request.headers.get("if-none-exist")
    # `POST Type?identifier=..`: the conditional create of fhirpy's get_or_create and of
    # Aidbox; ignoring the query would store a duplicate the client thinks it avoided.
    items = [
        (k, v) for k, v in request.query_params.multi_items() if k not in ("_format", "_pretty")
    ]
    if (
        items
        and condition is not None
        and parse_qsl(condition.lstrip("?"), keep_blank_values=True) != items
    ):
        raise InvalidInput("different conditions in If-None-Exist and in the URL: give one")
    condition = condition or urlencode(items) or None
    w = await to_thread.run_sync(
        lambda: fhir.service.create(ctx, resource, if_none_exist=condition)
    )
    return _written(request, base, w, pretty)


@router.put("/{res_type}", summary="Conditional update")
async def conditional_update(
    res_type: str, request: Request, fhir: FhirServices, ctx: Ctx, base: BaseUrl, pretty: Pretty
) -> Response:
    query = request.url.query
    if not query:
        raise InvalidInput(f"PUT {res_type} needs an id in the URL or a search query")
    resource = await read_json(request)
    w = await to_thread.run_sync(
        lambda: fhir.service.conditional_update(ctx, res_type, query, resource)
    )
    return _written(request, base, w, pretty)


@router.delete("/{res_type}", summary="Conditional delete")
async def conditional_delete(
    res_type: str, request: Request, fhir: FhirServices, ctx: Ctx
) -> Response:
    query = request.url.query
    if not query:
        raise InvalidInput(f"DELETE {res_type} needs an id in the URL or a search query")
    await to_thread.run_sync(lambda: fhir.service.conditional_delete(ctx, res_type, query))
    return Response(status_code=204)


@router.get("/{res_type}/_history", summary="History of a type")
async def type_history(
    res_type: str, request: Request, fhir: FhirServices, ctx: Ctx, base: BaseUrl, pretty: Pretty
) -> Response:
    fhir.service.check_type(res_type)
    return await _history(request, fhir, ctx, base, pretty, res_type)


@router.get("/{res_type}/{res_id}", summary="Read")
async def read(
    res_type: str, res_id: str, fhir: FhirServices, ctx: Ctx, pretty: Pretty, request: Request
) -> Response:
    row = await to_thread.run_sync(fhir.service.read, ctx, res_type, res_id)
    headers = {
        "ETag": f'W/"{row.version}"',
        "Last-Modified": row.last_updated.strftime("%a, %d %b %Y %H:%M:%S GMT"),
    }
    if request.headers.get("if-none-match") in (f'W/"{row.version}"', f'"{row.version}"'):
        return Response(status_code=304, headers=headers)
    assert row.body is not None
    return raw_response(row.body, 200, headers, pretty=pretty)


@router.put("/{res_type}/{res_id}", summary="Update (or create with this id)")
async def update(
    res_type: str,
    res_id: str,
    request: Request,
    fhir: FhirServices,
    ctx: Ctx,
    base: BaseUrl,
    pretty: Pretty,
) -> Response:
    resource = await read_json(request)
    if_match = request.headers.get("if-match")
    w = await to_thread.run_sync(
        lambda: fhir.service.update(ctx, res_type, res_id, resource, if_match=if_match)
    )
    return _written(request, base, w, pretty)


@router.delete("/{res_type}/{res_id}", summary="Delete")
async def delete(
    res_type: str, res_id: str, request: Request, fhir: FhirServices, ctx: Ctx
) -> Response:
    if_match = request.headers.get("if-match")
    w = await to_thread.run_sync(
        lambda: fhir.service.delete(ctx, res_type, res_id, if_match=if_match)
    )
    headers = {"ETag": f'W/"{w.version}"'} if w is not None else {}
    return Response(status_code=204, headers=headers)


@router.get("/{res_type}/{res_id}/_history", summary="History of a resource")
async def instance_history(
    res_type: str,
    res_id: str,
    request: Request,
    fhir: FhirServices,
    ctx: Ctx,
    base: BaseUrl,
    pretty: Pretty,
) -> Response:
    return await _history(request, fhir, ctx, base, pretty, res_type, res_id)


@router.get("/{res_type}/{res_id}/_history/{version}", summary="Read a version (vread)")
async def vread(
    res_type: str, res_id: str, version: str, fhir: FhirServices, ctx: Ctx, pretty: Pretty
) -> Response:
    if not version.isdigit():
        raise InvalidInput(f"version '{version}' is not a number")
    row = await to_thread.run_sync(fhir.service.vread, ctx, res_type, res_id, int(version))
    headers = {
        "ETag": f'W/"{row.version}"',
        "Last-Modified": row.last_updated.strftime("%a, %d %b %Y %H:%M:%S GMT"),
    }
    assert row.body is not None
    return raw_response(row.body, 200, headers, pretty=pretty)
