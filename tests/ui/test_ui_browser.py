"""The web UI and the OHIF viewer in headless Chromium, against a live server.

Chromium is Debian's (/usr/bin/chromium), driven by Playwright; without it, or without the
installed viewer (`make viewer`), these tests skip, and fail under CI=true.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.data import get_testdata_file

from dicomhub.config import Settings
from tests.conftest import LiveServer
from tests.dicomfiles import make_instance
from tests.dicomweb.support import REFERENCED_SOP_SEQUENCE, referenced, stow
from tests.ui.support import VIEWER_DIR, require_chromium, require_viewer

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CT_SMALL = Path(get_testdata_file("CT_small.dcm"))
MR_SMALL = Path(get_testdata_file("MR_small.dcm"))
TIMEOUT_MS = 60_000  # a generous bound on waits, never a measured duration


# A browser per test is slow and the database plays no part in what a browser sees; the
# routes these tests use run on both backends in test_ui_routes.py.
@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"viewer_dir": VIEWER_DIR})


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    # OHIF's first-visit tour would cover part of the viewport: mark it as already shown.
    context.add_init_script("localStorage.setItem('shownTours', '[\"basicViewerTour\"]')")
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def ui(page: Page) -> Iterator[Page]:
    """A page for dicomhub's own UI, whose scripts must run without an uncaught error."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    assert errors == [], errors


def study_rows(page: Page) -> list[str]:
    uids: list[str] = page.eval_on_selector_all(
        "tr.study", "rows => rows.map(r => r.dataset.studyUid)"
    )
    return uids


def wait_for_list(page: Page, count: int) -> list[str]:
    page.wait_for_function(
        "n => document.querySelectorAll('tr.study').length === n"
        " && document.getElementById('list-message').textContent === ''",
        arg=count,
    )
    return study_rows(page)


def search(page: Page, **fields: str) -> None:
    page.locator("#search button[type=reset]").click()
    for name, value in fields.items():
        page.fill(f"#search [name={name}]", value)
    page.evaluate("document.getElementById('studies').dataset.loaded = ''")
    page.locator("#search button[type=submit]").click()
    page.wait_for_selector("#studies[data-loaded='1']", state="attached")


# --- the study list ------------------------------------------------------------------------


def test_study_list_search_series_and_thumbnails(
    ui: Page, live_server: LiveServer, http: httpx.Client
) -> None:
    jane = "1.2.826.0.1.3680043.10.543.7"
    made = [
        make_instance(
            study_uid=jane,
            series_uid="1.2.826.0.1.3680043.10.543.7.1",
            PatientName="Doe^Jane",
            PatientID="PID-JANE",
            Modality="MR",
            AccessionNumber="ACC42",
            StudyDate="20240115",
            pixel_seed=seed,
        )
        for seed in (1, 2)
    ]
    r = stow(http, [CT_SMALL.read_bytes(), MR_SMALL.read_bytes(), *made])
    assert len(referenced(r)) == 4
    ct_uid = dcmread(CT_SMALL, stop_before_pixels=True).StudyInstanceUID

    ui.goto(live_server.url + "/")
    assert sorted(wait_for_list(ui, 3)) == sorted(
        [ct_uid, jane, dcmread(MR_SMALL, stop_before_pixels=True).StudyInstanceUID]
    )
    ui.wait_for_selector("#status[data-loaded='1']", state="attached")
    assert ui.inner_text("[data-field=studies]") == "3"
    assert ui.inner_text("[data-field=instances]") == "4"

    row = ui.locator(f"tr.study[data-study-uid='{jane}']")
    assert row.locator(".patient-name").inner_text() == "Doe, Jane"
    assert "ACC42" in row.inner_text()
    link = row.locator("a.open-viewer")
    assert link.get_attribute("href") == f"/viewer/viewer?StudyInstanceUIDs={jane}"

    search(ui, PatientName="jane")
    assert wait_for_list(ui, 1) == [jane]
    search(ui, ModalitiesInStudy="ct")
    assert wait_for_list(ui, 1) == [ct_uid]
    search(ui, AccessionNumber="ACC42")
    assert wait_for_list(ui, 1) == [jane]
    search(ui, dateFrom="2024-01-01", dateTo="2024-12-31")
    assert wait_for_list(ui, 1) == [jane]
    search(ui, PatientID="nobody")
    ui.wait_for_function("document.getElementById('list-message').textContent !== ''")
    assert study_rows(ui) == []
    assert ui.inner_text("#list-message") == "No studies match."

    search(ui, PatientName="jane")
    wait_for_list(ui, 1)
    ui.locator(f"tr.study[data-study-uid='{jane}'] button.toggle").click()
    card = ui.locator(".series-card")
    card.wait_for()
    assert card.get_attribute("data-series-uid") == "1.2.826.0.1.3680043.10.543.7.1"
    assert "2 images" in card.inner_text()

    # every thumbnail shows a picture: the server's, or the placeholder where it has none
    ui.wait_for_function(
        "[...document.querySelectorAll('img.thumb')].every(i => i.complete && i.naturalWidth > 0)"
    )
    assert ui.locator("img.thumb").count() == 2  # the study's and its series'


