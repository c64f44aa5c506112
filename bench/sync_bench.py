"""DICOM -> FHIR sync benchmark (issue 4): sync latency under full-speed ingest, and catch-up rate.

Run through bench/sync (`make bench-sync`); no root needed. Two phases, each on a fresh SQLite
data folder under bench/work/sync/:

1. Latency: `dicomhub serve` with the in-process sync on (DICOMHUB_FHIR_SYNC left at its
   default). N client threads STOW generated studies (1-5 instances of 64x64 16-bit images,
   one study per request, a new PatientID per study except ~10 % that reuse one of 10 shared
   patients) as fast as the server takes them, for --duration seconds. For every k-th study a
   watcher thread takes the moment the STOW answer arrived and searches
   `GET /fhir/ImagingStudy?identifier=urn:dicom:uid|urn:oid:<uid>` every 20 ms until the
   ImagingStudy is there with the right numberOfInstances (studies due at the same moment share
   one search, `identifier=<a>,<b>,…`). A sampler reads GET /admin/sync once a second (the
   backlog). Afterwards: wait until the backlog is 0, then check the FHIR store in the
   SQLite file (read-only): one ImagingStudy per stored study with the right series and instance
   counts, its subject a Patient with the study's PatientID, one Patient per PatientID.
2. Catch-up: `dicomhub serve` with DICOMHUB_FHIR_SYNC=false, STOW --backlog instances
   (5 per study, in 2 series of 3 + 2) as fast as possible, stop the server, then time
   `dicomhub sync --data-dir D` from its start until the sync_state cursor reaches the last
   change-feed sequence (SQLite polled read-only every 50 ms); then SIGTERM it. Same checks.

Results: a markdown table on stdout, everything in bench/work/sync/results.json.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import queue
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

import checks
import measure
import servers

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "bench" / "work" / "sync"
DICOMHUB = REPO / ".venv" / "bin" / "dicomhub"

P95_TARGET_S = 1.0
CATCHUP_TARGET = 500.0  # instances/s
POLL_S = 0.020  # watcher: interval between two searches for the same study
SAMPLE_EVERY_S = 1.0  # sampler: GET /admin/sync
VISIBLE_TIMEOUT_S = 120.0  # a sampled study not visible after this long counts as missing
SHARED_PATIENTS = 10
SHARED_SHARE = 0.10

UID_ROOT = "1.2.826.0.1.3680043.8.498.4."  # the bench corpus root (corpus.py), branch 4
DICOM_UID = "urn:dicom:uid"
SOP_CLASSES = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "CR": "1.2.840.10008.5.1.4.1.1.1",
}
# Placeholders in the templates, replaced by values of exactly the same length (so no length
# field changes). Pixel values stay below 4096, so no run of two ASCII digits can occur in the
# pixel data and the digit placeholders cannot match there.
PH_STUDY = 7777777
PH_PATIENT = 777777
PH_INSTANCE_NUMBER = "7771"
PH_SERIES_NUMBER = "7772"
PH_BIRTH = "19770707"
# Changing what is generated must change this, so that a saved backlog is not reused.
GENERATOR = 1

_START = time.monotonic()


def log(message: str) -> None:
    elapsed = time.monotonic() - _START
    print(
        f"[{int(elapsed) // 60:02d}:{int(elapsed) % 60:02d}] {message}", file=sys.stderr, flush=True
    )


# ----------------------------------------------------------------------------------------
# Generated studies


def study_uid(phase: int, study: int) -> str:
    return f"{UID_ROOT}{phase}.1.1{study:07d}"


def series_uid(phase: int, study: int, series: int) -> str:
    return f"{UID_ROOT}{phase}.2.1{study:07d}{series}"


def sop_uid(phase: int, study: int, series: int, number: int) -> str:
    return f"{UID_ROOT}{phase}.3.1{study:07d}{series}{number:02d}"


def patient_id(pid: int) -> str:
    return f"SYNC{pid:06d}"


def patient_name(pid: int) -> str:
    return f"Sync^Pat{pid:06d}"


def birth_date(pid: int) -> str:
    return f"19{30 + pid % 70:02d}{1 + pid % 12:02d}{1 + pid % 28:02d}"


@dataclass(frozen=True)
class StudyPlan:
    phase: int
    number: int
    patient: int
    modality: str
    sex: str
    series: tuple[int, ...]  # instances per series

    @property
    def uid(self) -> str:
        return study_uid(self.phase, self.number)

    @property
    def instances(self) -> int:
        return sum(self.series)


class Templates:
    """One DICOM file per (modality, sex), written once with pydicom; instances are made from it
    by splicing values into the places of fixed-length placeholders (about 20 us instead of
    1.3 ms per instance with pydicom). The places are found once in the template, so a value
    spliced in can never be taken for a placeholder."""

    def __init__(self, phase: int) -> None:
        self.phase = phase
        # (modality, sex) -> the template cut at the placeholders, and which value goes where
        self.files: dict[tuple[str, str], tuple[list[bytes], list[int]]] = {}
        self.placeholders = [
            study_uid(phase, PH_STUDY),
            series_uid(phase, PH_STUDY, 7),
            sop_uid(phase, PH_STUDY, 7, 77),
            patient_id(PH_PATIENT),
            patient_name(PH_PATIENT),
            PH_BIRTH,
            f"SA{PH_STUDY:08d}",
            PH_INSTANCE_NUMBER,
            PH_SERIES_NUMBER,
        ]
        sop = sop_uid(phase, PH_STUDY, 7, 77)
        for modality in SOP_CLASSES:
            for sex in "FM":
                data = self._template(modality, sex)
                places: list[tuple[int, int]] = []  # (offset, placeholder index)
                for k, value in enumerate(self.placeholders):
                    want = 2 if value == sop else 1  # the SOP Instance UID is in the file meta too
                    raw = value.encode()
                    if data.count(raw) != want:
                        raise RuntimeError(f"placeholder {value} not unique in the template")
                    at = -1
                    for _ in range(want):
                        at = data.index(raw, at + 1)
                        places.append((at, k))
                places.sort()
                pieces, order, last = [], [], 0
                for at, k in places:
                    if at < last:
                        raise RuntimeError("placeholders overlap in the template")
                    pieces.append(data[last:at])
                    order.append(k)
                    last = at + len(self.placeholders[k])
                pieces.append(data[last:])
                self.files[(modality, sex)] = (pieces, order)

    def _template(self, modality: str, sex: str) -> bytes:
        sop_class = SOP_CLASSES[modality]
        uid = sop_uid(self.phase, PH_STUDY, 7, 77)
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
        ds.file_meta.MediaStorageSOPInstanceUID = UID(uid)
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.ImplementationClassUID = UID(UID_ROOT + "9.1")
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = uid
        ds.StudyDate = "20250312"
        ds.StudyTime = "101500"
        ds.AccessionNumber = f"SA{PH_STUDY:08d}"
        ds.Modality = modality
        ds.ReferringPhysicianName = "Referrer^Rita"
        ds.StudyDescription = f"{modality} sync bench"
        ds.SeriesDescription = f"{modality} series"
        ds.BodyPartExamined = "CHEST"
        ds.PatientName = patient_name(PH_PATIENT)
        ds.PatientID = patient_id(PH_PATIENT)
        ds.PatientBirthDate = PH_BIRTH
        ds.PatientSex = sex
        ds.StudyInstanceUID = study_uid(self.phase, PH_STUDY)
        ds.SeriesInstanceUID = series_uid(self.phase, PH_STUDY, 7)
        ds.StudyID = "1"
        ds.SeriesNumber = PH_SERIES_NUMBER
        ds.InstanceNumber = PH_INSTANCE_NUMBER
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = 64
        ds.Columns = 64
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        pixels = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 7) % 4096
        ds.PixelData = pixels.tobytes()
        out = BytesIO()
        ds.save_as(out, enforce_file_format=True)
        return out.getvalue()

    def instance(self, plan: StudyPlan, series: int, number: int) -> bytes:
        values = [
            study_uid(plan.phase, plan.number),
            series_uid(plan.phase, plan.number, series),
            sop_uid(plan.phase, plan.number, series, number),
            patient_id(plan.patient),
            patient_name(plan.patient),
            birth_date(plan.patient),
            f"SA{plan.number:08d}",
            f"{number:<4d}",
            f"{series:<4d}",
        ]
        for placeholder, value in zip(self.placeholders, values, strict=True):
            if len(placeholder) != len(value):
                raise ValueError(f"{value!r} does not fit in place of {placeholder!r}")
        pieces, order = self.files[(plan.modality, plan.sex)]
        out = [pieces[0]]
        for k, piece in zip(order, pieces[1:], strict=True):
            out += [values[k].encode(), piece]
        return b"".join(out)

    def body(self, plan: StudyPlan) -> bytes:
        return checks.stow_body(
            self.instance(plan, s + 1, i + 1)
            for s, count in enumerate(plan.series)
            for i in range(count)
        )


def self_check(templates: Templates) -> None:
    """A generated instance, read back by pydicom, carries the substituted values."""
    plan = StudyPlan(templates.phase, 123, 4567, "MR", "M", (3, 2))
    ds = pydicom.dcmread(BytesIO(templates.instance(plan, 2, 11)))
    expected = {
        "StudyInstanceUID": plan.uid,
        "SeriesInstanceUID": series_uid(plan.phase, 123, 2),
        "SOPInstanceUID": sop_uid(plan.phase, 123, 2, 11),
        "PatientID": patient_id(4567),
        "PatientName": patient_name(4567),
        "PatientBirthDate": birth_date(4567),
        "AccessionNumber": "SA00000123",
        "InstanceNumber": 11,
        "SeriesNumber": 2,
        "PatientSex": "M",
        "Modality": "MR",
    }
    for keyword, want in expected.items():
        got = ds.get(keyword)
        if str(got).strip() != str(want):
            raise RuntimeError(f"generated instance: {keyword} is {got!r}, expected {want!r}")
    if ds.file_meta.MediaStorageSOPInstanceUID != ds.SOPInstanceUID:
        raise RuntimeError("generated instance: file meta SOP Instance UID differs")


class Planner:
    """Hands out study plans in order (thread-safe); deterministic for a seed."""

    def __init__(self, phase: int, seed: int, shape: str, limit: int | None = None) -> None:
        self.phase = phase
        self.rng = random.Random(f"{seed}/{phase}")
        self.shape = shape  # "mixed": 1-5 instances, 1-2 series; "5": 3 + 2
        self.limit = limit
        self.next_study = 0
        self.next_patient = SHARED_PATIENTS
        self.lock = threading.Lock()

    def take(self) -> StudyPlan | None:
        with self.lock:
            if self.limit is not None and self.next_study >= self.limit:
                return None
            number = self.next_study
            self.next_study += 1
            rng = self.rng
            if rng.random() < SHARED_SHARE:
                patient = rng.randrange(SHARED_PATIENTS)
            else:
                patient = self.next_patient
                self.next_patient += 1
            if self.shape == "5":
                shape: tuple[int, ...] = (3, 2)
            else:
                n = rng.randint(1, 5)
                shape = (n,) if n <= 2 or rng.random() < 0.5 else (n - n // 2, n // 2)
            return StudyPlan(
                self.phase,
                number,
                patient,
                rng.choice(tuple(SOP_CLASSES)),
                "FM"[patient % 2],  # a shared patient keeps the same demographics
                shape,
            )


# ----------------------------------------------------------------------------------------
# Processes and the database


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def serve(data_dir: Path, port: int, workers: int, sync: bool, log_name: str) -> servers.Server:
    command = [
        str(DICOMHUB),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
    ]
    env = {} if sync else {"DICOMHUB_FHIR_SYNC": "false"}
    return servers.Server(
        name="dicomhub",
        command=command,
        base_url=f"http://127.0.0.1:{port}",
        health_url=f"http://127.0.0.1:{port}/health",
        data_dir=data_dir,
        log_path=WORK / log_name,
        env=env,
    )


def clean_env() -> None:
    """The phases choose DICOMHUB_FHIR_SYNC themselves; other DICOMHUB_ settings that change
    what is measured (an external FHIR URL, another database) must not leak in."""
    for key in ("DICOMHUB_FHIR_SYNC", "DICOMHUB_FHIR_URL", "DICOMHUB_DATABASE_URL"):
        if key in os.environ:
            log(f"ignoring {key} from the environment")
            del os.environ[key]


def readonly(data_dir: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{data_dir / 'index.sqlite'}?mode=ro", uri=True, timeout=30)
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def cursor_and_latest(conn: sqlite3.Connection) -> tuple[int, int]:
    row = conn.execute("SELECT sequence FROM sync_state WHERE target = 'embedded'").fetchone()
    latest = conn.execute("SELECT max(sequence) FROM changefeed").fetchone()[0]
    return (int(row[0]) if row else 0), int(latest or 0)


def group_pids(leader: int | None) -> list[int]:
    """Processes in the process group `leader` started (uvicorn workers included)."""
    if leader is None:
        return []
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[2]) == leader:
            out.append(int(entry.name))
    return out


def process_cpu(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    parts = stat.rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def group_cpu(leader: int | None) -> float:
    return sum(process_cpu(pid) for pid in group_pids(leader))


def machine_busy() -> float:
    fields_ = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields_[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def self_cpu() -> float:
    times = os.times()
    return times.user + times.system


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def top_processes(exclude: set[int]) -> list[str]:
    """The busiest other processes right now (by CPU over the last second), for the notes."""

    def snapshot() -> dict[int, tuple[float, str]]:
        out: dict[int, tuple[float, str]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in exclude:
                continue
            try:
                stat = (entry / "stat").read_text()
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:80]
            except OSError:
                continue
            parts = stat.rsplit(")", 1)[1].split()
            out[int(entry.name)] = (float(int(parts[11]) + int(parts[12])), cmd.strip())
        return out

    before = snapshot()
    time.sleep(1.0)
    after = snapshot()
    tick = os.sysconf("SC_CLK_TCK")
    deltas = [((after[p][0] - before[p][0]) / tick, after[p][1]) for p in after if p in before]
    busy = sorted(deltas, reverse=True)
    return [f"{cpu * 100:.0f}% {cmd}" for cpu, cmd in busy[:5] if cpu >= 0.05]


class Profiler:
    """py-spy on a running process (optional), raw folded stacks for flame graphs."""

    def __init__(self, binary: str | None) -> None:
        self.binary = binary
        self.processes: list[tuple[subprocess.Popen[bytes], Path]] = []

    def record(self, pid: int | None, name: str, seconds: int) -> None:
        if self.binary is None or pid is None:
            return
        out = WORK / f"profile-{name}.txt"
        command = [
            self.binary,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(seconds),
            "--format",
            "raw",
            "-o",
            str(out),
            "--nonblocking",
            "--threads",
        ]
        log(f"profile: {' '.join(command)}")
        process = subprocess.Popen(
            command,
            stdout=(WORK / f"profile-{name}.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append((process, out))

    def wait(self) -> list[str]:
        done = []
        for process, out in self.processes:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGINT)
                process.wait(30)
            done.append(str(out.relative_to(REPO)))
        self.processes.clear()
        return done


# ----------------------------------------------------------------------------------------
# STOW clients


@dataclass
class Ingest:
    studies: list[StudyPlan] = field(default_factory=list)
    instances: int = 0
    requests: int = 0
    errors: int = 0
    first_error: str | None = None
    seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def summary(self) -> dict[str, Any]:
        return {
            "studies": len(self.studies),
            "instances": self.instances,
            "requests": self.requests,
            "errors": self.errors,
            "first_error": self.first_error,
            "seconds": self.seconds,
            "instances_per_s": self.instances / self.seconds if self.seconds else None,
            "studies_per_s": len(self.studies) / self.seconds if self.seconds else None,
        }


def ingest(
    base_url: str,
    planner: Planner,
    templates: Templates,
    clients: int,
    deadline_s: float | None,
    on_stored: Any = None,
    progress_every: int = 0,
) -> Ingest:
    """`clients` threads STOW one study per request until the planner runs dry or the deadline
    (seconds after the start) passes. `on_stored(plan, t)` runs when a STOW answer arrived."""
    result = Ingest()
    ready = threading.Barrier(clients + 1)
    stop_at: list[float] = [0.0]

    def worker() -> None:
        with httpx.Client(
            base_url=f"{base_url}/dicom-web",
            timeout=measure.TIMEOUT,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        ) as client:
            ready.wait()
            while deadline_s is None or time.perf_counter() < stop_at[0]:
                plan = planner.take()
                if plan is None:
                    return
                body = templates.body(plan)
                try:
                    response = client.post(
                        "/studies", content=body, headers={"Content-Type": checks.STOW_TYPE}
                    )
                    arrived = time.perf_counter()
                    problem = checks.check_stow(plan.instances)(response)
                except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                    arrived, problem = time.perf_counter(), f"{type(exc).__name__}: {exc}"
                with result.lock:
                    result.requests += 1
                    if problem is None:
                        result.studies.append(plan)
                        result.instances += plan.instances
                        n = len(result.studies)
                    else:
                        result.errors += 1
                        result.first_error = result.first_error or problem
                        n = 0
                if problem is None and on_stored is not None:
                    on_stored(plan, arrived)
                if progress_every and n and n % progress_every == 0:
                    log(f"  {n:,} studies stored")

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    ready.wait()
    start = time.perf_counter()
    stop_at[0] = start + (deadline_s or 0.0)
    for thread in threads:
        thread.join()
    result.seconds = time.perf_counter() - start
    return result


# ----------------------------------------------------------------------------------------
# Phase 1: latency


@dataclass
class Sighting:
    plan: StudyPlan
    stored_at: float  # perf_counter when the STOW answer arrived
    polls: int = 0
    partial: int = 0  # answers with the ImagingStudy there but not yet every instance
    last_sent: float | None = None  # when the previous (negative) poll was sent
    next_poll: float = 0.0


@dataclass
class Watch:
    latencies_s: list[float] = field(default_factory=list)
    resolution_s: list[float] = field(default_factory=list)  # found-poll send - previous send
    sampled: int = 0
    missing: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    polls: int = 0
    partial: int = 0
    max_pending: int = 0


class Watcher(threading.Thread):
    """Searches the ImagingStudy of each sampled study every POLL_S until it shows every
    instance. The studies due at the same moment go into one search (`identifier=a,b,…`, FHIR's
    OR), so that the interval stays POLL_S however many studies wait, and the searches do not
    load the server more when the sync falls behind."""

    def __init__(self, base_url: str) -> None:
        super().__init__(daemon=True, name="watcher")
        self.base_url = base_url
        self.inbox: queue.Queue[Sighting] = queue.Queue()
        self.result = Watch()
        self.closing = threading.Event()
        self.headers = {"Accept": "application/fhir+json"}

    def add(self, plan: StudyPlan, stored_at: float) -> None:
        self.inbox.put(Sighting(plan, stored_at, next_poll=stored_at))

    def run(self) -> None:
        pending: list[Sighting] = []
        with httpx.Client(base_url=f"{self.base_url}/fhir", timeout=measure.TIMEOUT) as client:
            while True:
                try:
                    block = not pending and not self.closing.is_set()
                    while True:
                        item = self.inbox.get(block=block, timeout=0.05 if block else None)
                        pending.append(item)
                        self.result.sampled += 1
                        block = False
                except queue.Empty:
                    pass
                if not pending:
                    if self.closing.is_set() and self.inbox.empty():
                        return
                    continue
                self.result.max_pending = max(self.result.max_pending, len(pending))
                now = time.perf_counter()
                due = [s for s in pending if s.next_poll <= now]
                for i in range(0, len(due), 40):
                    for sighting in self._poll(client, due[i : i + 40]):
                        pending.remove(sighting)
                for sighting in [s for s in pending if now - s.stored_at > VISIBLE_TIMEOUT_S]:
                    self.result.missing.append(sighting.plan.uid)
                    pending.remove(sighting)
                if pending:
                    wait = min(s.next_poll for s in pending) - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)

    def _poll(self, client: httpx.Client, due: list[Sighting]) -> list[Sighting]:
        """One search for the `due` studies; returns those now complete."""
        tokens = ",".join(f"{DICOM_UID}|urn:oid:{s.plan.uid}" for s in due)
        sent = time.perf_counter()
        try:
            response = client.get(
                "ImagingStudy",
                params={"identifier": tokens, "_count": str(2 * len(due) + 10)},
                headers=self.headers,
            )
            arrived = time.perf_counter()
            if response.status_code != 200:
                raise ValueError(f"HTTP {response.status_code}: {response.text[:200]}")
            bundle = orjson.loads(response.content)
            found: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for entry in bundle.get("entry") or []:
                if (entry.get("search") or {}).get("mode", "match") != "match":
                    continue
                for ident in entry["resource"].get("identifier") or []:
                    if ident.get("system") == DICOM_UID:
                        uid = str(ident.get("value")).removeprefix("urn:oid:")
                        found[uid].append(entry["resource"])
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            self.result.problems.append(f"search of {len(due)}: {type(exc).__name__}: {exc}"[:300])
            for s in due:
                s.next_poll = sent + POLL_S
            return []
        self.result.polls += 1
        done = []
        for s in due:
            s.polls += 1
            resources = found.get(s.plan.uid, [])
            if len(resources) > 1:
                self.result.problems.append(f"{s.plan.uid}: {len(resources)} ImagingStudy")
            if resources and resources[0].get("numberOfInstances") == s.plan.instances:
                self.result.latencies_s.append(arrived - s.stored_at)
                if s.last_sent is not None:
                    self.result.resolution_s.append(sent - s.last_sent)
                done.append(s)
                continue
            if resources:
                s.partial += 1
                self.result.partial += 1
            s.last_sent = sent
            s.next_poll = sent + POLL_S
        return done


class Sampler(threading.Thread):
    """GET /admin/sync every second: the sync's cursor and backlog over time."""

    def __init__(self, base_url: str) -> None:
        super().__init__(daemon=True, name="sampler")
        self.base_url = base_url
        self.samples: list[dict[str, Any]] = []
        self.stopping = threading.Event()
        self.t0 = time.perf_counter()

    def run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            while not self.stopping.is_set():
                self.samples.append(self.sample(client))
                self.stopping.wait(SAMPLE_EVERY_S)

    def sample(self, client: httpx.Client) -> dict[str, Any]:
        try:
            body = client.get("/admin/sync").json()
            return {
                "t": round(time.perf_counter() - self.t0, 2),
                "sequence": body.get("sequence"),
                "latestSequence": body.get("latestSequence"),
                "backlog": body.get("backlog"),
                "deadLetters": len(body.get("deadLetters") or []),
            }
        except (httpx.HTTPError, ValueError) as exc:
            return {"t": round(time.perf_counter() - self.t0, 2), "error": str(exc)[:200]}


