"""Where synced resources go: the embedded FHIR store, or an external FHIR R4 server over HTTP.

Both offer the same four operations a reconciler needs (search, conditional create, update
with If-Match, delete with If-Match); failures are TargetError, saying whether a retry may help.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar
from urllib.parse import urlencode

import httpx
import orjson
from sqlalchemy import Connection

from dicomhub.context import Origin, RequestContext
from dicomhub.errors import DicomhubError, PreconditionFailed, Unavailable
from dicomhub.fhir.pending import PendingVersions
from dicomhub.fhir.references import iter_references
from dicomhub.fhir.search_service import FhirSearch
from dicomhub.fhir.service import FhirService, query_pairs
from dicomhub.fhir.validation import validate_resource

__all__ = [
    "BearerAuth",
    "ClientCredentials",
    "EmbeddedTarget",
    "FhirTarget",
    "HttpTarget",
    "StaticToken",
    "TargetError",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

_RETRY_STATUSES = frozenset({408, 412, 425, 429, 500, 502, 503, 504})


class TargetError(Exception):
    """A FHIR operation failed; `retryable` when trying again later may succeed."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


class FhirTarget(Protocol):
    @property
    def name(self) -> str:
        """The key of this target's cursor ("embedded", or the external base URL)."""
        ...

    def search(self, res_type: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]: ...

    def create(self, resource: dict[str, Any], if_none_exist: str) -> dict[str, Any]: ...

    def update(self, resource: dict[str, Any], version: str | None) -> dict[str, Any]: ...

    def delete(self, res_type: str, res_id: str, version: str | None) -> None: ...

    def together(self, work: Callable[[], T]) -> T:
        """Run `work` (several operations) as one unit when the target can: all or nothing."""
        ...


def _has_conditional_reference(resource: dict[str, Any]) -> bool:
    """Whether the resource holds a `Type?query` reference (the store resolves it by a search)."""
    return any("?" in ref for ref in iter_references(resource))


def _etag(version: str | None) -> str | None:
    return f'W/"{version}"' if version else None


@dataclass
class EmbeddedTarget:
    """The FHIR store of this dicomhub, called in-process (no HTTP).

    Inside `together(work)` every operation shares one write transaction: the sync reconciles
    a chunk of studies per commit, and a failure rolls the whole chunk back. Its creates and
    updates are written in one batch at the end (or before a search that could see them).
    """

    service: FhirService
    search_service: FhirSearch
    name: str = "embedded"
    ctx: RequestContext = field(
        default_factory=lambda: RequestContext(origin=Origin.INTERNAL, principal="dicomhub-sync")
    )
    _conn: Connection | None = None
    _pending: PendingVersions = field(default_factory=PendingVersions)
    # (type, query) of searches that found nothing in the current transaction, since when
    # nothing of that type was written; see `create`.
    _absent: set[tuple[str, tuple[tuple[str, str], ...]]] = field(default_factory=set)

    def together(self, work: Callable[[], T]) -> T:
        def run(conn: Connection) -> T:
            self._conn = conn
            try:
                done = work()
                self._pending.flush(conn)
                return done
            finally:
                self._conn = None
                self._pending.clear()
                self._absent.clear()

        return self._call(lambda: self.service.db.write(run))

    def search(self, res_type: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
        def match(conn: Connection) -> list[Any]:
            self._pending.before_search(conn, res_type, params)
            found = self.search_service.match(conn, res_type, params, limit=100)
            if not found and self._conn is not None:
                self._absent.add((res_type, tuple(params)))
            return found

        # through _call: a database error here is a TargetError to retry, like one in a write
        return [orjson.loads(r.body) for r in self._call(lambda: self._in(match)) if r.body]

    def create(self, resource: dict[str, Any], if_none_exist: str) -> dict[str, Any]:
        validate_resource(resource)
        res_type = str(resource["resourceType"])

        def create(conn: Connection) -> Any:
            condition = query_pairs(if_none_exist)
            # On SQLite this transaction is the only writer (BEGIN IMMEDIATE): a search that
            # found nothing in it still finds nothing, unless this transaction wrote that type.
            searched = (res_type, tuple(condition)) in self._absent and self.service.db.is_sqlite
            self._pending.before_search(conn, res_type, condition)
            self._before_references(conn, resource)
            self._wrote(res_type)
            return self.service.create_in(
                conn,
                self.ctx,
                resource,
                None if searched else if_none_exist,
                into=self._batch(),
            )

        written = self._call(lambda: self._in(create))
        assert written.body is not None
        return dict(orjson.loads(written.body))

    def update(self, resource: dict[str, Any], version: str | None) -> dict[str, Any]:
        res_type, res_id = resource["resourceType"], resource["id"]
        validate_resource(resource, res_type)
        expected = int(version) if version else None

        def update(conn: Connection) -> Any:
            self._pending.before_read(conn, res_type, res_id)
            self._before_references(conn, resource)
            self._wrote(res_type)
            return self.service.update_in(
                conn, self.ctx, resource, res_type, res_id, expected, into=self._batch()
            )

        written = self._call(lambda: self._in(update))
        assert written.body is not None
        return dict(orjson.loads(written.body))

    def delete(self, res_type: str, res_id: str, version: str | None) -> None:
        expected = int(version) if version else None

        def delete(conn: Connection) -> None:
            self._pending.flush(conn)
            self._wrote(res_type)
            self.service.delete_in(conn, self.ctx, res_type, res_id, expected)

        self._call(lambda: self._in(delete))

    def _before_references(self, conn: Connection, resource: dict[str, Any]) -> None:
        """A `Type?query` reference is resolved by a search, which must see what is pending.
        Looked for only when something is pending: the walk costs 0.5 ms on an ImagingStudy
        of 540 instances, at every pass over a growing study."""
        if self._pending.versions and _has_conditional_reference(resource):
            self._pending.flush(conn)

    def _wrote(self, res_type: str) -> None:
        self._absent = {key for key in self._absent if key[0] != res_type}

    def _batch(self) -> PendingVersions | None:
        """Where writes go: the pending batch inside `together`, else straight to the store."""
        return self._pending if self._conn is not None else None

    def _in(self, work: Callable[[Connection], T]) -> T:
        """`work` in the chunk's transaction, or in one of its own."""
        if self._conn is not None:
            return work(self._conn)
        return self.service.db.write(work)

    @staticmethod
    def _call(work: Callable[[], T]) -> T:
        try:
            return work()
        except PreconditionFailed as exc:
            raise TargetError(exc.message, retryable=True, status=412) from exc
        except Unavailable as exc:  # the database is busy or down: later may work
            raise TargetError(exc.message, retryable=True, status=503) from exc
        except DicomhubError as exc:
            raise TargetError(exc.message, retryable=False) from exc


class BearerAuth(Protocol):
    def token(self, refresh: bool = False) -> str | None: ...


@dataclass
class StaticToken:
    value: str | None

    def token(self, refresh: bool = False) -> str | None:
        return self.value


@dataclass
class ClientCredentials:
    """OAuth2 client-credentials grant (RFC 6749 4.4): a token fetched and renewed as needed."""

    token_url: str
    client_id: str
    client_secret: str
    scope: str | None = None
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))
    _token: str | None = None
    _expires: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def token(self, refresh: bool = False) -> str | None:
        with self._lock:
            if refresh or self._token is None or time.monotonic() > self._expires - 30:
                self._fetch()
            return self._token

    def _fetch(self) -> None:
        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        try:
            answer = self.http.post(
                self.token_url, data=form, auth=(self.client_id, self.client_secret)
            )
        except httpx.HTTPError as exc:
            raise TargetError(f"token endpoint unreachable: {exc}", retryable=True) from exc
        if answer.status_code != 200:
            raise TargetError(
                f"token endpoint answered {answer.status_code}: {answer.text[:200]}",
                retryable=answer.status_code in _RETRY_STATUSES,
                status=answer.status_code,
            )
        body = answer.json()
        self._token = str(body["access_token"])
        self._expires = time.monotonic() + float(body.get("expires_in", 300))


