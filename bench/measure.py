"""Timers, percentiles and the per-figure result records.

A request only counts once its answer has been checked: a checker returns None when the
answer is right, or a short reason when it is not. Wrong answers are counted and the first
reason is kept, so the report can say "wrong" instead of showing a time.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

__all__ = [
    "Check",
    "Latency",
    "Probe",
    "Throughput",
    "log",
    "measure_latency",
    "measure_parallel",
    "measure_sequential_throughput",
    "median_summary",
    "new_client",
]

Check = Callable[[httpx.Response], str | None]

TIMEOUT = httpx.Timeout(600.0, connect=10.0)
# What browsers and Python's requests (dicomweb-client) send; pinned so that installing an
# optional decoder into the venv (brotli, zstandard) does not change the requests. The driver
# sets it from --accept-encoding.
ACCEPT_ENCODING = "gzip, deflate"


START = time.monotonic()


def log(message: str) -> None:
    """A progress line on stderr, stamped with the time since the run started."""
    elapsed = time.monotonic() - START
    print(
        f"[{int(elapsed) // 60:02d}:{int(elapsed) % 60:02d}] {message}", file=sys.stderr, flush=True
    )


def new_client(base_url: str, accept_encoding: str | None = None) -> httpx.Client:
    """One connection, kept alive, as a viewer or a modality gateway would use."""
    return httpx.Client(
        base_url=base_url,
        timeout=TIMEOUT,
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        headers={"Accept-Encoding": accept_encoding or ACCEPT_ENCODING},
    )


def _encoding(response: httpx.Response) -> str:
    return str(response.headers.get("content-encoding", "identity"))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


@dataclass
class Latency:
    """Latencies of checked requests, in milliseconds."""

    samples_ms: list[float] = field(default_factory=list)
    requests: int = 0
    errors: int = 0
    first_error: str | None = None
    unsupported: str | None = None  # set when the server cannot answer this kind of request
    encodings: Counter[str] = field(default_factory=Counter)  # Content-Encoding of answers

    @property
    def ok(self) -> bool:
        return self.errors == 0 and self.unsupported is None and bool(self.samples_ms)

    def percentile(self, p: float) -> float | None:
        if not self.samples_ms:
            return None
        return float(np.percentile(np.asarray(self.samples_ms), p))

    def summary(self) -> dict[str, Any]:
        return {
            "kind": "latency",
            "ok": self.ok,
            "requests": self.requests,
            "checked": len(self.samples_ms),
            "errors": self.errors,
            "first_error": self.first_error,
            "unsupported": self.unsupported,
            "p50_ms": self.percentile(50),
            "p95_ms": self.percentile(95),
            "mean_ms": float(np.mean(self.samples_ms)) if self.samples_ms else None,
            "min_ms": min(self.samples_ms) if self.samples_ms else None,
            "max_ms": max(self.samples_ms) if self.samples_ms else None,
            "content_encodings": dict(self.encodings),
            "samples_ms": [round(s, 3) for s in self.samples_ms],
        }

    def fail(self, reason: str) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = reason

    def describe(self) -> str:
        if not self.ok:
            return f"FAILED ({self.errors} bad answers; first: {self.first_error})"
        return f"p50 {self.percentile(50):.1f} ms, p95 {self.percentile(95):.1f} ms"


@dataclass
class Throughput:
    """Work done over wall-clock time; only meaningful when every answer was right."""

    items: int = 0
    payload_bytes: int = 0
    seconds: float = 0.0
    requests: int = 0
    errors: int = 0
    first_error: str | None = None
    clients: int = 1
    encodings: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return self.errors == 0 and self.items > 0 and self.seconds > 0

    @property
    def per_second(self) -> float | None:
        return self.items / self.seconds if self.ok else None

    @property
    def mb_per_second(self) -> float | None:
        return self.payload_bytes / 1e6 / self.seconds if self.ok else None

    def fail(self, reason: str) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = reason

    def summary(self) -> dict[str, Any]:
        return {
            "kind": "throughput",
            "ok": self.ok,
            "items": self.items,
            "payload_bytes": self.payload_bytes,
            "seconds": self.seconds,
            "requests": self.requests,
            "errors": self.errors,
            "first_error": self.first_error,
            "clients": self.clients,
            "per_second": self.per_second,
            "mb_per_second": self.mb_per_second,
            "content_encodings": dict(self.encodings),
        }

    def describe(self) -> str:
        if not self.ok:
            return f"FAILED ({self.errors} bad answers; first: {self.first_error})"
        return (
            f"{self.per_second:.1f} items/s, {self.mb_per_second:.1f} MB/s "
            f"({self.items} in {self.seconds:.2f} s)"
        )


def median_summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Rounds of one throughput figure as one summary: the median of their rates, each round kept.

    A round with a wrong answer makes the whole figure wrong: other rounds never outvote it.
    """
    failed = [r for r in rounds if not r["ok"]]
    encodings: Counter[str] = Counter()
    for r in rounds:
        encodings.update(r["content_encodings"])
    ok = bool(rounds) and not failed
    return {
        "kind": "throughput",
        "ok": ok,
        "statistic": f"median of {len(rounds)} rounds",
        "items": sum(r["items"] for r in rounds),
        "payload_bytes": sum(r["payload_bytes"] for r in rounds),
        "seconds": sum(r["seconds"] for r in rounds),
        "requests": sum(r["requests"] for r in rounds),
        "errors": sum(r["errors"] for r in rounds),
        "first_error": failed[0]["first_error"] if failed else None,
        "clients": rounds[0]["clients"] if rounds else 0,
        "per_second": statistics.median(r["per_second"] for r in rounds) if ok else None,
        "mb_per_second": statistics.median(r["mb_per_second"] for r in rounds) if ok else None,
        "content_encodings": dict(encodings),
        "rounds": rounds,
    }


