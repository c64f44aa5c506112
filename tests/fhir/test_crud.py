"""The FHIR RESTful interactions over HTTP against the live server, on SQLite and PostgreSQL.

create, read, vread, update (and update-as-create), delete, history at three levels, the
conditional interactions, headers (ETag, Last-Modified, Location, Prefer), formats, errors as
OperationOutcomes with the right status, the CapabilityStatement, concurrent updates.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest

from dicomhub.fhir.search.parameters import ALL_RESOURCE_TYPES
from tests.conftest import LiveServer
from tests.fhir.support import (
    FHIR_JSON,
    MRN,
    created,
    expressions,
    fhir_client,
    ok,
    outcome,
    patient,
    strip_meta,
    unique,
)


@pytest.fixture
def fhir(live_server: LiveServer) -> Iterator[httpx.Client]:
    with fhir_client(live_server) as client:
        yield client


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _versions_of_type(fhir: httpx.Client, res_type: str) -> int:
    return int(ok(fhir.get(f"/{res_type}/_history", params={"_count": 1}))["total"])


def _history_versions(bundle: dict[str, Any]) -> list[int]:
    return [int(e["response"]["etag"].split('"')[1]) for e in bundle.get("entry", [])]


# --- create and read -------------------------------------------------------------------------


def test_create_assigns_id_and_version_and_answers_headers(
    fhir: httpx.Client, live_server: LiveServer
) -> None:
    sent = patient("Chalmers", id="chosen-by-client", active=True)
    r = fhir.post("/Patient", json=sent)
    body = created(r)
    res_id = body["id"]
    # The server chooses the id of a create (R4 3.1.0.7): the client's id is not used.
    assert res_id != "chosen-by-client"
    assert r.headers["content-type"].startswith(FHIR_JSON)
    assert r.headers["location"] == f"{live_server.url}/fhir/Patient/{res_id}/_history/1"
    assert r.headers["etag"] == 'W/"1"'
    assert body["meta"]["versionId"] == "1"
    last_updated = _instant(body["meta"]["lastUpdated"])
    assert last_updated.tzinfo is not None
    assert abs((datetime.now(UTC) - last_updated).total_seconds()) < 60
    assert parsedate_to_datetime(r.headers["last-modified"]) == last_updated.replace(microsecond=0)
    expected = {k: v for k, v in sent.items() if k != "id"}
    assert strip_meta({k: v for k, v in body.items() if k != "id"}) == expected

    read = fhir.get(f"/Patient/{res_id}")
    assert ok(read) == body
    assert read.headers["content-type"].startswith(FHIR_JSON)
    assert read.headers["etag"] == 'W/"1"'
    assert parsedate_to_datetime(read.headers["last-modified"]) == last_updated.replace(
        microsecond=0
    )


def test_read_with_if_none_match_answers_304(fhir: httpx.Client) -> None:
    res_id = created(fhir.post("/Patient", json=patient()))["id"]
    r = fhir.get(f"/Patient/{res_id}", headers={"If-None-Match": 'W/"1"'})
    assert r.status_code == 304, r.text
    assert r.headers["etag"] == 'W/"1"'
    assert fhir.get(f"/Patient/{res_id}", headers={"If-None-Match": 'W/"7"'}).status_code == 200


def test_create_keeps_extensions_contained_and_unicode(fhir: httpx.Client) -> None:
    sent = patient(
        "Müller-Łukasiewicz 山田",
        extension=[
            {
                "url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace",
                "valueAddress": {"city": "Zürich", "country": "CH"},
            }
        ],
        _birthDate={"extension": [{"url": "http://example.org/precision", "valueCode": "day"}]},
        contained=[{"resourceType": "Organization", "id": "org1", "name": "Clinic"}],
        managingOrganization={"reference": "#org1"},
        meta={"tag": [{"system": "http://example.org/tags", "code": "test"}]},
    )
    body = created(fhir.post("/Patient", json=sent))
    assert body["meta"]["tag"] == sent["meta"]["tag"]
    stored = ok(fhir.get(f"/Patient/{body['id']}"))
    assert strip_meta({k: v for k, v in stored.items() if k != "id"}) == sent


# --- update, vread, update as create ---------------------------------------------------------


def test_update_makes_versions_and_vread_reads_each(
    fhir: httpx.Client, live_server: LiveServer
) -> None:
    first = created(fhir.post("/Patient", json=patient("One")))
    res_id = first["id"]
    changed = patient("Two", id=res_id)
    r = fhir.put(f"/Patient/{res_id}", json=changed)
    second = ok(r)
    assert second["meta"]["versionId"] == "2"
    assert r.headers["etag"] == 'W/"2"'
    assert r.headers["location"] == f"{live_server.url}/fhir/Patient/{res_id}/_history/2"
    assert _instant(second["meta"]["lastUpdated"]) > _instant(first["meta"]["lastUpdated"])

    assert ok(fhir.get(f"/Patient/{res_id}"))["name"][0]["family"] == "Two"
    v1 = fhir.get(f"/Patient/{res_id}/_history/1")
    assert ok(v1) == first
    assert v1.headers["etag"] == 'W/"1"'
    assert ok(fhir.get(f"/Patient/{res_id}/_history/2")) == second
    outcome(fhir.get(f"/Patient/{res_id}/_history/3"), 404)
    outcome(fhir.get(f"/Patient/{res_id}/_history/first"), 400)
    outcome(fhir.get("/Patient/nobody/_history/1"), 404)


def test_put_with_a_client_id_creates_then_updates(
    fhir: httpx.Client, live_server: LiveServer
) -> None:
    res_id = f"client-{unique()}"
    r = fhir.put(f"/Patient/{res_id}", json=patient(id=res_id))
    body = created(r)
    assert body["id"] == res_id
    assert body["meta"]["versionId"] == "1"
    assert r.headers["location"] == f"{live_server.url}/fhir/Patient/{res_id}/_history/1"
    r = fhir.put(f"/Patient/{res_id}", json=patient("Other", id=res_id))
    assert ok(r)["meta"]["versionId"] == "2"
    assert ok(fhir.get(f"/Patient/{res_id}"))["name"][0]["family"] == "Other"


def test_put_refusals(fhir: httpx.Client) -> None:
    res_id = f"p-{unique()}"
    # no id in the body
    r = fhir.put(f"/Patient/{res_id}", json=patient())
    outcome(r, 400)
    assert "Patient.id" in expressions(r)
    # an id different from the URL's
    r = fhir.put(f"/Patient/{res_id}", json=patient(id="someone-else"))
    outcome(r, 400)
    assert "Patient.id" in expressions(r)
    # an id that is not a FHIR id (65 characters; characters outside [A-Za-z0-9-.])
    long_id = "x" * 65
    outcome(fhir.put(f"/Patient/{long_id}", json=patient(id=long_id)), 400)
    outcome(fhir.put("/Patient/a_b", json=patient(id="a_b")), 400)
    # another type than the URL's
    obs = {"resourceType": "Observation", "id": res_id, "status": "final", "code": {"text": "x"}}
    outcome(fhir.put(f"/Patient/{res_id}", json=obs), 400)
    outcome(fhir.post("/Patient", json={**obs, "id": None}), 400)
    # an element fhir.resources trips over (its extension given as a string): 422, not 500
    outcome(fhir.put(f"/Patient/{res_id}", json={**patient(id=res_id), "_gender": " 1.2 "}), 422)
    assert _versions_of_type(fhir, "Patient") == 0
    assert _versions_of_type(fhir, "Observation") == 0


# --- delete -----------------------------------------------------------------------------------


def test_delete_then_read_is_gone_and_history_keeps_versions(fhir: httpx.Client) -> None:
    res_id = created(fhir.post("/Patient", json=patient()))["id"]
    r = fhir.delete(f"/Patient/{res_id}")
    assert r.status_code == 204, r.text
    assert r.headers["etag"] == 'W/"2"'
    issue = outcome(fhir.get(f"/Patient/{res_id}"), 410)
    assert issue["code"] == "deleted"
    assert ok(fhir.get(f"/Patient/{res_id}/_history/1"))["id"] == res_id
    outcome(fhir.get(f"/Patient/{res_id}/_history/2"), 410)
    # Deleting again, or deleting what never existed, succeeds without doing anything.
    assert fhir.delete(f"/Patient/{res_id}").status_code == 204
    assert fhir.delete("/Patient/never-was").status_code == 204

    history = ok(fhir.get(f"/Patient/{res_id}/_history"))
    assert history["type"] == "history"
    assert history["total"] == 2
    newest, oldest = history["entry"]
    assert newest["request"] == {"method": "DELETE", "url": f"Patient/{res_id}"}
    assert "resource" not in newest
    assert newest["response"]["etag"] == 'W/"2"'
    assert oldest["request"]["method"] == "POST"
    assert oldest["resource"]["id"] == res_id

    # An update brings it back as a new version.
    r = fhir.put(f"/Patient/{res_id}", json=patient("Back", id=res_id))
    assert r.status_code in (200, 201), r.text
    assert r.json()["meta"]["versionId"] == "3"
    assert ok(fhir.get(f"/Patient/{res_id}"))["name"][0]["family"] == "Back"


# --- unknown types and ids --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/Foo/1"),
        ("GET", "/Foo/_history"),
        ("GET", "/Foo/1/_history"),
        ("GET", "/Foo/1/_history/1"),
        ("DELETE", "/Foo/1"),
        ("POST", "/Foo"),
        ("PUT", "/Foo/1"),
        ("GET", "/HumanName/1"),  # a data type, not a resource
        ("POST", "/HumanName"),
        ("POST", "/DomainResource"),
        ("POST", "/Citation"),  # R4B, not R4
        ("GET", "/patient/1"),  # types are case-sensitive
    ],
)
def test_unknown_types_are_404(fhir: httpx.Client, method: str, path: str) -> None:
    res_type = path.split("/")[1]
    body = {"resourceType": res_type, "id": "1", "family": "x", "title": "t", "status": "active"}
    r = fhir.request(method, path, json=body if method in ("POST", "PUT") else None)
    issue = outcome(r, 404)
    assert res_type in issue["diagnostics"]


def test_unknown_ids_are_404(fhir: httpx.Client) -> None:
    outcome(fhir.get("/Patient/does-not-exist"), 404)
    outcome(fhir.get("/Patient/does-not-exist/_history"), 404)
    outcome(fhir.get(f"/Patient/{'y' * 200}"), 404)


def test_every_r4_type_is_known_and_r4_only_types_can_be_stored(fhir: httpx.Client) -> None:
    for res_type in sorted(ALL_RESOURCE_TYPES):
        issue = outcome(fhir.get(f"/{res_type}/not-stored"), 404)
        assert "not known" in issue["diagnostics"], (res_type, issue)
    # Types of R4 that the R4B models no longer have are stored too (checked as resources).
    for res_type in ("MedicinalProduct", "EffectEvidenceSynthesis", "SubstanceSpecification"):
        body = created(fhir.post(f"/{res_type}", json={"resourceType": res_type}))
        assert ok(fhir.get(f"/{res_type}/{body['id']}"))["resourceType"] == res_type
    # ...and their common elements are still checked.
    bad = {"resourceType": "MedicinalProduct", "meta": {"lastUpdated": "yesterday"}}
    r = fhir.post("/MedicinalProduct", json=bad)
    outcome(r, 422)
    assert any(e.startswith("MedicinalProduct.meta") for e in expressions(r)), r.text
    # Binary, Bundle and Basic, whose shapes differ from clinical resources.
    binary = {"resourceType": "Binary", "contentType": "text/plain", "data": "aGVsbG8="}
    assert created(fhir.post("/Binary", json=binary))["data"] == "aGVsbG8="
    document = {"resourceType": "Bundle", "type": "collection", "entry": []}
    created(fhir.post("/Bundle", json=document))
    basic = {"resourceType": "Basic", "code": {"text": "thing"}}
    created(fhir.post("/Basic", json=basic))


# --- If-Match ---------------------------------------------------------------------------------


def test_if_match_on_update(fhir: httpx.Client) -> None:
    res_id = created(fhir.post("/Patient", json=patient()))["id"]
    update = patient("Second", id=res_id)
    issue = outcome(fhir.put(f"/Patient/{res_id}", json=update, headers={"If-Match": 'W/"2"'}), 412)
    assert "version" in issue["diagnostics"]
    assert ok(fhir.get(f"/Patient/{res_id}"))["meta"]["versionId"] == "1"
    r = fhir.put(f"/Patient/{res_id}", json=update, headers={"If-Match": 'W/"1"'})
    assert ok(r)["meta"]["versionId"] == "2"
    # A strong-looking ETag names the same version.
    r = fhir.put(f"/Patient/{res_id}", json=update, headers={"If-Match": '"2"'})
    assert ok(r)["meta"]["versionId"] == "3"
    outcome(fhir.put(f"/Patient/{res_id}", json=update, headers={"If-Match": "yesterday"}), 400)
    # If-Match on a resource that does not exist: nothing to match.
    other = f"new-{unique()}"
    r = fhir.put(f"/Patient/{other}", json=patient(id=other), headers={"If-Match": 'W/"1"'})
    outcome(r, 412)
    outcome(fhir.get(f"/Patient/{other}"), 404)


def test_if_match_on_delete(fhir: httpx.Client) -> None:
    res_id = created(fhir.post("/Patient", json=patient()))["id"]
    outcome(fhir.delete(f"/Patient/{res_id}", headers={"If-Match": 'W/"3"'}), 412)
    assert ok(fhir.get(f"/Patient/{res_id}"))["id"] == res_id
    assert fhir.delete(f"/Patient/{res_id}", headers={"If-Match": 'W/"1"'}).status_code == 204
    outcome(fhir.get(f"/Patient/{res_id}"), 410)
    # Deleted: no version matches any more.
    outcome(fhir.delete(f"/Patient/{res_id}", headers={"If-Match": 'W/"2"'}), 412)


# --- conditional create, update, delete -------------------------------------------------------


def test_conditional_create(fhir: httpx.Client) -> None:
    mrn = unique()
    condition = {"If-None-Exist": f"identifier={MRN}|{mrn}"}
    r = fhir.post("/Patient", json=patient("First", mrn=mrn), headers=condition)
    first = created(r)
    # One match: 200, the existing resource, nothing written.
    r = fhir.post("/Patient", json=patient("Second", mrn=mrn), headers=condition)
    again = ok(r)
    assert again == first
    assert r.headers["etag"] == 'W/"1"'
    assert r.headers["location"].endswith(f"/Patient/{first['id']}/_history/1")
    assert _versions_of_type(fhir, "Patient") == 1
    # Prefer: return=minimal on a match: still 200, no body.
    r = fhir.post(
        "/Patient",
        json=patient("Third", mrn=mrn),
        headers={**condition, "Prefer": "return=minimal"},
    )
    assert r.status_code == 200, r.text
    assert r.content == b""
    # The condition with `?` and by _id work too.
    r = fhir.post("/Patient", json=patient(), headers={"If-None-Exist": f"?_id={first['id']}"})
    assert ok(r)["id"] == first["id"]
    # Two matches: 412, nothing written.
    created(fhir.post("/Patient", json=patient("Twin", mrn=mrn)))
    outcome(fhir.post("/Patient", json=patient("Fourth", mrn=mrn), headers=condition), 412)
    assert _versions_of_type(fhir, "Patient") == 2
    # A condition that is not a query at all.
    outcome(fhir.post("/Patient", json=patient(), headers={"If-None-Exist": "?"}), 400)


def test_conditional_update(fhir: httpx.Client) -> None:
    mrn = unique()
    query = {"identifier": f"{MRN}|{mrn}"}
    # No match: created, the server chooses the id.
    r = fhir.put("/Patient", params=query, json=patient("One", mrn=mrn))
    first = created(r)
    res_id = first["id"]
    # One match: that resource is updated.
    r = fhir.put("/Patient", params=query, json=patient("Two", mrn=mrn))
    second = ok(r)
    assert second["id"] == res_id
    assert second["meta"]["versionId"] == "2"
    assert r.headers["location"].endswith(f"/Patient/{res_id}/_history/2")
    # The body may carry the matched id, not another one.
    ok(fhir.put("/Patient", params=query, json=patient("Three", mrn=mrn, id=res_id)))
    outcome(fhir.put("/Patient", params=query, json=patient("X", mrn=mrn, id="other-id")), 400)
    # Several matches: 412.
    created(fhir.post("/Patient", json=patient("Twin", mrn=mrn)))
    outcome(fhir.put("/Patient", params=query, json=patient("Four", mrn=mrn)), 412)
    assert ok(fhir.get(f"/Patient/{res_id}"))["name"][0]["family"] == "Three"
    # No query at all.
    outcome(fhir.put("/Patient", json=patient()), 400)
    # An invalid resource is refused before any match.
    bad = patient(mrn=unique(), birthDate="not-a-date")
    outcome(fhir.put("/Patient", params={"identifier": f"{MRN}|{unique()}"}, json=bad), 422)


def test_conditional_delete(fhir: httpx.Client) -> None:
    mrn = unique()
    query = {"identifier": f"{MRN}|{mrn}"}
    res_id = created(fhir.post("/Patient", json=patient(mrn=mrn)))["id"]
    assert fhir.delete("/Patient", params=query).status_code == 204
    outcome(fhir.get(f"/Patient/{res_id}"), 410)
    # Nothing matches any more: still a success.
    assert fhir.delete("/Patient", params=query).status_code == 204
    # Several match: refused, both kept.
    other = unique()
    twins = [created(fhir.post("/Patient", json=patient(mrn=other)))["id"] for _ in range(2)]
    outcome(fhir.delete("/Patient", params={"identifier": f"{MRN}|{other}"}), 412)
    for twin in twins:
        ok(fhir.get(f"/Patient/{twin}"))
    outcome(fhir.delete("/Patient"), 400)


# --- Prefer -----------------------------------------------------------------------------------


def test_prefer_return(fhir: httpx.Client) -> None:
    r = fhir.post("/Patient", json=patient(), headers={"Prefer": "return=minimal"})
    assert r.status_code == 201, r.text
    assert r.content == b""
    location = r.headers["location"]
    assert r.headers["etag"] == 'W/"1"'
    assert r.headers["last-modified"]
    res_id = location.split("/Patient/")[1].split("/")[0]
    ok(fhir.get(f"/Patient/{res_id}"))

    r = fhir.put(
        f"/Patient/{res_id}",
        json=patient("Rep", id=res_id),
        headers={"Prefer": "return=representation"},
    )
    assert ok(r)["name"][0]["family"] == "Rep"

    r = fhir.put(
        f"/Patient/{res_id}",
        json=patient("OO", id=res_id),
        headers={"Prefer": "return=OperationOutcome"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["severity"] == "information"
    assert r.headers["etag"] == 'W/"3"'

    r = fhir.post("/Patient", json=patient(), headers={"Prefer": "return=OperationOutcome"})
    assert r.status_code == 201
    assert r.json()["resourceType"] == "OperationOutcome"
    assert r.headers["location"]


# --- formats, media types, bodies -------------------------------------------------------------


def test_format_and_pretty(fhir: httpx.Client) -> None:
    res_id = created(fhir.post("/Patient", json=patient()))["id"]
    compact = fhir.get(f"/Patient/{res_id}")
    assert b"\n" not in compact.content
    for fmt in ("json", "application/json", "application/fhir+json"):
        r = fhir.get(f"/Patient/{res_id}", params={"_format": fmt})
        assert ok(r)["id"] == res_id
        assert r.headers["content-type"].startswith(FHIR_JSON)
    for fmt in ("xml", "application/fhir+xml", "ttl"):
        outcome(fhir.get(f"/Patient/{res_id}", params={"_format": fmt}), 406)
        outcome(fhir.get("/metadata", params={"_format": fmt}), 406)
    # _format wins over Accept.
    r = fhir.get(
        f"/Patient/{res_id}", params={"_format": "json"}, headers={"Accept": "application/xml"}
    )
    assert r.status_code == 200
    outcome(fhir.get(f"/Patient/{res_id}", headers={"Accept": "application/fhir+xml"}), 406)
    for accept in ("*/*", "application/json", "application/fhir+json;q=0.9, text/html"):
        assert fhir.get(f"/Patient/{res_id}", headers={"Accept": accept}).status_code == 200

    pretty = fhir.get(f"/Patient/{res_id}", params={"_pretty": "true"})
    assert pretty.json() == compact.json()
    assert b'\n  "' in pretty.content
    assert b"\n" not in fhir.get(f"/Patient/{res_id}", params={"_pretty": "false"}).content
    r = fhir.post("/Patient", params={"_pretty": "true"}, json=patient())
    assert r.status_code == 201
    assert b'\n  "' in r.content
    r = fhir.get(f"/Patient/{res_id}/_history", params={"_pretty": "true"})
    assert b'\n  "' in r.content
    assert b'\n  "' in fhir.get("/metadata", params={"_pretty": "true"}).content


@pytest.mark.parametrize(
    "content_type", ["application/xml", "application/fhir+xml", "text/plain", "text/turtle"]
)
def test_non_json_media_types_are_415(fhir: httpx.Client, content_type: str) -> None:
    res_id = f"p-{unique()}"
    body = b"<Patient xmlns='http://hl7.org/fhir'/>"
    headers = {"Content-Type": content_type}
    outcome(fhir.post("/Patient", content=body, headers=headers), 415)
    outcome(fhir.put(f"/Patient/{res_id}", content=body, headers=headers), 415)
    outcome(fhir.post("", content=body, headers=headers), 415)
    assert _versions_of_type(fhir, "Patient") == 0


def test_plain_json_media_type_is_accepted(fhir: httpx.Client) -> None:
    r = fhir.post("/Patient", json=patient(), headers={"Content-Type": "application/json"})
    created(r)
    r = fhir.post(
        "/Patient", json=patient(), headers={"Content-Type": "application/fhir+json; charset=utf-8"}
    )
    created(r)


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        b"[]",
        b'"Patient"',
        b"null",
        b"{}",
        b'{"name": [{"family": "NoType"}]}',
        b'{"resourceType": 7}',
        b'{"resourceType": "Patient", "name": [{"family": "x"}]',
        b"\xff\xfe{}",
    ],
)
def test_bodies_that_are_not_resources_are_400(fhir: httpx.Client, body: bytes) -> None:
    res_id = f"p-{unique()}"
    outcome(fhir.post("/Patient", content=body), 400)
    outcome(fhir.put(f"/Patient/{res_id}", content=body), 400)
    outcome(fhir.put("/Patient", params={"identifier": "x|y"}, content=body), 400)
    outcome(fhir.post("", content=body), 400)
    assert _versions_of_type(fhir, "Patient") == 0


# --- validation: 422 naming the elements ------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "element"),
    [
        (patient(birthDate="1974-13-45"), "Patient.birthDate"),
        (patient(birthDate=19741225), "Patient.birthDate"),
        (patient(gender=["male"]), "Patient.gender"),
        (patient(active="yes"), "Patient.active"),
        (patient(colour="blue"), "Patient.colour"),
        ({**patient(), "name": [{"family": ["A", "B"]}]}, "Patient.name[0].family"),
        ({**patient(), "name": {"family": "A"}}, "Patient.name"),
        ({**patient(), "telecom": [{"system": "phone", "value": 5}]}, "Patient.telecom[0].value"),
        ({**patient(), "meta": {"lastUpdated": "yesterday"}}, "Patient.meta.lastUpdated"),
        ({"resourceType": "Observation", "code": {"text": "x"}}, "Observation.status"),
        (
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "x"},
                "valueQuantity": {"value": "many"},
            },
            "Observation.valueQuantity.value",
        ),
        (
            {
                "resourceType": "Condition",
                "subject": {"reference": "Patient/1"},
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": 254637007}]},
            },
            "Condition.code.coding[0].code",
        ),
    ],
)
def test_invalid_resources_are_422_naming_the_element(
    fhir: httpx.Client, resource: dict[str, Any], element: str
) -> None:
    res_type = resource["resourceType"]
    r = fhir.post(f"/{res_type}", json=resource)
    issue = outcome(r, 422)
    assert element in expressions(r), (element, r.json())
    assert element in issue["diagnostics"]
    res_id = f"x-{unique()}"
    r = fhir.put(f"/{res_type}/{res_id}", json={**resource, "id": res_id})
    outcome(r, 422)
    assert element.replace(res_type, res_type) in expressions(r)
    assert _versions_of_type(fhir, res_type) == 0


def test_several_problems_are_all_named(fhir: httpx.Client) -> None:
    bad = patient(birthDate="soon", gender=3, active="maybe")
    r = fhir.post("/Patient", json=bad)
    outcome(r, 422)
    assert {"Patient.birthDate", "Patient.gender", "Patient.active"} <= set(expressions(r))


def test_non_string_id_is_refused(fhir: httpx.Client) -> None:
    r = fhir.put("/Patient/12", json=patient(id=12))
    assert r.status_code in (400, 422), r.text
    outcome(r, r.status_code)


# --- history ----------------------------------------------------------------------------------


def _follow(fhir: httpx.Client, first: dict[str, Any]) -> list[dict[str, Any]]:
    pages = [first]
    seen = 0
    while True:
        links = {link["relation"]: link["url"] for link in pages[-1].get("link", [])}
        if "next" not in links:
            return pages
        seen += 1
        assert seen < 50, "the next links do not end"
        pages.append(ok(fhir.get(links["next"])))


def test_history_paging_since_and_levels(fhir: httpx.Client) -> None:
    res_id = created(fhir.post("/Patient", json=patient("v1")))["id"]
    stamps = []
    for n in range(2, 6):
        stamps.append(ok(fhir.put(f"/Patient/{res_id}", json=patient(f"v{n}", id=res_id))))
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "weight"}}
    obs_id = created(fhir.post("/Observation", json=obs))["id"]

    first = ok(fhir.get(f"/Patient/{res_id}/_history", params={"_count": 2}))
    assert first["type"] == "history"
    assert first["total"] == 5
    assert _history_versions(first) == [5, 4]
    links = {link["relation"] for link in first["link"]}
    assert links == {"self", "next"}
    pages = _follow(fhir, first)
    assert [_history_versions(p) for p in pages] == [[5, 4], [3, 2], [1]]
    assert {link["relation"] for link in pages[-1]["link"]} == {"self", "previous"}
    entry = pages[0]["entry"][0]
    assert entry["fullUrl"].endswith(f"/fhir/Patient/{res_id}")
    assert entry["request"] == {"method": "PUT", "url": f"Patient/{res_id}"}
    assert entry["response"]["status"].startswith("200")
    assert entry["resource"]["name"][0]["family"] == "v5"
    assert pages[-1]["entry"][0]["request"]["method"] == "POST"
    assert pages[-1]["entry"][0]["response"]["status"].startswith("201")

    # _since: the versions written at or after an instant.
    since = stamps[1]["meta"]["lastUpdated"]  # version 3
    r = ok(fhir.get(f"/Patient/{res_id}/_history", params={"_since": since}))
    assert _history_versions(r) == [5, 4, 3]
    assert r["total"] == 3
    r = ok(fhir.get("/_history", params={"_since": since, "_count": 100}))
    assert [e["fullUrl"].rsplit("/", 1)[1] for e in r["entry"]] == [obs_id] + [res_id] * 3

    # type and system levels
    patients = ok(fhir.get("/Patient/_history"))
    assert patients["total"] == 5
    assert {e["resource"]["resourceType"] for e in patients["entry"]} == {"Patient"}
    everything = ok(fhir.get("/_history", params={"_count": 3}))
    assert everything["total"] == 6
    pages = _follow(fhir, everything)
    assert sum(len(p["entry"]) for p in pages) == 6
    assert pages[0]["entry"][0]["resource"]["resourceType"] == "Observation"

    # _at: the versions up to an instant.
    r = ok(fhir.get(f"/Patient/{res_id}/_history", params={"_at": since}))
    assert _history_versions(r) == [3, 2, 1]


@pytest.mark.parametrize(
    "params",
    [
        {"_since": "yesterday"},
        {"_since": "2024-01-01T00:00:00"},  # an instant needs a zone
        {"_count": "many"},
        {"_count": "-1"},
        {"_offset": "x"},
        {"_at": "2024-13-01T00:00:00Z"},
    ],
)
def test_history_bad_parameters_are_400(fhir: httpx.Client, params: dict[str, str]) -> None:
    outcome(fhir.get("/Patient/_history", params=params), 400)
    outcome(fhir.get("/_history", params=params), 400)


def test_history_count_zero_gives_the_total_without_looping(fhir: httpx.Client) -> None:
    for _ in range(3):
        created(fhir.post("/Patient", json=patient()))
    r = ok(fhir.get("/Patient/_history", params={"_count": 0}))
    assert r["total"] == 3
    assert r.get("entry", []) == []
    assert "next" not in {link["relation"] for link in r["link"]}


# --- CapabilityStatement ----------------------------------------------------------------------


def test_capability_statement(fhir: httpx.Client, live_server: LiveServer) -> None:
    r = fhir.get("/metadata")
    cs = ok(r)
    assert r.headers["content-type"].startswith(FHIR_JSON)
    assert cs["resourceType"] == "CapabilityStatement"
    assert cs["fhirVersion"] == "4.0.1"
    assert cs["kind"] == "instance"
    assert cs["status"] == "active"
    assert "application/fhir+json" in cs["format"]
    assert cs["implementation"]["url"] == f"{live_server.url}/fhir"
    (rest,) = cs["rest"]
    assert rest["mode"] == "server"
    assert {i["code"] for i in rest["interaction"]} >= {"transaction", "batch", "history-system"}
    common = {p["name"] for p in rest["searchParam"]}
    assert {"_id", "_lastUpdated"} <= common

    by_type = {res["type"]: res for res in rest["resource"]}
    assert set(by_type) == set(ALL_RESOURCE_TYPES)
    assert len(by_type) == 146
    # R4 types the R4B models dropped are there, R4B-only types are not.
    assert {"MedicinalProduct", "EffectEvidenceSynthesis", "CatalogEntry"} <= set(by_type)
    assert not {"Citation", "SubscriptionTopic", "Ingredient", "DomainResource"} & set(by_type)
    for res in by_type.values():
        codes = {i["code"] for i in res["interaction"]}
        assert codes >= {
            "read",
            "vread",
            "update",
            "delete",
            "create",
            "history-instance",
            "history-type",
            "search-type",
        }, res["type"]
        assert res["versioning"] in ("versioned", "versioned-update")
        assert res["conditionalCreate"] is True
        assert res["conditionalUpdate"] is True
        assert res["conditionalDelete"] in ("single", "multiple")

    def params(res_type: str) -> dict[str, dict[str, Any]]:
        return {p["name"]: p for p in by_type[res_type]["searchParam"]}

    patient_params = params("Patient")
    assert patient_params["birthdate"]["type"] == "date"
    assert patient_params["identifier"]["type"] == "token"
    assert patient_params["name"]["type"] == "string"
    assert patient_params["organization"]["type"] == "reference"
    assert patient_params["birthdate"]["definition"] == (
        "http://hl7.org/fhir/SearchParameter/individual-birthdate"
    )
    assert params("Condition")["code"]["type"] == "token"
    assert params("Condition")["patient"]["type"] == "reference"
    assert params("ImagingStudy")["patient"]["type"] == "reference"
    assert params("Observation")["value-quantity"]["type"] == "quantity"
    study = params("DiagnosticReport")["study"]
    assert study["type"] == "reference"
    assert "extra" in study["documentation"].lower()
    assert not any(
        "extra" in p["documentation"].lower()
        for res_type in ("Patient", "Condition", "ImagingStudy")
        for p in params(res_type).values()
    )
    assert "ImagingStudy:patient" in by_type["ImagingStudy"]["searchInclude"]

    # It is a valid CapabilityStatement by the models the store validates with.
    from fhir.resources.R4B.capabilitystatement import CapabilityStatement

    CapabilityStatement.model_validate(cs)


# --- never a 500 ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/Patient/x/_history/1.5", 400),
        ("GET", "/Patient/x/_history/-1", 400),
        ("GET", "/Patient/x/_history/99999999999999999999999", 404),
        ("GET", "/Patient/%20", 404),
        ("PATCH", "/Patient/x", 405),
        ("GET", "/Patient/x/y/z/w", 404),
        ("GET", "/Patient/x/_history", 404),
        ("DELETE", "/Patient/x/_history/1", 405),
    ],
)
def test_odd_requests_are_not_500(fhir: httpx.Client, method: str, path: str, status: int) -> None:
    r = fhir.request(method, path)
    outcome(r, status)


# --- concurrency ------------------------------------------------------------------------------


def _together(count: int, call: Any) -> list[httpx.Response]:
    """Run `call(i)` in `count` threads released at the same moment."""
    barrier = threading.Barrier(count)
    answers: list[httpx.Response | BaseException] = [RuntimeError("not run")] * count

    def run(i: int) -> None:
        barrier.wait()
        try:
            answers[i] = call(i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            answers[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    out = []
    for answer in answers:
        assert isinstance(answer, httpx.Response), answer
        out.append(answer)
    return out


def test_concurrent_updates_with_the_same_if_match(live_server: LiveServer) -> None:
    clients = [httpx.Client(base_url=live_server.url + "/fhir", timeout=60) for _ in range(2)]
    try:
        res_id = created(clients[0].post("/Patient", json=patient()))["id"]
        for round_ in range(1, 11):
            answers = _together(
                2,
                lambda i, round_=round_: clients[i].put(
                    f"/Patient/{res_id}",
                    json=patient(f"writer{i}-round{round_}", id=res_id),
                    headers={"If-Match": f'W/"{round_}"'},
                ),
            )
            statuses = sorted(a.status_code for a in answers)
            assert statuses in ([200, 409], [200, 412]), [a.text for a in answers]
            loser = next(a for a in answers if a.status_code != 200)
            outcome(loser, loser.status_code)
            winner = next(a for a in answers if a.status_code == 200)
            current = ok(clients[0].get(f"/Patient/{res_id}"))
            assert current["meta"]["versionId"] == str(round_ + 1)
            assert current == winner.json()
        history = ok(clients[0].get(f"/Patient/{res_id}/_history"))
        assert history["total"] == 11
    finally:
        for client in clients:
            client.close()


def test_concurrent_creates_with_the_same_client_id(live_server: LiveServer) -> None:
    clients = [httpx.Client(base_url=live_server.url + "/fhir", timeout=60) for _ in range(3)]
    try:
        for _ in range(5):
            res_id = f"race-{unique()}"
            answers = _together(
                3,
                lambda i, res_id=res_id: clients[i].put(
                    f"/Patient/{res_id}", json=patient(f"w{i}", id=res_id)
                ),
            )
            statuses = [a.status_code for a in answers]
            assert set(statuses) <= {200, 201, 409}, [a.text for a in answers]
            assert statuses.count(201) == 1, statuses
            history = ok(clients[0].get(f"/Patient/{res_id}/_history"))
            assert history["total"] == statuses.count(200) + 1
    finally:
        for client in clients:
            client.close()
