"""DICOM -> FHIR sync into an external FHIR server over HTTP, with real processes on loopback.

Process B (`dicomhub serve`, its own sync off) plays the external FHIR R4 server. In front of it
runs a reverse proxy written here: it refuses requests without the right bearer token, hands
out OAuth2 client-credentials tokens, counts what passes, and slows down or fails requests on
demand. Process A (`dicomhub serve`, or `dicomhub sync`) archives DICOM and syncs it to B
through the proxy.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import httpx
import orjson
import psycopg
import pytest
from pydicom.uid import generate_uid

from tests.conftest import PG_ADMIN, require_postgres
from tests.dicomfiles import MR_IMAGE, make_instance, multipart_body

DICOMHUB = Path(sys.executable).parent / "dicomhub"
TOKEN = "s3cret"
DICOM_UID = "urn:dicom:uid"
# A SIGKILLed worker keeps the cursor's lease until it expires (worker.LEASE_SECONDS = 30 s):
# the restarted one waits that long before it may work.
LEASE_WAIT = 30.0

T = TypeVar("T")


# --- processes -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(**settings: str) -> dict[str, str]:
    """This environment without DICOMHUB_* variables, plus the given settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMHUB_")}
    env["COLUMNS"] = "400"  # rich folds lines at the terminal width (80 without a terminal)
    env.update({f"DICOMHUB_{name.upper()}": value for name, value in settings.items()})
    return env


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return f"--- {path.name} ---\n" + "\n".join(path.read_text().splitlines()[-lines:])
    except OSError:
        return f"--- {path.name}: no log ---"


