"""The search parameters the store knows: the R4 (4.0.1) definitions, plus a documented extra.

The definitions come from the official R4 search-parameter bundle (generated into
`_r4_definitions.py` by scripts/generate_fhir_definitions.py); only the resource types the
store indexes are kept, with each parameter's FHIRPath expression narrowed to that type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "ALL_RESOURCE_TYPES",
    "COMMON",
    "INDEXED_TYPES",
    "ParamType",
    "SearchParam",
    "search_param",
    "search_params",
]


class ParamType(StrEnum):
    NUMBER = "number"
    DATE = "date"
    STRING = "string"
    TOKEN = "token"
    REFERENCE = "reference"
    COMPOSITE = "composite"
    QUANTITY = "quantity"
    URI = "uri"
    SPECIAL = "special"


@dataclass(frozen=True, slots=True)
class SearchParam:
    code: str
    type: ParamType
    resource_type: str  # the type this definition is for ("Resource" for the common ones)
    expression: str  # FHIRPath, only the parts that apply to resource_type ("" if none)
    targets: tuple[str, ...] = ()  # reference target types
    url: str = ""
    description: str = ""
    extra: bool = False  # not part of R4 (documented in the CapabilityStatement)


def _load() -> tuple[dict[str, dict[str, SearchParam]], dict[str, SearchParam], tuple[str, ...]]:
    from dicomhub.fhir.search import _r4_definitions as defs

    by_type: dict[str, dict[str, SearchParam]] = {}
    for resource_type, params in defs.PARAMETERS.items():
        by_type[resource_type] = {
            code: SearchParam(
                code=code,
                type=ParamType(kind),
                resource_type=resource_type,
                expression=expression,
                targets=tuple(targets),
                url=url,
                description=description,
                extra=extra,
            )
            for code, (kind, expression, targets, url, description, extra) in params.items()
        }
    common = by_type.pop("Resource")
    return by_type, common, tuple(sorted(by_type))


_BY_TYPE, COMMON, INDEXED_TYPES = _load()


def _all_types() -> frozenset[str]:
    from dicomhub.fhir.search import _r4_definitions as defs

    return frozenset(defs.RESOURCE_TYPES)


# Every R4 resource type: each can be stored, read and searched by the common parameters.
ALL_RESOURCE_TYPES = _all_types()


def search_params(resource_type: str) -> Mapping[str, SearchParam]:
    """Every parameter valid on `resource_type`: its own and the common ones (_id, _lastUpdated...).

    Types the store does not index get the common parameters only.
    """
    own = _BY_TYPE.get(resource_type, {})
    return {**COMMON, **own}


def search_param(resource_type: str, code: str) -> SearchParam | None:
    own = _BY_TYPE.get(resource_type)
    if own is not None and code in own:
        return own[code]
    return COMMON.get(code)
