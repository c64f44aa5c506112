"""Bulk load of FHIR resources (NDJSON bulk-export files and Bundles) through the store's rules.

Every resource is validated and indexed exactly as a PUT would do; the work is batched (one
transaction per few hundred resources) and validation runs in worker processes.
"""

from __future__ import annotations

import gc
import logging
import os
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection

from dicomhub.context import RequestContext
from dicomhub.errors import DicomhubError
from dicomhub.fhir.references import iter_references, rewrite_references
from dicomhub.fhir.search.extract import extract
from dicomhub.fhir.search.rows import RowTuples
from dicomhub.fhir.service import FhirService, format_instant
from dicomhub.fhir.validation import validate_resource
from dicomhub.storage.fhir import resources as store
from dicomhub.storage.fhir.resources import NewVersion

__all__ = ["BulkLoader", "LoadReport", "read_resources"]

log = logging.getLogger(__name__)

_BATCH = 500
# Resources per task sent to a validation worker.
_CHUNK = 50
# Targets of Synthea's conditional references (`Practitioner?identifier=...`) go first, then
# patients, so that references resolve while the rest loads.
_FIRST = ("Organization", "Location", "Practitioner", "PractitionerRole", "Patient")


@dataclass
class LoadReport:
    loaded: Counter[str] = field(default_factory=Counter)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (where, why)
    unresolved: Counter[str] = field(default_factory=Counter)  # conditional references left as is

    @property
    def total(self) -> int:
        return sum(self.loaded.values())