def wait_drained(base_url: str, timeout: float) -> tuple[float | None, dict[str, Any]]:
    """Seconds until GET /admin/sync shows backlog 0 (None on timeout), and the last answer."""
    start = time.perf_counter()
    last: dict[str, Any] = {}
    with httpx.Client(base_url=base_url, timeout=30) as client:
        while time.perf_counter() - start < timeout:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                last = client.get("/admin/sync").json()
                if last.get("backlog") == 0:
                    return time.perf_counter() - start, last
            time.sleep(0.05)
    return None, last


def latency_phase(args: argparse.Namespace, profiler: Profiler) -> dict[str, Any]:
    data = fresh(WORK / "latency")
    templates = Templates(phase=1)
    self_check(templates)
    server = serve(data, free_port(), args.workers, sync=True, log_name="serve-latency.log")
    log(f"latency: {' '.join(server.command)}")
    server.start(timeout=120)
    try:
        watcher = Watcher(server.base_url)
        sampler = Sampler(server.base_url)
        watcher.start()
        sampler.start()
        sample_every = args.sample_every

        def on_stored(plan: StudyPlan, arrived: float) -> None:
            if plan.number % sample_every == 0:
                watcher.add(plan, arrived)

        planner = Planner(1, args.seed, "mixed")
        log(
            f"latency: {args.clients} clients STOW studies for {args.duration:.0f} s; every "
            f"{sample_every}th study watched (search every {POLL_S * 1000:.0f} ms)"
        )
        if args.profile:
            profiler.record(server.pid, "serve-latency", min(20, int(args.duration)))
        cpu0, busy0, me0 = group_cpu(server.pid), machine_busy(), self_cpu()
        stored = ingest(server.base_url, planner, templates, args.clients, args.duration, on_stored)
        cpu = {
            "seconds": stored.seconds,
            "server_cpu_s": group_cpu(server.pid) - cpu0,
            "bench_client_cpu_s": self_cpu() - me0,
        }
        cpu["other_cpu_s"] = max(
            0.0, machine_busy() - busy0 - cpu["server_cpu_s"] - cpu["bench_client_cpu_s"]
        )
        log(
            f"latency: stored {stored.instances:,} instances in {len(stored.studies):,} studies "
            f"in {stored.seconds:.1f} s = {stored.instances / stored.seconds:.1f} instances/s"
            + (f"; {stored.errors} STOW errors: {stored.first_error}" if stored.errors else "")
        )
        drained_s, last = wait_drained(server.base_url, timeout=max(300.0, args.duration * 5))
        log(
            "latency: backlog 0 "
            + (f"{drained_s:.1f} s after the last STOW" if drained_s is not None else "NEVER")
            + f" (cursor {last.get('sequence')}, {len(last.get('deadLetters') or [])} dead letters)"
        )
        watcher.closing.set()
        watcher.join(VISIBLE_TIMEOUT_S + 30)
        sampler.stopping.set()
        sampler.join(10)
        verified = verify(data, stored.studies)
        profiles = profiler.wait()
    finally:
        server.stop()
        log("latency: server stopped")
    w = watcher.result
    lat = np.asarray(w.latencies_s) * 1000 if w.latencies_s else np.asarray([0.0])
    backlog = [s["backlog"] for s in sampler.samples if isinstance(s.get("backlog"), int)]
    result = {
        "data_dir": str(data.relative_to(REPO)),
        "command": " ".join(server.command),
        "clients": args.clients,
        "duration_s": args.duration,
        "sample_every": sample_every,
        "poll_ms": POLL_S * 1000,
        "ingest": stored.summary(),
        "cpu": cpu,
        "latency": {
            "sampled": w.sampled,
            "visible": len(w.latencies_s),
            "missing": w.missing[:20],
            "missing_count": len(w.missing),
            "problems": w.problems[:20],
            "problem_count": len(w.problems),
            "p50_ms": float(np.percentile(lat, 50)) if w.latencies_s else None,
            "p95_ms": float(np.percentile(lat, 95)) if w.latencies_s else None,
            "p99_ms": float(np.percentile(lat, 99)) if w.latencies_s else None,
            "max_ms": float(lat.max()) if w.latencies_s else None,
            "min_ms": float(lat.min()) if w.latencies_s else None,
            "poll_gap_median_ms": float(np.median(w.resolution_s) * 1000)
            if w.resolution_s
            else None,
            "polls": w.polls,
            "partial_sightings": w.partial,
            "max_pending": w.max_pending,
            "samples_ms": [round(float(x), 1) for x in lat] if w.latencies_s else [],
        },
        "backlog": {
            "max": max(backlog) if backlog else None,
            "mean": float(np.mean(backlog)) if backlog else None,
            "drained_after_s": drained_s,
            "samples": sampler.samples,
        },
        "final_status": last,
        "verify": verified,
        "profiles": profiles,
    }
    p = result["latency"]
    if p["p50_ms"] is not None:
        log(
            f"latency: {p['visible']} of {p['sampled']} watched studies visible: p50 "
            f"{p['p50_ms']:.0f} ms, p95 {p['p95_ms']:.0f} ms, max {p['max_ms']:.0f} ms; backlog "
            f"max {result['backlog']['max']} changes"
        )
    return result


