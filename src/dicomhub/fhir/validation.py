"""Resource validation on write, with the fhir.resources R4B models (R4 has no package of its own)."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from dicomhub.errors import InvalidInput, Unprocessable

__all__ = ["ID_PATTERN", "check_id", "validate_resource"]

# FHIR R4 id datatype (2.24.0.1): 1-64 of these characters.
ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


@cache
def _model(resource_type: str) -> Any:
    try:
        return get_fhir_model_class(resource_type)
    except KeyError:
        return None


def check_id(resource_type: str, resource_id: str) -> str:
    if not ID_PATTERN.match(resource_id):
        raise InvalidInput(
            f"'{resource_id}' is not a valid id for {resource_type}: 1 to 64 letters, digits, "
            "'-' and '.'",
            locations=(f"{resource_type}.id",),
        )
    return resource_id


def known_type(resource_type: str) -> bool:
    return _model(resource_type) is not None


def validate_resource(resource: Any, expected_type: str | None = None) -> str:
    """Check `resource` (a parsed JSON value) against its R4B model; returns its resourceType.

    Raises InvalidInput (400) when it is not a resource at all, Unprocessable (422) naming every
    bad element otherwise.
    """
    if not isinstance(resource, dict):
        raise InvalidInput("the body is not a FHIR resource (a JSON object was expected)")
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or not resource_type:
        raise InvalidInput("the resource has no resourceType")
    if expected_type is not None and resource_type != expected_type:
        raise InvalidInput(
            f"the resource is a {resource_type}, the URL names {expected_type}",
            locations=(f"{resource_type}.resourceType",),
        )
    model = _model(resource_type)
    if model is None:
        raise InvalidInput(f"'{resource_type}' is not a FHIR R4 resource type")
    if "id" in resource:
        if not isinstance(resource["id"], str):
            raise Unprocessable("id must be a string", locations=(f"{resource_type}.id",))
        check_id(resource_type, resource["id"])
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        problems = []
        locations = []
        for err in exc.errors()[:20]:
            path = _fhirpath(resource_type, err.get("loc", ()))
            locations.append(path)
            problems.append(f"{path}: {err.get('msg', 'invalid')}")
        raise Unprocessable("; ".join(problems), locations=tuple(locations)) from None
    return resource_type


def _fhirpath(resource_type: str, loc: tuple[Any, ...]) -> str:
    """('name', 0, 'family') → Patient.name[0].family, the form OperationOutcome.expression uses."""
    out = resource_type
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part != "__root__":
            out += f".{part}"
    return out