def test_study_list_pages(ui: Page, live_server: LiveServer, http: httpx.Client) -> None:
    r = stow(http, [make_instance(pixel_seed=i, PatientID=f"P{i:02}") for i in range(27)])
    assert len(referenced(r)) == 27
    ui.goto(live_server.url + "/")
    first = wait_for_list(ui, 25)
    assert ui.inner_text("#page-info") == "studies 1–25"
    assert ui.is_disabled("#prev")
    ui.click("#next")
    second = wait_for_list(ui, 2)
    assert ui.inner_text("#page-info") == "studies 26–27"
    assert ui.is_disabled("#next")
    assert not set(first) & set(second)
    assert len(set(first) | set(second)) == 27
    ui.click("#prev")
    assert wait_for_list(ui, 25) == first


# --- upload ------------------------------------------------------------------------------------


def wait_upload(page: Page, done: int) -> str:
    page.wait_for_selector(f"#upload-result[data-done='{done}']", state="attached")
    text: str = page.inner_text("#upload-result")
    return text


def drop(page: Page, name: str, data: bytes) -> None:
    """Drop one file on the drop zone, as a person dragging it from a file manager."""
    page.evaluate(
        """([name, b64]) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, {type: 'application/dicom'}));
            const zone = document.getElementById('dropzone');
            zone.dispatchEvent(new DragEvent('dragover', {dataTransfer: transfer, bubbles: true}));
            zone.dispatchEvent(new DragEvent('drop', {dataTransfer: transfer, bubbles: true}));
        }""",
        [name, base64.b64encode(data).decode()],
    )


def test_upload_by_file_input_and_by_drop(
    ui: Page, live_server: LiveServer, http: httpx.Client
) -> None:
    ui.goto(live_server.url + "/")
    ui.wait_for_selector("#studies[data-loaded='1']", state="attached")
    assert study_rows(ui) == []

    ui.set_input_files("#file-input", [CT_SMALL])
    assert "Stored 1 of 1 file(s)" in wait_upload(ui, 1)
    ct_uid = dcmread(CT_SMALL, stop_before_pixels=True).StudyInstanceUID
    assert wait_for_list(ui, 1) == [ct_uid]

    drop(ui, "mr.dcm", MR_SMALL.read_bytes())
    assert "Stored 1 of 1 file(s)" in wait_upload(ui, 2)
    mr_uid = dcmread(MR_SMALL, stop_before_pixels=True).StudyInstanceUID
    assert sorted(wait_for_list(ui, 2)) == sorted([ct_uid, mr_uid])
    ui.wait_for_function("document.querySelector('[data-field=instances]').textContent === '2'")

    # what the page says was stored is on the server
    found = {s["0020000D"]["Value"][0] for s in http.get("/studies").json()}
    assert found == {ct_uid, mr_uid}