@dataclass
class Probe:
    """A one-off correctness observation (not timed), reported as a note."""

    server: str
    what: str
    ok: bool
    detail: str


def measure_latency(
    client: httpx.Client,
    requests: Sequence[tuple[str, dict[str, str], Check]],
    *,
    warmup: int = 3,
) -> Latency:
    """GET each (url, headers, check) in turn; the first `warmup` ones are not recorded."""
    result = Latency()
    for index, (url, headers, check) in enumerate(requests):
        counted = index >= warmup
        start = time.perf_counter()
        try:
            response = client.get(url, headers=headers)
            elapsed = time.perf_counter() - start
            problem = check(response)
            result.encodings[_encoding(response)] += counted
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            elapsed, problem = 0.0, _describe(exc)
        if not counted:
            continue
        result.requests += 1
        if problem is None:
            result.samples_ms.append(elapsed * 1000)
        else:
            result.fail(f"{url}: {problem}")
    return result


def measure_sequential_throughput(
    client: httpx.Client,
    requests: Sequence[tuple[str, dict[str, str], Check, int, int]],
    *,
    warmup: int = 2,
    min_seconds: float = 0.0,
) -> Throughput:
    """GET (url, headers, check, items, payload bytes) in turn; time is the sum of the
    checked requests' durations (from sending to the last byte received). With min_seconds,
    the timed requests (after the warm-up) are sent again, in the same order, until that much
    time has been counted, so that a fast server is timed over as long as a slow one."""
    result = Throughput()
    timed = len(requests) - warmup
    index = 0
    while index < len(requests) or (timed > 0 and result.seconds < min_seconds and result.ok):
        url, headers, check, items, size = requests[
            index if index < len(requests) else warmup + (index - warmup) % timed
        ]
        start = time.perf_counter()
        try:
            response = client.get(url, headers=headers)
            elapsed = time.perf_counter() - start
            problem = check(response)
            result.encodings[_encoding(response)] += index >= warmup
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            elapsed, problem = 0.0, _describe(exc)
        index += 1
        if index <= warmup:
            continue
        result.requests += 1
        if problem is None:
            result.items += items
            result.payload_bytes += size
            result.seconds += elapsed
        else:
            result.fail(f"{url}: {problem}")
    return result


@dataclass
class Job:
    """One request: a POST of a prebuilt body, or a GET (empty body, method "GET")."""

    url: str
    body: bytes
    headers: dict[str, str]
    check: Check
    items: int
    payload_bytes: int
    method: str = "POST"


def measure_parallel(
    base_url: str,
    jobs: Sequence[Job],
    clients: int,
    accept_encoding: str | None = None,
    *,
    min_seconds: float = 0.0,
) -> Throughput:
    """Send every job using `clients` threads (one connection each), pulling from one list.

    The clock runs from the moment all client threads are ready until the last answer has
    been received; answers are checked as they come (a small JSON reply, or a byte compare).
    With min_seconds, jobs are sent again from the start of the list, in the same order, until
    that much time has passed (GETs only: a POST would store twice).
    """
    result = Throughput(clients=clients)
    lock = threading.Lock()
    taken = 0  # jobs handed out so far
    started = [0.0]

    def start_clock() -> None:  # run once, by the barrier, before any client is released
        started[0] = time.perf_counter()

    ready = threading.Barrier(clients + 1, action=start_clock)
    connections = [new_client(base_url, accept_encoding) for _ in range(clients)]

    def next_job() -> Job | None:
        nonlocal taken
        with lock:
            again = time.perf_counter() - started[0] < min_seconds and result.errors == 0
            if not jobs or (taken >= len(jobs) and not again):
                return None
            taken += 1
            return jobs[(taken - 1) % len(jobs)]

    def worker(client: httpx.Client) -> None:
        ready.wait()
        while (job := next_job()) is not None:
            try:
                response = client.request(
                    job.method, job.url, content=job.body or None, headers=job.headers
                )
                problem = job.check(response)
                encoding = _encoding(response)
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                problem, encoding = _describe(exc), "?"
            with lock:
                result.requests += 1
                result.encodings[encoding] += 1
                if problem is None:
                    result.items += job.items
                    result.payload_bytes += job.payload_bytes
                else:
                    result.fail(problem)

    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in connections]
    try:
        for thread in threads:
            thread.start()
        ready.wait()
        for thread in threads:
            thread.join()
        result.seconds = time.perf_counter() - started[0]
    finally:
        for client in connections:
            client.close()
    return result


def git_revision() -> str:
    """The commit measured, `+dirty src` when src/ has uncommitted changes."""
    repo = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown commit"
    return commit + ("+dirty src" if dirty else "")
