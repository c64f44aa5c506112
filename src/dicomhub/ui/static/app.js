// dicomhub's web UI: study list (QIDO-RS), thumbnails, upload (STOW-RS), archive status.
"use strict";

const DICOMWEB = "/dicom-web";
const PAGE_SIZE = 25;
const PLACEHOLDER = "/ui/placeholder.svg";
// STOW requests are cut into batches so that progress shows and no request gets huge.
const BATCH_FILES = 50;
const BATCH_BYTES = 256 * 1024 * 1024;

const TAG = {
  PatientName: "00100010",
  PatientID: "00100020",
  StudyDate: "00080020",
  ModalitiesInStudy: "00080061",
  StudyDescription: "00081030",
  AccessionNumber: "00080050",
  StudyInstanceUID: "0020000D",
  NumberOfStudyRelatedSeries: "00201206",
  NumberOfStudyRelatedInstances: "00201208",
  SeriesInstanceUID: "0020000E",
  Modality: "00080060",
  SeriesNumber: "00200011",
  SeriesDescription: "0008103E",
  NumberOfSeriesRelatedInstances: "00201209",
  SOPInstanceUID: "00081155",
  ReferencedSOPSequence: "00081199",
  FailedSOPSequence: "00081198",
  FailureReason: "00081197",
  WarningReason: "00081196",
};

const state = { offset: 0, filters: {} };

// --- small helpers ---------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) {
      node.append(child instanceof Node ? child : String(child));
    }
  }
  return node;
}

function value(item, tag) {
  const attr = item[tag];
  if (!attr || !attr.Value || attr.Value.length === 0) return "";
  if (attr.vr === "PN") {
    return attr.Value.map((v) => (v && v.Alphabetic) || "").join(", ");
  }
  return attr.Value.join(", ");
}

function formatName(pn) {
  // Doe^John^^Dr -> Doe, John
  return pn.split(", ").map((n) => n.split("^").filter(Boolean).join(", ")).join(" / ");
}

function formatDate(da) {
  return /^\d{8}$/.test(da) ? `${da.slice(0, 4)}-${da.slice(4, 6)}-${da.slice(6, 8)}` : da;
}

function formatBytes(n) {
  if (n === null || n === undefined) return "?";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i += 1;
  }
  return `${n.toFixed(i === 0 || n >= 100 ? 0 : 1)} ${units[i]}`;
}

function thumbnail(url, alt) {
  const img = el("img", { class: "thumb", src: url, alt, loading: "lazy", width: 64, height: 64 });
  img.addEventListener("error", () => {
    if (img.dataset.failed) return;
    img.dataset.failed = "1";
    img.classList.add("placeholder");
    img.src = PLACEHOLDER;
  });
  return img;
}

function viewerUrl(studyUid) {
  return `/viewer/viewer?StudyInstanceUIDs=${encodeURIComponent(studyUid)}`;
}

async function problem(response) {
  try {
    const body = await response.json();
    if (body && body.message) return `${response.status}: ${body.message}`;
  } catch (_) {
    // not JSON: the status line says enough
  }
  return `${response.status} ${response.statusText}`;
}

// --- status ------------------------------------------------------------------

