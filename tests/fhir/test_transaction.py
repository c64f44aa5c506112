"""transaction and batch Bundles (R4 3.1.0.11) over HTTP, on SQLite and PostgreSQL.

A transaction is all-or-nothing (checked in the database itself), processed DELETE, POST, PUT,
GET whatever the entry order, with urn:uuid references rewritten everywhere in the entries and
conditional entries and references honoured; a batch runs each entry on its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from dicomhub.bootstrap import Services
from dicomhub.storage.fhir.resources import INDEX_TABLES
from dicomhub.storage.schema import fhir_resource, fhir_version
from tests.conftest import LiveServer
from tests.fhir.support import (
    MRN,
    created,
    fhir_client,
    ok,
    outcome,
    patient,
    search_available,
    unique,
)

Entry = dict[str, Any]


@pytest.fixture
def fhir(live_server: LiveServer) -> Iterator[httpx.Client]:
    with fhir_client(live_server) as client:
        yield client


def bundle(kind: str, *entries: Entry) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def post(resource: dict[str, Any], full_url: str | None = None, **request: str) -> Entry:
    entry: Entry = {
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"], **request},
    }
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def put(resource: dict[str, Any], url: str, full_url: str | None = None, **request: str) -> Entry:
    entry: Entry = {"resource": resource, "request": {"method": "PUT", "url": url, **request}}
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def delete(url: str, **request: str) -> Entry:
    return {"request": {"method": "DELETE", "url": url, **request}}


def get(url: str) -> Entry:
    return {"request": {"method": "GET", "url": url}}


def observation(subject: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "subject": {"reference": subject},
        "valueQuantity": {"value": 72.5, "unit": "kg"},
        **extra,
    }


def urn() -> str:
    return f"urn:uuid:{unique()}{unique()[:4]}-0000-4000-8000-000000000000"[:45]


def table_counts(services: Services) -> dict[str, int]:
    """Rows in every FHIR table: what a transaction that failed must leave unchanged."""
    tables = [fhir_resource, fhir_version, *INDEX_TABLES.values()]
    with services.db.read() as conn:
        return {
            t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
            for t in tables
        }


def transact(fhir: httpx.Client, *entries: Entry) -> list[dict[str, Any]]:
    r = fhir.post("", json=bundle("transaction", *entries))
    body = ok(r)
    assert body["resourceType"] == "Bundle"
    assert body["type"] == "transaction-response"
    assert len(body["entry"]) == len(entries)
    return [e["response"] | {"resource": e.get("resource")} for e in body["entry"]]


def _id(response: dict[str, Any]) -> str:
    """The id in an entry response's location (`Type/id/_history/n`)."""
    return str(response["location"].split("/")[1])


def _version(response: dict[str, Any]) -> int:
    return int(response["location"].rsplit("/", 1)[1])


# --- creates and references -------------------------------------------------------------------