def read_resources(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, resource) from an NDJSON file (one per line) or a JSON Bundle/resource file."""
    if path.suffix.lower() in (".ndjson", ".jsonl"):
        with path.open("rb") as fh:
            for number, line in enumerate(fh, 1):
                if line.strip():
                    where = f"{path.name}:{number}"
                    try:
                        yield where, orjson.loads(line)
                    except orjson.JSONDecodeError as exc:
                        yield where, ValueError(f"not JSON: {exc}")
        return
    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        yield path.name, ValueError(f"not JSON: {exc}")
        return
    if isinstance(data, dict) and data.get("resourceType") == "Bundle":
        yield from _bundle_resources(path.name, data)
    else:
        yield path.name, data


def _bundle_resources(name: str, bundle: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """The resources of a Bundle's entries, with references to other entries' fullUrl
    (`urn:uuid:...`, absolute URLs) rewritten to `Type/id`, as a transaction would do.

    A resource without an id takes the one of its `urn:uuid:` fullUrl or PUT url, or a new one
    when its entry is a POST (a create lets the server choose).
    """
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        yield name, ValueError("Bundle.entry is not a list")
        return
    found: list[tuple[str, Any]] = []
    ids: dict[str, str] = {}
    for i, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if resource is None:
            continue  # DELETE or GET entries: nothing to load
        where = f"{name} entry {i}"
        if isinstance(resource, dict) and not isinstance(resource.get("id"), str):
            given = _entry_id(entry)
            if given is not None:
                resource = {**resource, "id": given}
        full_url = entry.get("fullUrl")
        if (
            isinstance(resource, dict)
            and isinstance(full_url, str)
            and isinstance(resource.get("id"), str)
            and isinstance(resource.get("resourceType"), str)
        ):
            ids[full_url] = f"{resource['resourceType']}/{resource['id']}"
        found.append((where, resource))
    if ids:
        for _, resource in found:
            rewrite_references(resource, ids.get)
    yield from found


def _entry_id(entry: dict[str, Any]) -> str | None:
    full_url = entry.get("fullUrl")
    if isinstance(full_url, str) and full_url.startswith("urn:uuid:"):
        return full_url.removeprefix("urn:uuid:")
    request = entry.get("request")
    url = request.get("url") if isinstance(request, dict) else None
    if not isinstance(request, dict) or not isinstance(url, str):
        return None
    method = str(request.get("method", "")).upper()
    path = url.split("?", 1)[0].strip("/").split("/")
    if method == "PUT" and len(path) == 2:
        return path[1]
    if method == "POST" and "?" not in url:
        return str(uuid.uuid4())
    return None


def _prepare(resource: dict[str, Any]) -> tuple[RowTuples | None, str | None]:
    """Validate and index one resource (meta.lastUpdated already set): (rows, problem)."""
    try:
        validate_resource(resource)
        return extract(resource).as_tuples(), None
    except DicomhubError as exc:
        return None, exc.message
    except ValueError as exc:
        return None, f"cannot be indexed: {exc}"


def _prepare_all(resources: list[dict[str, Any]]) -> list[tuple[RowTuples | None, str | None]]:
    """Worker side: a chunk of resources. Only rows and problems travel back, not resources."""
    return [_prepare(r) for r in resources]


@dataclass
class _Staged:
    """A batch whose resources are being validated and indexed (in workers, or already done)."""

    ready: list[tuple[str, dict[str, Any]]]
    now: datetime
    results: (
        list[Future[list[tuple[RowTuples | None, str | None]]]]
        | list[tuple[RowTuples | None, str | None]]
    )
    size: int


@dataclass
class BulkLoader:
    """Loads resources keeping their ids (update-as-create, as bulk loaders rely on)."""

    service: FhirService
    workers: int = max(1, min(4, os.cpu_count() or 1))
    _identifiers: dict[tuple[str, str, str], str] = field(default_factory=dict)

    def load(
        self,
        ctx: RequestContext,
        sources: Iterable[tuple[str, Any]],
        progress: Callable[[int], None] = lambda n: None,
        total: Callable[[int], None] = lambda n: None,
    ) -> LoadReport:
        """Load `sources` (read here, all of them first); `total` hears how many there are."""
        report = LoadReport()
        pool = ProcessPoolExecutor(self.workers) if self.workers > 1 else None
        if pool is not None:
            # Fork the workers now, while the process is small: forked after the input is
            # read, each would start with all of it, which its collector then touches.
            pool.submit(int).result()
        frozen = False
        try:
            items = _read_all(sources)
            frozen = True
            total(len(items))
            items = _last_occurrences(items, progress)
            order = {t: i for i, t in enumerate(_FIRST)}
            items.sort(key=lambda it: order.get(_type_of(it[1]), len(order)))
            # Two batches in flight: the workers validate batch n+1 while batch n is written.
            waiting: _Staged | None = None
            for start in range(0, len(items), _BATCH):
                staged = self._stage(ctx, items[start : start + _BATCH], report, pool)
                if waiting is not None:
                    self._finish(waiting, report)
                    progress(waiting.size)
                waiting = staged
            if waiting is not None:
                self._finish(waiting, report)
                progress(waiting.size)
        finally:
            if frozen:
                gc.unfreeze()
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        return report

    def _stage(
        self,
        ctx: RequestContext,
        batch: list[tuple[str, Any]],
        report: LoadReport,
        pool: ProcessPoolExecutor | None,
    ) -> _Staged:
        """Stamp, resolve conditional references, and hand the batch to the workers."""
        now = ctx.now()
        stamped = format_instant(now)
        ready: list[tuple[str, dict[str, Any]]] = []
        for where, resource in batch:
            if isinstance(resource, Exception):
                report.failed.append((where, str(resource)))
                continue
            if not isinstance(resource, dict) or not isinstance(resource.get("id"), str):
                report.failed.append(
                    (where, "a bulk-loaded resource needs a resourceType and an id")
                )
                continue
            resource["meta"] = {**(resource.get("meta") or {}), "lastUpdated": stamped}
            ready.append((where, resource))
        # the batch's own identifiers first: a reference may name a resource loaded beside it
        # (or in the batch still being written, which is not in the database yet)
        for _, resource in ready:
            self._remember(resource)
        with self.service.db.read() as conn:
            for _, resource in ready:
                self._resolve(conn, resource, report)
        resources = [r for _, r in ready]
        if pool is None:
            return _Staged(ready, now, [_prepare(r) for r in resources], len(batch))
        futures = [
            pool.submit(_prepare_all, resources[i : i + _CHUNK])
            for i in range(0, len(resources), _CHUNK)
        ]
        return _Staged(ready, now, futures, len(batch))

    def _finish(self, staged: _Staged, report: LoadReport) -> None:
        """Wait for the batch's rows and write the valid resources in one transaction."""
        results: list[tuple[RowTuples | None, str | None]] = []
        for item in staged.results:
            if isinstance(item, Future):
                results.extend(item.result())
            else:
                results.append(item)
        good: list[tuple[dict[str, Any], RowTuples]] = []
        for (where, resource), (rows, problem) in zip(staged.ready, results, strict=True):
            if problem is not None or rows is None:
                report.failed.append((where, problem or "invalid"))
            else:
                good.append((resource, rows))
        if good:
            self.service.db.write(lambda conn: self._write(conn, good, staged.now))
        for resource, _ in good:
            report.loaded[resource["resourceType"]] += 1

    def _write(
        self, conn: Connection, good: list[tuple[dict[str, Any], RowTuples]], now: datetime
    ) -> None:
        by_type: dict[str, list[str]] = {}
        for resource, _ in good:
            by_type.setdefault(resource["resourceType"], []).append(resource["id"])
        current = {
            (t, rid): row
            for t, ids in by_type.items()
            for rid, row in store.find_many(conn, t, ids).items()
        }
        versions = []
        for resource, rows in good:
            key = (resource["resourceType"], resource["id"])
            row = current.get(key)
            version = (row.version if row is not None else 0) + 1
            resource["meta"]["versionId"] = str(version)
            versions.append(
                NewVersion(
                    key[0],
                    key[1],
                    version,
                    now,
                    "PUT",
                    orjson.dumps(resource),
                    rows,
                    pk=row.pk if row is not None else None,
                )
            )
        store.write_versions(conn, versions)

    def _remember(self, resource: dict[str, Any]) -> None:
        for ident in resource.get("identifier") or []:
            if isinstance(ident, dict) and "value" in ident:
                key = (resource["resourceType"], str(ident.get("system", "")), str(ident["value"]))
                self._identifiers[key] = resource["id"]

    def _resolve(self, conn: Connection, resource: dict[str, Any], report: LoadReport) -> None:
        """`Type?identifier=system|value` references to `Type/id`, from what is loaded or stored."""
        if not any("?" in ref for ref in iter_references(resource)):
            return

        def replace(ref: str) -> str | None:
            if "?identifier=" not in ref or ref.startswith(("http:", "https:", "urn:")):
                return None
            target, _, value = ref.partition("?identifier=")
            system, _, code = value.rpartition("|")
            known = self._identifiers.get((target, system, code))
            if known is None:
                found = self.service.matcher.match(conn, target, [("identifier", value)], limit=2)
                if len(found) == 1:
                    known = found[0].res_id
                    self._identifiers[(target, system, code)] = known
            if known is None:
                report.unresolved[target] += 1
                return None
            return f"{target}/{known}"

        rewrite_references(resource, replace)


