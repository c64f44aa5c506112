"""The web UI's routes over HTTP: the page and its files, /api/status, and the viewer at /viewer."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.data import get_testdata_file

from dicomhub.config import Settings
from tests.conftest import LiveServer
from tests.dicomfiles import make_instance
from tests.dicomweb.support import referenced, stow
from tests.ui.support import VIEWER_DIR, require_viewer

CT_SMALL = Path(get_testdata_file("CT_small.dcm"))
MR_SMALL = Path(get_testdata_file("MR_small.dcm"))


@pytest.fixture
def viewer_dir() -> Path:
    return VIEWER_DIR


@pytest.fixture
def overrides() -> dict[str, Any]:
    """Settings a test changes (by parametrizing this fixture)."""
    return {}


@pytest.fixture
def settings(settings: Settings, viewer_dir: Path, overrides: dict[str, Any]) -> Settings:
    return settings.model_copy(update={"viewer_dir": viewer_dir, **overrides})


@pytest.fixture
def web(live_server: LiveServer) -> Iterator[httpx.Client]:
    """An HTTP client on the server's root."""
    with httpx.Client(base_url=live_server.url, timeout=60) as client:
        yield client


class _Links(HTMLParser):
    """Every src= and href= of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [v for k, v in attrs if k in ("src", "href") and v]


def links(page: str) -> list[str]:
    parser = _Links()
    parser.feed(page)
    return parser.links


def window_config(script: str) -> dict[str, Any]:
    """The object app-config.js assigns to window.config (written as JSON by the server)."""
    found = re.search(r"window\.config = (\{.*\});\s*$", script, re.S)
    assert found, script[:500]
    config: dict[str, Any] = json.loads(found.group(1))
    return config


# --- the study-list page -------------------------------------------------------------------


def test_home_page_and_its_files(web: httpx.Client) -> None:
    r = web.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    local = [link for link in links(r.text) if link.startswith("/ui/")]
    assert sorted(local) == ["/ui/app.css", "/ui/app.js"]
    for link in local:
        part = web.get(link)
        assert part.status_code == 200, link
        assert part.content
    assert web.get("/ui/app.js").headers["content-type"].startswith("text/javascript")
    assert web.get("/ui/app.css").headers["content-type"].startswith("text/css")
    assert web.get("/ui/placeholder.svg").headers["content-type"] == "image/svg+xml"
    assert web.head("/").status_code == 200


def test_only_the_ui_files_are_served_under_ui(web: httpx.Client) -> None:
    for name in ("routes.py", "..%2froutes.py", "%2e%2e%2f__init__.py", "index.html"):
        r = web.get(f"/ui/{name}")
        assert r.status_code == 404, name
        assert "import" not in r.text


# --- /api/status -----------------------------------------------------------------------------


def test_status_counts_what_is_stored(web: httpx.Client, http: httpx.Client) -> None:
    empty = web.get("/api/status")
    assert empty.status_code == 200
    body = empty.json()
    assert (body["studies"], body["series"], body["instances"]) == (0, 0, 0)
    assert body["storage"]["usedBytes"] == 0
    assert body["database"] in ("sqlite", "postgresql")

    extra = make_instance(study_uid="1.2.826.0.1.3680043.10.543.1", series_uid="1.2.3.4.5")
    more = make_instance(study_uid="1.2.826.0.1.3680043.10.543.1", series_uid="1.2.3.4.5")
    files = [CT_SMALL.read_bytes(), MR_SMALL.read_bytes(), extra, more]
    r = stow(http, files)
    assert r.status_code in (200, 202), r.text
    assert len(referenced(r)) == 4

    body = web.get("/api/status").json()
    assert (body["studies"], body["series"], body["instances"]) == (3, 3, 4)
    assert body["storage"]["usedBytes"] == sum(len(f) for f in files)
    assert body["storage"]["freeBytes"] > 0
    sync = body["sync"]
    assert sync["enabled"] is True
    assert sync["target"] == "embedded"
    assert sync["latestSequence"] == 4  # one change-feed entry per stored instance
    assert 0 <= sync["sequence"] <= sync["latestSequence"]
    assert sync["backlog"] == sync["latestSequence"] - sync["sequence"]

    assert http.delete("/studies/1.2.826.0.1.3680043.10.543.1").status_code == 204
    body = web.get("/api/status").json()
    assert (body["studies"], body["series"], body["instances"]) == (2, 2, 2)
    assert body["storage"]["usedBytes"] == len(files[0]) + len(files[1])


@pytest.mark.parametrize("overrides", [{"fhir_sync": False}])
def test_status_without_the_sync(web: httpx.Client) -> None:
    assert web.get("/api/status").json()["sync"] == {"enabled": False}


# --- /viewer with a small dist of our own: how files are served ---------------------------


class TestServingADist:
    @pytest.fixture
    def viewer_dir(self, tmp_path: Path) -> Path:
        dist = tmp_path / "dist"
        (dist / "assets").mkdir(parents=True)
        (dist / "index.html").write_text('<!doctype html><script src="/viewer/app.js"></script>')
        (dist / "app.js").write_text("console.log('app');")
        (dist / "app-config.js").write_text("window.config = {dataSources: []};  // the dist's own")
        (dist / "assets" / "codec.wasm").write_bytes(b"\0asm\1\0\0\0")
        big = "".join(f"console.log({i});\n" for i in range(2000))
        (dist / "bundle.js").write_text(big)
        (dist / "bundle.js.gz").write_bytes(gzip.compress(big.encode()))
        (tmp_path / "secret.txt").write_text("not for the web")
        return dist

    def test_files_of_the_dist(self, web: httpx.Client, viewer_dir: Path) -> None:
        r = web.get("/viewer/app.js")
        assert r.status_code == 200
        assert r.text == "console.log('app');"
        assert r.headers["content-type"].startswith("text/javascript")
        assert "etag" in r.headers
        wasm = web.get("/viewer/assets/codec.wasm")
        assert wasm.headers["content-type"] == "application/wasm"
        assert wasm.content == b"\0asm\1\0\0\0"
        assert web.head("/viewer/app.js").headers["content-length"] == str(
            len("console.log('app');")
        )

    def test_gzipped_copies_for_clients_that_take_gzip(
        self, web: httpx.Client, viewer_dir: Path
    ) -> None:
        original = (viewer_dir / "bundle.js").read_text()
        packed = (viewer_dir / "bundle.js.gz").stat().st_size
        r = web.get("/viewer/bundle.js", headers={"Accept-Encoding": "gzip, deflate"})
        assert r.headers["content-encoding"] == "gzip"
        assert r.headers["content-type"].startswith("text/javascript")
        assert r.headers["vary"] == "Accept-Encoding"
        assert r.num_bytes_downloaded == packed < len(original)
        assert r.text == original
        for refuses in ("identity", "gzip;q=0, deflate", "br"):
            plain = web.get("/viewer/bundle.js", headers={"Accept-Encoding": refuses})
            assert "content-encoding" not in plain.headers, refuses
            assert plain.num_bytes_downloaded == len(original)
            assert plain.text == original
        # a file without a gzipped copy comes as it is
        r = web.get("/viewer/app.js", headers={"Accept-Encoding": "gzip"})
        assert "content-encoding" not in r.headers

    def test_index_and_single_page_app_fallback(self, web: httpx.Client, viewer_dir: Path) -> None:
        index = (viewer_dir / "index.html").read_text()
        r = web.get("/viewer", follow_redirects=False)
        assert r.status_code == 308
        assert r.headers["location"] == "/viewer/"
        for path in (
            "/viewer/",
            "/viewer/index.html",
            "/viewer/viewer?StudyInstanceUIDs=1.2.3",
            "/viewer/local",
            "/viewer/a/deep/route/",
            "/viewer/assets",  # a folder is no file
        ):
            r = web.get(path)
            assert r.status_code == 200, path
            assert r.text == index, path
            assert r.headers["content-type"].startswith("text/html")
            assert r.headers["cache-control"] == "no-cache"

    def test_nothing_outside_the_dist(self, web: httpx.Client, viewer_dir: Path) -> None:
        for path in (
            "/viewer/%2e%2e/secret.txt",
            "/viewer/..%2fsecret.txt",
            "/viewer/%2fetc%2fpasswd",
        ):
            r = web.get(path)
            assert "not for the web" not in r.text, path
            assert "root:" not in r.text, path

    def test_app_config_points_at_this_server(
        self, web: httpx.Client, live_server: LiveServer
    ) -> None:
        r = web.get("/viewer/app-config.js")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/javascript")
        config = window_config(r.text)
        assert config["routerBasename"] == "/viewer"
        (source,) = config["dataSources"]
        assert source["namespace"] == "@ohif/extension-default.dataSourcesModule.dicomweb"
        assert config["defaultDataSourceName"] == source["sourceName"]
        options = source["configuration"]
        root = f"{live_server.url}/dicom-web"
        assert (options["qidoRoot"], options["wadoRoot"], options["wadoUriRoot"]) == (root,) * 3
        assert options["qidoSupportsIncludeField"] is True
        assert options["imageRendering"] == "wadors"
        assert options["enableStudyLazyLoad"] is True
        assert options["supportsFuzzyMatching"] is True
        assert options["bulkDataURI"] == {"enabled": True}
        # the roots answer: QIDO at the configured root
        assert httpx.get(f"{options['qidoRoot']}/studies").status_code in (200, 204)


@pytest.mark.parametrize("overrides", [{"public_url": "https://pacs.example.org/"}])
def test_app_config_uses_the_public_url(web: httpx.Client) -> None:
    config = window_config(web.get("/viewer/app-config.js").text)
    options = config["dataSources"][0]["configuration"]
    assert options["qidoRoot"] == "https://pacs.example.org/dicom-web"
    assert options["wadoRoot"] == "https://pacs.example.org/dicom-web"


# --- /viewer without an installed viewer -----------------------------------------------------


class TestViewerNotInstalled:
    @pytest.fixture
    def viewer_dir(self, tmp_path: Path) -> Path:
        empty = tmp_path / "no-viewer"
        empty.mkdir()
        return empty

    def test_viewer_pages_say_how_to_install_it(self, web: httpx.Client, viewer_dir: Path) -> None:
        for path in ("/viewer/", "/viewer/viewer?StudyInstanceUIDs=1.2.3", "/viewer/app.bundle.js"):
            r = web.get(path)
            assert r.status_code == 404, path
            assert r.headers["content-type"].startswith("text/html")
            assert "make viewer" in r.text
            assert "DICOMHUB_VIEWER_DIR" in r.text
            assert str(viewer_dir) in r.text
        assert web.get("/api/status").json()["viewer"] == {"installed": False, "url": "/viewer/"}
        # the study list works without the viewer
        assert web.get("/").status_code == 200


# --- the installed OHIF viewer ----------------------------------------------------------------


def test_installed_viewer_is_served_under_viewer(web: httpx.Client) -> None:
    require_viewer()
    r = web.get("/viewer/")
    assert r.status_code == 200
    page = r.text
    assert 'window.PUBLIC_URL="/viewer/"' in page
    assets = [link for link in links(page) if link.startswith("/")]
    assert assets, page[:500]
    # every asset of the page lives under /viewer/ and is there
    assert all(link.startswith("/viewer/") for link in assets), assets
    for link in assets:
        if link.endswith((".js", ".css", ".json")):
            got = web.get(link)
            assert got.status_code == 200, link
            assert not got.headers["content-type"].startswith("text/html"), link
    # the big bundles go gzipped (make viewer keeps compressed copies) and unpack to the file
    (bundle,) = [link for link in assets if "/app.bundle." in link and link.endswith(".js")]
    on_disk = (VIEWER_DIR / bundle.removeprefix("/viewer/")).read_bytes()
    got = web.get(bundle, headers={"Accept-Encoding": "gzip"})
    assert got.headers["content-encoding"] == "gzip"
    assert got.content == on_disk
    assert got.num_bytes_downloaded < len(on_disk) / 3
    # the page loads this server's configuration, not the one the package ships
    config = window_config(web.get("/viewer/app-config.js").text)
    assert config["dataSources"][0]["sourceName"] == "dicomhub"
    assert web.get("/api/status").json()["viewer"]["installed"] is True
