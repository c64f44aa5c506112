"""`transaction` and `batch` Bundles (FHIR R4 3.1.0.11): processing order, urn:uuid references."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson
from sqlalchemy import Connection

from dicomhub.context import RequestContext
from dicomhub.errors import DicomhubError, InvalidInput, PreconditionFailed, Unsupported
from dicomhub.fhir.references import iter_references, rewrite_references
from dicomhub.fhir.service import FhirService, Written, format_instant, parse_etag, query_pairs
from dicomhub.fhir.validation import check_id, known_type, validate_resource

__all__ = ["BundleProcessor", "EntryResult"]

# R4 3.1.0.11.2: deletes, then creates, then updates, then reads, whatever the entry order.
_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
_STATUS_TEXT = {200: "OK", 201: "Created", 204: "No Content"}


@dataclass
class EntryResult:
    status: int
    written: Written | None = None
    resource: Any = None  # a GET's answer (resource or searchset Bundle)
    outcome: dict[str, Any] | None = None

    def response(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": f"{self.status} {_STATUS_TEXT.get(self.status, '')}".strip()
        }
        w = self.written
        if w is not None and w.body is not None:
            out["location"] = f"{w.res_type}/{w.res_id}/_history/{w.version}"
            out["etag"] = f'W/"{w.version}"'
            out["lastModified"] = format_instant(w.last_updated)
        if self.outcome is not None:
            out["outcome"] = self.outcome
        entry: dict[str, Any] = {"response": out}
        if self.resource is not None:
            entry["resource"] = self.resource
        return entry


@dataclass
class _Entry:
    index: int
    method: str
    url: str
    full_url: str | None
    resource: Any
    request: dict[str, Any]


def _target(url: str) -> tuple[str, str | None, str | None]:
    """`Patient/1` → (Patient, 1, None); `Patient?x=y` → (Patient, None, x=y); `Patient` → (…)."""
    path = urlsplit(url)
    parts = [p for p in path.path.split("/") if p]
    if not parts or not known_type(parts[0]):
        raise InvalidInput(f"request.url '{url}' does not name a resource type")
    res_type = parts[0]
    res_id = parts[1] if len(parts) > 1 else None
    return res_type, res_id, path.query or None


# A GET entry: (connection, url) → (status, resource or Bundle).
Reader = Callable[[Connection, str], tuple[int, Any]]
# A failed batch entry: error → (HTTP status, OperationOutcome); the transport supplies it.
Describe = Callable[[DicomhubError], tuple[int, dict[str, Any]]]


@dataclass
class BundleProcessor:
    service: FhirService
    read_entry: Reader
    describe: Describe

    def process(self, ctx: RequestContext, bundle: Any) -> dict[str, Any]:
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise InvalidInput("POST to the base expects a Bundle")
        kind = bundle.get("type")
        if kind not in ("transaction", "batch"):
            raise InvalidInput(
                f"a Bundle of type '{kind}' cannot be processed; use transaction or batch"
            )
        entries = self._entries(bundle)
        if kind == "transaction":
            results = self.service.db.write(lambda conn: self._transaction(conn, ctx, entries))
        else:
            results = [self._batch_entry(ctx, e) for e in entries]
        return {
            "resourceType": "Bundle",
            "id": str(uuid.uuid4()),
            "type": f"{kind}-response",
            "entry": [r.response() for r in results],
        }

    def _entries(self, bundle: dict[str, Any]) -> list[_Entry]:
        raw = bundle.get("entry") or []
        if not isinstance(raw, list):
            raise InvalidInput("Bundle.entry must be a list")
        out = []
        for i, entry in enumerate(raw):
            where = f"Bundle.entry[{i}]"
            request = entry.get("request") if isinstance(entry, dict) else None
            if not isinstance(request, dict):
                raise InvalidInput(f"{where} has no request", locations=(f"{where}.request",))
            method = str(request.get("method", "")).upper()
            url = request.get("url")
            if method not in _ORDER or not isinstance(url, str) or not url:
                raise InvalidInput(
                    f"{where}.request needs a method (GET, POST, PUT, DELETE) and a url",
                    locations=(f"{where}.request",),
                )
            if method == "PATCH":
                raise Unsupported(f"{where}: PATCH is not supported")
            resource = entry.get("resource")
            if method in ("POST", "PUT") and not isinstance(resource, dict):
                raise InvalidInput(f"{where}: {method} needs a resource", locations=(where,))
            out.append(_Entry(i, method, url, entry.get("fullUrl"), resource, request))
        return out

    def _transaction(
        self, conn: Connection, ctx: RequestContext, entries: list[_Entry]
    ) -> list[EntryResult]:
        results: dict[int, EntryResult] = {}
        ordered = sorted(entries, key=_processing_order)
        # First pass: decide every id, so that references between entries can be rewritten.
        ids: dict[str, str] = {}
        plans: dict[int, tuple[str, str, Written | None]] = {}
        touched: dict[tuple[str, str], int] = {}

        def claim(res_type: str, res_id: str, e: _Entry) -> None:
            """R4 3.1.0.11.2: the identities of steps 1-3 (DELETE, POST, PUT) must not overlap."""
            first = touched.setdefault((res_type, res_id), e.index)
            if first != e.index:
                raise InvalidInput(
                    f"{res_type}/{res_id} is also the target of Bundle.entry[{first}]; a "
                    "transaction changes each resource once at most"
                )

        for e in ordered:
            try:
                if e.method == "DELETE":
                    results[e.index] = self._delete(conn, ctx, e, claim)
                elif e.method in ("POST", "PUT"):
                    res_type = e.resource.get("resourceType")
                    plan = self._plan(conn, e)
                    plans[e.index] = plan
                    if plan[2] is None:
                        claim(plan[0], plan[1], e)
                    if e.full_url:
                        ids[e.full_url] = f"{plan[0]}/{plan[1]}"
                    if res_type != plan[0]:
                        raise InvalidInput(
                            f"the resource is a {res_type}, request.url names {plan[0]}"
                        )
            except DicomhubError as exc:
                raise _in_entry(exc, e) from exc

        def replace(ref: str) -> str | None:
            return ids.get(ref)

        for e in ordered:
            try:
                if e.method in ("POST", "PUT"):
                    res_type, res_id, existing = plans[e.index]
                    if existing is not None:
                        results[e.index] = EntryResult(200, existing)
                        continue
                    rewrite_references(e.resource, replace)
                    body = {**e.resource}
                    if e.method == "PUT":
                        body["id"] = res_id
                    else:
                        body.pop("id", None)
                    validate_resource(body, res_type)
                    if e.method == "POST":
                        w = self.service.create_in(conn, ctx, body, res_id=res_id)
                    else:
                        expected = parse_etag(e.request.get("ifMatch"))
                        w = self.service.update_in(conn, ctx, body, res_type, res_id, expected)
                    results[e.index] = EntryResult(201 if w.created else 200, w)
                elif e.method in ("GET", "HEAD"):
                    results[e.index] = self._get(conn, e)
            except DicomhubError as exc:
                raise _in_entry(exc, e) from exc
        return [results[e.index] for e in entries]

    def _get(self, conn: Connection, e: _Entry) -> EntryResult:
        """A read or vread here (inside the transaction); anything else goes to `read_entry`."""
        parts = urlsplit(e.url)
        segments = [p for p in parts.path.split("/") if p]
        plain_read = len(segments) == 2 or (len(segments) == 4 and segments[2] == "_history")
        if parts.query or parts.scheme or not plain_read or segments[1].startswith("_"):
            status, answer = self.read_entry(conn, e.url)
            return EntryResult(status, resource=answer)
        res_type, res_id = segments[0], segments[1]
        if not known_type(res_type):
            raise InvalidInput(f"request.url '{e.url}' does not name a resource type")
        if len(segments) == 2:
            row = self.service.read_in(conn, res_type, res_id)
            version, last_updated, body = row.version, row.last_updated, row.body
        else:
            if not segments[3].isdigit():
                raise InvalidInput(f"version '{segments[3]}' is not a number")
            found = self.service.vread_in(conn, res_type, res_id, int(segments[3]))
            version, last_updated, body = found.version, found.last_updated, found.body
        assert body is not None
        written = Written(res_type, res_id, version, last_updated, body)
        return EntryResult(200, written, resource=orjson.Fragment(body))

    def _plan(self, conn: Connection, e: _Entry) -> tuple[str, str, Written | None]:
        """(type, id, the match of a conditional create that writes nothing)."""
        res_type, res_id, query = _target(e.url)
        if e.method == "POST":
            if res_id is not None:
                raise InvalidInput(f"POST {e.url}: a create goes to the type, not to an id")
            condition = e.request.get("ifNoneExist")
            if condition:
                found = self.service.matcher.match(conn, res_type, query_pairs(condition), limit=2)
                if len(found) > 1:
                    raise PreconditionFailed(f"ifNoneExist '{condition}' matches several")
                if found:
                    row = found[0]
                    return (
                        res_type,
                        row.res_id,
                        Written(
                            res_type,
                            row.res_id,
                            row.version,
                            row.last_updated,
                            row.body,
                            existing=True,
                        ),
                    )
            return res_type, str(uuid.uuid4()), None
        given = e.resource.get("id")
        if query is not None:  # conditional update
            found = self.service.matcher.match(conn, res_type, query_pairs(query), limit=2)
            if len(found) > 1:
                raise PreconditionFailed(f"PUT {e.url} matches several {res_type} resources")
            if found:
                _same_id(given, found[0].res_id, e)
                return res_type, found[0].res_id, None
            res_id = str(given or uuid.uuid4())
            check_id(res_type, res_id)
            return res_type, res_id, None
        if res_id is None:
            raise InvalidInput(f"PUT {e.url}: an update names the resource's id")
        check_id(res_type, res_id)
        _same_id(given, res_id, e)
        return res_type, res_id, None

    def _delete(
        self,
        conn: Connection,
        ctx: RequestContext,
        e: _Entry,
        claim: Callable[[str, str, _Entry], None],
    ) -> EntryResult:
        res_type, res_id, query = _target(e.url)
        if query is not None:
            found = self.service.matcher.match(conn, res_type, query_pairs(query), limit=2)
            if len(found) > 1:
                raise PreconditionFailed(f"DELETE {e.url} matches several {res_type} resources")
            if not found:
                return EntryResult(204)
            res_id = found[0].res_id
        if res_id is None:
            raise InvalidInput(f"DELETE {e.url}: name the resource or give a query")
        claim(res_type, res_id, e)
        expected = parse_etag(e.request.get("ifMatch"))
        w = self.service.delete_in(conn, ctx, res_type, res_id, expected)
        return EntryResult(204 if w is None else 200, w)

    def _batch_entry(self, ctx: RequestContext, e: _Entry) -> EntryResult:
        """One batch entry in its own transaction; a failure is reported in its response."""
        try:
            if e.method in ("GET", "HEAD"):
                with self.service.db.read() as conn:
                    return self._get(conn, e)
            results = self.service.db.write(lambda conn: self._transaction(conn, ctx, [e]))
            return results[0]
        except DicomhubError as exc:
            status, outcome = self.describe(exc)
            return EntryResult(status, outcome=outcome)


def _has_conditional_reference(resource: Any) -> bool:
    return any(
        "?" in ref and not ref.startswith(("http:", "https:", "urn:", "#"))
        for ref in iter_references(resource)
    )


def _processing_order(e: _Entry) -> tuple[int, int]:
    """DELETE, POST, PUT, GET (R4 3.1.0.11.2); conditional references are resolved after the
    creates and updates (step 5), so the entries holding them are written after the others."""
    step = _ORDER[e.method]
    if e.method in ("POST", "PUT") and _has_conditional_reference(e.resource):
        step += 2  # POST 3, PUT 4: after every other write
    elif step == _ORDER["GET"]:
        step = 5  # reads after all the writes
    return step, e.index


def _same_id(given: Any, res_id: str, e: _Entry) -> None:
    """An update's resource carries the id it updates, or none (R4 3.1.0.4.1)."""
    if given is not None and given != res_id:
        raise InvalidInput(
            f"the resource's id '{given}' differs from {res_id}, the resource {e.url} names",
            locations=(f"Bundle.entry[{e.index}].resource.id",),
        )


def _in_entry(exc: DicomhubError, e: _Entry) -> DicomhubError:
    """The same error, saying which entry failed (the whole transaction is rolled back)."""
    kind = type(exc)
    where = f"Bundle.entry[{e.index}]"
    return kind(f"{where} ({e.method} {e.url}): {exc.message}", locations=exc.locations or (where,))
