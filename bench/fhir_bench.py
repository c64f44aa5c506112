"""FHIR benchmark (issue 3): NDJSON load rate and search latency of the embedded FHIR store.

Run through bench/fhir (`make bench-fhir`); no root needed. Steps:

1. Population: the Synthea sample (13 patients, 7,160 resources) cloned ceil(N / 13) times
   with new ids, references rewritten, conditional-reference identifiers made unique per clone,
   birthdates shifted; 1-3 generated ImagingStudy resources per patient. One NDJSON file per
   type in bench/work/fhir/population/ (regenerated only when its parameters change).
2. Load: `dicomhub fhir import bench/work/fhir/population` into a fresh data folder (SQLite)
   or a fresh PostgreSQL database, timed on the wall clock; its summary must match.
3. Searches: `dicomhub serve` (1 worker) on a free loopback port; per search, sequential
   requests with httpx (3 warm-up), every answer checked against the answer computed in Python
   from the generated files; then p50 / p95 / max.
4. Table printed, results in bench/work/fhir/results.json.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson

import measure
import servers
from measure import Check, Latency

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "bench" / "work" / "fhir"
DEFAULT_SAMPLE = Path(
    os.environ.get("DICOMHUB_SYNTHEA_SAMPLE", "/work/shared/data/synthea-10-patients")
)
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432"

LOAD_TARGET = 2000.0  # resources/s
P95_TARGET_MS = 100.0
PAGE = 20  # the server's default _count; the timed requests do not set it
VERIFY_PAGE = 200  # _count of the (untimed) exhaustive checks
WARMUP = 3

# Changing how the population is made must change this, so that an old one is not reused.
GENERATOR = 1
NAMESPACE = uuid.UUID("6f6c7b1e-3a8e-4c47-9b7e-0f3c2d9a1b55")
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
SNOMED = "http://snomed.info/sct"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
LATEST_BIRTH = date(2024, 6, 30)
# (modality, weight, SOP Class UID, display)
MODALITIES = (
    ("CT", 30, "1.2.840.10008.5.1.4.1.1.2", "Computed Tomography"),
    ("MR", 20, "1.2.840.10008.5.1.4.1.1.4", "Magnetic Resonance"),
    ("CR", 15, "1.2.840.10008.5.1.4.1.1.1", "Computed Radiography"),
    ("DX", 10, "1.2.840.10008.5.1.4.1.1.1.1", "Digital Radiography"),
    ("US", 10, "1.2.840.10008.5.1.4.1.1.6.1", "Ultrasound"),
    ("MG", 5, "1.2.840.10008.5.1.4.1.1.1.2", "Mammography"),
    ("PT", 5, "1.2.840.10008.5.1.4.1.1.128", "Positron emission tomography"),
    ("NM", 5, "1.2.840.10008.5.1.4.1.1.20", "Nuclear Medicine"),
)

_START = time.monotonic()


def log(message: str) -> None:
    elapsed = time.monotonic() - _START
    print(
        f"[{int(elapsed) // 60:02d}:{int(elapsed) % 60:02d}] {message}", file=sys.stderr, flush=True
    )


# ----------------------------------------------------------------------------------------
# Population


def sample_files(sample: Path) -> list[Path]:
    return sorted(p for p in sample.glob("*.ndjson") if p.name != "log.ndjson")


def uid_of(name: str) -> str:
    """A DICOM UID (2.25 + a UUID as a decimal integer) from a stable name."""
    return f"2.25.{uuid.uuid5(NAMESPACE, name).int}"


class Cloner:
    """One copy of the sample: every UUID (resource ids, the identifiers that hold them,
    `Type/id` and `urn:uuid:` references) replaced by a UUID of its own for this clone, NPIs
    made unique per clone (they are what `Practitioner?identifier=` references look up)."""

    def __init__(self, clone: int) -> None:
        self.clone = clone
        self.ids: dict[str, str] = {}

    def new_id(self, old: str) -> str:
        new = self.ids.get(old)
        if new is None:
            new = self.ids[old] = str(uuid.uuid5(NAMESPACE, f"{self.clone}/{old}"))
        return new

    def npi(self, value: str) -> str:
        if len(value) == 10 and value.isdigit() and value.startswith("9999"):
            return f"{self.clone:04d}{value[4:]}"  # still 10 digits; the sample's are 9999xxxxxx
        return f"{value}-{self.clone}"

    def string(self, text: str) -> str:
        if "-" in text:
            text = UUID_RE.sub(lambda m: self.new_id(m.group(0)), text)
        if f"{NPI_SYSTEM}|" in text:
            head, _, value = text.rpartition("|")
            text = f"{head}|{self.npi(value)}"
        return text

    def copy(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.string(value)
        if isinstance(value, list):
            return [self.copy(v) for v in value]
        if isinstance(value, dict):
            out = {k: (v if k == "data" else self.copy(v)) for k, v in value.items()}
            if out.get("system") == NPI_SYSTEM and isinstance(out.get("value"), str):
                out["value"] = self.npi(value["value"])
            return out
        return value


def shift_patient(patient: dict[str, Any], rng: random.Random) -> None:
    """Moves the birthdate (and death) by up to ten years either way, never past LATEST_BIRTH."""
    born = date.fromisoformat(patient["birthDate"])
    days = rng.randint(-3650, min(3650, (LATEST_BIRTH - born).days))
    patient["birthDate"] = (born + timedelta(days=days)).isoformat()
    died = patient.get("deceasedDateTime")
    if isinstance(died, str):
        day = date.fromisoformat(died[:10]) + timedelta(days=days)
        patient["deceasedDateTime"] = day.isoformat() + died[10:]


def imaging_studies(patient: dict[str, Any], clone: int, rng: random.Random) -> list[Any]:
    """1-3 ImagingStudy resources of one patient, each with one or two series."""
    born = date.fromisoformat(patient["birthDate"])
    last = LATEST_BIRTH
    died = patient.get("deceasedDateTime")
    if isinstance(died, str):
        last = min(last, date.fromisoformat(died[:10]))
    span = max(1, (last - born).days)
    out = []
    for k in range(rng.randint(1, 3)):
        name = f"{clone}/{patient['id']}/imaging/{k}"
        study_uid = uid_of(name)
        series: list[dict[str, Any]] = []
        modalities: list[dict[str, str]] = []
        for s in range(rng.choice((1, 1, 1, 2))):
            code, _, sop_class, display = rng.choices(
                MODALITIES, weights=[m[1] for m in MODALITIES]
            )[0]
            modality = {"system": DCM, "code": code, "display": display}
            if modality not in modalities:
                modalities.append(modality)
            count = rng.randint(1, 4)
            series.append(
                {
                    "uid": uid_of(f"{name}/{s}"),
                    "number": s + 1,
                    "modality": modality,
                    "numberOfInstances": count,
                    "instance": [
                        {
                            "uid": uid_of(f"{name}/{s}/{i}"),
                            "sopClass": {
                                "system": "urn:ietf:rfc:3986",
                                "code": f"urn:oid:{sop_class}",
                            },
                            "number": i + 1,
                        }
                        for i in range(count)
                    ],
                }
            )
        day = born + timedelta(days=rng.randint(min(span, 30), span))
        started = datetime(day.year, day.month, day.day, rng.randint(7, 18), rng.randint(0, 59))
        out.append(
            {
                "resourceType": "ImagingStudy",
                "id": str(uuid.uuid5(NAMESPACE, name)),
                "identifier": [
                    {
                        "use": "official",
                        "system": "urn:dicom:uid",
                        "value": f"urn:oid:{study_uid}",
                    }
                ],
                "status": "available",
                "modality": modalities,
                "subject": {"reference": f"Patient/{patient['id']}"},
                "started": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "numberOfSeries": len(series),
                "numberOfInstances": sum(x["numberOfInstances"] for x in series),
                "description": f"{modalities[0]['display']} study",
                "series": series,
            }
        )
    return out


def population_params(sample: Path, clones: int, seed: int) -> dict[str, Any]:
    return {
        "generator": GENERATOR,
        "sample": str(sample),
        "sample_files": {p.name: p.stat().st_size for p in sample_files(sample)},
        "clones": clones,
        "seed": seed,
    }


def generate(sample: Path, out: Path, clones: int, seed: int) -> dict[str, int]:
    """Writes <Type>.ndjson files to `out`; returns the number of resources per type."""
    by_type: dict[str, list[Any]] = defaultdict(list)
    for path in sample_files(sample):
        with path.open("rb") as src:
            for line in src:
                if line.strip():
                    resource = orjson.loads(line)
                    by_type[resource["resourceType"]].append(resource)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    counts: Counter[str] = Counter()
    files = {t: (out / f"{t}.ndjson").open("wb") for t in [*by_type, "ImagingStudy"]}
    try:
        for clone in range(clones):
            cloner = Cloner(clone)
            for res_type, resources in by_type.items():
                fh = files[res_type]
                for resource in resources:
                    copy = cloner.copy(resource)
                    if res_type == "Patient":
                        rng = random.Random(f"{seed}/{clone}/{resource['id']}")
                        shift_patient(copy, rng)
                        for study in imaging_studies(copy, clone, rng):
                            files["ImagingStudy"].write(orjson.dumps(study) + b"\n")
                            counts["ImagingStudy"] += 1
                    fh.write(orjson.dumps(copy) + b"\n")
                    counts[res_type] += 1
            if clone % 10 == 9:
                log(f"  {clone + 1}/{clones} clones written")
    finally:
        for out_file in files.values():
            out_file.close()
    return dict(sorted(counts.items()))


def population(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """The population folder (made if missing or stale) and its manifest."""
    per_clone = sum(1 for line in (args.sample / "Patient.000.ndjson").open("rb") if line.strip())
    clones = math.ceil(args.patients / per_clone)
    folder = WORK / f"population-{args.patients}"
    params = population_params(args.sample, clones, args.seed)
    manifest_path = WORK / f"population-{args.patients}.json"  # not inside: import reads .json
    with contextlib.suppress(OSError, ValueError):
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("params") == params:
            log(f"population: reusing {folder.relative_to(REPO)} ({manifest['total']:,} resources)")
            return folder, manifest
    log(f"population: {clones} clones of the sample ({per_clone} patients each) -> {folder}")
    manifest_path.unlink(missing_ok=True)
    start = time.perf_counter()
    counts = generate(args.sample, folder, clones, args.seed)
    manifest = {
        "params": params,
        "patients": counts["Patient"],
        "counts": counts,
        "total": sum(counts.values()),
        "bytes": sum(p.stat().st_size for p in folder.glob("*.ndjson")),
        "seconds": round(time.perf_counter() - start, 1),
    }
    manifest_path.write_text(json.dumps(manifest, indent=2))
    log(
        f"population: {manifest['total']:,} resources, {manifest['bytes'] / 1e6:.0f} MB "
        f"in {manifest['seconds']} s"
    )
    return folder, manifest


# ----------------------------------------------------------------------------------------
# What the answers must be (brute force over the generated files)


@dataclass
class Truth:
    birthdates: dict[str, str] = field(default_factory=dict)  # patient id -> birthDate
    conditions: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # code -> ids
    condition_patients: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    imaging: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # patient -> ids

    def patients_born(self, low: str, high: str) -> set[str]:
        """birthdate=ge{low}&birthdate=lt{high} (day precision on both sides)."""
        return {pid for pid, born in self.birthdates.items() if low <= born < high}

    def imaging_of(self, patients: Iterator[str] | set[str] | list[str]) -> set[str]:
        return {study for pid in patients for study in self.imaging.get(pid, ())}


def _lines(path: Path) -> Iterator[Any]:
    with path.open("rb") as fh:
        for line in fh:
            if line.strip():
                yield orjson.loads(line)


def read_truth(folder: Path) -> Truth:
    truth = Truth()
    for patient in _lines(folder / "Patient.ndjson"):
        truth.birthdates[patient["id"]] = patient["birthDate"]
    for condition in _lines(folder / "Condition.ndjson"):
        patient = condition["subject"]["reference"].removeprefix("Patient/")
        for coding in condition.get("code", {}).get("coding", []):
            if coding.get("system") == SNOMED:
                truth.conditions[coding["code"]].add(condition["id"])
                truth.condition_patients[coding["code"]].add(patient)
    for study in _lines(folder / "ImagingStudy.ndjson"):
        truth.imaging[study["subject"]["reference"].removeprefix("Patient/")].add(study["id"])
    return truth


# ----------------------------------------------------------------------------------------
# The searches


@dataclass(frozen=True)
class Query:
    url: str  # relative to the FHIR base
    res_type: str
    matches: frozenset[str]  # ids of every expected match
    includes: Callable[[list[str]], set[str]] | None = None  # expected _revinclude of a page


@dataclass
class Search:
    key: str
    label: str
    queries: list[Query]
    result: Latency | None = None
    verified: list[str] = field(default_factory=list)

    def sizes(self) -> tuple[int, int, int]:
        n = [len(q.matches) for q in self.queries]
        return min(n), int(statistics.median(n)), max(n)


def pick_codes(truth: Truth, rng: random.Random, n: int = 20) -> list[str]:
    """Condition codes over the whole frequency range: the 4 most common, 8 from the middle,
    8 of the rarest, shuffled."""
    ranked = sorted(truth.conditions, key=lambda c: (-len(truth.conditions[c]), c))
    common, rest = ranked[:4], ranked[4:]
    rarest = [c for c in rest if len(truth.conditions[c]) == len(truth.conditions[rest[-1]])]
    middle = [c for c in rest if c not in rarest]
    picked = common + rng.sample(middle, min(8, len(middle)))
    picked += rng.sample(rarest, min(n - len(picked), len(rarest)))
    rng.shuffle(picked)
    return picked


def birth_windows(truth: Truth, rng: random.Random, n: int = 40) -> list[tuple[str, str]]:
    """Windows of 1 month to 5 years, starting anywhere within the birthdates."""
    days = sorted(date.fromisoformat(b) for b in truth.birthdates.values())
    first, last = days[0], days[-1]
    windows = []
    for i in range(n):
        width = (30, 91, 182, 365, 730, 1826)[i % 6]
        start = first + timedelta(days=rng.randint(0, max(0, (last - first).days - width)))
        windows.append((start.isoformat(), (start + timedelta(days=width)).isoformat()))
    return windows


def build_searches(truth: Truth, seed: int) -> list[Search]:
    rng = random.Random(f"{seed}/queries")
    codes = pick_codes(truth, rng)
    windows = birth_windows(truth, rng)

    def token(code: str) -> str:
        return quote(f"{SNOMED}|{code}", safe=":/")

    birth = Search(
        "patient_birthdate",
        "`Patient?birthdate=ge…&birthdate=lt…` (windows of 1 month to 5 years)",
        [
            Query(
                f"Patient?birthdate=ge{low}&birthdate=lt{high}",
                "Patient",
                frozenset(truth.patients_born(low, high)),
            )
            for low, high in windows
        ],
    )
    condition = Search(
        "condition_code",
        "`Condition?code=…` (SNOMED `system\\|code`)",
        [
            Query(f"Condition?code={token(c)}", "Condition", frozenset(truth.conditions[c]))
            for c in codes
        ],
    )
    chained = Search(
        "imagingstudy_patient_has_condition",
        "`ImagingStudy?patient._has:Condition:patient:code=…`",
        [
            Query(
                f"ImagingStudy?patient._has:Condition:patient:code={token(c)}",
                "ImagingStudy",
                frozenset(truth.imaging_of(truth.condition_patients[c])),
            )
            for c in codes
        ],
    )
    revinclude = Search(
        "patient_has_condition_revinclude",
        "`Patient?_has:Condition:patient:code=…&_revinclude=ImagingStudy:patient`",
        [
            Query(
                f"Patient?_has:Condition:patient:code={token(c)}&_revinclude=ImagingStudy:patient",
                "Patient",
                frozenset(truth.condition_patients[c]),
                truth.imaging_of,
            )
            for c in codes
        ],
    )
    return [birth, condition, chained, revinclude]


def _bundle(response: httpx.Response) -> tuple[dict[str, Any] | None, str | None]:
    if response.status_code != 200:
        return None, f"HTTP {response.status_code}: {response.text[:200]}"
    bundle = orjson.loads(response.content)
    if bundle.get("resourceType") != "Bundle" or bundle.get("type") != "searchset":
        return None, "not a searchset Bundle"
    return bundle, None


def _split(bundle: dict[str, Any]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(type, id) of the match entries and of the include entries."""
    matches: list[tuple[str, str]] = []
    includes: list[tuple[str, str]] = []
    for entry in bundle.get("entry") or []:
        resource = entry["resource"]
        item = (resource["resourceType"], resource["id"])
        mode = (entry.get("search") or {}).get("mode", "match")
        (includes if mode == "include" else matches).append(item)
    return matches, includes