@dataclass
class HttpTarget:
    """An external FHIR R4 server (HAPI, Azure, Google, AWS, another dicomhub)."""

    base: str
    auth: BearerAuth = field(default_factory=lambda: StaticToken(None))
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))

    @property
    def name(self) -> str:
        return self.base.rstrip("/")

    def together(self, work: Callable[[], T]) -> T:
        return work()  # one request per operation: nothing to share over HTTP

    def search(self, res_type: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
        bundle = self._request("GET", f"{res_type}?{urlencode([*params, ('_count', '100')])}")
        return [
            e["resource"]
            for e in bundle.get("entry", [])
            if e.get("search", {}).get("mode", "match") == "match" and "resource" in e
        ]

    def create(self, resource: dict[str, Any], if_none_exist: str) -> dict[str, Any]:
        return self._request(
            "POST",
            resource["resourceType"],
            body=resource,
            headers={"If-None-Exist": if_none_exist},
        )

    def update(self, resource: dict[str, Any], version: str | None) -> dict[str, Any]:
        etag = _etag(version)
        return self._request(
            "PUT",
            f"{resource['resourceType']}/{resource['id']}",
            body=resource,
            headers={"If-Match": etag} if etag else {},
        )

    def delete(self, res_type: str, res_id: str, version: str | None) -> None:
        etag = _etag(version)
        try:
            self._request(
                "DELETE", f"{res_type}/{res_id}", headers={"If-Match": etag} if etag else {}
            )
        except TargetError as exc:
            if exc.status not in (404, 410):  # already gone: what a delete wants
                raise

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        url = f"{self.name}/{path}"
        sent = {
            "Accept": "application/fhir+json",
            # the created or updated resource in the answer, not an empty body (HAPI, Azure)
            "Prefer": "return=representation",
            **(headers or {}),
        }
        content = orjson.dumps(body) if body is not None else None
        if content is not None:
            sent["Content-Type"] = "application/fhir+json"
        for refresh in (False, True):
            token = self.auth.token(refresh)
            if token:
                sent["Authorization"] = f"Bearer {token}"
            try:
                answer = self.http.request(method, url, content=content, headers=sent)
            except httpx.HTTPError as exc:
                raise TargetError(f"{method} {url}: {exc}", retryable=True) from exc
            if answer.status_code != 401 or refresh:
                break
        if answer.status_code >= 400:
            raise TargetError(
                f"{method} {url} answered {answer.status_code}: {answer.text[:300]}",
                retryable=answer.status_code in _RETRY_STATUSES,
                status=answer.status_code,
            )
        if not answer.content:
            return {}
        return dict(answer.json())
