"""Errors to FHIR: HTTP status and an OperationOutcome naming what went wrong (R4 3.1.0.4)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from dicomhub import errors
from dicomhub.fhir.api.responses import FhirResponse
from dicomhub.http_middleware import received_method

__all__ = ["HANDLERS", "STATUS", "describe", "operation_outcome"]

log = logging.getLogger(__name__)

# error type → (HTTP status, OperationOutcome.issue.code from the R4 issue-type value set)
STATUS: dict[type[errors.DicomhubError], tuple[int, str]] = {
    errors.DicomhubError: (500, "exception"),
    errors.InvalidInput: (400, "invalid"),
    errors.Unauthenticated: (401, "login"),
    errors.Forbidden: (403, "forbidden"),
    errors.NotFound: (404, "not-found"),
    errors.NotAcceptable: (406, "not-supported"),
    errors.AlreadyExists: (409, "duplicate"),
    errors.Conflict: (409, "conflict"),
    errors.Gone: (410, "deleted"),
    errors.PreconditionFailed: (412, "conflict"),
    errors.TooLarge: (413, "too-long"),
    errors.UnsupportedMediaType: (415, "not-supported"),
    errors.Unprocessable: (422, "processing"),
    errors.Unsupported: (501, "not-supported"),
    errors.Unavailable: (503, "transient"),
    errors.StorageFull: (507, "exception"),
}


def operation_outcome(
    message: str, code: str, *, severity: str = "error", locations: tuple[str, ...] = ()
) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": message}
    if locations:
        issue["expression"] = list(locations)
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def describe(exc: errors.DicomhubError) -> tuple[int, dict[str, Any]]:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            status, code = STATUS[cls]
            return status, operation_outcome(exc.message, code, locations=exc.locations)
    return 500, operation_outcome(exc.message, "exception")


async def _known(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.DicomhubError)
    status, outcome = describe(exc)
    level = logging.WARNING if status >= 500 else logging.INFO
    log.log(
        level, "%s %s -> %d %s", received_method(request), request.url.path, status, exc.message
    )
    return FhirResponse(outcome, status_code=status)


async def _validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    parts = [f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()]
    return FhirResponse(operation_outcome("; ".join(parts), "invalid"), status_code=400)


async def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not-found", 405: "not-supported"}.get(exc.status_code, "processing")
    message = str(exc.detail)
    if exc.status_code == 404:
        message = f"no such FHIR endpoint: {request.url.path}"
    elif exc.status_code == 405:
        message = f"{received_method(request)} is not supported on {request.url.path}"
    return FhirResponse(operation_outcome(message, code), status_code=exc.status_code)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", received_method(request), request.url.path)
    outcome = operation_outcome("internal server error; see the server log", "exception")
    return FhirResponse(outcome, status_code=500)


HANDLERS: dict[type[Exception], Callable[[Request, Exception], Awaitable[Response]]] = {
    errors.DicomhubError: _known,
    RequestValidationError: _validation,
    StarletteHTTPException: _http,
    Exception: _unexpected,
}