def test_transaction_creates_and_rewrites_urn_uuid_references(fhir: httpx.Client) -> None:
    p, o, e = urn(), urn(), urn()
    org = {"resourceType": "Organization", "name": "Radiology Clinic"}
    pat = patient(
        "Urn",
        managingOrganization={"reference": o},
        generalPractitioner=[{"reference": o, "display": f"mentions {o} in text"}],
        text={"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{p}</div>'},
    )
    enc = {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": p},
        "serviceProvider": {"reference": o},
    }
    obs = observation(
        p,
        encounter={"reference": e},
        performer=[{"reference": o}],
        extension=[{"url": "http://example.org/source", "valueReference": {"reference": e}}],
        contained=[
            {
                "resourceType": "Provenance",
                "id": "prov",
                "recorded": "2024-01-01T00:00:00Z",
                "target": [{"reference": p}],
                "agent": [{"who": {"reference": o}}],
            }
        ],
        note=[{"text": f"see {p}"}],
    )
    # Entries referring to each other in every order, the referred-to ones last.
    responses = transact(fhir, post(obs), post(enc, e), post(pat, p), post(org, o))
    assert [r["status"] for r in responses] == ["201 Created"] * 4
    obs_id, enc_id, pat_id, org_id = (_id(r) for r in responses)
    for r in responses:
        assert r["etag"] == 'W/"1"'
        assert r["lastModified"]
        assert _version(r) == 1

    stored_obs = ok(fhir.get(f"/Observation/{obs_id}"))
    assert stored_obs["subject"] == {"reference": f"Patient/{pat_id}"}
    assert stored_obs["encounter"] == {"reference": f"Encounter/{enc_id}"}
    assert stored_obs["performer"] == [{"reference": f"Organization/{org_id}"}]
    assert stored_obs["extension"][0]["valueReference"] == {"reference": f"Encounter/{enc_id}"}
    provenance = stored_obs["contained"][0]
    assert provenance["target"] == [{"reference": f"Patient/{pat_id}"}]
    assert provenance["agent"][0]["who"] == {"reference": f"Organization/{org_id}"}
    assert stored_obs["note"] == [{"text": f"see {p}"}]  # text is not a reference
    stored_enc = ok(fhir.get(f"/Encounter/{enc_id}"))
    assert stored_enc["subject"] == {"reference": f"Patient/{pat_id}"}
    assert stored_enc["serviceProvider"] == {"reference": f"Organization/{org_id}"}
    stored_pat = ok(fhir.get(f"/Patient/{pat_id}"))
    assert stored_pat["managingOrganization"] == {"reference": f"Organization/{org_id}"}
    assert stored_pat["generalPractitioner"][0]["display"] == f"mentions {o} in text"
    assert p in stored_pat["text"]["div"]
    assert ok(fhir.get(f"/Organization/{org_id}"))["name"] == "Radiology Clinic"


def test_transaction_put_with_client_ids_and_full_urls(fhir: httpx.Client) -> None:
    pat_id = f"p-{unique()}"
    full = f"http://example.org/fhir/Patient/{pat_id}"
    p_urn = urn()
    responses = transact(
        fhir,
        post(observation(full)),
        post(observation(p_urn)),
        put(patient("Client", id=pat_id), f"Patient/{pat_id}", full),
        put(
            {"resourceType": "Organization", "id": "org-a", "name": "A"},
            "Organization/org-a",
            p_urn,
        ),
    )
    assert [r["status"][:3] for r in responses] == ["201", "201", "201", "201"]
    assert _id(responses[2]) == pat_id
    first = ok(fhir.get(f"/Observation/{_id(responses[0])}"))
    assert first["subject"] == {"reference": f"Patient/{pat_id}"}
    second = ok(fhir.get(f"/Observation/{_id(responses[1])}"))
    assert second["subject"] == {"reference": "Organization/org-a"}
    # Again: updates this time, version 2.
    responses = transact(fhir, put(patient("Again", id=pat_id), f"Patient/{pat_id}"))
    assert responses[0]["status"] == "200 OK"
    assert _version(responses[0]) == 2
    assert ok(fhir.get(f"/Patient/{pat_id}"))["name"][0]["family"] == "Again"


def test_transaction_delete_entries(fhir: httpx.Client) -> None:
    a = created(fhir.post("/Patient", json=patient()))["id"]
    mrn = unique()
    b = created(fhir.post("/Patient", json=patient(mrn=mrn)))["id"]
    responses = transact(
        fhir,
        delete(f"Patient/{a}"),
        delete(f"Patient?identifier={MRN}|{mrn}"),
        delete("Patient/never-existed"),
        delete(f"Patient?identifier={MRN}|{unique()}"),
    )
    assert responses[0]["status"].startswith(("200", "204"))
    assert responses[1]["status"].startswith(("200", "204"))
    assert responses[2]["status"].startswith(("200", "204", "404"))
    assert responses[3]["status"].startswith(("200", "204", "404"))
    outcome(fhir.get(f"/Patient/{a}"), 410)
    outcome(fhir.get(f"/Patient/{b}"), 410)


def test_transaction_get_entries_read(fhir: httpx.Client) -> None:
    res_id = created(fhir.post("/Patient", json=patient("Readable")))["id"]
    fhir.put(f"/Patient/{res_id}", json=patient("Readable2", id=res_id))
    responses = transact(fhir, get(f"Patient/{res_id}"), get(f"Patient/{res_id}/_history/1"))
    assert responses[0]["status"].startswith("200")
    assert responses[0]["resource"]["name"][0]["family"] == "Readable2"
    assert responses[0]["etag"] == 'W/"2"'
    assert responses[1]["resource"]["name"][0]["family"] == "Readable"
    assert responses[1]["resource"]["meta"]["versionId"] == "1"


# --- processing order -------------------------------------------------------------------------


def test_transaction_processing_order(fhir: httpx.Client) -> None:
    """DELETE, then POST, then PUT, then GET, whatever the order of the entries."""
    mrn_deleted, mrn_cond = unique(), unique()
    to_delete = created(fhir.post("/Patient", json=patient("Gone", mrn=mrn_deleted)))["id"]
    to_update = created(fhir.post("/Patient", json=patient("Before")))["id"]
    cond_target = created(fhir.post("/Patient", json=patient("CondGone", mrn=mrn_cond)))["id"]
    responses = transact(
        fhir,
        # GET first in the Bundle: it must see the PUT below.
        get(f"Patient/{to_update}"),
        # A conditional create on the identifier of a patient the DELETE below removes:
        # the DELETE goes first, so nothing matches and a new patient is created.
        post(
            patient("New", mrn=mrn_deleted),
            ifNoneExist=f"identifier={MRN}|{mrn_deleted}",
        ),
        # A conditional update whose only match is deleted below: it creates instead.
        put(patient("Fresh", mrn=mrn_cond), f"Patient?identifier={MRN}|{mrn_cond}"),
        put(patient("After", id=to_update), f"Patient/{to_update}"),
        delete(f"Patient/{to_delete}"),
        delete(f"Patient/{cond_target}"),
    )
    assert responses[0]["resource"]["name"][0]["family"] == "After"
    assert responses[0]["resource"]["meta"]["versionId"] == "2"
    assert responses[1]["status"] == "201 Created"
    assert _id(responses[1]) != to_delete
    assert responses[2]["status"] == "201 Created"
    assert _id(responses[2]) != cond_target
    assert responses[3]["status"] == "200 OK"
    outcome(fhir.get(f"/Patient/{to_delete}"), 410)
    outcome(fhir.get(f"/Patient/{cond_target}"), 410)
    assert ok(fhir.get(f"/Patient/{_id(responses[1])}"))["name"][0]["family"] == "New"
    assert ok(fhir.get(f"/Patient/{_id(responses[2])}"))["name"][0]["family"] == "Fresh"


@pytest.mark.parametrize(
    "make",
    [
        lambda pid: [
            put(patient("A", id=pid), f"Patient/{pid}"),
            put(patient("B", id=pid), f"Patient/{pid}"),
        ],
        lambda pid: [delete(f"Patient/{pid}"), put(patient("B", id=pid), f"Patient/{pid}")],
        lambda pid: [delete(f"Patient/{pid}"), delete(f"Patient/{pid}")],
        lambda pid: [
            put(patient("A", id=pid), f"Patient/{pid}"),
            put(patient("B", mrn="overlap-mrn"), f"Patient?identifier={MRN}|overlap-mrn"),
        ],
    ],
    ids=["put-put", "delete-put", "delete-delete", "put-conditional-put"],
)
def test_transaction_touching_a_resource_twice_fails(
    fhir: httpx.Client, services: Services, make: Any
) -> None:
    """R4 3.1.0.11.2: identities (conditional ones resolved) must not overlap in steps 1-3."""
    pid = f"p-{unique()}"
    created(
        fhir.put(
            f"/Patient/{pid}",
            json=patient("Original", id=pid, identifier=[{"system": MRN, "value": "overlap-mrn"}]),
        )
    )
    before = table_counts(services)
    issue = outcome(fhir.post("", json=bundle("transaction", *make(pid))), 400)
    assert pid in issue["diagnostics"]
    assert table_counts(services) == before
    assert ok(fhir.get(f"/Patient/{pid}"))["name"][0]["family"] == "Original"


# --- all or nothing ---------------------------------------------------------------------------


@pytest.fixture
def world(fhir: httpx.Client) -> dict[str, str]:
    """Resources the failing transactions try to change: they must stay as they are."""
    kept = created(fhir.post("/Patient", json=patient("Kept", mrn="kept")))["id"]
    doomed = created(fhir.post("/Patient", json=patient("NotDeleted")))["id"]
    other = created(fhir.post("/Patient", json=patient("Other")))["id"]
    created(fhir.post("/Patient", json=patient("Twin", mrn="twin")))
    created(fhir.post("/Patient", json=patient("Twin", mrn="twin")))
    return {"kept": kept, "doomed": doomed, "other": other}


def _failing_entries(world: dict[str, str]) -> dict[str, tuple[Entry, int]]:
    other = world["other"]
    return {
        "invalid-resource": (post({"resourceType": "Observation", "code": {"text": "x"}}), 422),
        "invalid-json-kind": (post(patient(active="yes")), 422),
        "unknown-element": (post(patient(colour="red")), 422),
        "if-match-mismatch": (
            put(patient("Bad", id=other), f"Patient/{other}", ifMatch='W/"9"'),
            412,
        ),
        "if-none-exist-several": (post(patient(), ifNoneExist=f"identifier={MRN}|twin"), 412),
        "conditional-update-several": (put(patient(), f"Patient?identifier={MRN}|twin"), 412),
        "conditional-delete-several": (delete(f"Patient?identifier={MRN}|twin"), 412),
        "conditional-reference-several": (post(observation(f"Patient?identifier={MRN}|twin")), 412),
        "conditional-reference-none": (post(observation(f"Patient?identifier={MRN}|nobody")), 400),
        "put-id-mismatch": (put(patient(id="other"), "Patient/not-other"), 400),
        "type-mismatch": (put(patient(id="x1"), "Observation/x1"), 400),
        "unknown-type": (post({"resourceType": "Foo"}), 400),
        "post-to-an-id": (
            {"resource": patient(), "request": {"method": "POST", "url": "Patient/1"}},
            400,
        ),
        "get-missing": (get("Patient/not-there"), 404),
        "bad-if-match": (put(patient(id=other), f"Patient/{other}", ifMatch="nonsense"), 400),
    }


FAILURES = [
    "invalid-resource",
    "invalid-json-kind",
    "unknown-element",
    "if-match-mismatch",
    "if-none-exist-several",
    "conditional-update-several",
    "conditional-delete-several",
    "conditional-reference-several",
    "conditional-reference-none",
    "put-id-mismatch",
    "type-mismatch",
    "unknown-type",
    "post-to-an-id",
    "get-missing",
    "bad-if-match",
]


@pytest.mark.parametrize("failure", FAILURES)
@pytest.mark.parametrize("position", ["first", "last"])
def test_a_failing_entry_leaves_nothing_behind(
    fhir: httpx.Client, services: Services, world: dict[str, str], failure: str, position: str
) -> None:
    bad, status = _failing_entries(world)[failure]
    p = urn()
    good = [
        post(patient("ShouldNotExist", mrn="new-one"), p),
        post(observation(p)),
        put(patient("Changed", id=world["kept"], mrn="kept"), f"Patient/{world['kept']}"),
        delete(f"Patient/{world['doomed']}"),
        put(patient("Created", id="created-by-put"), "Patient/created-by-put"),
        post({"resourceType": "Organization", "name": "Org"}, ifNoneExist="name=Org"),
    ]
    entries = [bad, *good] if position == "first" else [*good, bad]
    before = table_counts(services)
    r = fhir.post("", json=bundle("transaction", *entries))
    issue = outcome(r, status)
    index = 0 if position == "first" else len(good)
    assert f"Bundle.entry[{index}]" in issue["diagnostics"], issue
    # Nothing written: the tables are as they were, and so is what a client sees.
    assert table_counts(services) == before
    kept = ok(fhir.get(f"/Patient/{world['kept']}"))
    assert kept["name"][0]["family"] == "Kept"
    assert kept["meta"]["versionId"] == "1"
    assert ok(fhir.get(f"/Patient/{world['doomed']}"))["meta"]["versionId"] == "1"
    outcome(fhir.get("/Patient/created-by-put"), 404)
    assert ok(fhir.get("/Observation/_history"))["total"] == 0
    assert ok(fhir.get("/Organization/_history"))["total"] == 0
    assert ok(fhir.get(f"/Patient/{world['other']}"))["meta"]["versionId"] == "1"
    assert ok(fhir.get("/Patient/_history"))["total"] == 5


def test_failed_transaction_then_the_same_fixed_succeeds(
    fhir: httpx.Client, services: Services
) -> None:
    p = urn()
    entries = [post(patient("Fixed"), p), post(observation(p, status=["final"]))]
    before = table_counts(services)
    outcome(fhir.post("", json=bundle("transaction", *entries)), 422)
    assert table_counts(services) == before
    entries[1]["resource"]["status"] = "final"
    responses = transact(fhir, *entries)
    obs = ok(fhir.get(f"/Observation/{_id(responses[1])}"))
    assert obs["subject"]["reference"] == f"Patient/{_id(responses[0])}"


# --- conditional entries and references -------------------------------------------------------


def test_conditional_create_in_a_transaction(fhir: httpx.Client) -> None:
    mrn = unique()
    existing = created(fhir.post("/Patient", json=patient("Existing", mrn=mrn)))
    p = urn()
    responses = transact(
        fhir,
        post(observation(p)),
        post(patient("Duplicate", mrn=mrn), p, ifNoneExist=f"identifier={MRN}|{mrn}"),
    )
    assert responses[1]["status"] == "200 OK"
    assert _id(responses[1]) == existing["id"]
    assert _version(responses[1]) == 1
    assert responses[0]["status"] == "201 Created"
    obs = ok(fhir.get(f"/Observation/{_id(responses[0])}"))
    assert obs["subject"] == {"reference": f"Patient/{existing['id']}"}
    assert ok(fhir.get(f"/Patient/{existing['id']}"))["name"][0]["family"] == "Existing"
    assert ok(fhir.get("/Patient/_history"))["total"] == 1

    # No match: created, and the references point at the new one.
    other = unique()
    p2 = urn()
    responses = transact(
        fhir,
        post(patient("New", mrn=other), p2, ifNoneExist=f"identifier={MRN}|{other}"),
        post(observation(p2)),
    )
    assert responses[0]["status"] == "201 Created"
    obs = ok(fhir.get(f"/Observation/{_id(responses[1])}"))
    assert obs["subject"] == {"reference": f"Patient/{_id(responses[0])}"}


def test_conditional_references_resolve(fhir: httpx.Client) -> None:
    mrn = unique()
    stored = created(fhir.post("/Patient", json=patient(mrn=mrn)))["id"]
    later = unique()
    responses = transact(
        fhir,
        post(observation(f"Patient?identifier={MRN}|{mrn}")),
        # A conditional reference to a patient created by this same transaction (later entry):
        # references are resolved after the creates (R4 3.1.0.11.2 step 5).
        post(observation(f"Patient?identifier={MRN}|{later}")),
        post(patient("Later", mrn=later)),
    )
    first = ok(fhir.get(f"/Observation/{_id(responses[0])}"))
    assert first["subject"] == {"reference": f"Patient/{stored}"}
    second = ok(fhir.get(f"/Observation/{_id(responses[1])}"))
    assert second["subject"] == {"reference": f"Patient/{_id(responses[2])}"}
    # Outside transactions too: a plain create resolves them.
    r = fhir.post("/Observation", json=observation(f"Patient?identifier={MRN}|{mrn}"))
    assert created(r)["subject"] == {"reference": f"Patient/{stored}"}
    outcome(fhir.post("/Observation", json=observation(f"Patient?identifier={MRN}|none")), 400)


# --- batch ------------------------------------------------------------------------------------


def test_batch_entries_succeed_and_fail_independently(
    fhir: httpx.Client, services: Services
) -> None:
    kept = created(fhir.post("/Patient", json=patient("Kept")))["id"]
    gone = created(fhir.post("/Patient", json=patient("Gone")))["id"]
    assert fhir.delete(f"/Patient/{gone}").status_code == 204
    for _ in range(2):
        created(fhir.post("/Patient", json=patient(mrn="batch-twin")))
    entries = [
        post(patient("Good")),
        post({"resourceType": "Observation", "code": {"text": "no status"}}),
        put(patient("Nope", id=kept), f"Patient/{kept}", ifMatch='W/"5"'),
        put(patient("Yes", id=kept), f"Patient/{kept}", ifMatch='W/"1"'),
        get(f"Patient/{kept}"),
        get("Patient/not-there"),
        get(f"Patient/{gone}"),
        delete(f"Patient?identifier={MRN}|batch-twin"),
        post({"resourceType": "Foo"}),
        put(patient(id="client-batch"), "Patient/client-batch"),
    ]
    r = fhir.post("", json=bundle("batch", *entries))
    body = ok(r)
    assert body["type"] == "batch-response"
    responses = [e["response"] for e in body["entry"]]
    statuses = [int(resp["status"][:3]) for resp in responses]
    # The GET sees the update (entries are processed in order within the batch rules).
    assert statuses == [201, 422, 412, 200, 200, 404, 410, 412, 400, 201]
    for resp, status in zip(responses, statuses, strict=True):
        if status >= 400:
            oo = resp["outcome"]
            assert oo["resourceType"] == "OperationOutcome"
            assert oo["issue"][0]["severity"] == "error"
            assert oo["issue"][0]["diagnostics"]
        else:
            assert "outcome" not in resp or resp["outcome"]["issue"][0]["severity"] != "error"
    assert "Observation.status" in responses[1]["outcome"]["issue"][0]["expression"]
    assert body["entry"][4]["resource"]["name"][0]["family"] == "Yes"
    good_id = _id(responses[0])
    assert ok(fhir.get(f"/Patient/{good_id}"))["name"][0]["family"] == "Good"
    assert ok(fhir.get(f"/Patient/{kept}"))["meta"]["versionId"] == "2"
    assert ok(fhir.get("/Patient/client-batch"))["id"] == "client-batch"
    assert ok(fhir.get("/Observation/_history"))["total"] == 0


def test_batch_does_not_resolve_references_between_entries(fhir: httpx.Client) -> None:
    p = urn()
    body = ok(fhir.post("", json=bundle("batch", post(patient(), p), post(observation(p)))))
    obs_id = _id(body["entry"][1]["response"])
    assert ok(fhir.get(f"/Observation/{obs_id}"))["subject"] == {"reference": p}


# --- malformed Bundles ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        patient(),
        {"resourceType": "Bundle", "type": "collection", "entry": []},
        {"resourceType": "Bundle", "type": "transaction-response", "entry": []},
        {"resourceType": "Bundle", "entry": []},
        {"resourceType": "Bundle", "type": "transaction", "entry": {"resource": patient()}},
        {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": patient()}]},
        {"resourceType": "Bundle", "type": "transaction", "entry": ["not an entry"]},
        bundle("transaction", {"resource": patient(), "request": {"method": "POST"}}),
        bundle("transaction", {"resource": patient(), "request": {"url": "Patient"}}),
        bundle(
            "transaction", {"resource": patient(), "request": {"method": "FETCH", "url": "Patient"}}
        ),
        bundle("transaction", {"request": {"method": "POST", "url": "Patient"}}),
        bundle(
            "transaction", {"resource": "text", "request": {"method": "PUT", "url": "Patient/1"}}
        ),
        bundle("transaction", {"resource": patient(), "request": {"method": "POST", "url": ""}}),
        bundle("transaction", {"resource": patient(), "request": {"method": "POST", "url": 7}}),
        bundle("batch", {"resource": patient(), "request": "POST Patient"}),
        bundle("transaction", delete("Patient")),
        bundle("transaction", put(patient(id="a_b"), "Patient/a_b")),
        bundle("transaction", put(patient(), "Patient")),
    ],
)
def test_malformed_bundles_are_refused(
    fhir: httpx.Client, services: Services, payload: dict[str, Any]
) -> None:
    before = table_counts(services)
    r = fhir.post("", json=payload)
    issue = outcome(r, 400)
    assert issue["diagnostics"]
    assert table_counts(services) == before