def _next(bundle: dict[str, Any]) -> str | None:
    for link in bundle.get("link") or []:
        if link.get("relation") == "next":
            return str(link["url"])
    return None


def check_page(query: Query) -> Check:
    """The first page (default _count) must hold min(20, n) distinct expected matches, a next
    link exactly when more follow, the right total when one is given and, for _revinclude,
    exactly the ImagingStudies of the patients on the page."""

    def check(response: httpx.Response) -> str | None:
        bundle, problem = _bundle(response)
        if bundle is None:
            return problem
        matches, includes = _split(bundle)
        want = min(PAGE, len(query.matches))
        ids = [i for t, i in matches if t == query.res_type]
        if len(ids) != len(matches):
            return f"a match that is not a {query.res_type}"
        if len(ids) != want or len(set(ids)) != want:
            return f"{len(ids)} matches on the page, expected {want} (of {len(query.matches)})"
        if not set(ids) <= query.matches:
            return f"{len(set(ids) - query.matches)} matches that should not be"
        if (_next(bundle) is not None) != (len(query.matches) > PAGE):
            return "next link present/absent wrongly"
        total = bundle.get("total")
        if total is not None and total != len(query.matches):
            return f"total {total}, expected {len(query.matches)}"
        if query.includes is not None:
            got = {i for t, i in includes if t == "ImagingStudy"}
            expected = query.includes(ids)
            if got != expected or len(includes) != len(expected):
                return f"{len(includes)} included resources, expected {len(expected)}"
        elif includes:
            return "included resources nobody asked for"
        return None

    return check