async function loadStatus() {
  const box = document.getElementById("status");
  let status;
  try {
    const response = await fetch("/api/status", { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(await problem(response));
    status = await response.json();
  } catch (err) {
    box.dataset.error = String(err);
    return;
  }
  const set = (field, text, title) => {
    const node = box.querySelector(`[data-field="${field}"]`);
    node.textContent = text;
    if (title) node.title = title;
  };
  set("studies", status.studies.toLocaleString());
  set("series", status.series.toLocaleString());
  set("instances", status.instances.toLocaleString());
  const free = status.storage.freeBytes;
  set(
    "storage",
    formatBytes(status.storage.usedBytes),
    free === null ? "" : `${formatBytes(free)} free on the disk`
  );
  const sync = status.sync;
  let syncText = "off";
  if (sync.enabled) {
    syncText = sync.backlog === 0 ? "up to date" : `${sync.backlog} behind`;
    if (sync.deadLetters > 0) syncText += `, ${sync.deadLetters} failed`;
  }
  set("sync", syncText, sync.enabled ? `to ${sync.target}, change ${sync.sequence}` : "");
  box.dataset.loaded = "1";
}

// --- study list --------------------------------------------------------------

function queryFromForm(form) {
  const data = new FormData(form);
  const filters = {};
  const text = (name) => (data.get(name) || "").toString().trim();
  const name = text("PatientName");
  if (name) {
    filters.PatientName = name;
    // without wildcards, match each typed word against the start of a name's words
    if (!/[*?]/.test(name)) filters.fuzzymatching = "true";
  }
  for (const key of ["PatientID", "AccessionNumber", "ModalitiesInStudy"]) {
    const v = text(key);
    if (v) filters[key] = key === "ModalitiesInStudy" ? v.toUpperCase() : v;
  }
  const from = text("dateFrom").replaceAll("-", "");
  const to = text("dateTo").replaceAll("-", "");
  if (from || to) filters.StudyDate = from === to ? from : `${from}-${to}`;
  return filters;
}

async function loadStudies() {
  const message = document.getElementById("list-message");
  const body = document.querySelector("#studies tbody");
  const params = new URLSearchParams(state.filters);
  params.set("limit", String(PAGE_SIZE + 1)); // one more tells whether a next page exists
  params.set("offset", String(state.offset));
  params.append("includefield", "StudyDescription");
  message.className = "message";
  message.textContent = "Searching…";
  let studies;
  try {
    const response = await fetch(`${DICOMWEB}/studies?${params}`, {
      headers: { Accept: "application/dicom+json" },
    });
    if (response.status === 204) studies = [];
    else if (!response.ok) throw new Error(await problem(response));
    else studies = await response.json();
  } catch (err) {
    message.className = "message bad";
    message.textContent = `Search failed: ${err.message}`;
    return;
  }
  const more = studies.length > PAGE_SIZE;
  studies = studies.slice(0, PAGE_SIZE);
  body.replaceChildren(...studies.map(studyRow));
  document.getElementById("prev").disabled = state.offset === 0;
  document.getElementById("next").disabled = !more;
  const first = studies.length ? state.offset + 1 : 0;
  document.getElementById("page-info").textContent =
    studies.length ? `studies ${first}–${state.offset + studies.length}` : "";
  message.textContent = studies.length ? "" : "No studies match.";
  document.getElementById("studies").dataset.loaded = "1";
}

function studyRow(study) {
  const uid = value(study, TAG.StudyInstanceUID);
  const base = `${DICOMWEB}/studies/${encodeURIComponent(uid)}`;
  const toggle = el("button", { class: "toggle", type: "button", text: "Series ▸" });
  const open = el("a", { href: viewerUrl(uid), target: "_blank", class: "open-viewer" }, "Open in viewer");
  const row = el(
    "tr",
    { class: "study", "data-study-uid": uid },
    el("td", {}, thumbnail(`${base}/thumbnail`, "study thumbnail")),
    el("td", { class: "patient-name" }, formatName(value(study, TAG.PatientName))),
    el("td", {}, value(study, TAG.PatientID)),
    el("td", {}, formatDate(value(study, TAG.StudyDate))),
    el("td", {}, value(study, TAG.ModalitiesInStudy)),
    el("td", {}, value(study, TAG.StudyDescription)),
    el("td", {}, value(study, TAG.AccessionNumber)),
    el(
      "td",
      {},
      `${value(study, TAG.NumberOfStudyRelatedSeries)} / ${value(study, TAG.NumberOfStudyRelatedInstances)}`
    ),
    el("td", { class: "open" }, toggle, " ", open)
  );
  toggle.addEventListener("click", () => toggleSeries(row, uid, toggle));
  return row;
}

async function toggleSeries(row, uid, button) {
  const next = row.nextElementSibling;
  if (next && next.classList.contains("series-row")) {
    next.remove();
    button.textContent = "Series ▸";
    return;
  }
  button.textContent = "Series ▾";
  const list = el("div", { class: "series-list" }, "Loading…");
  row.after(el("tr", { class: "series-row" }, el("td", { colspan: 9 }, list)));
  const base = `${DICOMWEB}/studies/${encodeURIComponent(uid)}`;
  try {
    const response = await fetch(`${base}/series?includefield=SeriesDescription`, {
      headers: { Accept: "application/dicom+json" },
    });
    if (!response.ok && response.status !== 204) throw new Error(await problem(response));
    const series = response.status === 204 ? [] : await response.json();
    series.sort((a, b) => Number(value(a, TAG.SeriesNumber)) - Number(value(b, TAG.SeriesNumber)));
    list.replaceChildren(
      ...series.map((s) => {
        const seriesUid = value(s, TAG.SeriesInstanceUID);
        return el(
          "div",
          { class: "series-card", "data-series-uid": seriesUid },
          thumbnail(`${base}/series/${encodeURIComponent(seriesUid)}/thumbnail`, "series thumbnail"),
          el(
            "div",
            { class: "meta" },
            el("strong", {}, `${value(s, TAG.Modality)} #${value(s, TAG.SeriesNumber)}`),
            el("small", {}, value(s, TAG.SeriesDescription) || "(no description)"),
            el("small", {}, `${value(s, TAG.NumberOfSeriesRelatedInstances)} images`)
          )
        );
      })
    );
  } catch (err) {
    list.textContent = `Could not list the series: ${err.message}`;
  }
}

// --- upload ------------------------------------------------------------------

function batches(files) {
  const out = [];
  let current = [];
  let size = 0;
  for (const file of files) {
    if (current.length && (current.length >= BATCH_FILES || size + file.size > BATCH_BYTES)) {
      out.push(current);
      current = [];
      size = 0;
    }
    current.push(file);
    size += file.size;
  }
  if (current.length) out.push(current);
  return out;
}

async function stow(files) {
  const boundary = `dicomhub-${Date.now().toString(16)}-${Math.random().toString(16).slice(2)}`;
  const parts = [];
  for (const file of files) {
    parts.push(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`, file, "\r\n");
  }
  parts.push(`--${boundary}--\r\n`);
  const response = await fetch(`${DICOMWEB}/studies`, {
    method: "POST",
    headers: {
      "Content-Type": `multipart/related; type="application/dicom"; boundary=${boundary}`,
      Accept: "application/dicom+json",
    },
    body: new Blob(parts),
  });
  const result = { stored: 0, failures: [], warning: response.status === 202, error: null };
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  if (![200, 202, 409].includes(response.status) || !body || body.message) {
    result.error = body && body.message ? `${response.status}: ${body.message}` : `${response.status} ${response.statusText}`;
    return result;
  }
  const seq = (tag) => (body[tag] && body[tag].Value) || [];
  result.stored = seq(TAG.ReferencedSOPSequence).length;
  for (const failed of seq(TAG.FailedSOPSequence)) {
    result.failures.push(
      `${value(failed, TAG.SOPInstanceUID) || "a file"}: failure reason ${value(failed, TAG.FailureReason)}`
    );
  }
  return result;
}

async function upload(files) {
  const out = document.getElementById("upload-result");
  if (!files.length) return;
  const groups = batches(files);
  let stored = 0;
  let warned = false;
  const problems = [];
  for (let i = 0; i < groups.length; i += 1) {
    out.replaceChildren(`Uploading ${files.length} file(s)… batch ${i + 1} of ${groups.length}`);
    try {
      const result = await stow(groups[i]);
      stored += result.stored;
      warned = warned || result.warning;
      problems.push(...result.failures);
      if (result.error) problems.push(`batch ${i + 1}: ${result.error}`);
    } catch (err) {
      problems.push(`batch ${i + 1}: ${err.message}`);
    }
  }
  const summary = el(
    "p",
    { class: problems.length ? "bad" : "ok" },
    `Stored ${stored} of ${files.length} file(s)` +
      (warned ? " (with warnings: some attributes were coerced)" : "") +
      (problems.length ? `; ${problems.length} problem(s):` : ".")
  );
  out.replaceChildren(summary);
  if (problems.length) out.append(el("ul", {}, ...problems.slice(0, 20).map((p) => el("li", {}, p))));
  out.dataset.done = String(Number(out.dataset.done || 0) + 1);
  state.offset = 0;
  await Promise.all([loadStudies(), loadStatus()]);
}

// Files of dropped folders too (webkitGetAsEntry is in every current browser).
async function droppedFiles(dataTransfer) {
  const entries = [...dataTransfer.items]
    .map((item) => (item.webkitGetAsEntry ? item.webkitGetAsEntry() : null))
    .filter(Boolean);
  if (!entries.length) return [...dataTransfer.files];
  const files = [];
  const walk = async (entry) => {
    if (entry.isFile) {
      files.push(await new Promise((resolve, reject) => entry.file(resolve, reject)));
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
        if (!batch.length) break;
        for (const child of batch) await walk(child);
      }
    }
  };
  for (const entry of entries) await walk(entry);
  return files;
}

// --- wiring ------------------------------------------------------------------

function init() {
  const form = document.getElementById("search");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    state.filters = queryFromForm(form);
    state.offset = 0;
    loadStudies();
  });
  form.addEventListener("reset", () => {
    state.filters = {};
    state.offset = 0;
    setTimeout(loadStudies);
  });
  document.getElementById("prev").addEventListener("click", () => {
    state.offset = Math.max(0, state.offset - PAGE_SIZE);
    loadStudies();
  });
  document.getElementById("next").addEventListener("click", () => {
    state.offset += PAGE_SIZE;
    loadStudies();
  });

  const zone = document.getElementById("dropzone");
  const input = document.getElementById("file-input");
  input.addEventListener("change", () => {
    const files = [...input.files];
    input.value = "";
    upload(files);
  });
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
  }
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", async (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    upload(await droppedFiles(event.dataTransfer));
  });

  loadStatus();
  loadStudies();
  setInterval(() => {
    if (!document.hidden) loadStatus();
  }, 30000);
}

init();
