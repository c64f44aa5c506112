"""`_summary` and `_elements` (R4 3.1.1.5.8, 3.1.1.5.9): the parts of a resource a search returns.

A subsetted resource carries the SUBSETTED tag (R4 3.1.1.5.8: "servers SHOULD ... mark the
resources with the tag SUBSETTED") so that nobody mistakes it for the whole resource.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dicomhub.fhir.search._r4_definitions import MANDATORY_ELEMENTS, SUMMARY_ELEMENTS

__all__ = ["SUBSETTED", "subset"]

SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
    "display": "subsetted",
}
# Always kept: what identifies the resource and says what it is (R4 3.1.1.5.9, _elements).
_ALWAYS = frozenset({"resourceType", "id", "meta"})


def _base(key: str, bases: frozenset[str]) -> str | None:
    """The element a JSON key belongs to: `_birthDate` → birthDate, `valueQuantity` → value."""
    name = key[1:] if key.startswith("_") else key
    if name in bases:
        return name
    for base in bases:  # a choice element `value[x]` is listed by its base name
        if name.startswith(base) and name[len(base) : len(base) + 1].isupper():
            return base
    return None


def _keep(resource: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    bases = frozenset(names) | _ALWAYS
    return {k: v for k, v in resource.items() if _base(k, bases) is not None}


def _tagged(resource: dict[str, Any]) -> dict[str, Any]:
    meta = dict(resource.get("meta") or {})
    tags = [t for t in meta.get("tag") or [] if not _is_subsetted(t)]
    meta["tag"] = [*tags, SUBSETTED]
    return {**resource, "meta": meta}


def _is_subsetted(tag: Any) -> bool:
    return (
        isinstance(tag, dict)
        and tag.get("system") == SUBSETTED["system"]
        and tag.get("code") == SUBSETTED["code"]
    )


def subset(
    resource: dict[str, Any], summary: str | None, elements: tuple[str, ...] | None
) -> dict[str, Any]:
    """The resource as `_summary` (true / text / data) or `_elements` ask; tagged SUBSETTED.

    _elements wins over _summary when both are given (the spec leaves the mix undefined).
    Top-level mandatory elements are always kept, as both parameters require.
    """
    res_type = str(resource.get("resourceType", ""))
    mandatory = MANDATORY_ELEMENTS.get(res_type, frozenset())
    if elements is not None:
        return _tagged(_keep(resource, (*elements, *mandatory)))
    if summary == "true":
        return _tagged(_keep(resource, SUMMARY_ELEMENTS.get(res_type, frozenset()) | mandatory))
    if summary == "text":
        return _tagged(_keep(resource, ("text", *mandatory)))
    if summary == "data":
        return _tagged({k: v for k, v in resource.items() if k != "text"})
    return resource
