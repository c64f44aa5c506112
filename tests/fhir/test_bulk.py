"""Bulk load: `dicomhub fhir import` (the real console script) of the Synthea sample and of
Bundles, bad lines, loading twice; BulkLoader itself for what the command line cannot show.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from sqlalchemy import func, select

from dicomhub.bootstrap import Services, build_services, prepare_storage
from dicomhub.config import Settings
from dicomhub.context import RequestContext
from dicomhub.fhir.bulk import BulkLoader, read_resources
from dicomhub.fhir.references import iter_references
from dicomhub.storage.fhir import resources as store
from dicomhub.storage.fhir.resources import INDEX_TABLES
from dicomhub.storage.schema import fhir_resource, fhir_version
from tests.conftest import PG_ADMIN, LiveServer, require_postgres
from tests.fhir.support import MRN, fhir_client, ok, patient, search_available, strip_meta

SYNTHEA = Path(
    os.environ.get(
        "DICOMHUB_SYNTHEA", Path(__file__).parents[3] / "shared/data/synthea-10-patients"
    )
)
DICOMHUB = Path(sys.executable).parent / "dicomhub"
CONDITIONAL = re.compile(r"^(\w+)\?identifier=(.*)$")

pytestmark = pytest.mark.skipif(
    not SYNTHEA.is_dir(), reason=f"the Synthea sample is not at {SYNTHEA}"
)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMHUB_")}
    env["COLUMNS"] = "400"
    return env


def fhir_import(
    *paths: Path, data_dir: Path, database_url: str | None
) -> subprocess.CompletedProcess[str]:
    args = [str(DICOMHUB), "fhir", "import", *map(str, paths), "--data-dir", str(data_dir)]
    if database_url:
        args += ["--database-url", database_url]
    return subprocess.run(
        args, env=_env(), capture_output=True, text=True, timeout=900, check=False
    )


def summary(stdout: str) -> dict[str, int]:
    """The per-type rows of the summary table (and `total`)."""
    rows = re.findall(r"^\W*(\w+)\W+(\d+)\W*$", stdout, re.MULTILINE)
    return {name: int(count) for name, count in rows}


def synthea_resources() -> list[dict[str, Any]]:
    return [
        orjson.loads(line)
        for path in sorted(SYNTHEA.glob("*.ndjson"))
        if path.name != "log.ndjson"
        for line in path.read_bytes().splitlines()
        if line.strip()
    ]


def identifier_map(resources: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """(type, 'system|value') → id, what the conditional references are resolved with."""
    out = {}
    for r in resources:
        for ident in r.get("identifier") or []:
            out[(r["resourceType"], f"{ident.get('system', '')}|{ident.get('value')}")] = r["id"]
    return out


def resolved(resource: dict[str, Any], idents: dict[tuple[str, str], str]) -> dict[str, Any]:
    """`resource` as the store should hold it: conditional references to `Type/id`."""
    text = orjson.dumps(resource).decode()
    for ref in set(iter_references(resource)):
        match = CONDITIONAL.match(ref)
        if match:
            target = idents[(match.group(1), match.group(2))]
            text = text.replace(f'"{ref}"', f'"{match.group(1)}/{target}"')
    return dict(orjson.loads(text))


def _new_database() -> str:
    name = f"dicomhub_bulk_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def _drop_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Loaded:
    result: subprocess.CompletedProcess[str]
    seconds: float
    settings: Settings
    services: Services
    server: LiveServer
    resources: list[dict[str, Any]]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def synthea(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Loaded]:
    """The whole Synthea folder imported once per backend by the console script, then served."""
    database = None
    if request.param == "postgresql":
        require_postgres()
        database = _new_database()
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}" if database else None
    data_dir = tmp_path_factory.mktemp(f"synthea-{request.param}") / "data"
    try:
        started = time.perf_counter()
        result = fhir_import(SYNTHEA, data_dir=data_dir, database_url=url)
        seconds = time.perf_counter() - started
        settings = Settings(data_dir=data_dir, database_url=url, sqlite_synchronous="NORMAL")
        prepare_storage(settings)
        services = build_services(settings)
        try:
            with LiveServer(settings, services) as server:
                yield Loaded(result, seconds, settings, services, server, synthea_resources())
        finally:
            services.close()
    finally:
        if database:
            _drop_database(database)


# --- the Synthea sample -----------------------------------------------------------------------


def test_synthea_import_summary(synthea: Loaded) -> None:
    result = synthea.result
    assert result.returncode == 0, result.stderr
    expected = Counter(r["resourceType"] for r in synthea.resources)
    table = summary(result.stdout)
    assert {k: v for k, v in table.items() if k != "total"} == dict(expected), result.stdout
    assert table["total"] == len(synthea.resources) == 7160
    err = " ".join(result.stderr.split())
    assert "loading" in err and "7160/7160" in err  # the progress bar, at its end
    assert "failed" not in err and "Traceback" not in err
    assert "matched nothing" not in err  # every conditional reference was resolved
    rate = len(synthea.resources) / synthea.seconds
    print(f"\nfhir import of the Synthea sample: {synthea.seconds:.1f} s, {rate:.0f} resources/s")


def test_synthea_every_resource_reads_back_the_same(synthea: Loaded) -> None:
    idents = identifier_map(synthea.resources)
    with fhir_client(synthea.server) as fhir:
        for original in synthea.resources:
            r = fhir.get(f"/{original['resourceType']}/{original['id']}")
            stored = ok(r)
            assert r.headers["etag"] == 'W/"1"'
            assert stored["meta"]["versionId"] == "1"
            assert stored["meta"]["lastUpdated"].endswith("Z")
            assert strip_meta(stored) == strip_meta(resolved(original, idents)), original["id"]


def test_synthea_references_resolve(synthea: Loaded) -> None:
    """Every reference is `Type/id` of a stored resource; none is conditional any more."""
    kinds: Counter[str] = Counter()
    with synthea.services.db.read() as conn:
        rows = conn.execute(
            select(fhir_resource.c.res_type, fhir_resource.c.res_id, fhir_resource.c.body)
        ).all()
        stored = {(t, i) for t, i, _ in rows}
        assert len(stored) == len(synthea.resources)
        for res_type, res_id, body in rows:
            for ref in iter_references(orjson.loads(body)):
                assert "?" not in ref, (res_type, res_id, ref)
                target_type, _, target_id = ref.partition("/")
                assert (target_type, target_id) in stored, (res_type, res_id, ref)
                kinds[target_type] += 1
        # The index has the targets too (what chained searches and _revinclude use).
        ref_table = INDEX_TABLES["references"]
        unresolved = conn.execute(
            select(func.count())
            .select_from(ref_table)
            .where(ref_table.c.target_id.is_(None), ref_table.c.identifier_value.is_(None))
        ).scalar_one()
        assert unresolved == 0
    # The conditional references of the export, to these three types, are now literal.
    for res_type in ("Organization", "Location", "Practitioner", "Patient", "Encounter"):
        assert kinds[res_type] > 100, kinds


def test_synthea_searches_follow_the_references(synthea: Loaded) -> None:
    """Needs search: references resolved at load time are searchable by id."""
    with fhir_client(synthea.server) as fhir:
        search_available(fhir)
        patient_id = next(r["id"] for r in synthea.resources if r["resourceType"] == "Patient")
        expected = {
            r["id"]
            for r in synthea.resources
            if r["resourceType"] == "Condition"
            and r["subject"]["reference"] == f"Patient/{patient_id}"
        }
        found = ok(fhir.get("/Condition", params={"patient": patient_id, "_count": 1000}))
        assert {e["resource"]["id"] for e in found.get("entry", [])} == expected
        idents = identifier_map(synthea.resources)
        location = next(r for r in synthea.resources if r["resourceType"] == "Location")
        encounters = {
            r["id"]
            for r in synthea.resources
            if r["resourceType"] == "Encounter"
            and any(
                resolved(loc, idents)["location"]["reference"] == f"Location/{location['id']}"
                for loc in r.get("location", [])
            )
        }
        found = ok(fhir.get("/Encounter", params={"location": location["id"], "_count": 1000}))
        assert {e["resource"]["id"] for e in found.get("entry", [])} == encounters


# --- loading again, bad lines, Bundles --------------------------------------------------------


@pytest.fixture
def subset(tmp_path: Path) -> Path:
    """A few types of the sample (those the others refer to, and one that refers to them)."""
    folder = tmp_path / "subset"
    folder.mkdir()
    for name in ("Organization", "Location", "Practitioner", "Patient", "Encounter"):
        shutil.copyfile(SYNTHEA / f"{name}.000.ndjson", folder / f"{name}.000.ndjson")
    shutil.copyfile(SYNTHEA / "log.ndjson", folder / "log.ndjson")
    return folder


def _counts(services: Services) -> dict[str, int]:
    with services.db.read() as conn:
        return {
            t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
            for t in (fhir_resource, fhir_version, *INDEX_TABLES.values())
        }


def test_importing_twice_makes_version_2_and_no_duplicates(
    subset: Path, settings: Settings, services: Services, live_server: LiveServer
) -> None:
    url = settings.database_url
    first = fhir_import(subset, data_dir=settings.data_dir, database_url=url)
    assert first.returncode == 0, first.stderr
    total = summary(first.stdout)["total"]
    after_first = _counts(services)
    assert after_first["fhir_resource"] == total
    second = fhir_import(subset, data_dir=settings.data_dir, database_url=url)
    assert second.returncode == 0, second.stderr
    assert summary(second.stdout) == summary(first.stdout)
    after_second = _counts(services)
    assert after_second["fhir_resource"] == total
    assert after_second["fhir_version"] == 2 * total
    # The index holds the current versions only: the same rows as after the first load.
    for name, count in after_first.items():
        if name.startswith("fhir_idx"):
            assert after_second[name] == count, name
    with fhir_client(live_server) as fhir:
        patients = ok(fhir.get("/Patient/_history", params={"_count": 1}))
        assert patients["total"] == 2 * 13
        pid = orjson.loads((subset / "Patient.000.ndjson").read_bytes().splitlines()[0])["id"]
        assert ok(fhir.get(f"/Patient/{pid}"))["meta"]["versionId"] == "2"
        history = ok(fhir.get(f"/Patient/{pid}/_history"))
        assert [e["response"]["etag"] for e in history["entry"]] == ['W/"2"', 'W/"1"']
        encounter = orjson.loads((subset / "Encounter.000.ndjson").read_bytes().splitlines()[0])
        again = ok(fhir.get(f"/Encounter/{encounter['id']}"))
        assert all("?" not in ref for ref in iter_references(again))


def test_bad_lines_are_reported_and_the_rest_loads(
    tmp_path: Path, settings: Settings, live_server: LiveServer
) -> None:
    good = [patient(f"Good{n}", id=f"good-{n}") for n in range(3)]
    lines = [
        orjson.dumps(good[0]),
        b'{"resourceType": "Patient", "id": "broken", ',  # line 2: not JSON
        orjson.dumps(patient(id="bad-date", birthDate="1974-13-45")),  # line 3: invalid
        b"",  # blank lines are skipped, and still counted
        orjson.dumps(patient()),  # line 5: no id
        orjson.dumps({"resourceType": "Foo", "id": "x"}),  # line 6: no such type
        orjson.dumps(good[1]),
        orjson.dumps(patient(id="kind", active="yes")),  # line 8: a string for a boolean
        b"[1, 2]",  # line 9: not a resource
        orjson.dumps(good[2]),
    ]
    path = tmp_path / "Mixed.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = fhir_import(path, data_dir=settings.data_dir, database_url=settings.database_url)
    assert result.returncode == 1, result.stdout
    assert summary(result.stdout) == {"Patient": 3, "total": 3}
    err = " ".join(result.stderr.split())
    for line in (2, 3, 5, 6, 8, 9):
        assert f"Mixed.ndjson:{line}" in err, (line, err)
    for line in (1, 4, 7, 10):
        assert f"Mixed.ndjson:{line}:" not in err and f"Mixed.ndjson:{line} " not in err
    assert "Patient.birthDate" in err
    assert "Patient.active" in err
    assert "Traceback" not in err
    with fhir_client(live_server) as fhir:
        for resource in good:
            assert strip_meta(ok(fhir.get(f"/Patient/{resource['id']}"))) == resource
        assert fhir.get("/Patient/bad-date").status_code == 404
        assert ok(fhir.get("/Patient/_history"))["total"] == 3


def _transaction_bundle() -> dict[str, Any]:
    """A Synthea-shaped transaction: urn:uuid fullUrls, conditional creates and references."""
    org_id, pat_id, enc_id = (str(uuid.uuid4()) for _ in range(3))
    org_ident = {"system": "https://github.com/synthetichealth/synthea", "value": org_id}
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{org_id}",
                "resource": {
                    "resourceType": "Organization",
                    "id": org_id,
                    "identifier": [org_ident],
                    "name": "General Hospital",
                },
                "request": {
                    "method": "POST",
                    "url": "Organization",
                    "ifNoneExist": f"identifier={org_ident['system']}|{org_id}",
                },
            },
            {
                "fullUrl": f"urn:uuid:{pat_id}",
                "resource": patient("Bundled", mrn="bundled", id=pat_id),
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                # no id: it takes the one of its urn:uuid fullUrl
                "fullUrl": f"urn:uuid:{enc_id}",
                "resource": {
                    "resourceType": "Encounter",
                    "status": "finished",
                    "class": {"code": "AMB"},
                    "subject": {"reference": f"urn:uuid:{pat_id}"},
                    "serviceProvider": {
                        "reference": f"Organization?identifier={org_ident['system']}|{org_id}"
                    },
                },
                "request": {"method": "POST", "url": "Encounter"},
            },
            {
                # no id and no urn:uuid: a POST lets the loader choose one
                "resource": {
                    "resourceType": "Condition",
                    "subject": {"reference": f"urn:uuid:{pat_id}"},
                    "encounter": {"reference": f"urn:uuid:{enc_id}"},
                    "code": {"text": "headache"},
                },
                "request": {"method": "POST", "url": "Condition"},
            },
        ],
    }


def test_transaction_and_collection_bundle_files_load(
    tmp_path: Path, settings: Settings, live_server: LiveServer
) -> None:
    transaction = _transaction_bundle()
    collection = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "fullUrl": "http://example.org/fhir/Patient/col-1",
                "resource": patient("Collected", id="col-1"),
            },
            {
                "fullUrl": "http://example.org/fhir/Observation/col-2",
                "resource": {
                    "resourceType": "Observation",
                    "id": "col-2",
                    "status": "final",
                    "code": {"text": "weight"},
                    "subject": {"reference": "http://example.org/fhir/Patient/col-1"},
                    "valueQuantity": {"value": 70, "unit": "kg"},
                },
            },
        ],
    }
    folder = tmp_path / "bundles"
    folder.mkdir()
    (folder / "synthea-style.json").write_bytes(orjson.dumps(transaction))
    (folder / "collection.json").write_bytes(orjson.dumps(collection))
    (folder / "README.txt").write_text("not a FHIR file: skipped\n")
    result = fhir_import(folder, data_dir=settings.data_dir, database_url=settings.database_url)
    assert result.returncode == 0, result.stderr + result.stdout
    assert summary(result.stdout) == {
        "Condition": 1,
        "Encounter": 1,
        "Observation": 1,
        "Organization": 1,
        "Patient": 2,
        "total": 6,
    }
    org, pat = (e["resource"] for e in transaction["entry"][:2])
    enc_id = transaction["entry"][2]["fullUrl"].removeprefix("urn:uuid:")
    with fhir_client(live_server) as fhir:
        stored_enc = ok(fhir.get(f"/Encounter/{enc_id}"))
        assert stored_enc["subject"] == {"reference": f"Patient/{pat['id']}"}
        assert stored_enc["serviceProvider"] == {"reference": f"Organization/{org['id']}"}
        conditions = ok(fhir.get("/Condition/_history"))["entry"]
        condition = conditions[0]["resource"]
        assert condition["subject"] == {"reference": f"Patient/{pat['id']}"}
        assert condition["encounter"] == {"reference": f"Encounter/{enc_id}"}
        ok(fhir.get(f"/{condition['subject']['reference']}"))
        obs = ok(fhir.get("/Observation/col-2"))
        assert obs["subject"] == {"reference": "Patient/col-1"}
        ok(fhir.get("/Patient/col-1"))
        ok(fhir.get(f"/Organization/{org['id']}"))


def test_a_file_that_is_not_json_fails_alone(tmp_path: Path, settings: Settings) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "broken.json").write_text("{ not json")
    (folder / "Patient.ndjson").write_bytes(orjson.dumps(patient(id="alone")) + b"\n")
    result = fhir_import(folder, data_dir=settings.data_dir, database_url=settings.database_url)
    assert result.returncode == 1
    assert "broken.json" in result.stderr
    assert summary(result.stdout) == {"Patient": 1, "total": 1}


# --- BulkLoader itself ------------------------------------------------------------------------


def _index_rows(services: Services, res_type: str, res_id: str) -> dict[str, list[tuple[Any, ...]]]:
    with services.db.read() as conn:
        row = store.find(conn, res_type, res_id)
        assert row is not None
        out = {}
        for name, table in INDEX_TABLES.items():
            columns = [c for c in table.c if c.name != "resource_pk"]
            found = conn.execute(
                select(*columns).where(
                    table.c.resource_pk == row.pk,
                    table.c.param.not_in(("_id", "_lastUpdated")),  # differ by design
                )
            ).all()
            out[name] = sorted((tuple(r) for r in found), key=repr)
        return out


@pytest.mark.parametrize("workers", [1, 2])
def test_bulk_loader_validates_and_indexes_like_a_put(services: Services, workers: int) -> None:
    ctx = RequestContext()
    resources = [
        r
        for r in synthea_resources()
        if r["resourceType"] in ("Organization", "Practitioner", "Location", "Patient")
    ][:60] + [r for r in synthea_resources() if r["resourceType"] in ("Condition", "Procedure")][
        :40
    ]
    loader = BulkLoader(services.fhir.service, workers=workers)
    report = loader.load(ctx, [(f"item {i}", r) for i, r in enumerate(resources)])
    assert report.failed == []
    assert report.total == len(resources)
    # The same resources stored by update (PUT) under other ids index to the same rows.
    for original in resources[::7]:
        res_type = original["resourceType"]
        copy = orjson.loads(orjson.dumps(original))
        copy["id"] = f"put-{original['id'][:40]}"
        services.fhir.service.update(ctx, res_type, copy["id"], copy)
        loaded = _index_rows(services, res_type, original["id"])
        put_rows = _index_rows(services, res_type, copy["id"])
        if any("?" in ref for ref in iter_references(original)):
            continue  # the loader resolved against its own memory; the PUT against the store
        assert loaded == put_rows, res_type
    # What a PUT refuses, the loader refuses, naming the element.
    bad = [patient(id="kind", active="yes"), patient(id="date", birthDate="tomorrow")]
    report = loader.load(ctx, [("bad 1", bad[0]), ("bad 2", bad[1])])
    assert report.total == 0
    assert [where for where, _ in report.failed] == ["bad 1", "bad 2"]
    assert "Patient.active" in report.failed[0][1]
    assert "Patient.birthDate" in report.failed[1][1]


def test_bulk_loader_batches_duplicates_and_unresolved_references(services: Services) -> None:
    ctx = RequestContext()
    service = services.fhir.service
    stored_org = {
        "resourceType": "Organization",
        "id": "stored-org",
        "identifier": [{"system": "urn:org", "value": "stored"}],
        "name": "Already stored",
    }
    service.update(ctx, "Organization", "stored-org", stored_org)
    # 1,200 patients (three batches), observations referring to them and to organizations,
    # one patient twice, conditional references to the store and to nothing.
    patients = [patient(f"P{n}", id=f"pat-{n}", mrn=f"m{n}") for n in range(1200)]
    observations = [
        {
            "resourceType": "Observation",
            "id": f"obs-{n}",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": f"Patient?identifier={MRN}|m{n}"},
            "performer": [{"reference": "Organization?identifier=urn:org|stored"}],
        }
        for n in range(0, 1200, 100)
    ]
    observations.append(
        {
            "resourceType": "Observation",
            "id": "obs-nowhere",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": f"Patient?identifier={MRN}|nobody"},
        }
    )
    twice = patient("Second", id="pat-7", mrn="m7")
    items = [(f"o{i}", o) for i, o in enumerate(observations)]
    items += [(f"p{i}", p) for i, p in enumerate(patients)] + [("again", twice)]
    progress: list[int] = []
    report = BulkLoader(service, workers=2).load(ctx, items, progress.append)
    assert report.failed == []
    assert sum(progress) == len(items)
    assert report.unresolved == Counter({"Patient": 1})
    with services.db.read() as conn:
        pat7 = store.find(conn, "Patient", "pat-7")
        assert pat7 is not None
        assert pat7.version == 1
        assert orjson.loads(pat7.body or b"")["name"][0]["family"] == "Second"
        for n in range(0, 1200, 100):
            obs = store.find(conn, "Observation", f"obs-{n}")
            assert obs is not None
            body = orjson.loads(obs.body or b"")
            assert body["subject"] == {"reference": f"Patient/pat-{n}"}
            assert body["performer"] == [{"reference": "Organization/stored-org"}]
        nowhere = store.find(conn, "Observation", "obs-nowhere")
        assert nowhere is not None
        assert orjson.loads(nowhere.body or b"")["subject"]["reference"].startswith("Patient?")
        total = conn.execute(select(func.count()).select_from(fhir_resource)).scalar_one()
        assert total == 1 + 1200 + len(observations)


def test_read_resources_of_each_shape(tmp_path: Path) -> None:
    nd = tmp_path / "a.ndjson"
    nd.write_bytes(b'{"resourceType": "Patient", "id": "1"}\n\n{oops\n')
    items = list(read_resources(nd))
    assert [w for w, _ in items] == ["a.ndjson:1", "a.ndjson:3"]
    assert isinstance(items[1][1], ValueError)
    single = tmp_path / "one.json"
    single.write_bytes(orjson.dumps(patient(id="solo")))
    assert [r["id"] for _, r in read_resources(single)] == ["solo"]
    bundle = tmp_path / "b.json"
    bundle.write_bytes(orjson.dumps({"resourceType": "Bundle", "type": "batch", "entry": "x"}))
    ((_, problem),) = list(read_resources(bundle))
    assert isinstance(problem, ValueError)