def _read_all(sources: Iterable[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Every source, parsed, then frozen out of the cyclic collector's scans.

    Millions of parsed JSON objects (which hold no cycles) live until the load ends: collected
    while they are read, they cost three times the parse (12 of 16 s for 553,327 resources),
    and every later full collection would walk them all again. The caller unfreezes them.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        return list(sources)
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def _last_occurrences(
    items: list[tuple[str, Any]], progress: Callable[[int], None]
) -> list[tuple[str, Any]]:
    """A resource twice in one load is written once, as its last occurrence (one version),
    as a bulk upsert does; the earlier ones count as done for the progress bar."""
    last: dict[tuple[str, str], int] = {}
    for index, (_, resource) in enumerate(items):
        if isinstance(resource, dict) and isinstance(resource.get("id"), str):
            last[(_type_of(resource), resource["id"])] = index
    kept = [
        item
        for index, item in enumerate(items)
        if not isinstance(item[1], dict)
        or not isinstance(item[1].get("id"), str)
        or last[(_type_of(item[1]), item[1]["id"])] == index
    ]
    if len(kept) < len(items):
        progress(len(items) - len(kept))
    return kept


def _type_of(resource: Any) -> str:
    return str(resource.get("resourceType", "")) if isinstance(resource, dict) else ""
