"""FHIR search results on both engines: sorting, paging, totals, _summary / _elements, unknown
parameters, POST _search, errors, the statements a page costs, GET entries of Bundles and the
matcher of conditional interactions."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import event

from dicomhub.bootstrap import Services
from dicomhub.context import RequestContext
from dicomhub.errors import InvalidInput
from dicomhub.fhir.search.subset import SUBSETTED
from tests.fhir.search_support import POPULATION, Env, ids_of, population_server


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with population_server(str(request.param), tmp_path_factory) as found:
        yield found


def order(env: Env, url: str) -> list[str]:
    return [key.split("/")[1] for key in ids_of(env.bundle(url))]


# --- _sort ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        # birthdates p3 1965-07 < p1 1975-03-15 < p2 1980; p4 has none: last either way
        ("Patient?_sort=birthdate", ["p3", "p1", "p2", "p4"]),
        ("Patient?_sort=-birthdate", ["p2", "p1", "p3", "p4"]),
        ("Patient?_sort=family", ["p1", "p2", "p3", "p4"]),  # folded: muller < smith < smithson
        ("Patient?_sort=-family", ["p3", "p2", "p1", "p4"]),
        ("Patient?_sort=-_id", ["p4", "p3", "p2", "p1"]),
        ("Patient?_sort=gender,_id", ["p1", "p2", "p3", "p4"]),  # female < male < other, none
        # multi-key: code (2339-0 < 29463-7 < 8867-4), then value descending within a code
        ("Observation?_sort=code,-value-quantity", ["o2", "o3", "o4", "o1"]),
        ("Observation?_sort=code,value-quantity", ["o2", "o4", "o3", "o1"]),
        # Period starts ascending, ends descending
        ("Encounter?_sort=date", ["e2", "e1"]),
        ("Encounter?_sort=-date", ["e1", "e2"]),
        ("Condition?_sort=subject,_id", ["c1", "c4", "c2", "c3"]),
        ("Patient?_sort=_lastUpdated", ["p1", "p2", "p3", "p4"]),  # written in that order
        ("Patient?_sort=-_lastUpdated", ["p4", "p3", "p2", "p1"]),
    ],
)
def test_sort(env: Env, url: str, expected: list[str]) -> None:
    assert order(env, url) == expected


def test_sort_with_filters_and_includes(env: Env) -> None:
    bundle = env.bundle("Condition?code=44054006&_sort=-onset-date&_include=Condition:patient")
    assert ids_of(bundle) == ["Condition/c3", "Condition/c1"]
    assert set(ids_of(bundle, "include")) == {"Patient/p3", "Patient/p1"}


# --- paging ---------------------------------------------------------------------------------------


def _walk(env: Env, url: str, relation: str = "next") -> list[list[str]]:
    pages: list[list[str]] = []
    bundle = env.bundle(url)
    while True:
        pages.append(ids_of(bundle))
        links = {link["relation"]: link["url"] for link in bundle["link"]}
        if relation not in links:
            return pages
        assert links[relation].startswith(env.base + "/")
        r = env.client.get(links[relation])
        assert r.status_code == 200, r.text
        bundle = r.json()
        assert len(pages) < 50


@pytest.mark.parametrize(
    "url",
    [
        "Observation?_count=1",
        "Observation?_count=3&_sort=code",
        "Patient?_count=1&_sort=gender",  # p4 has no gender: last, and ties broken stably
        "Condition?_count=2&_sort=-onset-date",
        "Condition?_count=2&patient.gender=female,male",
    ],
)
def test_next_links_walk_every_match_once(env: Env, url: str) -> None:
    count = int(url.split("_count=")[1].split("&", maxsplit=1)[0])
    everything = ids_of(env.bundle(url.replace(f"_count={count}", "_count=100")))
    pages = _walk(env, url)
    walked = [key for page in pages for key in page]
    assert walked == everything  # same order, each once
    assert all(len(page) == count for page in pages[:-1])
    assert 0 < len(pages[-1]) <= count
    # and back again from the last page
    last = env.bundle(url + f"&_offset={(len(pages) - 1) * count}")
    back = _walk_back(env, last)
    assert back == pages[::-1]


def _walk_back(env: Env, bundle: dict[str, Any]) -> list[list[str]]:
    pages = [ids_of(bundle)]
    while True:
        links = {link["relation"]: link["url"] for link in bundle["link"]}
        if "previous" not in links:
            return pages
        bundle = env.client.get(links["previous"]).json()
        pages.append(ids_of(bundle))


def test_links_keep_what_was_understood(env: Env) -> None:
    bundle = env.bundle("Patient?gender=male,female&foo=bar&_count=1&_sort=family")
    links = {link["relation"]: link["url"] for link in bundle["link"]}
    assert set(links) == {"self", "next"}
    self_query = httpx.URL(links["self"]).params
    assert dict(self_query) == {"gender": "male,female", "_sort": "family", "_count": "1"}
    assert httpx.URL(links["next"]).params["_offset"] == "1"
    past = env.bundle("Patient?_offset=100")
    assert "entry" not in past or not ids_of(past)
    assert {link["relation"] for link in past["link"]} == {"self", "previous"}


# --- _total ---------------------------------------------------------------------------------------


def test_total(env: Env) -> None:
    assert "total" not in env.bundle("Patient?_count=1")  # more pages: not counted unasked
    assert env.bundle("Patient?_count=1&_total=accurate")["total"] == 4
    assert env.bundle("Patient?_count=1&_total=estimate")["total"] == 4
    assert env.bundle("Patient?gender=male")["total"] == 1  # all on the first page: free
    assert env.bundle("Patient?_count=3&_offset=3")["total"] == 4  # the last page: free too
    assert "total" not in env.bundle("Patient?gender=male&_total=none")
    count = env.bundle("Patient?_summary=count&gender=male,female")
    assert (count["total"], count.get("entry")) == (2, None)
    zero = env.bundle("Condition?_count=0")
    assert (zero["total"], zero.get("entry")) == (4, None)


# --- _summary and _elements -----------------------------------------------------------------------


def _p1(env: Env, query: str) -> dict[str, Any]:
    (entry,) = env.bundle(f"Patient?_id=p1&{query}")["entry"]
    resource: dict[str, Any] = entry["resource"]
    return resource


def _subsetted(resource: dict[str, Any]) -> bool:
    return any(t.get("code") == "SUBSETTED" for t in resource["meta"].get("tag", []))


def test_summary_true(env: Env) -> None:
    p1 = _p1(env, "_summary=true")
    assert {"name", "gender", "birthDate", "identifier", "telecom", "active"} <= set(p1)
    assert "text" not in p1 and "maritalStatus" not in p1  # not summary elements
    assert _subsetted(p1)
    assert (
        SUBSETTED in p1["meta"]["tag"]
        and {"system": "urn:tags", "code": "vip"} in p1["meta"]["tag"]
    )


def test_summary_text(env: Env) -> None:
    p1 = _p1(env, "_summary=text")
    assert set(p1) == {"resourceType", "id", "meta", "text"}
    assert _subsetted(p1)
    o1 = env.bundle("Observation?_id=o1&_summary=text")["entry"][0]["resource"]
    assert set(o1) == {"resourceType", "id", "meta", "status", "code"}  # mandatory kept


def test_summary_data(env: Env) -> None:
    p1 = _p1(env, "_summary=data")
    assert "text" not in p1 and "maritalStatus" in p1 and _subsetted(p1)


def test_summary_false_is_the_whole_resource(env: Env) -> None:
    p1 = _p1(env, "_summary=false")
    read = env.client.get("/Patient/p1").json()
    assert p1 == read
    assert not _subsetted(p1)


def test_elements(env: Env) -> None:
    p1 = _p1(env, "_elements=gender,Patient.birthDate")
    assert set(p1) == {"resourceType", "id", "meta", "gender", "birthDate"}
    assert _subsetted(p1)
    o1 = env.bundle("Observation?_id=o1&_elements=subject,value")["entry"][0]["resource"]
    assert set(o1) == {"resourceType", "id", "meta", "status", "code", "subject", "valueQuantity"}
    # included resources are subsetted the same way
    bundle = env.bundle("Condition?_id=c1&_include=Condition:patient&_elements=id")
    for entry in bundle["entry"]:
        assert set(entry["resource"]) <= {"resourceType", "id", "meta", "code", "subject"}


# --- unknown parameters, errors, POST -------------------------------------------------------------


def test_unknown_parameters_are_ignored_and_reported(env: Env) -> None:
    bundle = env.bundle("Patient?gender=male&foo=1&_text=x")
    assert ids_of(bundle) == ["Patient/p2"]
    (outcome,) = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    issues = outcome["resource"]["issue"]
    assert outcome["resource"]["resourceType"] == "OperationOutcome"
    assert [i["severity"] for i in issues] == ["warning", "warning"]
    assert "'foo'" in issues[0]["diagnostics"] and "'_text'" in issues[1]["diagnostics"]


def test_unknown_parameters_refused_when_strict(env: Env) -> None:
    r = env.get("Patient?gender=male&foo=1", prefer="handling=strict")
    assert r.status_code == 400
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    assert "foo" in body["issue"][0]["diagnostics"]
    assert env.get("Patient?gender=male", prefer="handling=strict").status_code == 200
    assert env.get("Patient?gender=male&foo=1", prefer="handling=lenient").status_code == 200


@pytest.mark.parametrize(
    ("url", "status", "says"),
    [
        ("Patient?birthdate=1980-13-01", 400, "birthdate"),
        ("Patient?birthdate=xx1980", 400, "birthdate"),
        ("Patient?gender:exact=male", 400, "gender:exact"),
        ("Patient?gender.name=x", 400, "gender.name"),
        ("Patient?_count=many", 400, "_count"),
        ("Nope?name=x", 404, "Nope"),
        ("Patient?_format=xml", 406, "xml"),
    ],
)
def test_errors_are_operation_outcomes(env: Env, url: str, status: int, says: str) -> None:
    r = env.get(url)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    assert says in body["issue"][0]["diagnostics"]


def test_post_search_merges_form_and_query(env: Env) -> None:
    r = env.client.post(
        "/Patient/_search?_count=1",
        content="gender=male,female&_sort=-birthdate",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert ids_of(bundle) == ["Patient/p2"]
    links = {link["relation"]: link["url"] for link in bundle["link"]}
    assert httpx.URL(links["next"]).params["gender"] == "male,female"  # a GET-able link
    empty = env.client.post("/Patient/_search")
    assert empty.status_code == 200 and len(ids_of(empty.json())) == 4
    wrong = env.client.post("/Patient/_search", json={"gender": "male"})
    assert wrong.status_code == 415


def test_format_and_pretty(env: Env) -> None:
    r = env.get("Patient?gender=male&_format=json&_pretty=true")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/fhir+json")
    assert "\n  " in r.text
    assert ids_of(r.json()) == ["Patient/p2"]


def test_other_routes_still_win(env: Env) -> None:
    assert env.client.get("/metadata").json()["resourceType"] == "CapabilityStatement"
    assert env.client.get("/_history").json()["type"] == "history"
    assert env.client.get("/Patient/p1").json()["id"] == "p1"


def test_entries(env: Env) -> None:
    bundle = env.bundle("Patient?_id=p1")
    (entry,) = bundle["entry"]
    assert entry["fullUrl"] == f"{env.base}/Patient/p1"
    assert entry["search"] == {"mode": "match"}
    assert entry["resource"] == env.client.get("/Patient/p1").json()


def test_the_capability_statement_lists_the_modifiers(env: Env) -> None:
    statement = env.client.get("/metadata").json()
    (patient,) = [r for r in statement["rest"][0]["resource"] if r["type"] == "Patient"]
    docs = {p["name"]: p["documentation"] for p in patient["searchParam"]}
    assert "Modifiers: :missing, :not, :text, :of-type." in docs["identifier"]
    assert "Modifiers: :missing, :exact, :contains." in docs["family"]


# --- what a page costs: one statement, then the bodies --------------------------------------------


@pytest.mark.parametrize(
    ("query", "statements"),
    [
        ([("gender", "male,female")], 2),
        ([("patient.organization.name", "acme"), ("_sort", "-onset-date,code")], 2),
        ([("_has:Condition:patient:code", "44054006"), ("birthdate", "ge1960")], 2),
        ([("_count", "1"), ("_total", "accurate")], 3),  # + the count
        ([("_summary", "count")], 1),
        ([("_id", "p1"), ("_revinclude", "Condition:patient")], 3),  # + the include
    ],
)
def test_statements_per_page(env: Env, query: list[tuple[str, str]], statements: int) -> None:
    res_type = "Condition" if query[0][0].startswith("patient.") else "Patient"
    seen: list[str] = []
    me = threading.get_ident()  # the server's own threads (the FHIR sync) query too

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if threading.get_ident() == me and statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    engine = env.services.db.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        bundle = env.services.fhir.search.search(RequestContext(), res_type, query, "http://x", "")
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(seen) == statements, seen
    assert bundle["type"] == "searchset"
    if statements == 2:  # the filters are all in the first statement's SQL
        assert "fhir_idx_" in seen[0] and "fhir_idx_" not in seen[1]


# --- GET entries of batch / transaction Bundles ---------------------------------------------------


def test_get_entries_of_a_batch(env: Env) -> None:
    def get(url: str) -> dict[str, Any]:
        return {"request": {"method": "GET", "url": url}}

    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            get("Patient/p1"),
            get("Patient?gender=male"),
            get("Patient/nope"),
            get("Patient/p1/_history/1"),
            get("Patient?birthdate=bad"),
        ],
    }
    answer = orjson.loads(orjson.dumps(env.services.fhir.bundles.process(RequestContext(), batch)))
    statuses = [e["response"]["status"] for e in answer["entry"]]
    assert statuses == ["200 OK", "200 OK", "404", "200 OK", "400"]
    assert answer["entry"][0]["resource"]["id"] == "p1"
    found = answer["entry"][1]["resource"]
    assert found["type"] == "searchset"
    assert [e["fullUrl"] for e in found["entry"]] == ["Patient/p2"]
    assert answer["entry"][3]["resource"]["meta"]["versionId"] == "1"


# --- the matcher of conditional interactions ------------------------------------------------------


def test_conditional_create_matches_any_search(services: Services) -> None:
    ctx = RequestContext()
    fhir = services.fhir.service
    fhir.update(
        ctx, "Organization", "o", {"resourceType": "Organization", "id": "o", "name": "Acme"}
    )
    body = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:mrn", "value": "7"}],
        "managingOrganization": {"reference": "Organization/o"},
    }
    first = fhir.create(ctx, dict(body))
    again = fhir.create(ctx, dict(body), if_none_exist="identifier=urn:mrn|7")
    assert again.existing and again.res_id == first.res_id
    chained = fhir.create(ctx, dict(body), if_none_exist="organization.name=acme")
    assert chained.existing and chained.res_id == first.res_id
    other = fhir.create(ctx, dict(body), if_none_exist="identifier=urn:mrn|8")
    assert other.created and other.res_id != first.res_id
    with pytest.raises(InvalidInput, match="unknown search parameters on Patient: nope"):
        fhir.create(ctx, dict(body), if_none_exist="nope=1")


def test_deleted_resources_are_never_found(services: Services) -> None:
    ctx = RequestContext()
    fhir = services.fhir.service
    for key in ("Organization/org1", "Patient/p1", "Patient/p2", "Condition/c1", "Condition/c2"):
        res_type, res_id = key.split("/")
        fhir.update(
            ctx, res_type, res_id, {"resourceType": res_type, "id": res_id, **POPULATION[key]}
        )
    fhir.delete(ctx, "Organization", "org1")
    fhir.delete(ctx, "Condition", "c2")

    def ids(res_type: str, *query: tuple[str, str]) -> list[str]:
        bundle = services.fhir.search.search(ctx, res_type, list(query), "http://x", "")
        return [
            e["fullUrl"].rsplit("/", 2)[-2] + "/" + e["fullUrl"].rsplit("/", 1)[-1]
            for e in bundle.get("entry", [])
        ]

    assert ids("Organization") == []
    assert ids("Patient", ("organization.name", "acme")) == []
    assert ids("Patient", ("_id", "p1"), ("_include", "Patient:organization")) == ["Patient/p1"]
    assert ids("Patient", ("_has:Condition:patient:code", "38341003")) == []
    assert ids("Patient", ("gender:not", "female")) == ["Patient/p2"]
    assert ids("Patient", ("_id", "p2"), ("_revinclude", "Condition:patient")) == ["Patient/p2"]
    assert ids("Condition", ("code:missing", "false")) == ["Condition/c1"]