# ----------------------------------------------------------------------------------------
# Phase 2: catch-up


def _backlog_params(args: argparse.Namespace) -> dict[str, Any]:
    return {"generator": GENERATOR, "seed": args.seed, "backlog": args.backlog}


def load_backlog(args: argparse.Namespace, data: Path) -> Ingest:
    """STOW the backlog with the sync off. With --keep-backlog a copy of the data folder (and
    of what was stored) goes to catchup-backlog/, so that `--reuse-backlog` can time the
    catch-up again without storing."""
    saved = WORK / "catchup-backlog"
    manifest_path = saved / "manifest.json"
    if args.reuse_backlog:
        with contextlib.suppress(OSError, ValueError):
            manifest = json.loads(manifest_path.read_text())
            if manifest["params"] == _backlog_params(args):
                shutil.rmtree(data)
                shutil.copytree(saved / "data", data)
                stored = Ingest(
                    studies=[
                        StudyPlan(2, n, p, m, x, (3, 2)) for n, p, m, x in manifest["studies"]
                    ],
                    instances=manifest["ingest"]["instances"],
                    requests=manifest["ingest"]["requests"],
                    errors=manifest["ingest"]["errors"],
                    first_error=manifest["ingest"]["first_error"],
                    seconds=manifest["ingest"]["seconds"],
                )
                log(f"catch-up: reusing the backlog of {saved.relative_to(REPO)} (no STOW)")
                return stored
        log("catch-up: no saved backlog with these parameters; storing a new one")
    templates = Templates(phase=2)
    self_check(templates)
    studies = args.backlog // 5
    server = serve(data, free_port(), args.workers, sync=False, log_name="serve-catchup.log")
    log(f"catch-up: DICOMHUB_FHIR_SYNC=false {' '.join(server.command)}")
    server.start(timeout=120)
    try:
        planner = Planner(2, args.seed, "5", limit=studies)
        log(f"catch-up: STOW {studies:,} studies x 5 instances with {args.clients} clients")
        stored = ingest(server.base_url, planner, templates, args.clients, None, progress_every=500)
    finally:
        server.stop()
    log(
        f"catch-up: stored {stored.instances:,} instances in {stored.seconds:.1f} s "
        f"({stored.instances / stored.seconds:.0f}/s); server stopped"
        + (f"; {stored.errors} STOW errors: {stored.first_error}" if stored.errors else "")
    )
    if not args.keep_backlog:
        return stored
    log(f"catch-up: saving a copy of the backlog in {saved.relative_to(REPO)}")
    fresh(saved)
    shutil.copytree(data, saved / "data")
    manifest = {
        "params": _backlog_params(args),
        "ingest": stored.summary(),
        "studies": [(p.number, p.patient, p.modality, p.sex) for p in stored.studies],
    }
    manifest_path.write_text(json.dumps(manifest))
    return stored


