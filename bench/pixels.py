"""Issue 5, pixels for viewers: frames, rendered JPEGs and thumbnails (the `pixels` phase).

Runs after the ingest phase (its CT and MR instances under UID variants 1-4) and the metadata
phase, whose 500-instance series figure is the fourth target of the issue. It stores the
100-frame 512x512 instance of corpus.load_or_generate_multiframe in both servers, then
measures, each figure on dicomhub then on Orthanc with the same requests:

1. single frames (random, 1 and 4 clients), each answer byte-compared with the stored frame;
2. rendered JPEGs of CT instances (variant 1) and of frames of the multi-frame instance;
3. thumbnails of series (variants 3-4) and instances (variant 2): the first request of each,
   then the same requests again. Orthanc 1.10 / DICOMweb 1.7 has no `/thumbnail` (404), so
   its figures are `rendered?viewport=W,H` with W x H the size of dicomhub's thumbnails.

Each variant is touched by one kind of request only, so "first" requests meet no cache.
"""

from __future__ import annotations

import io
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np
import pydicom

import corpus
import measure
from checks import (
    FRAME,
    FRAME_QUOTED,
    JPEG,
    check_image,
    check_single,
    reference_images,
    stow_jobs,
)
from corpus import IngestInstance, MultiFrame
from measure import Check, Job, Probe, log
from report import DICOMHUB, Target

if TYPE_CHECKING:
    from driver import Run
    from servers import Server

__all__ = ["FRAMES_TARGET", "RENDERED_TARGET", "pixels_phase"]

FRAMES_TARGET = Target(">=", 3.0)
RENDERED_TARGET = Target(">=", 1.0)
FRAMES_GROUP = "WADO-RS frames (100-frame 512×512 16-bit instance)"
RENDERED_GROUP = "WADO-RS rendered JPEG"
THUMBNAIL_GROUP = "Thumbnails (Orthanc: rendered?viewport)"
FALLBACK_THUMBNAIL = (128, 128)  # Orthanc's viewport when dicomhub gives no thumbnail size


@dataclass(frozen=True)
class PixelPlan:
    frame_requests: int  # per frames figure
    rendered_instances: int
    rendered_frames: int
    thumbnail_instances: int
    # Repeatable figures send their requests again, in the same order, until this much time
    # has been measured: a server answering in 2 ms is timed over as long as one taking 300.
    min_seconds: float


# Orthanc 1.10 reads and parses the whole 52 MB file for each frame (about 3 frames/s here).
FULL_PLAN = PixelPlan(200, 100, 50, 200, 10.0)
QUICK_PLAN = PixelPlan(60, 30, 20, 60, 3.0)

Request = tuple[str, dict[str, str], Check, int, int]  # measure_sequential_throughput's


def pixels_phase(run: Run, work: Path) -> None:
    Pixels(run, work).execute()


