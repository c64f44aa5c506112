"""dicomhub vs Orthanc: one run, same machine, same requests, every answer checked.

Run through bench/run (`make bench`), which puts both servers and this client in a private
network namespace. Phases, each measured on dicomhub then on Orthanc:

1. STOW-RS ingest: 1 and 4 clients x 1 and 50 instances per request (each configuration
   stores the ingest corpus under its own UIDs, so nothing is ever a duplicate).
2. Loading the query corpus (STOW, 50 instances per request), then checking it is all there.
3. QIDO-RS latency over the query corpus (PatientID, PatientName prefix, StudyDate range,
   ModalitiesInStudy, limit/offset paging).
4. WADO-RS metadata latency (the big series, a multi-series study).
5. WADO-RS retrieve throughput (single instances, a whole study).
6. Pixels (issue 5, bench/pixels.py): frames of a 100-frame instance, rendered JPEGs,
   thumbnails.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import os
import platform
import signal
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

import corpus
import measure
import pixels
import queries
import report
import servers
from checks import (
    JSON,
    MULTIPART,
    SINGLE_DICOMHUB,
    check_metadata,
    check_single,
    check_study_retrieve,
    check_study_set,
    qido_url,
    stow_jobs,
    study_uids,
)
from corpus import IngestCorpus, QueryCorpus, StudyRecord
from dicomhub.config import default_workers
from measure import Probe, Throughput, log
from report import DICOMHUB, Figure, Target

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "bench" / "work"
RESULTS = REPO / "bench" / "results"

INGEST_TARGET = Target(">=", 1.5)
QIDO_TARGET = Target("<=", 0.5)
METADATA_TARGET = Target("<=", 0.25)
RETRIEVE_TARGET = Target(">=", 1.0)


@dataclass(frozen=True)
class Plan:
    """How many requests each figure gets."""

    latency_requests: int  # timed QIDO requests per figure
    latency_warmup: int
    paging_offsets: int
    paging_repeats: int
    metadata_requests: int
    retrieve_instances: int
    study_retrieves: int
    stow_rounds: int  # each STOW figure is the median of this many rounds per server
    ingest_configs: tuple[tuple[int, int], ...] = ((1, 1), (1, 50), (4, 1), (4, 50))
    query_load_per_request: int = 50


FULL_PLAN = Plan(
    latency_requests=100,
    latency_warmup=3,
    paging_offsets=20,
    paging_repeats=5,
    metadata_requests=20,
    retrieve_instances=200,
    study_retrieves=5,
    stow_rounds=3,
)
QUICK_PLAN = Plan(
    latency_requests=30,
    latency_warmup=3,
    paging_offsets=10,
    paging_repeats=3,
    metadata_requests=8,
    retrieve_instances=40,
    study_retrieves=3,
    stow_rounds=1,
)


# ----------------------------------------------------------------------------------------
# The run


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.plan = QUICK_PLAN if args.quick else FULL_PLAN
        if args.requests:
            self.plan = dataclasses.replace(self.plan, latency_requests=args.requests)
        if args.stow_rounds:
            self.plan = dataclasses.replace(self.plan, stow_rounds=args.stow_rounds)
        self.spec = corpus.spec_for(args.quick)
        self.figures: list[Figure] = []
        self.notes: list[str] = []
        self.probes: list[Probe] = []
        self.servers: list[servers.Server] = []
        self.catalog: list[StudyRecord] = []
        self.ingest: IngestCorpus
        self.query: QueryCorpus
        self.raw: list[bytes] = []  # ingest corpus, variant 0
        self.extra: dict[str, Any] = {}

    # -- helpers --------------------------------------------------------------------------

    def figure(
        self, key: str, group: str, label: str, metric: str, unit: str, target: Target | None
    ) -> Figure:
        fig = Figure(key, group, label, metric, unit, target)
        self.figures.append(fig)
        return fig

    def alive(self, server: servers.Server, phase: str) -> bool:
        status = server.exit_status()
        if status is None:
            return True
        note = f"{server.name} exited with status {status} during {phase}; see {server.log_path}"
        if note not in self.notes:
            self.notes.append(note)
            log(note)
        return False

    # -- phases ---------------------------------------------------------------------------

    def ingest_phase(self) -> None:
        """Each configuration, round after round, on both servers; each figure is the median.

        This VM's speed swings by 2x within minutes, so one pass per server could compare a
        fast minute with a slow one. Rounds alternate which server goes first, and every
        round's ratio is kept (a note) beside the ratio of the medians.
        """
        self.raw = [i.path.read_bytes() for i in self.ingest.instances]
        n = len(self.raw)
        total = sum(len(d) for d in self.raw)
        rounds = self.plan.stow_rounds
        configs = list(enumerate(self.plan.ingest_configs, start=1))
        figures: dict[int, Figure] = {}
        runs: dict[int, dict[str, list[dict[str, Any]]]] = {}  # variant -> server -> rounds
        for variant, (clients, per_request) in configs:
            label = f"{clients} client{'s' if clients > 1 else ''} × {per_request}/request"
            figures[variant] = self.figure(
                f"stow_{clients}c_{per_request}pr",
                "STOW-RS ingest",
                label,
                "per_second",
                "instances/s",
                INGEST_TARGET,
            )
            runs[variant] = {}
        self.settle_all()  # each figure below ends with its server idle again
        for stow_round in range(1, rounds + 1):
            order = self.servers if stow_round % 2 else list(reversed(self.servers))
            for variant, (clients, per_request) in configs:
                fig = figures[variant]
                data = [corpus.with_variant(d, variant, stow_round) for d in self.raw]
                jobs = stow_jobs(data, per_request)
                del data
                expected = self.ingest.study_records(variant, stow_round)
                for server in order:
                    if not self.alive(server, "ingest"):
                        continue
                    log(
                        f"STOW {fig.label}, round {stow_round}/{rounds}: {n} instances "
                        f"({total / 1e6:.0f} MB) to {server.name}"
                    )
                    before = server.cpu_seconds()
                    result = measure.measure_parallel(server.base_url, jobs, clients)
                    used = server.cpu_seconds() - before
                    waited, deferred = server.settle()
                    self.verify_stored(server, expected, n, result)
                    runs[variant].setdefault(server.name, []).append(
                        {
                            **result.summary(),
                            "round": stow_round,
                            "server_cpu_seconds": used,
                            "deferred_cpu_seconds": deferred,
                        }
                    )
                    log(
                        f"  {server.name}: {result.describe()}, "
                        f"server CPU {used * 1000 / n:.2f} ms/instance, then "
                        f"{deferred * 1000 / n:.2f} ms/instance in the {waited:.0f} s until idle"
                    )
                self.catalog += expected
        for variant, fig in figures.items():
            for name, summaries in runs[variant].items():
                fig.results[name] = measure.median_summary(summaries)
        self.rounds_note(figures, runs, rounds)
        self.cpu_note(
            {
                fig.label: {
                    name: (
                        statistics.median(s["server_cpu_seconds"] for s in summaries) * 1000 / n,
                        statistics.median(s["deferred_cpu_seconds"] for s in summaries) * 1000 / n,
                    )
                    for name, summaries in runs[variant].items()
                }
                for variant, fig in figures.items()
            },
            rounds,
        )

    def settle_all(self) -> None:
        """Every server idle before a figure starts (see Server.settle)."""
        for server in self.servers:
            if server.exit_status() is None:
                server.settle()

    def rounds_note(
        self,
        figures: dict[int, Figure],
        runs: dict[int, dict[str, list[dict[str, Any]]]],
        rounds: int,
    ) -> None:
        """Every round's own ratio, so that a reader sees how far the rounds agree."""
        if rounds < 2:
            return
        parts = []
        for variant, fig in figures.items():
            theirs = {r["round"]: r for r in runs[variant].get(report.ORTHANC, [])}
            ratios = [
                f"{a['per_second'] / b['per_second']:.2f}"
                for a in runs[variant].get(DICOMHUB, [])
                if (b := theirs.get(a["round"])) and a["ok"] and b["ok"]
            ]
            if ratios:
                parts.append(f"{fig.label} {' / '.join(ratios)}")
        if parts:
            self.notes.append(
                f"STOW-RS figures are the median of {rounds} rounds (each round stores the "
                "corpus under new UIDs on both servers; odd rounds dicomhub first, even rounds "
                "Orthanc first). dicomhub/Orthanc of each round: " + "; ".join(parts) + "."
            )

    def cpu_note(self, cpu: dict[str, dict[str, tuple[float, float]]], rounds: int) -> None:
        """Server CPU per instance during each STOW figure, and after it until the server was
        idle, as a note: on two cores shared with the client, a server that needs more CPU
        per instance cannot store more per second."""
        names = [server.name for server in self.servers]
        parts = []
        for label, by_server in cpu.items():
            values = " / ".join(
                f"{by_server[name][0]:.2f} + {by_server[name][1]:.2f}"
                for name in names
                if name in by_server
            )
            ratio = ""
            if len(by_server) == 2 and all(by_server.get(name, (0.0,))[0] for name in names):
                ours, theirs = by_server[names[0]], by_server[names[1]]
                ratio = (
                    f" ({ours[0] / theirs[0]:.2f}× while the clock ran, "
                    f"{sum(ours) / sum(theirs):.2f}× in all)"
                )
            parts.append(f"{label} {values}{ratio}")
        if parts:
            of_rounds = f"; medians of {rounds} rounds" if rounds > 1 else ""
            self.notes.append(
                "Server CPU per stored instance during the STOW figures, ms of user + system "
                "time of all the server's processes: while the clock ran + after it, until the "
                f"server was idle (dicomhub's FHIR sync catching up){of_rounds} "
                f"({' / '.join(names)}): " + "; ".join(parts) + "."
            )

    def verify_stored(
        self, server: servers.Server, expected: list[StudyRecord], want: int, result: Throughput
    ) -> None:
        """The studies of this configuration hold exactly the `want` instances sent (QIDO)."""
        uids = sorted(s.study_uid for s in expected)
        url = qido_url(
            "/studies",
            [("StudyInstanceUID", ",".join(uids)), ("includefield", "00201208"), ("limit", "100")],
        )
        try:
            with measure.new_client(server.base_url) as client:
                response = client.get(url, headers=JSON)
            if response.status_code != 200:
                result.fail(f"count check: HTTP {response.status_code}")
                return
            data = response.json()
            found = {str(d["0020000D"]["Value"][0]) for d in data}
            count = sum(int(d["00201208"]["Value"][0]) for d in data)
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            result.fail(f"count check failed: {exc}")
            return
        if found != set(uids) or count != want:
            result.fail(
                f"stored count: {len(found)} studies / {count} instances, expected {len(uids)} / {want}"
            )

    def load_query_corpus(self) -> None:
        per = self.plan.query_load_per_request
        studies = self.query.studies
        jobs = stow_jobs([s.path.read_bytes() for s in studies], per)
        fig = self.figure(
            "query_corpus_load",
            "Query corpus",
            f"load {len(studies)} small studies (1 client × {per}/request)",
            "per_second",
            "instances/s",
            None,
        )
        self.catalog += [s.record() for s in studies]
        all_uids = frozenset(s.study_uid for s in self.catalog)
        for server in self.servers:
            if not self.alive(server, "the query corpus load"):
                continue
            log(f"loading the query corpus ({len(studies)} studies) into {server.name}")
            result = measure.measure_parallel(server.base_url, jobs, 1)
            # Idle again before anything else is timed: the sync of 10,000 new studies must
            # not run during the next figures (of either server).
            waited, deferred = server.settle()
            log(
                f"  {server.name}: {result.describe()}, then {waited:.0f} s and "
                f"{deferred:.1f} s of CPU until idle; "
                "checking every study is there"
            )
            problem = self.walk_all_studies(server, all_uids)
            if problem:
                result.fail(problem)
                log(f"  {server.name}: {problem}")
            fig.results[server.name] = result.summary()

    def walk_all_studies(self, server: servers.Server, expected: frozenset[str]) -> str | None:
        """Page through every study (limit=1000): the union must be the whole catalog."""
        seen: list[str] = []
        with measure.new_client(server.base_url) as client:
            for offset in range(0, len(expected) + 1000, 1000):
                url = qido_url("/studies", [("limit", "1000"), ("offset", str(offset))])
                try:
                    response = client.get(url, headers=JSON)
                    if response.status_code != 200:
                        return f"paging check: HTTP {response.status_code} at offset {offset}"
                    page = study_uids(response)
                except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                    return f"paging check failed at offset {offset}: {exc}"
                seen += page
                if not page:
                    break
        if len(seen) != len(set(seen)) or set(seen) != expected:
            return (
                f"paging through all studies gave {len(seen)} answers, {len(set(seen))} "
                f"distinct, {len(set(seen) & expected)} of the {len(expected)} stored"
            )
        return None

    def qido_phase(self) -> None:
        plan = self.plan
        n = plan.latency_requests + plan.latency_warmup
        cases = queries.filter_cases(self.catalog, self.query.studies, n)
        self.extra["qido_limit"] = queries.LIMIT
        self.extra["qido_expected_sizes"] = {c.key: c.expected_sizes for c in cases}
        for case in cases:
            fig = self.figure(
                case.key, "QIDO-RS latency", case.label, "p95_ms", "ms p50 / p95", QIDO_TARGET
            )
            for server in self.servers:
                if not self.alive(server, "QIDO"):
                    continue
                log(f"QIDO {case.label}: {len(case.requests)} requests to {server.name}")
                with measure.new_client(server.base_url) as client:
                    result = measure.measure_latency(
                        client,
                        [(url, JSON, check) for url, check in case.requests],
                        warmup=plan.latency_warmup,
                    )
                fig.results[server.name] = result.summary()
                log(f"  {server.name}: {result.describe()}")
        self.paging()

    def paging(self) -> None:
        plan = self.plan
        all_uids = frozenset(s.study_uid for s in self.catalog)
        page = 100
        offsets = queries.paging_offsets(len(all_uids), plan.paging_offsets, page)
        order = [o for _ in range(plan.paging_repeats) for o in offsets]
        warm = [offsets[0]] * plan.latency_warmup
        fig = self.figure(
            "qido_paging",
            "QIDO-RS latency",
            f"limit={page} paging ({len(offsets)} offsets over all studies)",
            "p95_ms",
            "ms p50 / p95",
            QIDO_TARGET,
        )
        self.extra["paging_offsets"] = offsets
        for server in self.servers:
            if not self.alive(server, "QIDO paging"):
                continue
            book = queries.PageBook(all_uids, page)
            requests = [
                (
                    qido_url("/studies", [("limit", str(page)), ("offset", str(o))]),
                    JSON,
                    book.check(o),
                )
                for o in warm + order
            ]
            log(f"QIDO paging: {len(order)} requests to {server.name}")
            with measure.new_client(server.base_url) as client:
                result = measure.measure_latency(client, requests, warmup=len(warm))
            for problem in book.problems():
                result.fail(problem)
            fig.results[server.name] = result.summary()
            log(f"  {server.name}: {result.describe()}")

    def metadata_phase(self) -> None:
        variant = 1
        ing = self.ingest
        plan = self.plan
        study_idx, series_idx = ing.big_series
        series = ing.in_series(study_idx, series_idx)
        study = ing.in_study(ing.multi_series_study)
        series_uid = corpus.variant_uid(series[0].series_uid, variant)
        series_study = corpus.variant_uid(series[0].study_uid, variant)
        study_uid = corpus.variant_uid(study[0].study_uid, variant)
        n_series = len({i.series_index for i in study})
        cases = [
            (
                "metadata_series",
                f"series metadata ({len(series)} instances)",
                f"/studies/{series_study}/series/{series_uid}/metadata",
                frozenset(corpus.variant_uid(i.sop_uid, variant) for i in series),
            ),
            (
                "metadata_study",
                f"study metadata ({n_series} series, {len(study)} instances)",
                f"/studies/{study_uid}/metadata",
                frozenset(corpus.variant_uid(i.sop_uid, variant) for i in study),
            ),
        ]
        for key, label, url, expected in cases:
            fig = self.figure(
                key, "WADO-RS metadata", label, "p95_ms", "ms p50 / p95", METADATA_TARGET
            )
            check = check_metadata(expected)
            warmup = 2
            requests = [(url, JSON, check)] * (plan.metadata_requests + warmup)
            for server in self.servers:
                if not self.alive(server, "metadata"):
                    continue
                log(f"{label}: {plan.metadata_requests} requests to {server.name}")
                with measure.new_client(server.base_url) as client:
                    result = measure.measure_latency(client, requests, warmup=warmup)
                fig.results[server.name] = result.summary()
                log(f"  {server.name}: {result.describe()}")

    def retrieve_phase(self) -> None:
        variant = 1
        ing = self.ingest
        plan = self.plan
        # A spread of single instances over every series.
        count = min(plan.retrieve_instances, len(ing.instances))
        step = len(ing.instances) / count
        chosen = [int(i * step) for i in range(count)]
        singles = []
        for index in chosen:
            inst = ing.instances[index]
            data = corpus.with_variant(self.raw[index], variant)
            url = (
                f"/studies/{corpus.variant_uid(inst.study_uid, variant)}"
                f"/series/{corpus.variant_uid(inst.series_uid, variant)}"
                f"/instances/{corpus.variant_uid(inst.sop_uid, variant)}"
            )
            singles.append((url, data))
        warmup = 2
        single_rate = self.figure(
            "retrieve_instance_rate",
            "WADO-RS retrieve",
            f"single instance ({count} instances, 1 client)",
            "per_second",
            "instances/s",
            RETRIEVE_TARGET,
        )
        single_mb = self.figure(
            "retrieve_instance_mb",
            "WADO-RS retrieve",
            "single instance",
            "mb_per_second",
            "MB/s",
            RETRIEVE_TARGET,
        )
        same_accept = self.figure(
            "retrieve_instance_multipart_rate",
            "WADO-RS retrieve",
            "single instance, both asked for multipart/related",
            "per_second",
            "instances/s",
            None,
        )
        uncompressed = self.figure(
            "retrieve_instance_identity_rate",
            "WADO-RS retrieve",
            "single instance, `Accept-Encoding: identity` (no gzip)",
            "per_second",
            "instances/s",
            None,
        )
        default = measure.ACCEPT_ENCODING
        for server in self.servers:
            if not self.alive(server, "retrieve"):
                continue
            # dicomhub: application/dicom (the headline) and multipart (Orthanc's request);
            # Orthanc: multipart only (it answers 400 to application/dicom).
            # With --accept-encoding identity the headline run is the uncompressed one too.
            headline = [single_rate, single_mb]
            plain = [uncompressed] if default == "identity" else []
            if server.name == DICOMHUB:
                runs = [(False, default, headline + plain), (True, default, [same_accept])]
            else:
                runs = [(True, default, [*headline, same_accept, *plain])]
            if not plain:
                runs.append((server.name != DICOMHUB, "identity", [uncompressed]))
            for as_multipart, encoding, figures in runs:
                headers = MULTIPART if as_multipart else SINGLE_DICOMHUB
                requests = [
                    (url, headers, check_single(data, as_multipart), 1, len(data))
                    for url, data in singles[:warmup] + singles
                ]
                log(
                    f"retrieve {count} single instances from {server.name} "
                    f"({'multipart' if as_multipart else 'application/dicom'}, "
                    f"Accept-Encoding: {encoding})"
                )
                with measure.new_client(server.base_url, encoding) as client:
                    result = measure.measure_sequential_throughput(client, requests, warmup=warmup)
                for fig in figures:
                    fig.results[server.name] = result.summary()
                log(f"  {server.name}: {result.describe()}")

        study = ing.in_study(ing.multi_series_study)
        study_uid = corpus.variant_uid(study[0].study_uid, variant)
        index_of = {i.sop_uid: k for k, i in enumerate(ing.instances)}
        digests: Counter[str] = Counter(
            hashlib.sha256(corpus.with_variant(self.raw[index_of[i.sop_uid]], variant)).hexdigest()
            for i in study
        )
        size = sum(i.size for i in study)
        fig = self.figure(
            "retrieve_study_mb",
            "WADO-RS retrieve",
            f"whole study, multipart ({len(study)} instances, {size / 1e6:.0f} MB)",
            "mb_per_second",
            "MB/s",
            RETRIEVE_TARGET,
        )
        check = check_study_retrieve(digests)
        requests = [(f"/studies/{study_uid}", MULTIPART, check, len(study), size)] * (
            plan.study_retrieves + 1
        )
        for server in self.servers:
            if not self.alive(server, "study retrieve"):
                continue
            log(f"retrieve the whole study {plan.study_retrieves} times from {server.name}")
            with measure.new_client(server.base_url) as client:
                result = measure.measure_sequential_throughput(client, requests, warmup=1)
            fig.results[server.name] = result.summary()
            log(f"  {server.name}: {result.describe()}")

    def probes_phase(self) -> None:
        """One-off correctness observations reported as notes (not timed)."""
        prefix = "Smi"
        expected = frozenset(
            s.study_uid
            for s in self.catalog
            if corpus.fold(s.patient_name).startswith(corpus.fold(prefix))
        )
        check = check_study_set(expected, 1000)
        url = f"/studies?PatientName={prefix}%2A&limit=1000"
        for server in self.servers:
            if not self.alive(server, "probes"):
                continue
            with measure.new_client(server.base_url) as client:
                try:
                    problem = check(client.get(url, headers=JSON))
                except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                    problem = str(exc)
            if problem:
                self.notes.append(
                    f"{server.name}: a percent-encoded wildcard (`PatientName={prefix}%2A`, as "
                    f"Python's requests/httpx/dicomweb-client send it) gives a wrong answer: "
                    f"{problem}. The timed queries send `*` unencoded, as browsers do."
                )
            self.probes.append(
                Probe(server.name, "PatientName=Smi%2A", problem is None, problem or "")
            )

    def encoding_notes(self) -> None:
        """Say which answers came compressed: it costs the server CPU time on this loopback."""
        for server in self.servers:
            compressed = []
            for fig in self.figures:
                summary = fig.results.get(server.name, {})
                encodings = summary.get("content_encodings") or {}
                used = any(e != "identity" and n for e, n in encodings.items())
                if used and fig.label not in compressed:
                    compressed.append(fig.label)
            if compressed:
                self.notes.append(
                    f"{server.name} compressed (Content-Encoding) its answers in: "
                    + "; ".join(compressed)
                    + f". Every request sends `Accept-Encoding: {measure.ACCEPT_ENCODING}` "
                    "(as browsers and Python's requests do) except the `identity` row."
                )

    # -- orchestration --------------------------------------------------------------------

    def execute(self) -> int:
        started = datetime.now(UTC)
        load_before = _load()
        log(f"corpus: {self.spec.name}")
        self.ingest, self.query = corpus.load_or_generate(self.spec, WORK / "corpus", log)
        log(
            f"  ingest corpus {len(self.ingest.instances)} instances "
            f"({self.ingest.total_bytes / 1e6:.0f} MB), query corpus {len(self.query.studies)} studies"
        )
        log("fresh data folders for both servers (removing the previous run's)")
        self.servers = [
            servers.dicomhub_server(REPO, WORK, workers=self.args.workers),
            servers.orthanc_server(WORK),
        ]
        meta: dict[str, Any] = {}
        try:
            for server in self.servers:
                log(f"starting {server.name} (log: {server.log_path})")
                server.start()
            meta.update(self.versions())
            phases: list[tuple[str, Callable[[], None]]] = [
                ("ingest", self.ingest_phase),
                ("query corpus load", self.load_query_corpus),
                ("QIDO", self.qido_phase),
                ("metadata", self.metadata_phase),
                ("retrieve", self.retrieve_phase),
                ("pixels", lambda: pixels.pixels_phase(self, WORK)),
                ("probes", self.probes_phase),
            ]
            wanted = _with_dependencies(self.args.only)
            for name, phase in phases:
                if wanted is not None and name not in wanted:
                    continue
                try:
                    phase()
                except Exception as exc:  # noqa: BLE001 - record, keep the other phases
                    self.notes.append(f"phase {name} aborted: {type(exc).__name__}: {exc}")
                    log(f"phase {name} aborted: {exc!r}")
            self.encoding_notes()
            meta["data_bytes"] = {}
            for server in self.servers:
                self.alive(server, "the run")
                meta["data_bytes"][server.name] = _du(server.data_dir)
        finally:
            for server in self.servers:
                server.stop()
            log("servers stopped")
        meta.update(
            {
                "started": started.strftime("%Y-%m-%d %H:%M UTC"),
                "mode": "quick" if self.args.quick else "full",
                "workers": self.args.workers,
                "accept_encoding": measure.ACCEPT_ENCODING,
                "cpus": os.cpu_count(),
                "load_before": load_before,
                "load_after": _load(),
                "duration_s": time.monotonic() - measure.START,
                "python": platform.python_version(),
                "platform": platform.platform(),
                "plan": self.plan.__dict__,
                "corpus": {
                    "name": self.spec.name,
                    "ingest_instances": len(self.ingest.instances),
                    "ingest_bytes": self.ingest.total_bytes,
                    "query_studies": len(self.query.studies),
                },
                "probes": [p.__dict__ for p in self.probes],
                **self.extra,
            }
        )
        for key in ("dicomhub_version", "git", "orthanc_version", "orthanc_dicomweb_version"):
            meta.setdefault(key, "?")
        markdown = report.render_markdown(self.figures, meta, self.notes)
        stamp = started.strftime("%Y%m%dT%H%M%SZ")
        path = RESULTS / f"{stamp}.json"
        report.write_json(path, self.figures, meta, self.notes, markdown)
        print()
        print(markdown)
        log(f"raw numbers in {path.relative_to(REPO)}")
        return 0

    def versions(self) -> dict[str, Any]:
        from dicomhub import __version__

        out: dict[str, Any] = {"dicomhub_version": __version__, "git": measure.git_revision()}
        try:
            system = httpx.get("http://127.0.0.1:8042/system", timeout=10).json()
            plugin = httpx.get("http://127.0.0.1:8042/plugins/dicom-web", timeout=10).json()
            out["orthanc_version"] = system.get("Version", "?")
            out["orthanc_dicomweb_version"] = plugin.get("Version", "?")
        except (httpx.HTTPError, ValueError) as exc:
            log(f"cannot read Orthanc's version: {exc}")
        return out


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def _du(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).stat().st_size
    return total


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run",
        description="Benchmark dicomhub against Orthanc (STOW, QIDO, metadata, retrieve, "
        "frames, rendered, thumbnails).",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small corpus and fewer requests (a few minutes)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=default_workers(),
        help="dicomhub serve --workers N (default: serve's own default, one per CPU, at most 8; "
        "Orthanc uses every core by default)",
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=0,
        help="timed requests per QIDO figure (default 100, 30 with --quick)",
    )
    parser.add_argument(
        "--stow-rounds",
        type=int,
        default=0,
        help="rounds of every STOW figure per server, reported as the median (default 3, "
        "1 with --quick; at most 9)",
    )
    parser.add_argument(
        "--accept-encoding",
        default=measure.ACCEPT_ENCODING,
        help="Accept-Encoding of every request (default %(default)r, as browsers and "
        "Python's requests send; Orthanc then gzips its answers). 'identity' turns "
        "HTTP compression off",
    )
    parser.add_argument(
        "--only",
        default=None,
        help="comma-separated phases to run (ingest, load, qido, metadata, retrieve, pixels, "
        "probes), "
        "with the phases they need; for quick iterations, not for published figures",
    )
    args = parser.parse_args(argv)
    if args.only and any(p.strip() not in _ALIASES for p in args.only.split(",")):
        parser.error(f"--only takes {', '.join(_ALIASES)}")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if not 0 <= args.stow_rounds <= 9:
        parser.error("--stow-rounds takes 1 to 9 (the round is one digit of the UIDs)")
    return args