def catchup_phase(args: argparse.Namespace, profiler: Profiler) -> dict[str, Any]:
    data = fresh(WORK / "catchup")
    studies = args.backlog // 5
    stored = load_backlog(args, data)
    with contextlib.closing(readonly(data)) as before:
        cursor0, latest = cursor_and_latest(before)
    log(f"catch-up: change feed holds {latest:,} changes, sync cursor at {cursor0}")

    command = [str(DICOMHUB), "sync", "--data-dir", str(data)]
    log(f"catch-up: {' '.join(command)} (timed until the cursor reaches {latest:,})")
    sync_log = (WORK / "sync-catchup.log").open("wb")
    env = {**os.environ}
    busy0 = machine_busy()
    start = time.perf_counter()
    process = subprocess.Popen(
        command,
        stdout=sync_log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
        preexec_fn=servers._die_with_parent,  # noqa: PLW1509 - no client thread exists now
    )
    timeline: list[tuple[float, int]] = []
    done_s: float | None = None
    first_progress: tuple[float, int] | None = None
    cpu_s = 0.0
    try:
        if args.profile:
            profiler.record(process.pid, "sync-catchup", 20)
        conn: sqlite3.Connection | None = None
        while time.perf_counter() - start < args.catchup_timeout:
            if process.poll() is not None:
                break
            if conn is None:
                with contextlib.suppress(sqlite3.Error):
                    conn = readonly(data)
            if conn is not None:
                try:
                    cursor, latest_now = cursor_and_latest(conn)
                except sqlite3.Error:
                    cursor, latest_now = -1, latest
                t = time.perf_counter() - start
                if not timeline or timeline[-1][1] != cursor:
                    timeline.append((round(t, 3), cursor))
                    if cursor > 0 and first_progress is None:
                        first_progress = (t, cursor)
                if cursor >= latest_now > 0:
                    done_s = t
                    break
            cpu_s = process_cpu(process.pid) or cpu_s
            time.sleep(0.05)
        cpu_s = process_cpu(process.pid) or cpu_s
        if conn is not None:
            conn.close()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        sync_log.close()
    other_cpu = max(0.0, machine_busy() - busy0 - cpu_s)
    profiles = profiler.wait()
    exit_status = process.returncode
    with contextlib.closing(readonly(data)) as after:
        cursor_end, latest = cursor_and_latest(after)
    status = subprocess.run(
        [str(DICOMHUB), "sync", "--data-dir", str(data), "status"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "120", "NO_COLOR": "1"},
        check=False,
    )
    verified = verify(data, stored.studies)
    seconds = done_s
    result: dict[str, Any] = {
        "data_dir": str(data.relative_to(REPO)),
        "shape": f"{studies:,} studies x 5 instances (2 series: 3 + 2)",
        "ingest": stored.summary(),
        "changes": latest,
        "command": " ".join(command),
        "seconds": seconds,
        "instances_per_s": stored.instances / seconds if seconds else None,
        "studies_per_s": len(stored.studies) / seconds if seconds else None,
        "first_progress": first_progress,
        "after_first_batch_per_s": (
            (latest - first_progress[1]) / (seconds - first_progress[0])
            if seconds and first_progress and seconds > first_progress[0]
            else None
        ),
        "timeline": timeline,
        "cursor_end": cursor_end,
        "sync_cpu_s": cpu_s,
        "sync_cpu_ms_per_instance": cpu_s / stored.instances * 1000 if stored.instances else None,
        "other_cpu_s": other_cpu,
        "exit_status": exit_status,
        "status_output": status.stdout + status.stderr,
        "verify": verified,
        "profiles": profiles,
    }
    if seconds:
        log(
            f"catch-up: {stored.instances:,} instances synced in {seconds:.1f} s = "
            f"{result['instances_per_s']:.0f} instances/s ({result['studies_per_s']:.0f} "
            f"studies/s); sync used {cpu_s:.0f} CPU s "
            f"({result['sync_cpu_ms_per_instance']:.1f} ms/instance); exit status {exit_status}"
        )
    else:
        log(
            f"catch-up: NOT caught up after {args.catchup_timeout:.0f} s (cursor {cursor_end} of "
            f"{latest}); exit status {exit_status}"
        )
    return result