def test_upload_reports_what_failed(ui: Page, live_server: LiveServer) -> None:
    ui.goto(live_server.url + "/")
    ui.wait_for_selector("#studies[data-loaded='1']", state="attached")
    ui.set_input_files(
        "#file-input",
        files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not DICOM at all"}],
    )
    text = wait_upload(ui, 1)
    assert "Stored 0 of 1 file(s)" in text
    assert "1 problem(s)" in text
    assert ui.locator("#upload-result p.bad").count() == 1
    assert study_rows(ui) == []


# --- the OHIF viewer -------------------------------------------------------------------------


def grey(image: Image.Image | np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """32x32 grey levels, averaged over areas: the coarse structure of an image."""
    if isinstance(image, np.ndarray):
        lo, hi = float(image.min()), float(image.max())
        scaled = (image.astype(np.float64) - lo) / ((hi - lo) or 1.0) * 255.0
        image = Image.fromarray(scaled.astype(np.uint8))
    small = image.convert("L").resize((32, 32), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float64)


def correlation(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def reference_image(path: Path) -> np.ndarray[Any, Any]:
    """The CT slice in Hounsfield units, windowed as the file says (else its full range)."""
    ds = dcmread(path)
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        center = float(np.atleast_1d(ds.WindowCenter)[0])
        width = float(np.atleast_1d(ds.WindowWidth)[0])
        hu = np.clip(hu, center - width / 2, center + width / 2)
    return hu


def test_viewer_draws_the_ct_study(
    page: Page, live_server: LiveServer, http: httpx.Client, tmp_path: Path
) -> None:
    require_viewer()
    r = stow(http, [CT_SMALL.read_bytes()])
    assert r.json()[REFERENCED_SOP_SEQUENCE]["Value"]
    ds = dcmread(CT_SMALL)

    page.goto(f"{live_server.url}/viewer/viewer?StudyInstanceUIDs={ds.StudyInstanceUID}")
    canvas = page.locator("canvas.cornerstone-canvas").first
    canvas.wait_for()
    # drawn: the viewport's 2D canvas holds an image with contrast, not the blank background
    page.wait_for_function(
        """() => {
            const c = document.querySelector('canvas.cornerstone-canvas');
            const ctx = c && c.width > 0 && c.getContext('2d');
            if (!ctx) return false;
            const d = ctx.getImageData(0, 0, c.width, c.height).data;
            let lo = 255, hi = 0;
            for (let i = 0; i < d.length; i += 4) { lo = Math.min(lo, d[i]); hi = Math.max(hi, d[i]); }
            return hi - lo > 100;
        }""",
        polling=250,
    )
    # a screenshot of the viewport with the overlays (text, tools, dialogs) hidden
    shot_path = tmp_path / "viewport.png"
    canvas.screenshot(
        path=str(shot_path),
        style="* { visibility: hidden !important; }"
        " canvas.cornerstone-canvas { visibility: visible !important; }",
    )
    shot = Image.open(shot_path).convert("L")
    pixels = np.asarray(shot, dtype=np.float64)
    assert pixels.std() > 20, "the viewport is blank"

    # OHIF fits the image to the viewport, centred, keeping its aspect ratio
    width, height = shot.size
    scale = min(width / ds.Columns, height / ds.Rows)
    shown_w, shown_h = ds.Columns * scale, ds.Rows * scale
    left, top = (width - shown_w) / 2, (height - shown_h) / 2
    shown = shot.crop((round(left), round(top), round(left + shown_w), round(top + shown_h)))

    expected = reference_image(CT_SMALL)
    seen = grey(shown)
    match = correlation(seen, grey(expected))
    upside_down = correlation(seen, grey(np.flipud(expected)))
    assert match > 0.95, f"viewport and image differ (r={match:.3f}); see {shot_path}"
    assert match - upside_down > 0.2, (match, upside_down)  # the comparison can tell images apart