def verify_exhaustive(client: httpx.Client, query: Query) -> str | None:
    """Every page of the answer (_count=200, _total=accurate) against the brute-force set."""
    url: str | None = f"{query.url}&_count={VERIFY_PAGE}&_total=accurate"
    seen: list[str] = []
    included: set[str] = set()
    while url is not None:
        bundle, problem = _bundle(client.get(url))
        if bundle is None:
            return problem
        if bundle.get("total") != len(query.matches):
            return f"total {bundle.get('total')}, expected {len(query.matches)}"
        matches, includes = _split(bundle)
        page = [i for t, i in matches if t == query.res_type]
        seen += page
        if query.includes is not None:
            want = query.includes(page)
            got = {i for t, i in includes if t == "ImagingStudy"}
            if got != want:
                return f"page includes {len(got)} ImagingStudy, expected {len(want)}"
            included |= got
        url = _next(bundle)
    if len(seen) != len(set(seen)):
        return "a match returned twice across pages"
    if set(seen) != query.matches:
        return (
            f"{len(set(seen) - query.matches)} unexpected, {len(query.matches - set(seen))} missing"
        )
    return None


def exhaustive_sample(search: Search) -> list[Query]:
    """The largest, the smallest and a median-sized answer of a search."""
    ranked = sorted(search.queries, key=lambda q: (len(q.matches), q.url))
    picks = [ranked[-1], ranked[0], ranked[len(ranked) // 2]]
    return list({q.url: q for q in picks}.values())


# ----------------------------------------------------------------------------------------
# CPU accounting: how much of the machine the measured processes had


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores, /proc/stat)."""
    try:
        fields_ = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields_[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int | None) -> float:
    """user + system CPU seconds of a running process (0 when unknown)."""
    if pid is None:
        return 0.0
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    parts = stat.rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ----------------------------------------------------------------------------------------
# Database, load, server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Backend:
    name: str  # sqlite or postgresql
    data_dir: Path
    database: str | None = None  # PostgreSQL database we created
    admin_url: str = DEFAULT_PG

    def options(self) -> list[str]:
        opts = ["--data-dir", str(self.data_dir)]
        if self.database is not None:
            opts += ["--database-url", f"{self.admin_url}/{self.database}"]
        return opts

    def create(self) -> None:
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        self.data_dir.mkdir(parents=True)
        if self.name == "postgresql":
            self.database = f"dicomhub_fhir_bench_{os.getpid()}"
            self._admin(f'CREATE DATABASE "{self.database}"')

    def drop(self) -> None:
        if self.database is not None:
            self._admin(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            self.database = None

    def _admin(self, statement: str) -> None:
        import psycopg

        conninfo = self.admin_url.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(statement)

    def analyze(self) -> float:
        """Planner statistics for the index (what --analyze adds); returns the seconds taken."""
        start = time.perf_counter()
        if self.name == "sqlite":
            import sqlite3

            with contextlib.closing(sqlite3.connect(self.data_dir / "index.sqlite")) as db:
                db.execute("PRAGMA analysis_limit=1000")  # sampled: well under a second
                db.execute("ANALYZE")
                db.commit()
        else:
            import psycopg

            conninfo = self.admin_url.replace("postgresql+psycopg://", "postgresql://")
            with psycopg.connect(f"{conninfo}/{self.database}", autocommit=True) as conn:
                conn.execute("ANALYZE")
        return time.perf_counter() - start

    def settings(self) -> dict[str, str]:
        """Server settings that shape the figures (PostgreSQL only)."""
        if self.name != "postgresql" or self.database is None:
            return {}
        import psycopg

        conninfo = self.admin_url.replace("postgresql+psycopg://", "postgresql://")
        names = ("server_version", "autovacuum", "shared_buffers", "synchronous_commit", "work_mem")
        with psycopg.connect(f"{conninfo}/{self.database}") as conn:
            return {n: str(conn.execute(f"SHOW {n}").fetchone()[0]) for n in names}  # type: ignore[index]

    def size(self) -> str:
        if self.name == "sqlite":
            files = list(self.data_dir.glob("*.sqlite*"))
            return f"{sum(f.stat().st_size for f in files) / 1e6:.0f} MB (SQLite files)"
        import psycopg

        conninfo = self.admin_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(f"{conninfo}/{self.database}") as conn:
            row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        return f"{(row[0] if row else 0) / 1e6:.0f} MB (PostgreSQL database)"


_ROW = re.compile(r"^\W*([A-Za-z]+)\W+(\d+)\W*$")


def load(folder: Path, manifest: dict[str, Any], backend: Backend) -> dict[str, Any]:
    """`dicomhub fhir import <folder>`, timed; its summary must list every resource."""
    command = [str(REPO / ".venv" / "bin" / "dicomhub"), "fhir", "import", str(folder)]
    command += backend.options()
    log(f"load: {' '.join(command)}")
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    busy, cpu = machine_busy(), children_cpu()
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - start
    cpu = children_cpu() - cpu  # the import and its validation worker processes
    others = max(0.0, machine_busy() - busy - cpu)
    output = done.stdout + done.stderr
    (WORK / f"import-{backend.name}.log").write_text(output)
    loaded: dict[str, int] = {}
    for line in done.stdout.splitlines():
        if m := _ROW.match(line):
            loaded[m.group(1)] = int(m.group(2))
    total = loaded.pop("total", 0)
    problems = []
    if done.returncode != 0:
        problems.append(f"exit status {done.returncode}")
    failed = [line for line in output.splitlines() if line.startswith(("failed", "…"))]
    unresolved = [line for line in output.splitlines() if "matched nothing" in line]
    problems += failed[:3] + unresolved[:3]
    if total != manifest["total"] or loaded != manifest["counts"]:
        problems.append(f"summary lists {total} resources, {manifest['total']} were written")
    result = {
        "command": " ".join(command),
        "seconds": seconds,
        "resources": total,
        "per_second": total / seconds if seconds else None,
        "loaded": loaded,
        "failures": len(failed),
        "unresolved_lines": unresolved,
        "problems": problems,
        "ok": not problems,
        "database_size": backend.size(),
        "database_settings": backend.settings(),
        "import_cpu_s": cpu,
        "import_cpu_ms_per_resource": cpu / total * 1000 if total else None,
        "other_processes_cpu_s": others,
        "cores": os.cpu_count(),
    }
    log(
        f"load: {total:,} resources in {seconds:.1f} s = {result['per_second']:,.0f} resources/s"
        + (f"; PROBLEMS: {problems}" if problems else "; summary checked, 0 failures")
    )
    log(
        f"load: import used {cpu:.0f} CPU s ({result['import_cpu_ms_per_resource'] or 0:.2f} "
        f"ms/resource) of {seconds * (os.cpu_count() or 1):.0f} available; other processes "
        f"used {others:.0f} CPU s meanwhile"
    )
    return result


def server_for(backend: Backend, port: int) -> servers.Server:
    command = [
        str(REPO / ".venv" / "bin" / "dicomhub"),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--log-level",
        "warning",
        *backend.options(),
    ]
    return servers.Server(
        name="dicomhub",
        command=command,
        base_url=f"http://127.0.0.1:{port}/fhir",
        health_url=f"http://127.0.0.1:{port}/health",
        data_dir=backend.data_dir,
        log_path=WORK / f"serve-{backend.name}.log",
    )


def check_counts(client: httpx.Client, manifest: dict[str, Any]) -> list[str]:
    """Every type holds what was generated (`_summary=count`)."""
    problems = []
    for res_type, want in manifest["counts"].items():
        bundle, problem = _bundle(client.get(f"{res_type}?_summary=count"))
        got = None if bundle is None else bundle.get("total")
        if got != want:
            problems.append(f"{res_type}: {got if problem is None else problem}, expected {want}")
    return problems


def run_searches(server: servers.Server, searches: list[Search], requests: int) -> dict[str, Any]:
    headers = {"Accept": "application/fhir+json"}
    with measure.new_client(server.base_url) as client:
        return _run_searches(client, searches, requests, headers, server.pid)


def _run_searches(
    client: httpx.Client,
    searches: list[Search],
    requests: int,
    headers: dict[str, str],
    server_pid: int | None,
) -> dict[str, Any]:
    log("searches: exhaustive checks (every page, untimed) on 3 queries per search")
    problems: list[str] = []
    for search in searches:
        for query in exhaustive_sample(search):
            problem = verify_exhaustive(client, query)
            verdict = "ok" if problem is None else f"WRONG: {problem}"
            search.verified.append(f"{query.url} ({len(query.matches)} matches): {verdict}")
            if problem is not None:
                problems.append(f"{query.url}: {problem}")
                log(f"  {query.url}: {problem}")
    checked = sum(len(s.verified) for s in searches)
    log(f"searches: {checked - len(problems)} of {checked} exhaustive checks right")
    log("searches: warm-up round (every query once)")
    for search in searches:
        for query in search.queries:
            client.get(query.url, headers=headers)
    cpu: dict[str, float] = {}
    busy, server_cpu, client_cpu = machine_busy(), process_cpu(server_pid), self_cpu()
    start = time.perf_counter()
    for search in searches:
        n = requests + WARMUP
        plan = [search.queries[i % len(search.queries)] for i in range(n)]
        reqs = [(q.url, headers, check_page(q)) for q in plan]
        search.result = measure.measure_latency(client, reqs, warmup=WARMUP)
        r = search.result
        if r.ok:
            log(
                f"  {search.key}: p50 {r.percentile(50):.1f} ms, p95 {r.percentile(95):.1f} ms, "
                f"max {max(r.samples_ms):.1f} ms ({len(r.samples_ms)} requests)"
            )
        else:
            log(f"  {search.key}: FAILED ({r.errors} bad; first: {r.first_error})")
    cpu["seconds"] = time.perf_counter() - start
    cpu["server_cpu_s"] = process_cpu(server_pid) - server_cpu
    cpu["client_cpu_s"] = self_cpu() - client_cpu
    cpu["other_processes_cpu_s"] = max(
        0.0, machine_busy() - busy - cpu["server_cpu_s"] - cpu["client_cpu_s"]
    )
    log(
        f"searches: {cpu['seconds']:.0f} s; server {cpu['server_cpu_s']:.0f} CPU s, client "
        f"{cpu['client_cpu_s']:.0f} CPU s, other processes {cpu['other_processes_cpu_s']:.0f} CPU s"
    )
    return {"exhaustive_problems": problems, "timed_searches_cpu": cpu}


# ----------------------------------------------------------------------------------------
# Report


def render(meta: dict[str, Any], load_result: dict[str, Any] | None, searches: list[Search]) -> str:
    lines = [
        f"### FHIR benchmark — {meta['started']} ({meta['backend']}, "
        f"{meta['population']['patients']:,} patients)",
        "",
        f"dicomhub {meta['dicomhub_version']} ({meta['git']}"
        + (
            ""
            if meta["dicomhub_source"] == str(REPO / "src")
            else f"; run from {meta['dicomhub_source']}"
        )
        + f") · {meta['cpus']} CPUs · "
        f"load average {meta['load_before']} before, {meta['load_after']} after · "
        f"`dicomhub serve --workers 1` · {meta['duration_s']:.0f} s"
        + (" · **ANALYZE run before the searches (--analyze)**" if meta["analyze"] else ""),
        "",
        "| Figure | Answer size (min / median / max matches) | p50 ms | p95 ms | max ms "
        "| Target | Met |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    if load_result is not None:
        rate = load_result["per_second"]
        met = "yes" if load_result["ok"] and rate >= LOAD_TARGET else "**no**"
        value = (
            f"**{rate:,.0f} resources/s** ({load_result['resources']:,} in "
            f"{load_result['seconds']:.0f} s)"
            if load_result["ok"]
            else f"**failed** ({'; '.join(load_result['problems'])[:200]})"
        )
        lines.append(
            f"| Load NDJSON (`dicomhub fhir import`) | {value} | | | | ≥ {LOAD_TARGET:,.0f}/s "
            f"| {met} |"
        )
    for s in searches:
        r = s.result
        sizes = " / ".join(f"{n:,}" for n in s.sizes())
        if r is None:
            cells = "not run | | "
            met = "—"
        elif not r.ok:
            cells = f"**wrong/failed** ({r.errors} bad: {str(r.first_error)[:120]}) | | "
            met = "**no**"
        else:
            p50, p95 = r.percentile(50) or 0.0, r.percentile(95) or 0.0
            cells = f"{p50:.1f} | {p95:.1f} | {max(r.samples_ms):.1f}"
            met = "yes" if p95 <= P95_TARGET_MS else "**no**"
        lines.append(f"| {s.label} | {sizes} | {cells} | p95 ≤ {P95_TARGET_MS:.0f} ms | {met} |")
    lines += [
        "",
        f"Searches: {meta['requests']} timed requests each (after {WARMUP} warm-up), sequential, "
        f"one keep-alive connection, cycling over {len(searches[0].queries)} birthdate windows or "
        f"{len(searches[1].queries)} Condition codes (4 common, 8 middle, 8 rarest); default "
        f"page size (_count {PAGE}), no _total. Every answer checked against the brute-force "
        "answer from the generated files.",
    ]
    if load_result is not None and load_result.get("import_cpu_s") is not None:
        lines += [
            "",
            f"Load: `dicomhub fhir import` (and its validation workers) used "
            f"{load_result['import_cpu_s']:.0f} CPU s, "
            f"{load_result['import_cpu_ms_per_resource']:.2f} ms per resource, of the "
            f"{load_result['seconds'] * (load_result['cores'] or 1):.0f} CPU s the "
            f"{load_result['cores']} cores offered; other processes on the machine"
            + (" (the PostgreSQL server among them)" if meta["backend"] == "postgresql" else "")
            + " used "
            f"{load_result['other_processes_cpu_s']:.0f} CPU s meanwhile. Database after the load: "
            f"{load_result['database_size']}"
            + "".join(f", {k} {v}" for k, v in load_result.get("database_settings", {}).items())
            + ".",
        ]
    cpu = meta.get("search_cpu")
    if cpu:
        lines += [
            "",
            f"Timed searches: {cpu['seconds']:.0f} s; the server used {cpu['server_cpu_s']:.0f} "
            f"CPU s, the client {cpu['client_cpu_s']:.0f}, other processes"
            + (" (PostgreSQL among them) " if meta["backend"] == "postgresql" else " ")
            + f"{cpu['other_processes_cpu_s']:.0f}.",
        ]
    return "\n".join(lines) + "\n"


def _load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def _source() -> str:
    """Where `dicomhub` is imported from (PYTHONPATH can point the bench at another tree)."""
    spec = importlib.util.find_spec("dicomhub")
    origin = spec.origin if spec is not None else None
    return str(Path(origin).parent.parent) if origin else "?"


# ----------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/fhir",
        description="FHIR benchmark (issue 3): NDJSON load rate and search latency.",
    )
    parser.add_argument("--patients", type=int, default=0, help="at least N patients (1000)")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--requests", type=int, default=0, help="timed requests per search (200; 30 with --quick)"
    )
    parser.add_argument("--quick", action="store_true", help="100 patients, 30 requests per search")
    parser.add_argument("--sample", type=Path, default=DEFAULT_SAMPLE, help="Synthea NDJSON folder")
    parser.add_argument("--seed", type=int, default=3, help="seed of dates, studies, queries")
    parser.add_argument(
        "--pg-url", default=DEFAULT_PG, help="PostgreSQL server (SQLAlchemy URL without database)"
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the PostgreSQL database afterwards (the SQLite data folder is always kept)",
    )
    parser.add_argument(
        "--analyze",
        action="store_true",
        help="gather planner statistics (SQLite: ANALYZE with analysis_limit=1000; PostgreSQL: "
        "ANALYZE) after the load, before the searches: not what dicomhub does by itself",
    )
    parser.add_argument(
        "--skip-load",
        action="store_true",
        help="reuse the data loaded by the previous run of the same backend (no load figure)",
    )
    args = parser.parse_args(argv)
    args.patients = args.patients or (100 if args.quick else 1000)
    args.requests = args.requests or (30 if args.quick else 200)
    if args.patients < 1 or args.requests < 1:
        parser.error("--patients and --requests must be at least 1")
    if not (args.sample / "Patient.000.ndjson").exists():
        parser.error(f"no Synthea sample in {args.sample} (--sample)")
    if args.skip_load and args.backend == "postgresql":
        parser.error("--skip-load works with SQLite only (the PostgreSQL database is dropped)")
    return args


def execute(args: argparse.Namespace) -> int:
    started = datetime.now(UTC)
    load_before = _load_average()
    WORK.mkdir(parents=True, exist_ok=True)
    folder, manifest = population(args)
    truth = read_truth(folder)
    searches = build_searches(truth, args.seed)
    backend = Backend(args.backend, WORK / f"data-{args.backend}", admin_url=args.pg_url)
    load_result: dict[str, Any] | None = None
    extra: dict[str, Any] = {}
    server: servers.Server | None = None
    try:
        if args.skip_load:
            log(f"load: skipped, reusing {backend.data_dir}")
        else:
            backend.create()
            load_result = load(folder, manifest, backend)
        if args.analyze:
            seconds = backend.analyze()
            log(f"analyze: planner statistics gathered in {seconds:.1f} s")
        server = server_for(backend, free_port())
        log(f"serve: {' '.join(server.command)}")
        server.start(timeout=120)
        with measure.new_client(server.base_url) as client:
            missing = check_counts(client, manifest)
        if missing:
            log(f"stored counts differ: {missing}")
        extra = run_searches(server, searches, args.requests)
        extra["count_problems"] = missing
    finally:
        if server is not None:
            server.stop()
        if not args.keep:
            backend.drop()
    meta = {
        "started": started.strftime("%Y-%m-%d %H:%M UTC"),
        "backend": args.backend,
        "dicomhub_version": importlib.metadata.version("dicomhub"),
        "git": measure.git_revision(),
        "dicomhub_source": _source(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": _load_average(),
        "duration_s": time.monotonic() - _START,
        "requests": args.requests,
        "analyze": args.analyze,
        "page_size": PAGE,
        "options": {k: str(v) for k, v in vars(args).items()},
        "search_cpu": extra.get("timed_searches_cpu"),
        "population": {k: v for k, v in manifest.items() if k != "params"}
        | {"clones": manifest["params"]["clones"], "folder": str(folder)},
    }
    markdown = render(meta, load_result, searches)
    document = {
        "meta": meta,
        "load": load_result,
        "searches": [
            {
                "key": s.key,
                "label": s.label,
                "answer_sizes": s.sizes(),
                "queries": [{"url": q.url, "matches": len(q.matches)} for q in s.queries],
                "exhaustive_checks": s.verified,
                "latency": None if s.result is None else s.result.summary(),
                "met": None
                if s.result is None or not s.result.ok
                else (s.result.percentile(95) or 0.0) <= P95_TARGET_MS,
            }
            for s in searches
        ],
        "checks": extra,
        "markdown": markdown,
    }
    out = WORK / "results.json"
    out.write_text(json.dumps(document, indent=2))
    suffix = "-analyze" if args.analyze else ""
    (WORK / f"results-{args.backend}-{args.patients}{suffix}.json").write_text(out.read_text())
    print(markdown)
    log(f"results: {out.relative_to(REPO)}")
    bad = (
        (load_result is not None and not load_result["ok"])
        or any(s.result is None or not s.result.ok for s in searches)
        or extra.get("exhaustive_problems")
        or extra.get("count_problems")
    )
    return 1 if bad else 0


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # so that the server is stopped and the database dropped


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    return execute(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
