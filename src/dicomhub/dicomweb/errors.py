"""Errors to HTTP: one table, a JSON body with a clear message, never a stack trace."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from dicomhub import errors
from dicomhub.dicomweb.responses import JSONResponse
from dicomhub.http_middleware import received_method

__all__ = ["HANDLERS", "STATUS", "Handler", "error_response"]

log = logging.getLogger(__name__)

STATUS: dict[type[errors.DicomhubError], int] = {
    errors.DicomhubError: 500,
    errors.InvalidInput: 400,
    errors.Unauthenticated: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.NotAcceptable: 406,
    errors.AlreadyExists: 409,
    errors.Conflict: 409,
    errors.Gone: 410,
    errors.PreconditionFailed: 412,
    errors.TooLarge: 413,
    errors.Unprocessable: 422,
    errors.UnsupportedMediaType: 415,
    errors.Unsupported: 501,
    errors.StorageFull: 507,
    errors.Unavailable: 503,
}


def error_response(status: int, code: str, message: str) -> Response:
    return JSONResponse({"status": status, "code": code, "message": message}, status_code=status)


def _status_of(exc: errors.DicomhubError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


async def _dicomhub(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.DicomhubError)
    status = _status_of(exc)
    level = logging.WARNING if status >= 500 else logging.INFO
    log.log(
        level, "%s %s -> %d %s", received_method(request), request.url.path, status, exc.message
    )
    return error_response(status, exc.code, exc.message)


async def _validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for err in exc.errors():
        where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("query", "path"))
        parts.append(f"{where}: {err.get('msg')}")
    message = "; ".join(parts) or "invalid request"
    log.info("%s %s -> 400 %s", received_method(request), request.url.path, message)
    return error_response(400, errors.InvalidInput.code, message)


async def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    message = str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"no such resource: {request.url.path}"
    elif exc.status_code == 405:
        message = f"{received_method(request)} is not allowed on {request.url.path}"
    return error_response(exc.status_code, "http-error", message)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", received_method(request), request.url.path)
    return error_response(500, "internal-error", "internal server error; see the server log")


Handler = Callable[[Request, Exception], Awaitable[Response]]

# The app dispatches to this table or to the FHIR one, by path (see app.py).
HANDLERS: dict[type[Exception], Handler] = {
    errors.DicomhubError: _dicomhub,
    RequestValidationError: _validation,
    StarletteHTTPException: _http,
    Exception: _unexpected,
}