class Pixels:
    """The phase's state: the multi-frame instance, its frames and the reference images."""

    def __init__(self, run: Run, work: Path) -> None:
        self.run = run
        self.work = work
        self.index_of = {i.sop_uid: k for k, i in enumerate(run.ingest.instances)}
        self.plan = QUICK_PLAN if run.args.quick else FULL_PLAN
        self.multiframe: MultiFrame
        self.frames: dict[int, bytes] = {}  # frame number -> its bytes as stored
        self.frame_refs: dict[int, list[np.ndarray]] = {}
        self.refs: dict[str, list[np.ndarray]] = {}  # SOPInstanceUID (variant 0) -> references

    def execute(self) -> None:
        self.multiframe = corpus.load_or_generate_multiframe(
            self.work / "corpus", log, frames=100, size=512
        )
        self.store_multiframe()
        self.frames_figures()
        self.rendered_figures()
        self.thumbnail_figures()

    # -- helpers --------------------------------------------------------------------------

    @property
    def again(self) -> str:
        """For the labels of figures whose requests are repeated for min_seconds."""
        return f", again for ≥ {self.plan.min_seconds:g} s"

    def servers(self, phase: str) -> list[Server]:
        return [s for s in self.run.servers if self.run.alive(s, phase)]

    def reference(self, inst: IngestInstance) -> list[np.ndarray]:
        if inst.sop_uid not in self.refs:
            ds = pydicom.dcmread(io.BytesIO(self.run.raw[self.index_of[inst.sop_uid]]))
            self.refs[inst.sop_uid] = reference_images(ds.pixel_array, ds)
        return self.refs[inst.sop_uid]

    def sequential(
        self,
        key: str,
        group: str,
        label: str,
        unit: str,
        target: Target | None,
        runs: dict[str, tuple[list[Request], int]],
        *,
        again: bool = True,
    ) -> None:
        """One throughput figure: each server's (requests, warm-up count) on one connection;
        with `again`, the requests are repeated for at least the plan's min_seconds."""
        min_seconds = self.plan.min_seconds if again else 0.0
        fig = self.run.figure(key, group, label, "per_second", unit, target)
        for server in self.servers(label):
            requests, warmup = runs[server.name]
            log(f"{label}: {len(requests) - warmup} requests to {server.name}")
            with measure.new_client(server.base_url) as client:
                result = measure.measure_sequential_throughput(
                    client, requests, warmup=warmup, min_seconds=min_seconds
                )
            fig.results[server.name] = result.summary()
            log(f"  {server.name}: {result.describe()}")

    def spread(self, instances: list[IngestInstance], count: int) -> list[IngestInstance]:
        count = min(count, len(instances))
        step = len(instances) / count
        return [instances[int(k * step)] for k in range(count)]

    def modality(self, inst: IngestInstance) -> str:
        return self.run.spec.ingest_studies[inst.study_index].series[inst.series_index].modality

    # -- the multi-frame instance ----------------------------------------------------------

    def store_multiframe(self) -> None:
        mf = self.multiframe
        data = mf.path.read_bytes()
        ds = pydicom.dcmread(io.BytesIO(data))
        size = mf.frame_bytes
        for n in range(1, mf.frames + 1):
            self.frames[n] = ds.PixelData[(n - 1) * size : n * size]
            frame = np.frombuffer(self.frames[n], "<u2").reshape(mf.rows, mf.columns)
            self.frame_refs[n] = reference_images(frame, ds)
        jobs = stow_jobs([data], 1)
        for server in self.servers("the multi-frame store"):
            log(
                f"storing the {mf.frames}-frame instance ({len(data) / 1e6:.0f} MB) in {server.name}"
            )
            result = measure.measure_parallel(server.base_url, jobs, 1)
            if not result.ok:
                self.run.notes.append(
                    f"{server.name}: storing the multi-frame instance failed: {result.first_error}"
                )
            log(f"  {server.name}: {result.describe()}")

    # -- frames -----------------------------------------------------------------------------

    def frames_figures(self) -> None:
        mf = self.multiframe
        rng = random.Random(20261126)
        numbers = [rng.randint(1, mf.frames) for _ in range(self.plan.frame_requests)]
        self.run.extra["frame_numbers"] = numbers

        def jobs(headers: dict[str, str], picks: list[int]) -> list[Job]:
            return [
                Job(
                    f"{mf.url()}/frames/{n}",
                    b"",
                    headers,
                    check_single(self.frames[n], multipart=True),
                    1,
                    mf.frame_bytes,
                    "GET",
                )
                for n in picks
            ]

        timed = jobs(FRAME, numbers)
        default = measure.ACCEPT_ENCODING
        encodings: list[tuple[str, int, str, Target | None]] = [
            ("1 client", 1, default, FRAMES_TARGET),
            ("4 clients", 4, default, FRAMES_TARGET),
        ]
        if default != "identity":
            encodings.append(("1 client, `Accept-Encoding: identity`", 1, "identity", None))
        for what, clients, encoding, target in encodings:
            key = f"frames_{clients}c" + ("_identity" if target is None else "")
            label = f"single frame, {what} ({len(numbers)} random frames{self.again})"
            fig = self.run.figure(key, FRAMES_GROUP, label, "per_second", "frames/s", target)
            for server in self.servers("frames"):
                log(f"frames, {what}: {len(numbers)} requests to {server.name}")
                # Warm-up (discarded): a few frames per connection, same checks.
                measure.measure_parallel(server.base_url, timed[: 2 * clients], clients, encoding)
                result = measure.measure_parallel(
                    server.base_url, timed, clients, encoding, min_seconds=self.plan.min_seconds
                )
                fig.results[server.name] = result.summary()
                log(f"  {server.name}: {result.describe()}")
        self.probe_quoted_accept(jobs(FRAME_QUOTED, [numbers[0]])[0])

    def probe_quoted_accept(self, job: Job) -> None:
        """PS3.18 writes `type="application/octet-stream"` quoted; OHIF sends it unquoted."""
        what = f"frame with Accept: {job.headers['Accept']}"
        for server in self.servers("probes"):
            with measure.new_client(server.base_url) as client:
                try:
                    problem = job.check(client.get(job.url, headers=job.headers))
                except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                    problem = str(exc)
            if problem:
                self.run.notes.append(f"{server.name}: a {what} gives a wrong answer: {problem}")
            self.run.probes.append(Probe(server.name, what, problem is None, problem or ""))

    # -- rendered ---------------------------------------------------------------------------

    def rendered_figures(self) -> None:
        variant = 1
        plan = self.plan
        mf = self.multiframe
        full = (mf.columns, mf.rows)
        cts = [i for i in self.run.ingest.instances if self.modality(i) == "CT"]
        chosen = self.spread(cts, plan.rendered_instances)
        requests: list[Request] = [
            (
                f"{_instance_url(i, variant)}/rendered",
                JPEG,
                check_image(self.reference(i), size=full),
                1,
                0,
            )
            for i in chosen
        ]
        warmup = 2
        label = f"instance `/rendered` ({len(chosen)} CT instances{self.again}, 1 client)"
        runs = {s.name: (requests[:warmup] + requests, warmup) for s in self.run.servers}
        self.sequential(
            "rendered_instance", RENDERED_GROUP, label, "images/s", RENDERED_TARGET, runs
        )

        rng = random.Random(5)
        numbers = [rng.randint(1, mf.frames) for _ in range(plan.rendered_frames)]
        requests = [
            (
                f"{mf.url()}/frames/{n}/rendered",
                JPEG,
                check_image(self.frame_refs[n], size=full, frame_number=n),
                1,
                0,
            )
            for n in numbers
        ]
        label = (
            f"frame `/frames/{{n}}/rendered` ({len(numbers)} random frames{self.again}, 1 client)"
        )
        runs = {s.name: (requests[:warmup] + requests, warmup) for s in self.run.servers}
        self.sequential("rendered_frame", RENDERED_GROUP, label, "images/s", RENDERED_TARGET, runs)

    # -- thumbnails -------------------------------------------------------------------------

    def thumbnail_size(self) -> tuple[int, int]:
        """The size dicomhub gives a thumbnail (asked once, on variant 1, which no thumbnail
        figure uses)."""
        inst = self.run.ingest.instances[0]
        sizes: Counter[tuple[int, int]] = Counter()
        check = check_image(self.reference(inst), max_side=10_000, sizes=sizes)
        server = next((s for s in self.run.servers if s.name == DICOMHUB), None)
        problem = "dicomhub is not running"
        if server is not None and self.run.alive(server, "thumbnails"):
            with measure.new_client(server.base_url) as client:
                try:
                    url = f"{_instance_url(inst, 1)}/thumbnail"
                    problem = check(client.get(url, headers=JPEG)) or ""
                except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                    problem = str(exc)
        if problem or not sizes:
            self.run.notes.append(
                f"dicomhub gave no thumbnail to take its size from ({problem}); Orthanc was "
                f"asked for viewport={FALLBACK_THUMBNAIL[0]},{FALLBACK_THUMBNAIL[1]}"
            )
            return FALLBACK_THUMBNAIL
        return next(iter(sizes))

    def thumbnail_figures(self) -> None:
        plan = self.plan
        ing = self.run.ingest
        width, height = self.thumbnail_size()
        self.run.extra["thumbnail_size"] = [width, height]
        viewport = f"rendered?viewport={width},{height}"
        self.run.notes.append(
            f"Thumbnails: dicomhub `…/thumbnail`; Orthanc (DICOMweb 1.7 has no `/thumbnail`) "
            f"`…/{viewport}`, the size of dicomhub's thumbnails."
        )
        suffix = {DICOMHUB: "thumbnail"}
        side = max(width, height)
        # A series thumbnail may show any instance of the series.
        series = sorted({(i.study_index, i.series_index) for i in ing.instances})
        members = [ing.in_series(*k) for k in series]

        def series_requests(name: str, variants: tuple[int, ...]) -> list[Request]:
            last = suffix.get(name, viewport)
            return [
                (
                    f"{_series_url(m[0], v)}/{last}",
                    JPEG,
                    check_image([r for i in m for r in self.reference(i)], max_side=side),
                    1,
                    0,
                )
                for v in variants
                for m in members
            ]

        def instance_requests(
            name: str, variant: int, chosen: list[IngestInstance]
        ) -> list[Request]:
            last = suffix.get(name, viewport)
            return [
                (
                    f"{_instance_url(i, variant)}/{last}",
                    JPEG,
                    check_image(self.reference(i), max_side=side),
                    1,
                    0,
                )
                for i in chosen
            ]

        names = [s.name for s in self.run.servers]
        # Warm-up (discarded): the same kind of request on variant 1, which no figure here uses.
        self.first_and_again(
            "series",
            "series",
            {n: series_requests(n, (1,))[0] for n in names},
            {n: series_requests(n, (3, 4)) for n in names},
        )
        chosen = self.spread(ing.instances, plan.thumbnail_instances)
        self.first_and_again(
            "instance",
            "instances",
            {n: instance_requests(n, 1, chosen)[0] for n in names},
            {n: instance_requests(n, 2, chosen) for n in names},
        )

    def first_and_again(
        self,
        level: str,
        plural: str,
        warmup: dict[str, Request],
        cold: dict[str, list[Request]],
    ) -> None:
        """Two thumbnail figures: each request once on a cold cache, then the same again."""
        count = len(next(iter(cold.values()), []))
        runs = {n: ([warmup[n], *requests], 1) for n, requests in cold.items()}
        self.sequential(
            f"thumbnail_{level}_first",
            THUMBNAIL_GROUP,
            f"{level}, first request ({count} {plural})",
            "thumbnails/s",
            None,
            runs,
            again=False,
        )
        runs = {n: (requests[:1] + requests, 1) for n, requests in cold.items()}
        self.sequential(
            f"thumbnail_{level}_again",
            THUMBNAIL_GROUP,
            f"{level}, repeated (the same {count} {plural}{self.again})",
            "thumbnails/s",
            None,
            runs,
        )


def _series_url(inst: IngestInstance, variant: int) -> str:
    return (
        f"/studies/{corpus.variant_uid(inst.study_uid, variant)}"
        f"/series/{corpus.variant_uid(inst.series_uid, variant)}"
    )


def _instance_url(inst: IngestInstance, variant: int) -> str:
    return f"{_series_url(inst, variant)}/instances/{corpus.variant_uid(inst.sop_uid, variant)}"
