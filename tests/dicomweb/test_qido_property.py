"""QIDO-RS against a brute-force oracle: random populations, random queries, same answers.

The oracle below is written from PS3.4 C.2.2.2 and the documented choices of the server
(case- and accent-insensitive PN, padded TM, word-prefix fuzzy matching); it shares no code
with dicomhub, so a matching bug in the server makes the two disagree.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.uid import generate_uid

from tests.dicomfiles import make_dataset, multipart_body, to_part10

QUERIES_PER_POPULATION = 50

# --- the population -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Instance:
    uid: str
    number: int


@dataclass(frozen=True)
class Series:
    uid: str
    modality: str
    number: int
    instances: tuple[Instance, ...]


@dataclass(frozen=True)
class Study:
    uid: str
    patient_name: str
    patient_id: str
    study_date: str
    study_time: str | None
    accession: str | None
    series: tuple[Series, ...]


FAMILY = ["Doe", "Dóe", "Müller", "Muller", "Smith", "Ng", "O'Brien", "Nuñez", "Lee-Park"]
GIVEN = ["John", "Jöhn", "Jane", "Ann", "Anna", "José", "Mary Ann"]
MODALITIES = ["CT", "MR", "US", "OT"]
ID_ALPHABET = "AaB01-_%["  # SQL LIKE and GLOB specials included on purpose
# Values that meet at the edges: LIKE/GLOB specials that must stay literal, and times of every
# precision on either side of the hour and minute boundaries (random ones rarely collide).
SPECIAL_IDS = ["A%B", "AxB", "A_B", "A[B]", "AB", "a%b"]
SPECIAL_TIMES = [
    "09",
    "0959",
    "095959.999999",
    "10",
    "1000",
    "100000",
    "100000.000001",
    "1015",
    "101530",
    "101530.25",
    "1059",
    "105959",
    "105959.5",
    "11",
    "1130",
]
FIRST_DAY = date(2023, 12, 29)
DAYS = 7


def recased(text: str) -> st.SearchStrategy[str]:
    """`text` with each letter in upper or lower case."""
    return st.lists(st.booleans(), min_size=len(text), max_size=len(text)).map(
        lambda flips: "".join(
            c.upper() if f else c.lower() for c, f in zip(text, flips, strict=True)
        )
    )


@st.composite
def person_names(draw: st.DrawFn) -> str:
    family = draw(st.sampled_from(FAMILY).flatmap(recased))
    parts = [family]
    if draw(st.booleans()):
        parts.append(draw(st.sampled_from(GIVEN).flatmap(recased)))
    name = "^".join(parts)
    return name + draw(st.sampled_from(["", "", "^", "^^"]))  # trailing empty components


def dates() -> st.SearchStrategy[str]:
    return st.integers(0, DAYS - 1).map(lambda d: (FIRST_DAY + timedelta(d)).strftime("%Y%m%d"))


def times() -> st.SearchStrategy[str]:
    return st.sampled_from(SPECIAL_TIMES) | random_times()


def stored_times() -> st.SearchStrategy[str]:
    """What devices write: mostly HHMMSS or more, sometimes less."""
    return random_times(full=True) | st.sampled_from(SPECIAL_TIMES)


@st.composite
def random_times(draw: st.DrawFn, *, full: bool = False) -> str:
    """A valid TM of any precision: HH, HHMM, HHMMSS or HHMMSS.F to HHMMSS.FFFFFF."""
    text = f"{draw(st.integers(9, 11)):02d}"
    if full or draw(st.booleans()):
        text += f"{draw(st.sampled_from([0, 15, 30, 59])):02d}"
        if full or draw(st.booleans()):
            text += f"{draw(st.sampled_from([0, 30, 59])):02d}"
            if draw(st.booleans()):
                text += "." + draw(st.text("0259", min_size=1, max_size=6))
    return text


def short_text(alphabet: str) -> st.SearchStrategy[str]:
    return st.text(alphabet, min_size=1, max_size=4)


@st.composite
def studies(draw: st.DrawFn) -> Study:
    series = []
    for _ in range(draw(st.integers(1, 3))):
        numbers = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
        series.append(
            Series(
                uid=generate_uid(),
                modality=draw(st.sampled_from(MODALITIES)),
                number=draw(st.integers(1, 3)),
                instances=tuple(Instance(generate_uid(), n) for n in numbers),
            )
        )
    return Study(
        uid=generate_uid(),
        patient_name=draw(person_names()),
        patient_id=draw(st.sampled_from(SPECIAL_IDS) | short_text(ID_ALPHABET)),
        study_date=draw(dates()),
        study_time=draw(stored_times() | st.none()),
        accession=draw(short_text("AaBb1-") | st.none()),
        series=tuple(series),
    )


populations = st.lists(studies(), min_size=2, max_size=5)


def part10_files(population: list[Study]) -> list[bytes]:
    files = []
    for study in population:
        for series in study.series:
            for inst in series.instances:
                attributes: dict[str, Any] = {
                    "SpecificCharacterSet": "ISO_IR 192",
                    "PatientName": study.patient_name,
                    "PatientID": study.patient_id,
                    "StudyDate": study.study_date,
                    "Modality": series.modality,
                    "SeriesNumber": series.number,
                    "InstanceNumber": inst.number,
                }
                if study.accession is not None:
                    attributes["AccessionNumber"] = study.accession
                ds = make_dataset(
                    study_uid=study.uid,
                    series_uid=series.uid,
                    sop_uid=inst.uid,
                    rows=1,
                    columns=1,
                    **attributes,
                )
                if study.study_time is None:
                    del ds.StudyTime
                else:
                    ds.StudyTime = study.study_time
                files.append(to_part10(ds))
    return files


# --- the oracle ---------------------------------------------------------------------------------


def fold(text: str) -> str:
    """Lower case without accents (decompose, drop the combining marks)."""
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn").lower()


def pn_key(name: str) -> str:
    return fold(name.strip()).rstrip("^")


def wildcard(pattern: str, text: str) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, text, re.DOTALL) is not None


def words(text: str) -> list[str]:
    return [w for w in re.split(r"[\^\s'\-]+", fold(text)) if w]


def microseconds(tm: str, *, upper: bool) -> int:
    """A TM as microseconds since midnight; `upper` gives the last instant a partial TM covers."""
    m = re.fullmatch(r"(\d\d)(\d\d)?(\d\d)?(?:\.(\d{1,6}))?", tm)
    assert m, tm
    hh, mm, ss, frac = m.groups()
    filler = "9" if upper else "0"
    whole = "59" if upper else "00"
    seconds = int(hh) * 3600 + int(mm or whole) * 60 + int(ss or whole)
    return seconds * 1_000_000 + int((frac or "").ljust(6, filler))


def is_universal(raw: str) -> bool:
    return raw.strip().strip("*") == ""


def text_matches(raw: str, stored: str | None, *, separators: str) -> bool:
    """Non-PN strings: exact and case-sensitive, wildcards, or a list of values."""
    if is_universal(raw):
        return True
    if stored is None:
        return False
    values = [v.strip() for v in re.split(f"[{re.escape(separators)}]", raw) if v.strip()]
    if len(values) > 1:
        return stored in values
    return wildcard(values[0], stored)  # a value without * or ? is its own pattern


def pn_matches(raw: str, stored: str, *, fuzzy: bool) -> bool:
    if fuzzy:
        wanted = words(re.sub(r"[*?]", " ", raw))
        have = words(stored)
        return all(any(h.startswith(w) for h in have) for w in wanted)
    if is_universal(raw):
        return True
    values = [v for v in raw.split("\\") if v.strip()]
    if len(values) > 1:
        return pn_key(stored) in {pn_key(v) for v in values}
    return wildcard(pn_key(values[0]), pn_key(stored))


def date_matches(raw: str, stored: str) -> bool:
    if "-" not in raw:
        return stored == raw
    low, high = raw.split("-")
    return (not low or stored >= low) and (not high or stored <= high)


def time_matches(raw: str, stored: str | None) -> bool:
    if stored is None:
        return False
    value = microseconds(stored, upper=False)
    if "-" not in raw:
        return value == microseconds(raw, upper=False)
    low, high = raw.split("-")
    return (not low or value >= microseconds(low, upper=False)) and (
        not high or value <= microseconds(high, upper=True)
    )


def number_matches(raw: str, stored: int) -> bool:
    return stored in {int(v) for v in re.split(r"[,\\]", raw)}


def uid_matches(raw: str, stored: str) -> bool:
    return stored in {v.strip() for v in re.split(r"[,\\]", raw)}


@dataclass(frozen=True)
class Row:
    study: Study
    series: Series | None
    instance: Instance | None


def row_matches(row: Row, key: str, raw: str, fuzzy: bool) -> bool:
    study, series, inst = row.study, row.series, row.instance
    if key == "PatientName":
        return pn_matches(raw, study.patient_name, fuzzy=fuzzy)
    if key == "PatientID":
        return text_matches(raw, study.patient_id, separators="\\")
    if key == "AccessionNumber":
        return text_matches(raw, study.accession, separators="\\")
    if key == "StudyDate":
        return date_matches(raw, study.study_date)
    if key == "StudyTime":
        return time_matches(raw, study.study_time)
    if key == "StudyInstanceUID":
        return uid_matches(raw, study.uid)
    if key == "ModalitiesInStudy":
        return any(text_matches(raw, s.modality, separators=",\\") for s in study.series)
    assert series is not None
    if key == "Modality":
        return text_matches(raw, series.modality, separators=",\\")
    if key == "SeriesNumber":
        return number_matches(raw, series.number)
    if key == "SeriesInstanceUID":
        return uid_matches(raw, series.uid)
    assert inst is not None
    if key == "InstanceNumber":
        return number_matches(raw, inst.number)
    if key == "SOPInstanceUID":
        return uid_matches(raw, inst.uid)
    raise AssertionError(key)


def rows(population: list[Study], level: str) -> list[Row]:
    """Every entity of the level, in the order the population was stored."""
    out = []
    for study in population:
        if level == "study":
            out.append(Row(study, None, None))
            continue
        for series in study.series:
            if level == "series":
                out.append(Row(study, series, None))
                continue
            out.extend(Row(study, series, inst) for inst in series.instances)
    return out


def row_uid(row: Row) -> str:
    if row.instance is not None:
        return row.instance.uid
    if row.series is not None:
        return row.series.uid
    return row.study.uid


# --- the queries --------------------------------------------------------------------------------

STUDY_KEYS = [
    "PatientName",
    "PatientID",
    "AccessionNumber",
    "StudyDate",
    "StudyTime",
    "StudyInstanceUID",
    "ModalitiesInStudy",
]
SERIES_KEYS = ["Modality", "SeriesNumber", "SeriesInstanceUID"]
INSTANCE_KEYS = ["InstanceNumber", "SOPInstanceUID"]
KEYS = {
    "study": STUDY_KEYS,
    "series": STUDY_KEYS + SERIES_KEYS,
    "instance": STUDY_KEYS + SERIES_KEYS + INSTANCE_KEYS,
}


@st.composite
def strip_accents(draw: st.DrawFn, text: str) -> str:
    if draw(st.booleans()):
        decomposed = unicodedata.normalize("NFD", text)
        return "".join(c for c in decomposed if unicodedata.category(c) != "Mn")
    return text


@st.composite
def pattern_of(draw: st.DrawFn, text: str) -> str:
    """A wildcard pattern built from `text`: a prefix, a suffix, or characters replaced by `?`."""
    kind = draw(st.sampled_from(["prefix", "suffix", "middle", "question"]))
    cut = draw(st.integers(0, len(text)))
    if kind == "prefix":
        return text[:cut] + "*"
    if kind == "suffix":
        return "*" + text[cut:]
    if kind == "middle":
        return "*" + text[cut : cut + draw(st.integers(1, 3))] + "*"
    chars = list(text)
    for i in draw(st.sets(st.integers(0, len(text) - 1), max_size=len(text))):
        chars[i] = "?"
    return "".join(chars)


def universal() -> st.SearchStrategy[str]:
    return st.sampled_from(["", "*", "**"])


def person_name_values(population: list[Study], fuzzy: bool) -> st.SearchStrategy[str]:
    stored = st.sampled_from([s.patient_name for s in population])
    if fuzzy:
        some_word = stored.map(lambda n: [w for w in re.split(r"[\^\s'\-]+", n) if w]).flatmap(
            st.sampled_from
        )
        prefix = some_word.flatmap(lambda w: st.integers(1, len(w)).map(lambda n: w[:n]))
        return st.one_of(
            prefix.flatmap(recased),
            st.lists(prefix, min_size=1, max_size=2).map(" ".join),
            st.lists(prefix, min_size=2, max_size=2).map("^".join),
            prefix.map(lambda p: p + "*"),
            short_text("dojaNUñé"),
            universal(),
        )
    same_name = stored.flatmap(recased).flatmap(strip_accents)
    return st.one_of(
        same_name,
        same_name.map(lambda n: n.rstrip("^") + "^^"),
        same_name.flatmap(pattern_of),
        st.lists(same_name, min_size=2, max_size=2).map("\\".join),
        short_text("DdoeJj*?^"),
        universal(),
    )


def text_values(values: list[str], alphabet: str) -> st.SearchStrategy[str]:
    stored = st.sampled_from(values) if values else short_text(alphabet)
    # Hypothesis favours the first choices: patterns, where LIKE and GLOB could go wrong.
    return st.one_of(
        stored.flatmap(pattern_of),
        stored,
        stored.flatmap(recased),  # case matters outside PN
        st.lists(stored, min_size=2, max_size=3).map("\\".join),
        short_text(alphabet),
        universal(),
    )


@st.composite
def date_values(draw: st.DrawFn) -> str:
    a, b = sorted(draw(st.lists(dates(), min_size=2, max_size=2)))
    kind = draw(st.sampled_from(["until", "range", "single", "from"]))
    return {"single": a, "range": f"{a}-{b}", "from": f"{a}-", "until": f"-{b}"}[kind]


@st.composite
def coarser(draw: st.DrawFn, tm: str) -> str:
    """`tm` cut to HH, HHMM or HHMMSS: a bound whose period contains `tm`."""
    return tm[: draw(st.sampled_from([n for n in (2, 4, 6) if n <= len(tm)]))]


@st.composite
def time_values(draw: st.DrawFn, stored: list[str]) -> str:
    # Bounds cut from stored times have periods that hold other stored times.
    pick = times() if not stored else st.sampled_from(stored).flatmap(coarser) | times()
    kind = draw(st.sampled_from(["until", "range", "single", "from"]))
    if kind == "range":
        a, b = sorted(draw(st.lists(pick, min_size=2, max_size=2)), key=start)
        return f"{a}-{b}"
    bound = draw(pick)
    return {"single": bound, "from": f"{bound}-", "until": f"-{bound}"}[kind]


def start(tm: str) -> int:
    return microseconds(tm, upper=False)


def code_values() -> st.SearchStrategy[str]:
    code = st.sampled_from(MODALITIES)
    return st.one_of(
        code,
        st.lists(code, min_size=2, max_size=3).map(",".join),
        st.lists(code, min_size=2, max_size=3).map("\\".join),
        st.sampled_from(["C*", "?T", "M?", "*", "ct", "XA"]),
    )


def number_values() -> st.SearchStrategy[str]:
    return st.lists(st.integers(0, 4), min_size=1, max_size=3).flatmap(
        lambda ns: st.sampled_from([",", "\\"]).map(lambda sep: sep.join(map(str, ns)))
    )


def uid_values(uids: list[str]) -> st.SearchStrategy[str]:
    some = st.lists(st.sampled_from([*uids, "1.2.3.4.5.6.7"]), min_size=1, max_size=4)
    return st.tuples(some, st.sampled_from([",", "\\", ", "])).map(lambda t: t[1].join(t[0]))


def value_strategy(key: str, population: list[Study], fuzzy: bool) -> st.SearchStrategy[str]:
    all_series = [s for study in population for s in study.series]
    if key == "PatientName":
        return person_name_values(population, fuzzy)
    if key == "PatientID":
        return text_values([s.patient_id for s in population], ID_ALPHABET)
    if key == "AccessionNumber":
        return text_values([s.accession for s in population if s.accession], "AaBb1-")
    if key == "StudyDate":
        return date_values()
    if key == "StudyTime":
        return time_values([s.study_time for s in population if s.study_time])
    if key in ("ModalitiesInStudy", "Modality"):
        return code_values()
    if key in ("SeriesNumber", "InstanceNumber"):
        return number_values()
    if key == "StudyInstanceUID":
        return uid_values([s.uid for s in population])
    if key == "SeriesInstanceUID":
        return uid_values([s.uid for s in all_series])
    if key == "SOPInstanceUID":
        return uid_values([i.uid for s in all_series for i in s.instances])
    raise AssertionError(key)


@dataclass(frozen=True)
class Query:
    level: str
    path: str
    scope: tuple[Study | None, Series | None]
    params: dict[str, str]
    fuzzy: bool


LEVELS = ["study", "series", "instance"]


@st.composite
def queries(draw: st.DrawFn, population: list[Study], index: int) -> Query:
    """The index-th query: levels and first keys take turns, since hypothesis favours the first
    element of a choice and would otherwise ask about PatientName far more than about the rest."""
    level = LEVELS[index % len(LEVELS)]
    study = series = None
    path = {"study": "/studies", "series": "/series", "instance": "/instances"}[level]
    if level != "study" and draw(st.booleans()):
        study = draw(st.sampled_from(population))
        path = f"/studies/{study.uid}/{level}" + ("" if level == "series" else "s")
        if level == "instance" and draw(st.booleans()):
            series = draw(st.sampled_from(study.series))
            path = f"/studies/{study.uid}/series/{series.uid}/instances"
    fuzzy = draw(st.booleans())
    first = KEYS[level][index // len(LEVELS) % len(KEYS[level])]
    keys = [first, *(draw(st.sets(st.sampled_from(KEYS[level]), max_size=1)) - {first})]
    params = {key: draw(value_strategy(key, population, fuzzy)) for key in keys}
    if fuzzy:
        params["fuzzymatching"] = "true"
    return Query(level, path, (study, series), params, fuzzy)


def expected(population: list[Study], query: Query) -> list[str]:
    study, series = query.scope
    found = [
        row
        for row in rows(population, query.level)
        if (study is None or row.study is study)
        and (series is None or row.series is series)
        and all(
            row_matches(row, key, raw, query.fuzzy)
            for key, raw in query.params.items()
            if key != "fuzzymatching"
        )
    ]
    if series is not None:
        # Instances of one series are listed by InstanceNumber, then in the order they came.
        order = {id(r): i for i, r in enumerate(found)}
        found.sort(key=lambda r: (r.instance.number if r.instance else 0, order[id(r)]))
    return [row_uid(r) for r in found]


# --- the test -----------------------------------------------------------------------------------

UID_TAG = {"study": "0020000D", "series": "0020000E", "instance": "00080018"}


def reset(http: httpx.Client) -> None:
    """Delete what an earlier example stored, and check that nothing is left."""
    for item in http.get("/studies", params={"limit": "500"}).json():
        uid = item[UID_TAG["study"]]["Value"][0]
        assert http.delete(f"/studies/{uid}").status_code == 204
    assert http.get("/instances").json() == []


@settings(
    max_examples=8,
    deadline=None,
    # One archive per backend (a function-scoped fixture) serves every example: reset() empties it.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(population=populations, data=st.data())
def test_search_agrees_with_a_brute_force_filter(
    http: httpx.Client, population: list[Study], data: st.DataObject
) -> None:
    reset(http)
    body, content_type = multipart_body(part10_files(population))
    response = http.post("/studies", content=body, headers={"Content-Type": content_type})
    assert response.status_code == 200, response.text

    for index in range(QUERIES_PER_POPULATION):
        query = data.draw(queries(population, index))
        response = http.get(query.path, params={**query.params, "limit": "500"})
        assert response.status_code == 200, (query, response.text)
        got = [item[UID_TAG[query.level]]["Value"][0] for item in response.json()]
        assert got == expected(population, query), query