# ----------------------------------------------------------------------------------------
# Checks on the FHIR store (read-only on the SQLite file)


def verify(data_dir: Path, studies: list[StudyPlan]) -> dict[str, Any]:
    """Every stored study: exactly one ImagingStudy, right series / instance counts and series
    UIDs, its subject a Patient carrying the PatientID; one Patient per PatientID; no dead
    letters."""
    problems: list[str] = []
    with contextlib.closing(readonly(data_dir)) as conn:
        rows = conn.execute(
            "SELECT res_type, res_id, body FROM fhir_resource "
            "WHERE res_type IN ('ImagingStudy', 'Patient', 'Endpoint') AND deleted = 0"
        ).fetchall()
        dead = conn.execute("SELECT count(*) FROM sync_dead_letter").fetchone()[0]
    imaging: dict[str, list[dict[str, Any]]] = defaultdict(list)
    patients: dict[str, dict[str, Any]] = {}
    patient_ids: Counter[str] = Counter()
    endpoints = 0
    for res_type, res_id, body in rows:
        resource = orjson.loads(body)
        if res_type == "ImagingStudy":
            for ident in resource.get("identifier") or []:
                if ident.get("system") == DICOM_UID:
                    imaging[str(ident.get("value")).removeprefix("urn:oid:")].append(resource)
        elif res_type == "Patient":
            patients[res_id] = resource
            for ident in resource.get("identifier") or []:
                patient_ids[str(ident.get("value"))] += 1
        else:
            endpoints += 1
    counts: Counter[str] = Counter()
    for plan in studies:
        found = imaging.get(plan.uid, [])
        if len(found) != 1:
            counts["not exactly one ImagingStudy"] += 1
            problems.append(f"{plan.uid}: {len(found)} ImagingStudy resources")
            continue
        res = found[0]
        want_series = {
            series_uid(plan.phase, plan.number, s + 1): n for s, n in enumerate(plan.series)
        }
        got_series = {x.get("uid"): x.get("numberOfInstances") for x in res.get("series") or []}
        got_instances = sum(len(x.get("instance") or []) for x in res.get("series") or [])
        if (
            res.get("numberOfInstances") != plan.instances
            or res.get("numberOfSeries") != len(plan.series)
            or got_series != want_series
            or got_instances != plan.instances
        ):
            counts["wrong counts"] += 1
            problems.append(
                f"{plan.uid}: numberOfInstances {res.get('numberOfInstances')} (want "
                f"{plan.instances}), numberOfSeries {res.get('numberOfSeries')} (want "
                f"{len(plan.series)}), series {got_series}"
            )
        subject = str((res.get("subject") or {}).get("reference") or "")
        patient = patients.get(subject.removeprefix("Patient/"))
        pid = patient_id(plan.patient)
        if patient is None or pid not in {i.get("value") for i in patient.get("identifier") or []}:
            counts["wrong subject"] += 1
            problems.append(f"{plan.uid}: subject {subject!r} is not the Patient with {pid}")
    expected_pids = {patient_id(p.patient) for p in studies}
    duplicated = sorted(p for p in expected_pids if patient_ids[p] > 1)
    absent = sorted(p for p in expected_pids if patient_ids[p] == 0)
    stray = sorted(set(imaging) - {p.uid for p in studies})
    if duplicated:
        problems.append(
            f"{len(duplicated)} PatientIDs with more than one Patient: {duplicated[:5]}"
        )
    if absent:
        problems.append(f"{len(absent)} PatientIDs without a Patient: {absent[:5]}")
    if stray:
        problems.append(f"{len(stray)} ImagingStudy resources for studies never stored")
    if dead:
        problems.append(f"{dead} dead-lettered studies")
    if endpoints != 1:
        problems.append(f"{endpoints} Endpoint resources (want 1)")
    result = {
        "studies": len(studies),
        "imaging_studies": sum(len(v) for v in imaging.values()),
        "patients": len(patients),
        "distinct_patient_ids": len(expected_pids),
        "endpoints": endpoints,
        "dead_letters": dead,
        "counts": dict(counts),
        "problems": problems[:30],
        "problem_count": len(problems),
        "ok": not problems,
    }
    log(
        f"verify: {result['imaging_studies']:,} ImagingStudy for {len(studies):,} studies, "
        f"{len(patients):,} Patients for {len(expected_pids):,} PatientIDs, {endpoints} Endpoint, "
        f"{dead} dead letters: " + ("all right" if not problems else f"PROBLEMS {problems[:3]}")
    )
    return result