def test_empty_transaction_and_batch(fhir: httpx.Client) -> None:
    for kind in ("transaction", "batch"):
        body = ok(fhir.post("", json=bundle(kind)))
        assert body["type"] == f"{kind}-response"
        assert body.get("entry", []) == []


def test_large_transaction(fhir: httpx.Client, services: Services) -> None:
    """200 patients with an observation each, in one transaction; then the same with a bad one."""
    entries = []
    for n in range(200):
        p = urn()
        entries += [post(patient(f"Bulk{n}", mrn=f"bulk-{n}"), p), post(observation(p))]
    responses = transact(fhir, *entries)
    assert all(r["status"] == "201 Created" for r in responses)
    ids = {_id(r) for r in responses}
    assert len(ids) == 400
    assert ok(fhir.get("/Observation/_history", params={"_count": 1}))["total"] == 200
    before = table_counts(services)
    entries[-1]["resource"]["valueQuantity"]["value"] = "heavy"
    outcome(fhir.post("", json=bundle("transaction", *entries)), 422)
    assert table_counts(services) == before


# --- search entries (once search exists) ------------------------------------------------------


def test_transaction_search_entries(fhir: httpx.Client) -> None:
    """Needs search: GET Type?query entries answer searchset Bundles, after the writes."""
    search_available(fhir)
    mrn = unique()
    responses = transact(
        fhir,
        get(f"Patient?identifier={MRN}|{mrn}"),
        post(patient("Searched", mrn=mrn)),
    )
    assert responses[0]["status"].startswith("200")
    found = responses[0]["resource"]
    assert found["resourceType"] == "Bundle"
    assert found["type"] == "searchset"
    assert [e["resource"]["id"] for e in found["entry"]] == [_id(responses[1])]
    body = ok(fhir.post("", json=bundle("batch", get(f"Patient?identifier={MRN}|{mrn}"))))
    assert len(body["entry"][0]["resource"]["entry"]) == 1
