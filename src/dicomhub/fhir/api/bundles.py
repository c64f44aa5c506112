"""Bundles the API answers with: history and searchset, with paging links (R4 3.1.0.9.3)."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

from dicomhub.fhir.service import VersionRow, format_instant

__all__ = ["history_bundle", "page_links"]


def page_links(
    url: str, offset: int, count: int, total: int | None, has_more: bool
) -> list[dict[str, str]]:
    """self / next / previous links: the request's own query with `_offset` moved."""

    def at(new_offset: int) -> str:
        parts = urlsplit(url)
        query = [
            (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "_offset"
        ]
        if new_offset:
            query.append(("_offset", str(new_offset)))
        return urlunsplit(parts._replace(query=urlencode(query)))

    links = [{"relation": "self", "url": at(offset)}]
    if has_more:
        links.append({"relation": "next", "url": at(offset + count)})
    if offset > 0:
        links.append({"relation": "previous", "url": at(max(offset - count, 0))})
    return links


def history_bundle(
    base: str, url: str, rows: list[VersionRow], total: int, count: int, offset: int
) -> dict[str, Any]:
    entries = []
    for row in rows:
        full = f"{base}/{row.res_type}/{row.res_id}"
        entry: dict[str, Any] = {"fullUrl": full}
        if row.body is not None:
            entry["resource"] = orjson.Fragment(row.body)
        request_url = row.res_type if row.method == "POST" else f"{row.res_type}/{row.res_id}"
        entry["request"] = {"method": row.method, "url": request_url}
        status = {"POST": "201 Created", "PUT": "200 OK", "DELETE": "204 No Content"}[row.method]
        entry["response"] = {
            "status": status,
            "etag": f'W/"{row.version}"',
            "lastModified": format_instant(row.last_updated),
        }
        entries.append(entry)
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": "history",
        "total": total,
        # _count=0 asks for the total only: no next page, which would be this one again.
        "link": page_links(url, offset, count, total, count > 0 and offset + len(rows) < total),
        "entry": entries,
    }
