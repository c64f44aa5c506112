"""Routers included route by route, each route refusing a path outside its literal prefix.

FastAPI ≥ 0.137 keeps an included router as one node that tries every one of its routes,
with some bookkeeping each, before the next node is tried; it never looks at the router's
prefix first (fastapi/fastapi#16159, open). With the DICOMweb routes under three prefixes,
FHIR and the UI, matching cost 81 µs for POST /dicom-web/studies and 371 µs for a series
metadata request under /v2 on the bench VM, more than the rest of the framework's work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute

# What Starlette's own routes match against (the path without the app's root_path); FastAPI
# imports it from the same place.
from starlette._utils import get_route_path
from starlette.routing import Match
from starlette.types import Scope

__all__ = ["PrefixedRoute", "include_flat"]


class PrefixedRoute(APIRoute):
    """An APIRoute that refuses a path not starting with its literal part before its regex."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self._literal = path.split("{", 1)[0]

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http" and not get_route_path(scope).startswith(self._literal):
            return Match.NONE, {}
        return super().matches(scope)


def include_flat(
    app: FastAPI, router: APIRouter, prefix: str = "", tags: list[str] | None = None
) -> None:
    """`app.include_router(router, prefix=prefix, tags=tags)`, adding the routes one by one.

    Every setting a route can be declared with is carried over, so that none is lost silently.
    """
    for route in router.routes:
        if not isinstance(route, APIRoute):
            raise TypeError(f"only FastAPI routes can be included flat, not {route!r}")
        app.router.add_api_route(
            prefix + route.path,
            route.endpoint,
            methods=sorted(route.methods or ()),
            name=route.name,
            summary=route.summary,
            description=route.description,
            tags=[*(tags or []), *route.tags],
            status_code=route.status_code,
            response_model=route.response_model,
            response_class=route.response_class,
            responses=route.responses,
            dependencies=route.dependencies,
            include_in_schema=route.include_in_schema,
            deprecated=route.deprecated,
            operation_id=route.operation_id,
            response_description=route.response_description,
            response_model_include=route.response_model_include,
            response_model_exclude=route.response_model_exclude,
            response_model_by_alias=route.response_model_by_alias,
            response_model_exclude_unset=route.response_model_exclude_unset,
            response_model_exclude_defaults=route.response_model_exclude_defaults,
            response_model_exclude_none=route.response_model_exclude_none,
            callbacks=route.callbacks,
            openapi_extra=route.openapi_extra,
            generate_unique_id_function=route.generate_unique_id_function,
            strict_content_type=route.strict_content_type,
            max_body_size=route.max_body_size,
            route_class_override=PrefixedRoute,
        )
