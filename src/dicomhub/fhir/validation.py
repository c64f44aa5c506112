"""Resource validation on write, with the fhir.resources R4B models (R4 has no package of its own)."""

from __future__ import annotations

import decimal
import re
import types
import typing
from functools import cache
from typing import Any

import orjson
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.domainresource import DomainResource
from pydantic import ValidationError

from dicomhub.errors import InvalidInput, Unprocessable
from dicomhub.fhir.search.parameters import ALL_RESOURCE_TYPES

__all__ = ["ID_PATTERN", "check_id", "validate_resource"]

# FHIR R4 id datatype (2.24.0.1): 1-64 of these characters.
ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


# The JSON keys of DomainResource's own elements (id, meta, text, contained, extension...).
_DOMAIN_KEYS = frozenset(
    key
    for name, info in DomainResource.model_fields.items()
    if name != "fhir_comments"
    for key in (info.alias or name,)
)


@cache
def _model(resource_type: str) -> Any:
    """The R4B model of an R4 resource type; None for anything else (data types, R4B-only types).

    The R4 types that R4B dropped (MedicinalProduct..., EffectEvidenceSynthesis...) have no
    model: DomainResource stands in for them, checking their common elements only.
    """
    if resource_type not in ALL_RESOURCE_TYPES:
        return None
    try:
        return get_fhir_model_class(resource_type)
    except (KeyError, ValueError):
        return DomainResource


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


# Repeated elements whose items are found valid once and not validated again: the sync writes
# an ImagingStudy again each time its study grows, and validating its instance entries, all but
# the new ones unchanged, was half the CPU of such a pass (16 ms at 500 instances). An item's
# validity depends on the item alone (the models validate a nested element by its own model).
_REMEMBERED = {"ImagingStudy": ("series", "instance")}
# Only small items are remembered (the sync's entries take about 200 bytes), up to 8 MB in all:
# any client may send large ones. Items holding null are not (NaN and infinities, which the
# models refuse, are written as null too).
_ITEM_MAX_BYTES = 1024
_VALID_ITEMS_MAX_BYTES = 8 * 1024 * 1024


class _ValidItems:
    """Items found valid, as (type, item) JSON with sorted keys; emptied when too large."""

    def __init__(self) -> None:
        self.keys: set[bytes] = set()
        self.size = 0

    def add(self, keys: list[bytes]) -> None:
        # Only new keys count: a growing study brings back all of its earlier entries each time.
        keys = [
            k
            for k in set(keys)
            if k not in self.keys and len(k) <= _ITEM_MAX_BYTES and b"null" not in k
        ]
        size = sum(len(k) for k in keys)
        if self.size + size > _VALID_ITEMS_MAX_BYTES:
            self.keys.clear()
            self.size = 0
        self.keys.update(keys)
        self.size += size


_valid_items = _ValidItems()


def validate_resource(resource: Any, expected_type: str | None = None) -> str:
    """Check `resource` (a parsed JSON value) against its R4B model; returns its resourceType.

    Raises InvalidInput (400) when it is not a resource at all, Unprocessable (422) naming every
    bad element otherwise.
    """
    resource_type = _check_shape(resource, expected_type)
    path = _REMEMBERED.get(resource_type)
    if path is not None:
        seen: list[bytes] = []
        reduced = _without_valid_items(resource, path, seen)
        if reduced is not None:
            try:
                _validate(reduced, resource_type)
            except Unprocessable:
                # the same verdict, with the paths of the whole resource (items' indexes)
                _validate(resource, resource_type)
                raise
            _valid_items.add(seen)
            return resource_type
    _validate(resource, resource_type)
    return resource_type


def _without_valid_items(
    resource: dict[str, Any], path: tuple[str, str], seen: list[bytes]
) -> dict[str, Any] | None:
    """A shallow copy of `resource` without the items at `path` already found valid (their keys
    are added to `seen`, the new ones' too); None when its shape is not the expected one."""
    outer, inner = path
    parents = resource.get(outer)
    if not isinstance(parents, list) or not parents:
        return None
    prefix = f"{resource['resourceType']}.{outer}.{inner}:".encode()
    copies = []
    for parent in parents:
        items = parent.get(inner) if isinstance(parent, dict) else None
        if not isinstance(items, list) or not items:
            copies.append(parent)
            continue
        fresh = []
        for item in items:
            if not isinstance(item, dict):
                return None
            try:
                key = prefix + orjson.dumps(item, option=orjson.OPT_SORT_KEYS)
            except orjson.JSONEncodeError:  # not plain JSON (a number beyond 64 bits, say)
                return None
            seen.append(key)
            if key not in _valid_items.keys:
                fresh.append(item)
        copy = dict(parent)
        if fresh:
            copy[inner] = fresh
        else:
            del copy[inner]
        copies.append(copy)
    return {**resource, outer: copies}