# Phases that need another phase's data first.
_NEEDS = {
    "QIDO": {"query corpus load"},
    "metadata": {"ingest"},
    "retrieve": {"ingest"},
    # The pixels report includes the series-metadata figure (issue 5's fourth target).
    "pixels": {"ingest", "metadata"},
    "probes": {"ingest", "query corpus load"},
}
_ALIASES = {
    "ingest": "ingest",
    "load": "query corpus load",
    "qido": "QIDO",
    "metadata": "metadata",
    "retrieve": "retrieve",
    "pixels": "pixels",
    "probes": "probes",
}


def _with_dependencies(only: str | None) -> set[str] | None:
    if not only:
        return None
    wanted = {_ALIASES[name.strip()] for name in only.split(",") if name.strip()}
    for name in list(wanted):
        wanted |= _NEEDS.get(name, set())
    return wanted


def _terminate(signum: int, _frame: object) -> None:
    # Turn SIGTERM/SIGHUP into an exception so that the servers are stopped (finally blocks).
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    args = parse_args(argv)
    if not servers.ORTHANC_BIN.exists():
        print(f"{servers.ORTHANC_BIN} is missing: run the bench through bench/run", file=sys.stderr)
        return 1
    measure.ACCEPT_ENCODING = args.accept_encoding
    return Run(args).execute()


if __name__ == "__main__":
    sys.exit(main())
