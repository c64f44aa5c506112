"""The app's routes, included one by one: everything stays reachable, documented and exact."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi.routing import APIRoute

from dicomhub.app import DICOMWEB_PREFIXES
from dicomhub.bootstrap import Services
from dicomhub.config import Settings
from dicomhub.dicomweb.routes import stow
from dicomhub.routing import PrefixedRoute
from tests.conftest import LiveServer


def test_every_route_is_in_the_openapi_description(live_server: LiveServer) -> None:
    paths = httpx.get(f"{live_server.url}/openapi.json").json()["paths"]
    for prefix in DICOMWEB_PREFIXES:
        assert "post" in paths[f"{prefix}/studies"]
        assert "get" in paths[f"{prefix}/studies/{{study}}/series/{{series}}/metadata"]
        assert paths[f"{prefix}/studies"]["post"]["tags"] == ["STOW-RS"]
    assert paths["/fhir/{res_type}"]["get"]["tags"] == ["FHIR"]
    assert "/admin/sync" in paths
    assert "/" not in paths  # the UI's routes stay out of it, as they asked
    operation_ids = [op["operationId"] for item in paths.values() for op in item.values()]
    assert len(operation_ids) == len(set(operation_ids))


def test_routes_answer_under_every_prefix_and_refuse_other_methods(
    live_server: LiveServer,
) -> None:
    with httpx.Client(base_url=live_server.url) as http:
        for prefix in DICOMWEB_PREFIXES:
            assert http.get(f"{prefix}/studies").status_code in (200, 204)
            assert http.delete(f"{prefix}/studies").status_code == 405
        assert http.get("/fhir/metadata").status_code == 200
        assert http.get("/health").status_code == 200
        assert http.get("/").status_code == 200
        missing = http.get("/dicom-web/nothing-here")
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("application/json")


@pytest.fixture
def behind_a_proxy(settings: Settings, services: Services) -> Iterator[str]:
    """The app under a root path, as run behind a proxy that serves it at /archive and strips
    that prefix (uvicorn --root-path): the routes see /archive/dicom-web/... as their path."""
    with LiveServer(settings, services, root_path="/archive") as server:
        yield server.url


def test_routes_match_the_path_below_the_root_path(behind_a_proxy: str) -> None:
    with httpx.Client(base_url=behind_a_proxy) as http:
        assert http.get("/dicom-web/studies").status_code in (200, 204)
        assert http.get("/v2/studies").status_code in (200, 204)
        assert http.get("/fhir/metadata").status_code == 200


def test_a_prefixed_route_matches_exactly_what_its_pattern_matches() -> None:
    """The prefix check is a shortcut only: never a different answer from the regex."""
    route = PrefixedRoute("/dicom-web/studies/{study}", stow.store_study, methods=["POST"])
    plain = APIRoute("/dicom-web/studies/{study}", stow.store_study, methods=["POST"])
    scope = {"type": "http", "method": "POST", "root_path": "", "path": ""}
    match, _ = route.matches({**scope, "path": "/v2/studies/1.2.3"})
    assert match.name == "NONE"
    match, child = route.matches({**scope, "path": "/dicom-web/studies/1.2.3"})
    assert match.name == "FULL"
    assert child["path_params"] == {"study": "1.2.3"}
    for method in ("POST", "GET"):
        for root, path in [
            ("", "/dicom-web/studies/1.2.3"),
            ("", "/dicom-web/studies/"),
            ("", "/dicom-web/studies/1.2.3/series"),
            ("", "/v1/studies/1.2.3"),
            ("/archive", "/archive/dicom-web/studies/1.2.3"),
            ("/archive", "/archive/v2/studies/1.2.3"),
            ("/archive", "/dicom-web/studies/1.2.3"),
        ]:
            asked = {**scope, "method": method, "root_path": root, "path": path}
            assert route.matches(dict(asked))[0] == plain.matches(dict(asked))[0], asked
