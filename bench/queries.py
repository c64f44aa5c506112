"""The QIDO-RS requests of the benchmark and the answer each one must get.

Expected answers are computed from the catalog of every study stored in the servers (the
query corpus plus the ingest corpus under each of its UID variants), with the matching rules
of PS3.4 C.2.2.2: exact PatientID, `*` wildcard on the whole PatientName (case-insensitive,
as both servers do by default), inclusive StudyDate range, ModalitiesInStudy containing the
value.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

import httpx

import corpus
from checks import check_study_set, http_problem, qido_url, study_uids
from corpus import StudyRecord
from measure import Check

__all__ = ["LIMIT", "NAME_PREFIXES", "Case", "PageBook", "filter_cases", "paging_offsets"]

# Asked explicitly on every filtered query: dicomhub's default page is 100 and its maximum 1000;
# Orthanc has no default limit. An answer may be cut at LIMIT, and is checked accordingly.
LIMIT = 1000
# Three-letter-ish prefixes, several shared by many families (Smith, Smithson, Smits...).
NAME_PREFIXES = [
    "Smi", "John", "Wil", "Bro", "Gar", "Mar", "Har", "Tho", "Rob", "Mor",
    "Gre", "Kin", "Mc", "Sch", "Da", "Ba", "Ka", "Ni", "Pa", "Wa",
]  # fmt: skip


@dataclass
class Case:
    key: str
    label: str
    requests: list[tuple[str, Check]]
    expected_sizes: dict[str, int]


def _sizes(values: Iterable[int]) -> dict[str, int]:
    v = sorted(values)
    return {"min": v[0], "median": v[len(v) // 2], "max": v[-1]}


def name_matches(prefix: str) -> Callable[[StudyRecord], bool]:
    folded = corpus.fold(prefix)
    return lambda s: corpus.fold(s.patient_name).startswith(folded)


def filter_cases(
    catalog: list[StudyRecord], query_studies: list[corpus.QueryStudy], n: int
) -> list[Case]:
    """n requests per case, cycling over a fixed, seeded set of values."""
    rng = random.Random(7)

    def by(predicate: Callable[[StudyRecord], bool]) -> frozenset[str]:
        return frozenset(s.study_uid for s in catalog if predicate(s))

    def build(
        key: str,
        label: str,
        values: list[Any],
        params: Callable[[Any], list[tuple[str, str]]],
        predicate: Callable[[Any], Callable[[StudyRecord], bool]],
    ) -> Case:
        expected = [by(predicate(v)) for v in values]
        requests = [
            (
                qido_url("/studies", [*params(values[i % len(values)]), ("limit", str(LIMIT))]),
                check_study_set(expected[i % len(values)], LIMIT),
            )
            for i in range(n)
        ]
        return Case(key, label, requests, _sizes(len(e) for e in expected))

    pids = sorted({s.patient_id for s in query_studies})
    pid_values = rng.sample(pids, min(40, len(pids)))
    date_values = []
    for _ in range(40):
        start = date(2010, 1, 1).toordinal() + rng.randrange(0, 14 * 365)
        length = rng.randrange(30, 181)
        date_values.append(
            (
                date.fromordinal(start).strftime("%Y%m%d"),
                date.fromordinal(start + length).strftime("%Y%m%d"),
            )
        )
    modalities = [m for m, _ in corpus.MODALITIES]
    return [
        build(
            "qido_patient_id",
            "PatientID exact",
            pid_values,
            lambda v: [("PatientID", v)],
            lambda v: lambda s: s.patient_id == v,
        ),
        build(
            "qido_patient_name",
            "PatientName prefix (`Smi*`…)",
            NAME_PREFIXES,
            lambda p: [("PatientName", f"{p}*")],
            name_matches,
        ),
        build(
            "qido_study_date",
            "StudyDate range (1–6 months)",
            date_values,
            lambda r: [("StudyDate", f"{r[0]}-{r[1]}")],
            lambda r: lambda s: r[0] <= s.study_date <= r[1],
        ),
        build(
            "qido_modalities",
            "ModalitiesInStudy",
            modalities,
            lambda m: [("ModalitiesInStudy", m)],
            lambda m: lambda s: m in s.modalities,
        ),
    ]


def paging_offsets(total: int, count: int, page: int) -> list[int]:
    """`count` distinct offsets spread from the first page to the last one."""
    step = max(page, (total - page) // max(count - 1, 1))
    return sorted({min(i * step, total - 1) for i in range(count)})


class PageBook:
    """Checks limit/offset pages one by one, then across requests (`problems`).

    A page is right when it holds min(page, total - offset) distinct known studies. Across
    requests, the same offset must give the same page and different offsets must not overlap;
    otherwise a client paging through would see studies twice or miss some.
    """

    def __init__(self, all_uids: frozenset[str], page: int) -> None:
        self.all_uids = all_uids
        self.page = page
        self.pages: dict[int, set[frozenset[str]]] = {}

    def check(self, offset: int) -> Check:
        def check(response: httpx.Response) -> str | None:
            if problem := http_problem(response):
                return problem
            got = study_uids(response)
            want = max(0, min(self.page, len(self.all_uids) - offset))
            if len(got) != want or len(set(got)) != len(got):
                return f"{len(got)} studies ({len(set(got))} distinct), expected {want}"
            if not set(got) <= self.all_uids:
                return "unknown studies in the page"
            self.pages.setdefault(offset, set()).add(frozenset(got))
            return None

        return check

    def problems(self) -> list[str]:
        out = []
        if any(len(v) > 1 for v in self.pages.values()):
            out.append("the same offset gave different pages across requests")
        seen: set[str] = set()
        for _offset, versions in sorted(self.pages.items()):
            page = next(iter(versions))
            if seen & page:
                out.append("pages at different offsets overlap")
                break
            seen |= page
        return out