# ----------------------------------------------------------------------------------------
# Report


def _met(ok: bool | None) -> str:
    return "—" if ok is None else ("yes" if ok else "**no**")


def render(meta: dict[str, Any], lat: dict[str, Any] | None, cat: dict[str, Any] | None) -> str:
    lines = [
        f"### DICOM → FHIR sync benchmark — {meta['started']}"
        + (" (--quick)" if meta["quick"] else ""),
        "",
        f"dicomhub {meta['dicomhub_version']} ({meta['git']}) · {meta['cpus']} CPUs · load "
        f"average {meta['load_before']} before, {meta['load_after']} after · SQLite · "
        f"`serve --workers {meta['workers']}` · {meta['duration_s']:.0f} s",
        "",
        "| Figure | Value | Target | Met |",
        "|---|---:|---|---|",
    ]
    if lat is not None:
        ing, p, v = lat["ingest"], lat["latency"], lat["verify"]
        ok = (
            v["ok"]
            and not p["missing_count"]
            and not p["problem_count"]
            and not ing["errors"]
            and p["p95_ms"] is not None
        )
        lines.append(
            f"| STOW ingest while syncing ({lat['clients']} clients, {lat['duration_s']:.0f} s, "
            f"1–5 instances/study) | {ing['instances_per_s']:.1f} instances/s "
            f"({ing['instances']:,} in {ing['studies']:,} studies) | — | (info) |"
        )
        if p["p50_ms"] is not None:
            lines.append(
                f"| Sync latency STOW answer → ImagingStudy complete, p50 / p95 / max "
                f"({p['visible']} studies watched) | {p['p50_ms']:.0f} / **{p['p95_ms']:.0f}** / "
                f"{p['max_ms']:.0f} ms | p95 ≤ {P95_TARGET_S * 1000:.0f} ms "
                f"| {_met(ok and p['p95_ms'] <= P95_TARGET_S * 1000)} |"
            )
        else:
            lines.append("| Sync latency | **no study became visible** | p95 ≤ 1000 ms | **no** |")
        lines.append(
            f"| Sync backlog during ingest, max / mean (change-feed rows) | "
            f"{lat['backlog']['max']} / {lat['backlog']['mean'] or 0:.0f} | — | (info) |"
        )
        lines.append(
            f"| Correctness after the run | {'right' if v['ok'] else 'WRONG'}: "
            f"{v['imaging_studies']:,} ImagingStudy for {v['studies']:,} studies, "
            f"{v['patients']:,} Patients for {v['distinct_patient_ids']:,} PatientIDs | "
            f"one per study, right counts | {_met(v['ok'])} |"
        )
    if cat is not None:
        v = cat["verify"]
        rate = cat["instances_per_s"]
        lines.append(
            f"| Backlog load with sync off (STOW, {meta['clients']} clients) | "
            f"{cat['ingest']['instances_per_s']:.0f} instances/s | — | (info) |"
        )
        if rate is not None:
            lines.append(
                f"| Catch-up `dicomhub sync`, {cat['ingest']['instances']:,} instances "
                f"({cat['shape']}) | **{rate:.0f} instances/s** ({cat['studies_per_s']:.0f} "
                f"studies/s, {cat['seconds']:.1f} s incl. start-up) | ≥ {CATCHUP_TARGET:.0f}/s "
                f"| {_met(v['ok'] and rate >= CATCHUP_TARGET)} |"
            )
            if cat["after_first_batch_per_s"]:
                lines.append(
                    f"| Catch-up after the first cursor move (excl. start-up and first batch) | "
                    f"{cat['after_first_batch_per_s']:.0f} instances/s | — | (info) |"
                )
        else:
            lines.append(
                f"| Catch-up `dicomhub sync` | **not caught up** (cursor {cat['cursor_end']} of "
                f"{cat['changes']}) | ≥ {CATCHUP_TARGET:.0f}/s | **no** |"
            )
        lines.append(
            f"| Sync CPU per instance (catch-up) | {cat['sync_cpu_ms_per_instance'] or 0:.1f} ms | "
            f"— | (info) |"
        )
        lines.append(
            f"| Correctness after catch-up | {'right' if v['ok'] else 'WRONG'}: "
            f"{v['imaging_studies']:,} ImagingStudy for {v['studies']:,} studies, "
            f"{v['patients']:,} Patients for {v['distinct_patient_ids']:,} PatientIDs | "
            f"one per study, right counts | {_met(v['ok'])} |"
        )
    notes = []
    if lat is not None:
        c = lat["cpu"]
        notes.append(
            f"Latency phase: every {lat['sample_every']}th study watched, one search every "
            f"{lat['poll_ms']:.0f} ms per watched study (median gap between the last negative and "
            f"the positive search {lat['latency']['poll_gap_median_ms'] or 0:.0f} ms); latency "
            "runs from the STOW answer to the answer of the first search showing every instance. "
            f"During the {c['seconds']:.0f} s of ingest the server used {c['server_cpu_s']:.0f} "
            f"CPU s, this client {c['bench_client_cpu_s']:.0f}, other processes "
            f"{c['other_cpu_s']:.0f} (of {c['seconds'] * meta['cpus']:.0f} available). "
            f"Backlog 0 {lat['backlog']['drained_after_s'] or float('nan'):.1f} s after the last "
            "STOW."
        )
    if cat is not None:
        notes.append(
            f"Catch-up: `dicomhub sync` used {cat['sync_cpu_s']:.0f} CPU s; other processes "
            f"{cat['other_cpu_s']:.0f} CPU s meanwhile. Time runs from starting the process "
            f"(Python start-up, migrations check) to the cursor reaching the last change."
        )
    if meta.get("busy_processes"):
        notes.append("Busiest other processes at the start: " + "; ".join(meta["busy_processes"]))
    return "\n".join(lines) + "\n\n" + "\n\n".join(notes) + "\n"


