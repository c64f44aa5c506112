"""The CapabilityStatement: what this server really does (R4 CapabilityStatement, kind=instance)."""

from __future__ import annotations

from typing import Any

from dicomhub import __version__
from dicomhub.fhir.search.parameters import (
    ALL_RESOURCE_TYPES,
    COMMON,
    INDEXED_TYPES,
    ParamType,
    SearchParam,
    search_params,
)
from dicomhub.fhir.search.values import MODIFIERS as SEARCH_MODIFIERS

__all__ = ["capability_statement"]

_INTERACTIONS = [
    "read",
    "vread",
    "update",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
]
# Modifiers per parameter type: the table the search parser enforces (fhir/search/values.py).
MODIFIERS: dict[ParamType, tuple[str, ...]] = SEARCH_MODIFIERS


def _param(p: SearchParam) -> dict[str, Any]:
    doc = p.description or f"{p.type} search on {p.expression or p.code}"
    if p.extra:
        doc = f"Extra (not part of R4, as in R5): {doc}"
    modifiers = ", ".join(f":{m}" for m in MODIFIERS.get(p.type, ()))
    if modifiers:
        doc = f"{doc} Modifiers: {modifiers}."
    out: dict[str, Any] = {"name": p.code, "type": str(p.type), "documentation": doc}
    if p.url:
        out["definition"] = p.url
    return out


def _resource(res_type: str) -> dict[str, Any]:
    params = search_params(res_type)
    own = [p for code, p in sorted(params.items()) if code not in COMMON]
    references = [p.code for p in own if p.type is ParamType.REFERENCE]
    return {
        "type": res_type,
        "interaction": [{"code": code} for code in _INTERACTIONS],
        "versioning": "versioned-update",
        "readHistory": True,
        "updateCreate": True,
        "conditionalCreate": True,
        "conditionalRead": "not-supported",
        "conditionalUpdate": True,
        "conditionalDelete": "single",
        "referencePolicy": ["literal", "logical", "local"],
        "searchInclude": ["*"] + [f"{res_type}:{code}" for code in references],
        "searchRevInclude": ["*"],
        "searchParam": [_param(p) for p in own],
    }


def capability_statement(base: str, published: str) -> dict[str, Any]:
    """`published`: the FHIR date the statement describes (the server's start, typically)."""
    resources = [_resource(t) for t in sorted(ALL_RESOURCE_TYPES)]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": published,
        "publisher": "dicomhub",
        "kind": "instance",
        "software": {"name": "dicomhub", "version": __version__},
        "implementation": {
            "description": "dicomhub embedded FHIR R4 store (search parameters indexed for "
            + ", ".join(INDEXED_TYPES)
            + "; every other type by the common parameters only)",
            "url": base,
        },
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [
            {
                "mode": "server",
                "resource": resources,
                "interaction": [
                    {"code": "transaction"},
                    {"code": "batch"},
                    {"code": "history-system"},
                ],
                "searchParam": [_param(p) for _, p in sorted(COMMON.items())],
            }
        ],
    }
