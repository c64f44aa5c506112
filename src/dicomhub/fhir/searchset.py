"""The searchset Bundle (R4 3.1.1.2, Bundle.type = searchset): entries, paging links, total."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import orjson

from dicomhub.fhir.search.expressions import SearchQuery
from dicomhub.fhir.search.subset import subset
from dicomhub.fhir.service import ResourceRow, format_instant

__all__ = ["Page", "search_links", "searchset"]


@dataclass(frozen=True, slots=True)
class Page:
    """What a search found for one page."""

    matches: Sequence[ResourceRow]
    included: Sequence[ResourceRow]
    has_more: bool
    total: int | None


def _url(base: str, path: str) -> str:
    """Absolute under `base`; relative when no base is known (GET entries of a Bundle)."""
    return f"{base}/{path}" if base else path


def search_links(base: str, q: SearchQuery, has_more: bool) -> list[dict[str, str]]:
    """self / next / previous (R4 3.1.1.2.1): the parameters the server understood, with
    `_offset` moved; ignored parameters are left out of self, as the spec asks."""
    kept = [(k, v) for k, v in q.accepted if k not in ("_offset", "_count")]
    given_count = any(k == "_count" for k, _ in q.accepted)

    def at(offset: int) -> str:
        items = list(kept)
        if given_count or offset:
            items.append(("_count", str(q.count)))
        if offset:
            items.append(("_offset", str(offset)))
        query = urlencode(items)
        return _url(base, q.res_type) + (f"?{query}" if query else "")

    links = [{"relation": "self", "url": at(q.offset)}]
    if has_more:
        links.append({"relation": "next", "url": at(q.offset + q.count)})
    if q.offset > 0:
        links.append({"relation": "previous", "url": at(max(q.offset - q.count, 0))})
    return links


def _resource(row: ResourceRow, q: SearchQuery, raw: bool) -> Any:
    assert row.body is not None
    subsetting = q.elements is not None or q.summary in ("true", "text", "data")
    if not subsetting:
        # The stored JSON goes out as it is: no parse and re-serialization per entry.
        return orjson.Fragment(row.body) if raw else orjson.loads(row.body)
    return subset(orjson.loads(row.body), q.summary, q.elements)


def _outcome(q: SearchQuery) -> dict[str, Any]:
    issues = [
        {
            "severity": "warning",
            "code": "not-supported",
            "diagnostics": f"search parameter '{name}' is not supported on {q.res_type}; "
            "it was ignored (send Prefer: handling=strict to be refused instead)",
        }
        for name in q.unknown
    ]
    return {"resourceType": "OperationOutcome", "issue": issues}


def searchset(base: str, q: SearchQuery, page: Page, *, raw: bool = True) -> dict[str, Any]:
    """raw: stored bodies as orjson Fragments (for the HTTP answer), else parsed JSON."""
    entries: list[dict[str, Any]] = []
    for mode, rows in (("match", page.matches), ("include", page.included)):
        for row in rows:
            entries.append(
                {
                    "fullUrl": _url(base, f"{row.res_type}/{row.res_id}"),
                    "resource": _resource(row, q, raw),
                    "search": {"mode": mode},
                }
            )
    if q.unknown:
        entries.append({"resource": _outcome(q), "search": {"mode": "outcome"}})
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": format_instant(datetime.now(UTC))},
        "type": "searchset",
    }
    if page.total is not None:
        bundle["total"] = page.total
    bundle["link"] = search_links(base, q, page.has_more)
    if entries:
        bundle["entry"] = entries
    return bundle