# ----------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/sync",
        description="DICOM -> FHIR sync benchmark (issue 4): latency under ingest, catch-up rate.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="15 s of ingest, 1,000-instance backlog"
    )
    parser.add_argument("--duration", type=float, default=0, help="ingest seconds (60; 15 quick)")
    parser.add_argument(
        "--backlog",
        type=int,
        default=0,
        help="catch-up instances, multiple of 5 (10000; 1000 quick)",
    )
    parser.add_argument("--clients", type=int, default=3, help="STOW client threads (3)")
    parser.add_argument("--sample-every", type=int, default=5, help="watch every k-th study (5)")
    parser.add_argument("--workers", type=int, default=1, help="dicomhub serve --workers (1)")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--only", choices=("latency", "catchup"), help="run one phase only")
    parser.add_argument(
        "--keep-backlog",
        action="store_true",
        help="catch-up: save a copy of the stored backlog (bench/work/sync/catchup-backlog)",
    )
    parser.add_argument(
        "--reuse-backlog",
        action="store_true",
        help="catch-up: start from the backlog saved by --keep-backlog (same --backlog and "
        "--seed) instead of storing a new one",
    )
    parser.add_argument(
        "--catchup-timeout", type=float, default=1800, help="give up the catch-up after (1800 s)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy (PY_SPY or py-spy on PATH) 20 s on the server and on `dicomhub sync`; raw "
        "folded stacks in bench/work/sync/profile-*.txt",
    )
    args = parser.parse_args(argv)
    args.duration = args.duration or (15.0 if args.quick else 60.0)
    args.backlog = args.backlog or (1000 if args.quick else 10000)
    if args.backlog % 5 or args.backlog < 5:
        parser.error("--backlog must be a positive multiple of 5")
    if not 1 <= args.clients <= 16 or args.sample_every < 1:
        parser.error("--clients 1-16, --sample-every >= 1")
    if not DICOMHUB.exists():
        parser.error(f"{DICOMHUB} missing: run `make bench-sync` (or `make test`) once")
    args.py_spy = None
    if args.profile:
        args.py_spy = os.environ.get("PY_SPY") or shutil.which("py-spy")
        if args.py_spy is None and Path("/tmp/pyspy/bin/py-spy").exists():
            args.py_spy = "/tmp/pyspy/bin/py-spy"
        if args.py_spy is None:
            parser.error("--profile: no py-spy (set PY_SPY)")
    return args