@contextmanager
def _running(
    args: Sequence[str], *, log: Path, env: dict[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    """`dicomhub <args>` with its output in `log`; terminated (then killed) at the end."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(DICOMHUB), *args], cwd=log.parent, env=env, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
            proc.wait(timeout=15)


@dataclass
class Server:
    url: str
    log: Path
    proc: subprocess.Popen[bytes]


@contextmanager
def _serve(data_dir: Path, env: dict[str, str]) -> Iterator[Server]:
    """`dicomhub serve` on a free loopback port, once it answers /health."""
    port = _free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir.parent / f"{data_dir.name}-serve.log"
    args = ["serve", "--data-dir", str(data_dir), "--port", str(port)]
    with _running(args, log=log, env=env) as proc:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"serve exited {proc.returncode}\n{_tail(log)}"
            assert time.monotonic() < deadline, f"serve did not answer\n{_tail(log)}"
            with suppress(httpx.TransportError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            time.sleep(0.05)
        yield Server(url, log, proc)


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DICOMHUB), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _flat(text: str) -> str:
    """Whitespace and rich's table rules collapsed, for matching table rows."""
    return " ".join(text.replace("│", " ").replace("┃", " ").split())


def _eventually(
    what: str, probe: Callable[[], T | None], *, timeout: float = 20.0, logs: Sequence[Path] = ()
) -> T:
    """Poll until `probe` returns something other than None (a wait, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s\n" + "\n".join(map(_tail, logs)))
        time.sleep(0.1)


# --- the proxy in front of the external FHIR server -----------------------------------------


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    status: int
    headers: dict[str, str]  # request headers, lower-case names
    body: bytes


_FORWARDED_REQUEST = ("accept", "content-type", "if-none-exist", "if-match", "prefer")
_FORWARDED_RESPONSE = ("content-type", "etag", "location", "last-modified")


def _outcome(status: int, text: str) -> tuple[int, dict[str, str], bytes]:
    body = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "processing", "diagnostics": text}],
    }
    return status, {"Content-Type": "application/fhir+json"}, orjson.dumps(body)


class FhirProxy:
    """A reverse proxy to `upstream` that lets only known bearer tokens through.

    POST /token is an OAuth2 token endpoint (client credentials, HTTP basic client
    authentication) when `client` is given. `delay` slows every forwarded request; `fault`
    may answer a request with an error status instead of forwarding it.
    """

    def __init__(
        self, upstream: str, *, tokens: Sequence[str] = (), client: tuple[str, str] | None = None
    ) -> None:
        self.upstream = upstream
        self.tokens = set(tokens)
        self.client = client
        self.delay = 0.0
        self.fault: Callable[[str, str, bytes], int | None] = lambda method, path, body: None
        self.seen: list[Seen] = []
        self.token_requests: list[dict[str, str]] = []
        self.issued: list[str] = []
        self.lock = threading.Lock()
        self._http = httpx.Client(base_url=upstream, timeout=60)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FhirProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
        self._http.close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as httpx clients expect

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                proxy._handle(self)

            do_POST = do_PUT = do_DELETE = do_GET

        return Handler

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        length = int(req.headers.get("Content-Length") or 0)
        body = req.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in req.headers.items()}
        if req.command == "POST" and req.path == "/token":
            status, out_headers, content = self._token(headers, body)
        else:
            status, out_headers, content = self._forward(req.command, req.path, headers, body)
            with self.lock:
                self.seen.append(Seen(req.command, req.path, status, headers, body))
        try:
            req.send_response(status)
            for name, value in out_headers.items():
                req.send_header(name, value)
            req.send_header("Content-Length", str(len(content)))
            req.end_headers()
            req.wfile.write(content)
        except OSError:
            pass  # the client went away (a killed sync worker)

    def _token(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        form = dict(parse_qsl(body.decode()))
        authorization = headers.get("authorization", "")
        with self.lock:
            self.token_requests.append({**form, "authorization": authorization})
        json = {"Content-Type": "application/json", "Cache-Control": "no-store"}
        if self.client is None:
            return 404, json, b'{"error": "no token endpoint here"}'
        expected = "Basic " + base64.b64encode(":".join(self.client).encode()).decode()
        if authorization != expected:
            return 401, json, b'{"error": "invalid_client"}'
        if form.get("grant_type") != "client_credentials":
            return 400, json, b'{"error": "unsupported_grant_type"}'
        token = f"tok-{uuid.uuid4().hex}"
        with self.lock:
            self.tokens.add(token)
            self.issued.append(token)
        answer = {"access_token": token, "token_type": "bearer", "expires_in": 3600}
        return 200, json, orjson.dumps(answer)

    def _forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        with self.lock:
            allowed = scheme.lower() == "bearer" and token in self.tokens
        if not allowed:
            status, out, content = _outcome(401, "a valid bearer token is required")
            return status, {**out, "WWW-Authenticate": 'Bearer realm="fhir"'}, content
        if self.delay:
            time.sleep(self.delay)
        failure = self.fault(method, path, body)
        if failure is not None:
            return _outcome(failure, f"fault injected by the test proxy: {failure}")
        sent = {k: v for k, v in headers.items() if k in _FORWARDED_REQUEST}
        answer = self._http.request(method, path, content=body or None, headers=sent)
        kept = {k: v for k, v in answer.headers.items() if k.lower() in _FORWARDED_RESPONSE}
        return answer.status_code, kept, answer.content

    # what went through

    def requests(self) -> list[Seen]:
        with self.lock:
            return list(self.seen)

    def creates(self, res_type: str) -> list[Seen]:
        """Successful POSTs that created a resource of this type (201)."""
        return [
            s
            for s in self.requests()
            if s.method == "POST"
            and s.path.split("?")[0] == f"/fhir/{res_type}"
            and s.status == 201
        ]


def _fhir_resource_type(path: str) -> str:
    return path.split("?", maxsplit=1)[0].removeprefix("/fhir/").split("/")[0]


# --- DICOM studies ---------------------------------------------------------------------------


@dataclass
class Study:
    uid: str
    patient_id: str
    series: dict[str, list[str]] = field(default_factory=dict)  # series UID -> SOP UIDs
    parts: list[bytes] = field(default_factory=list)

    @property
    def instances(self) -> int:
        return sum(len(sops) for sops in self.series.values())


def _add_series(study: Study, modality: str, count: int, **attributes: Any) -> Study:
    """`count` instances of a new series in `study`."""
    series_uid = generate_uid()
    number = len(study.series) + 1
    study.series[series_uid] = []
    for i in range(1, count + 1):
        sop_uid = generate_uid()
        study.series[series_uid].append(sop_uid)
        study.parts.append(
            make_instance(
                study_uid=study.uid,
                series_uid=series_uid,
                sop_uid=sop_uid,
                **({"sop_class": MR_IMAGE} if modality == "MR" else {}),
                PatientID=study.patient_id,
                PatientName=f"Extern^{study.patient_id}",
                PatientSex="F",
                PatientBirthDate="19700304",
                Modality=modality,
                SeriesNumber=number,
                InstanceNumber=i,
                StudyDescription="sync test",
                **attributes,
            )
        )
    return study


def _study(patient_id: str, shape: Sequence[tuple[str, int]]) -> Study:
    study = Study(generate_uid(), patient_id)
    for modality, count in shape:
        _add_series(study, modality, count)
    return study


def _stow(server: Server, parts: Sequence[bytes]) -> None:
    body, content_type = multipart_body(parts)
    r = httpx.post(
        f"{server.url}/dicom-web/studies",
        content=body,
        headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
        timeout=60,
    )
    assert r.status_code == 200, r.text


# --- reading the external FHIR server (directly, not through the proxy) ---------------------


def _search(base: str, res_type: str, params: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    r = httpx.get(f"{base}/fhir/{res_type}", params=list(params), timeout=30)
    assert r.status_code == 200, r.text
    return [
        e["resource"]
        for e in r.json().get("entry", [])
        if e.get("search", {}).get("mode", "match") == "match"
    ]


def _imaging_studies(base: str, study_uid: str) -> list[dict[str, Any]]:
    return _search(base, "ImagingStudy", [("identifier", f"{DICOM_UID}|urn:oid:{study_uid}")])


def _synced(
    base: str, study: Study, *, logs: Sequence[Path], timeout: float = 20.0
) -> dict[str, Any]:
    """The ImagingStudy of `study` once it appeared in B with all of its instances."""

    def probe() -> dict[str, Any] | None:
        found = _imaging_studies(base, study.uid)
        assert len(found) <= 1, found
        if found and found[0].get("numberOfInstances") == study.instances:
            return found[0]
        return None

    return _eventually(f"ImagingStudy {study.uid} in B", probe, timeout=timeout, logs=logs)


def _endpoints(base: str, address: str) -> list[dict[str, Any]]:
    """Every Endpoint in B with this address (whatever identifier the mapping gives it)."""
    found = _search(base, "Endpoint", [("_count", "1000")])
    return [e for e in found if e.get("address") == address]


def _check_imaging_study(base: str, found: dict[str, Any], study: Study, dicomweb: str) -> None:
    """The ImagingStudy in B describes `study`, with its one Patient and one Endpoint."""
    assert found["numberOfSeries"] == len(study.series)
    assert found["numberOfInstances"] == study.instances
    series = {s["uid"]: s for s in found["series"]}
    assert set(series) == set(study.series)
    for uid, sops in study.series.items():
        assert series[uid]["numberOfInstances"] == len(sops)
        assert {i["uid"] for i in series[uid]["instance"]} == set(sops)
    patients = _search(base, "Patient", [("identifier", study.patient_id)])
    assert len(patients) == 1, patients
    assert found["subject"]["reference"] == f"Patient/{patients[0]['id']}"
    endpoints = _endpoints(base, dicomweb)
    assert len(endpoints) == 1, endpoints
    assert [e["reference"] for e in found["endpoint"]] == [f"Endpoint/{endpoints[0]['id']}"]
    endpoint = endpoints[0]
    assert endpoint["address"] == dicomweb
    assert endpoint["connectionType"]["code"] == "dicom-wado-rs"
    assert endpoint["status"] == "active"


def _admin_sync(server: Server) -> dict[str, Any]:
    r = httpx.get(f"{server.url}/admin/sync", timeout=30)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _caught_up(server: Server) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        status = _admin_sync(server)
        return status if status["backlog"] == 0 else None

    return _eventually("sync backlog 0 in GET /admin/sync", probe, logs=[server.log])


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def external(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """B: a dicomhub with its own sync off, the external FHIR server of every test here.

    Tests share it: each one uses its own study UIDs, PatientIDs and A (so its own Endpoint).
    """
    root = tmp_path_factory.mktemp("external")
    with _serve(root / "data", _env(fhir_sync="false")) as server:
        yield server


@pytest.fixture
def proxy(external: Server) -> Iterator[FhirProxy]:
    with FhirProxy(external.url, tokens=[TOKEN]) as running:
        yield running


@pytest.fixture(params=["sqlite", "postgresql"])
def a_database(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """A's index: SQLite in its data folder, or a database of its own on PostgreSQL."""
    if request.param == "sqlite":
        yield {}
        return
    require_postgres()
    name = f"dicomhub_sync_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield {"database_url": f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"}
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- 1. an external target over HTTP with a bearer token -------------------------------------


def test_static_bearer_token(
    external: Server, proxy: FhirProxy, a_database: dict[str, str], tmp_path: Path
) -> None:
    # the proxy really guards B
    assert httpx.get(f"{proxy.url}/fhir/metadata", timeout=10).status_code == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.get(f"{proxy.url}/fhir/metadata", headers=auth, timeout=10).status_code == 200
    baseline = len(proxy.requests())

    env = _env(fhir_url=f"{proxy.url}/fhir", fhir_token=TOKEN, **a_database)
    study = _study(f"EXT-{uuid.uuid4().hex[:8]}", [("CT", 3), ("CT", 2), ("MR", 1)])
    with _serve(tmp_path / "a", env) as a:
        _stow(a, study.parts)
        found = _synced(external.url, study, logs=[a.log])
        _check_imaging_study(external.url, found, study, f"{a.url}/dicom-web")
        assert {c["code"] for c in found["modality"]} == {"CT", "MR"}
        assert found["meta"]["source"].startswith("urn:dicomhub")

        # a series more: the ImagingStudy is updated in place (If-Match), not created again
        _add_series(study, "CT", 2)
        _stow(a, study.parts[-2:])
        found = _synced(external.url, study, logs=[a.log])
        _check_imaging_study(external.url, found, study, f"{a.url}/dicom-web")
        status = _caught_up(a)
        assert status["target"] == f"{proxy.url}/fhir"
        assert status["deadLetters"] == []

    sync_requests = proxy.requests()[baseline:]
    assert sync_requests
    assert {s.headers.get("authorization") for s in sync_requests} == {f"Bearer {TOKEN}"}
    assert all(s.status < 400 for s in sync_requests), [
        (s.method, s.path, s.status) for s in sync_requests
    ]
    assert len(proxy.creates("ImagingStudy")) == 1
    assert len(proxy.creates("Patient")) == 1
    assert len(proxy.creates("Endpoint")) == 1
    updates = [s for s in sync_requests if s.method == "PUT" and "/ImagingStudy/" in s.path]
    assert len(updates) == 1
    assert updates[0].headers.get("if-match") == 'W/"1"'
    assert found["meta"]["versionId"] == "2"


def test_oauth2_client_credentials(external: Server, tmp_path: Path) -> None:
    client_id, secret = "dicomhub-sync", "cl1ent-s3cret"
    with FhirProxy(external.url, client=(client_id, secret)) as proxy:
        env = _env(
            fhir_url=f"{proxy.url}/fhir",
            fhir_token_url=f"{proxy.url}/token",
            fhir_client_id=client_id,
            fhir_client_secret=secret,
            fhir_scope="system/*.write",
        )
        first = _study(f"OAUTH-{uuid.uuid4().hex[:8]}", [("CT", 2), ("CT", 1)])
        with _serve(tmp_path / "a", env) as a:
            _stow(a, first.parts)
            _check_imaging_study(
                external.url,
                _synced(external.url, first, logs=[a.log]),
                first,
                f"{a.url}/dicom-web",
            )
            assert len(proxy.token_requests) == 1
            request = proxy.token_requests[0]
            assert request["grant_type"] == "client_credentials"
            assert request["scope"] == "system/*.write"
            assert base64.b64decode(request["authorization"].removeprefix("Basic ")) == (
                f"{client_id}:{secret}".encode()
            )
            (token,) = proxy.issued
            seen = proxy.requests()
            assert seen
            assert {s.headers.get("authorization") for s in seen} == {f"Bearer {token}"}
            assert all(s.status != 401 for s in seen)

            # the token is revoked: the next request gets a 401, a new token is fetched, the
            # request is sent again with it
            with proxy.lock:
                proxy.tokens.clear()
            second = _study(first.patient_id, [("MR", 2)])
            _stow(a, second.parts)
            _synced(external.url, second, logs=[a.log])
            assert len(proxy.issued) == 2
            assert len(proxy.token_requests) == 2
            later = proxy.requests()[len(seen) :]
            assert [s.status for s in later].count(401) == 1
            assert later[0].status == 401
            assert {s.headers.get("authorization") for s in later[1:]} == {
                f"Bearer {proxy.issued[1]}"
            }
            # the same Patient is linked by both studies
            patients = _search(external.url, "Patient", [("identifier", first.patient_id)])
            assert len(patients) == 1


def test_identifiers_with_search_and_query_characters(
    external: Server, proxy: FhirProxy, tmp_path: Path
) -> None:
    """PatientIDs holding `,` `|` `$` (search syntax) or `&` `+` `#` `%` (query syntax) are
    searched escaped and sent URL-encoded in If-None-Exist: one Patient each, none refused."""
    tag = uuid.uuid4().hex[:6]
    pids = [f"X&{tag}+1", f"X,{tag}|2$", f"X#{tag}%203 4"]
    studies = [_study(pid, [("CT", 1)]) for pid in pids for _ in range(2)]
    baseline = len(proxy.requests())
    with _serve(tmp_path / "a", _env(fhir_url=f"{proxy.url}/fhir", fhir_token=TOKEN)) as a:
        for study in studies:
            _stow(a, study.parts)
        for study in studies:
            _synced(external.url, study, logs=[a.log])
        assert _caught_up(a)["deadLetters"] == []

    def escaped(pid: str) -> str:  # FHIR search escaping (R4 3.1.1.6), written out here
        return pid.replace(",", "\\,").replace("|", "\\|").replace("$", "\\$")

    for pid in pids:
        patients = _search(external.url, "Patient", [("identifier", escaped(pid))])
        assert len(patients) == 1, pid
        assert [i["value"] for i in patients[0]["identifier"]] == [pid]
        for study in (s for s in studies if s.patient_id == pid):
            assert _imaging_studies(external.url, study.uid)[0]["subject"] == {
                "reference": f"Patient/{patients[0]['id']}"
            }
    sent = proxy.requests()[baseline:]
    assert all(s.status < 400 for s in sent), [(s.method, s.path, s.status) for s in sent]
    conditions = [
        parse_qsl(s.headers["if-none-exist"])
        for s in sent
        if s.method == "POST" and s.path.split("?")[0] == "/fhir/Patient"
    ]
    assert sorted(conditions) == sorted(
        [("identifier", f"urn:dicomhub:patient-id|{escaped(pid)}")] for pid in pids
    )


# --- 2. kill and restart the sync mid-stream ------------------------------------------------


@dataclass(frozen=True)
class Progress:
    done: int  # change-feed sequence the sync to the target has done
    latest: int  # latest change-feed sequence
    lease_owner: str | None


def _progress(index: Path, target: str) -> Progress:
    """The sync's cursor and lease in A's SQLite index (read-only, beside the processes)."""
    conn = sqlite3.connect(f"file:{index}?mode=ro", uri=True, timeout=10)
    try:
        row = conn.execute(
            "SELECT sequence, lease_owner FROM sync_state WHERE target = ?", (target,)
        ).fetchone()
        latest = conn.execute("SELECT max(sequence) FROM changefeed").fetchone()[0]
    finally:
        conn.close()
    return Progress(int(row[0]) if row else 0, int(latest or 0), row[1] if row else None)


def test_kill_and_restart_mid_stream(external: Server, proxy: FhirProxy, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    patients = [f"KILL-{tag}-{n}" for n in range(8)]
    studies = [
        _study(
            patients[i % len(patients)], [("CT", 1 + i % 2)] + ([("CT", 1)] if i % 3 == 0 else [])
        )
        for i in range(30)
    ]
    data = tmp_path / "a"
    target = f"{proxy.url}/fhir"
    with _serve(data, _env(fhir_sync="false")) as a:
        for i in range(0, len(studies), 10):
            _stow(a, [part for s in studies[i : i + 10] for part in s.parts])
        public = {"public_url": a.url}  # the Endpoint address `dicomhub sync` publishes
        sync_env = _env(fhir_url=target, fhir_token=TOKEN, **public)
        logs = [a.log, tmp_path / "sync-1.log", tmp_path / "sync-2.log"]

        # first run: slowed down, killed once a few ImagingStudies were created
        proxy.delay = 0.02
        with _running(["sync", "--data-dir", str(data)], log=logs[1], env=sync_env) as first:

            def a_few_created() -> bool | None:
                assert first.poll() is None, _tail(logs[1])
                return True if len(proxy.creates("ImagingStudy")) >= 4 else None

            _eventually("a few ImagingStudies created", a_few_created, logs=logs)
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        created_before = len(proxy.creates("ImagingStudy"))
        assert 4 <= created_before < len(studies), "the kill did not land mid-stream"
        killed = _progress(data / "index.sqlite", target)
        assert killed.done < killed.latest
        # the dead worker still holds the lease: the next one must wait for it to expire
        assert killed.lease_owner is not None
        assert f":{first.pid}:" in killed.lease_owner

        # second run, full speed: waits for the lease to expire, then catches up
        proxy.delay = 0.0
        with _running(["sync", "--data-dir", str(data)], log=logs[2], env=sync_env) as second:

            def caught_up() -> bool | None:
                assert second.poll() is None, _tail(logs[2])
                now = _progress(data / "index.sqlite", target)
                return True if now.done == now.latest else None

            _eventually(
                "backlog 0 after the restart", caught_up, timeout=LEASE_WAIT + 20, logs=logs
            )
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=30) == 0, _tail(logs[2])

        shown = _cli("sync", "--data-dir", str(data), "status", env=sync_env)
        assert shown.returncode == 0, shown.stderr
        flat = _flat(shown.stdout)
        assert "backlog (changes) 0" in flat, shown.stdout
        assert "lease free" in flat, shown.stdout
        assert "dead-lettered studies 0" in flat, shown.stdout

    # B: exactly one ImagingStudy per study, none missing, none doubled, none rewritten
    expected = {s.uid: s for s in studies}
    everything = _search(external.url, "ImagingStudy", [("_count", "1000")])
    ours = Counter(
        ident["value"].removeprefix("urn:oid:")
        for res in everything
        for ident in res.get("identifier", [])
        if ident.get("system") == DICOM_UID and ident["value"].removeprefix("urn:oid:") in expected
    )
    assert set(ours) == set(expected)
    assert sorted(set(ours.values())) == [1]
    for res in everything:
        uids = [
            i["value"].removeprefix("urn:oid:")
            for i in res.get("identifier", [])
            if i.get("system") == DICOM_UID
        ]
        if uids and uids[0] in expected:
            study = expected[uids[0]]
            assert res["numberOfInstances"] == study.instances, res
            assert res["numberOfSeries"] == len(study.series), res
            assert res["meta"]["versionId"] == "1", res  # replaying left it untouched
    assert len(proxy.creates("ImagingStudy")) == len(studies)
    for patient_id in patients:
        assert len(_search(external.url, "Patient", [("identifier", patient_id)])) == 1
    assert len(_endpoints(external.url, f"{a.url}/dicom-web")) == 1


# --- 3. failures: 503 for a while, 422 for one study, dead letters, retry --------------------


def test_failures_retries_and_dead_letters(
    external: Server, proxy: FhirProxy, tmp_path: Path
) -> None:
    target = f"{proxy.url}/fhir"
    env = _env(fhir_url=target, fhir_token=TOKEN)
    patient_id = f"FAIL-{uuid.uuid4().hex[:8]}"
    with _serve(tmp_path / "a", env) as a:
        # the external server is unavailable for longer than the quick retries (3 attempts):
        # the feed pauses and resumes from the study; nothing is dead-lettered or skipped
        outage = threading.Event()
        outage.set()
        proxy.fault = lambda method, path, body: 503 if outage.is_set() else None
        first = _study(patient_id, [("CT", 2)])
        second = _study(patient_id, [("MR", 1)])
        _stow(a, first.parts)
        _stow(a, second.parts)

        def refused_often() -> bool | None:
            return True if sum(s.status == 503 for s in proxy.requests()) >= 5 else None

        _eventually("five attempts refused with 503", refused_often, logs=[a.log])
        assert _admin_sync(a)["deadLetters"] == []
        outage.clear()
        _synced(external.url, first, logs=[a.log])
        _synced(external.url, second, logs=[a.log])
        assert _caught_up(a)["deadLetters"] == []

        # B refuses two studies for good (422): they are dead-lettered, the others go through
        bad = [_study(patient_id, [("CT", 1)]), _study(patient_id, [("MR", 2)])]
        good = [_study(patient_id, [("CT", 2)]), _study(patient_id, [("CT", 1), ("MR", 1)])]
        refused = {s.uid.encode() for s in bad}
        healed = threading.Event()

        def unprocessable(method: str, path: str, body: bytes) -> int | None:
            if healed.is_set() or method not in ("POST", "PUT"):
                return None
            if _fhir_resource_type(path) == "ImagingStudy" and any(u in body for u in refused):
                return 422
            return None

        proxy.fault = unprocessable
        _stow(a, [part for s in (good[0], bad[0], good[1], bad[1]) for part in s.parts])
        for study in good:
            _synced(external.url, study, logs=[a.log])
        status = _caught_up(a)
        letters = {d["studyInstanceUid"]: d for d in status["deadLetters"]}
        assert set(letters) == {s.uid for s in bad}
        for letter in letters.values():
            assert letter["attempts"] == 1  # a 422 is not retried
            assert "422" in letter["reason"]
        for study in bad:
            assert _imaging_studies(external.url, study.uid) == []

        shown = _cli("sync", "--data-dir", str(tmp_path / "a"), "status", env=env)
        assert shown.returncode == 0, shown.stderr
        flat = _flat(shown.stdout)
        assert "dead-lettered studies 2" in flat, shown.stdout
        for study in bad:
            assert study.uid in shown.stdout

        # retrying while B still refuses: still dead, one attempt more
        r = httpx.post(f"{a.url}/admin/sync/retry", params={"study": bad[0].uid}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["retried"] == [{"studyInstanceUid": bad[0].uid, "outcome": "dead-lettered"}]
        letters = {d["studyInstanceUid"]: d for d in _admin_sync(a)["deadLetters"]}
        assert letters[bad[0].uid]["attempts"] == 2
        assert letters[bad[1].uid]["attempts"] == 1

        # B heals: a retry from the admin route and one from the command line clear them
        healed.set()
        r = httpx.post(f"{a.url}/admin/sync/retry", params={"study": bad[0].uid}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["retried"] == [{"studyInstanceUid": bad[0].uid, "outcome": "created"}]
        _check_imaging_study(
            external.url, _synced(external.url, bad[0], logs=[a.log]), bad[0], f"{a.url}/dicom-web"
        )
        retried = _cli("sync", "--data-dir", str(tmp_path / "a"), "retry", env=env)
        assert retried.returncode == 0, retried.stdout + retried.stderr
        assert f"{bad[1].uid}: created" in _flat(retried.stdout), retried.stdout
        _synced(external.url, bad[1], logs=[a.log])
        assert _admin_sync(a)["deadLetters"] == []

    for study in [first, *good, *bad]:
        assert len(_imaging_studies(external.url, study.uid)) == 1
    assert len(_search(external.url, "Patient", [("identifier", patient_id)])) == 1
