"""Figures, their ratio dicomhub/Orthanc against the targets of the issue, and the outputs:
a markdown table (printed) and the raw numbers (bench/results/<timestamp>.json)."""

from __future__ import annotations

import json
import operator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Figure", "Target", "render_markdown", "write_json"]

DICOMHUB = "dicomhub"
ORTHANC = "Orthanc"


@dataclass(frozen=True)
class Target:
    """ratio (dicomhub / Orthanc) `op` value, e.g. >= 1.5 for ingest, <= 0.5 for QIDO p95."""

    op: str  # ">=" or "<="
    value: float

    def met(self, ratio: float) -> bool:
        compare = operator.ge if self.op == ">=" else operator.le
        return bool(compare(ratio, self.value))

    def __str__(self) -> str:
        return f"{'≥' if self.op == '>=' else '≤'} {self.value:g}×"


@dataclass
class Figure:
    """One row of the table: the same measurement on both servers."""

    key: str
    group: str
    label: str
    metric: str  # "per_second" or "mb_per_second" (throughput), "p95_ms" (latency)
    unit: str
    target: Target | None
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # server -> summary

    def value(self, server: str) -> float | None:
        summary = self.results.get(server)
        if not summary or not summary.get("ok"):
            return None
        value = summary.get(self.metric)
        return float(value) if value is not None else None

    @property
    def ratio(self) -> float | None:
        ours, theirs = self.value(DICOMHUB), self.value(ORTHANC)
        if ours is None or theirs is None or theirs == 0:
            return None
        return ours / theirs

    @property
    def met(self) -> bool | None:
        ratio = self.ratio
        if self.target is None or ratio is None:
            return None
        return self.target.met(ratio)

    def cell(self, server: str) -> str:
        summary = self.results.get(server)
        if summary is None:
            return "not run"
        if summary.get("unsupported"):
            return f"unsupported ({summary['unsupported']})"
        if not summary.get("ok"):
            errors = summary.get("errors", 0)
            first = summary.get("first_error") or "no checked answer"
            return f"**wrong/failed** ({errors} bad: {_short(first)})"
        if summary["kind"] == "latency":
            return f"{summary['p50_ms']:.1f} / {summary['p95_ms']:.1f}"
        return f"{summary[self.metric]:.1f}"

    def verdict(self) -> str:
        if self.target is None:
            return "(info)"
        if self.value(DICOMHUB) is None:
            return "**no** (dicomhub failed)"
        if self.value(ORTHANC) is None:
            return "n/a (Orthanc failed)"
        return "yes" if self.met else "**no**"

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "group": self.group,
            "label": self.label,
            "metric": self.metric,
            "unit": self.unit,
            "target": None
            if self.target is None
            else {"op": self.target.op, "ratio": self.target.value},
            "ratio": self.ratio,
            "met": self.met,
            "results": self.results,
        }


def _short(text: str, limit: int = 140) -> str:
    text = text.replace("|", "/").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_markdown(figures: list[Figure], meta: dict[str, Any], notes: list[str]) -> str:
    lines = [
        f"### dicomhub vs Orthanc — {meta['started']} ({meta['mode']} corpus, "
        f"dicomhub --workers {meta['workers']})",
        "",
        f"dicomhub {meta['dicomhub_version']} ({meta['git']}) · Orthanc {meta['orthanc_version']}"
        f" + DICOMweb plugin {meta['orthanc_dicomweb_version']} · {meta['cpus']} CPUs · "
        f"load average {meta['load_before']} before, {meta['load_after']} after · "
        f"{meta['duration_s']:.0f} s · requests send `Accept-Encoding: {meta['accept_encoding']}`",
        "",
        "| Figure | Unit | dicomhub | Orthanc | dicomhub/Orthanc | Target | Met |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    group = None
    for f in figures:
        if f.group != group:
            group = f.group
            lines.append(f"| **{group}** | | | | | | |")
        ratio = f.ratio
        lines.append(
            "| "
            + " | ".join(
                [
                    f.label,
                    f.unit,
                    f.cell(DICOMHUB),
                    f.cell(ORTHANC),
                    "—" if ratio is None else f"{ratio:.2f}×",
                    "—" if f.target is None else str(f.target),
                    f.verdict(),
                ]
            )
            + " |"
        )
    lines += [
        "",
        "Latencies are p50 / p95 in ms, the ratio compares p95. Throughputs are per second, "
        "MB = 10^6 bytes of DICOM files. Only answers checked correct count.",
    ]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def write_json(
    path: Path, figures: list[Figure], meta: dict[str, Any], notes: list[str], markdown: str
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "meta": meta,
        "figures": [f.to_json() for f in figures],
        "notes": notes,
        "markdown": markdown,
    }
    path.write_text(json.dumps(document, indent=2))
