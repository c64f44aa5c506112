"""References inside resources: find them, and rewrite them (urn:uuid and conditional ones)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["iter_references", "rewrite_references"]


def iter_references(value: Any) -> Iterator[str]:
    """Every Reference.reference string in a resource (contained resources included)."""
    if isinstance(value, dict):
        ref = value.get("reference")
        if isinstance(ref, str):
            yield ref
        for item in value.values():
            if isinstance(item, dict | list):
                yield from iter_references(item)
    elif isinstance(value, list):
        for item in value:
            yield from iter_references(item)


def rewrite_references(value: Any, replace: Callable[[str], str | None]) -> bool:
    """Replace Reference.reference strings in place where `replace` returns a new value.

    Returns whether anything changed. Narrative and other strings are left alone: only the
    `reference` element of a Reference is a reference (FHIR R4 2.3.0.3).
    """
    changed = False
    if isinstance(value, dict):
        ref = value.get("reference")
        if isinstance(ref, str):
            new = replace(ref)
            if new is not None and new != ref:
                value["reference"] = new
                changed = True
        for item in value.values():
            if isinstance(item, dict | list):
                changed = rewrite_references(item, replace) or changed
    elif isinstance(value, list):
        for item in value:
            changed = rewrite_references(item, replace) or changed
    return changed