def _check_shape(resource: Any, expected_type: str | None) -> str:
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
    if _model(resource_type) is None:
        raise InvalidInput(f"'{resource_type}' is not a FHIR R4 resource type")
    return resource_type


def _validate(resource: dict[str, Any], resource_type: str) -> None:
    model = _model(resource_type)
    if "id" in resource:
        if not isinstance(resource["id"], str):
            raise Unprocessable("id must be a string", locations=(f"{resource_type}.id",))
        check_id(resource_type, resource["id"])
    try:
        if model is DomainResource:
            model.model_validate({k: v for k, v in resource.items() if k in _DOMAIN_KEYS})
        else:
            model.model_validate(resource)
    except (AttributeError, TypeError) as exc:
        # fhir.resources fails this way on some malformed input (a primitive's extension
        # element `_gender` given as a string, say): still the client's error, not the server's
        raise Unprocessable(f"{resource_type}: malformed element ({exc})") from None
    except ValidationError as exc:
        problems = []
        locations = []
        for err in exc.errors()[:20]:
            path = _fhirpath(resource_type, err.get("loc", ()))
            locations.append(path)
            problems.append(f"{path}: {err.get('msg', 'invalid')}")
        raise Unprocessable("; ".join(problems), locations=tuple(locations)) from None
    wrong = _json_kinds(resource, model, resource_type, [])
    if wrong:
        raise Unprocessable(
            "; ".join(f"{path}: a JSON {kind} is required" for path, kind in wrong[:20]),
            locations=tuple(path for path, _ in wrong[:20]),
        )


# --- JSON primitive kinds ---------------------------------------------------------------------
# The models coerce like Pydantic's lax mode ("yes" -> true, "3" -> 3) and the store keeps the
# JSON it was sent, so the JSON kinds of boolean, integer and decimal elements are checked here
# (R4 2.6.2: they are JSON true/false and numbers, never strings).

_Fields = dict[str, tuple[str, Any]]  # JSON key -> (kind, model of a complex element)


@cache
def _fields(model: Any) -> _Fields:
    out: _Fields = {}
    for name, info in model.model_fields.items():
        kind, child = _kind(info.annotation)
        if kind:
            out[info.alias or name] = (kind, child)
    return out


def _kind(annotation: Any) -> tuple[str, Any]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _kind(args[0]) if len(args) == 1 else ("", None)
    if origin in (list, typing.Annotated):
        return _kind(typing.get_args(annotation)[0])
    if annotation is bool:
        return "boolean", None
    if annotation is int:
        return "integer", None
    if annotation is decimal.Decimal:
        return "decimal", None
    get_model = getattr(annotation, "get_model_klass", None)
    if get_model is not None:
        return "object", get_model()
    return "", None


def _json_kinds(
    value: dict[str, Any], model: Any, path: str, wrong: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    fields = _fields(model)
    for key, item in value.items():
        found = fields.get(key)
        if found is None:
            continue
        kind, child = found
        items = item if isinstance(item, list) else [item]
        for i, element in enumerate(items):
            where = f"{path}.{key}" + (f"[{i}]" if isinstance(item, list) else "")
            if kind == "object":
                if isinstance(element, dict):
                    target = child
                    if child.__name__ in ("Resource", "DomainResource"):  # contained, entry
                        target = _model(str(element.get("resourceType"))) or child
                    _json_kinds(element, target, where, wrong)
            elif kind == "boolean":
                if not isinstance(element, bool) and element is not None:
                    wrong.append((where, kind))
            elif (
                not isinstance(element, int | float) or isinstance(element, bool)
            ) and element is not None:
                wrong.append((where, "number"))
    return wrong


def _fhirpath(resource_type: str, loc: tuple[Any, ...]) -> str:
    """('name', 0, 'family') → Patient.name[0].family, the form OperationOutcome.expression uses."""
    out = resource_type
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part != "__root__":
            out += f".{part}"
    return out