def execute(args: argparse.Namespace) -> int:
    started = datetime.now(UTC)
    WORK.mkdir(parents=True, exist_ok=True)
    clean_env()
    load_before = load_average()
    busy = top_processes({os.getpid()})
    profiler = Profiler(args.py_spy)
    lat = latency_phase(args, profiler) if args.only in (None, "latency") else None
    cat = catchup_phase(args, profiler) if args.only in (None, "catchup") else None
    meta = {
        "started": started.strftime("%Y-%m-%d %H:%M UTC"),
        "quick": args.quick,
        "dicomhub_version": importlib.metadata.version("dicomhub"),
        "git": measure.git_revision(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": load_average(),
        "busy_processes": busy,
        "duration_s": time.monotonic() - _START,
        "workers": args.workers,
        "clients": args.clients,
        "options": {k: str(v) for k, v in vars(args).items()},
    }
    markdown = render(meta, lat, cat)
    out = WORK / "results.json"
    out.write_text(
        json.dumps({"meta": meta, "latency": lat, "catchup": cat, "markdown": markdown}, indent=2)
    )
    print(markdown)
    log(f"results: {out.relative_to(REPO)}")
    bad = False
    if lat is not None:
        bad |= not lat["verify"]["ok"] or bool(lat["ingest"]["errors"])
        bad |= bool(lat["latency"]["missing_count"]) or lat["latency"]["p50_ms"] is None
    if cat is not None:
        bad |= not cat["verify"]["ok"] or cat["seconds"] is None or bool(cat["ingest"]["errors"])
    return 1 if bad else 0


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # so that servers and the sync process are stopped


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    return execute(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
