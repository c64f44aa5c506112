"""Small helpers shared by the DICOMweb tests: STOW calls, response digging, the data folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from dicomhub.config import Settings
from tests.dicomfiles import multipart_body

DICOM = {"Content-Type": "application/dicom"}
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
FAILURE_REASON = "00081197"
WARNING_REASON = "00081196"
RETRIEVE_URL = "00081190"
REFERENCED_SOP_CLASS = "00081150"
REFERENCED_SOP_INSTANCE = "00081155"


def stow(http: httpx.Client, parts: Sequence[bytes], url: str = "/studies") -> httpx.Response:
    body, content_type = multipart_body(parts)
    return http.post(url, content=body, headers={"Content-Type": content_type})


def items(body: dict[str, Any], sequence: str) -> list[dict[str, Any]]:
    return list(body.get(sequence, {}).get("Value", []))


def referenced(r: httpx.Response) -> list[dict[str, Any]]:
    return items(r.json(), REFERENCED_SOP_SEQUENCE)


def failed(r: httpx.Response) -> list[dict[str, Any]]:
    return items(r.json(), FAILED_SOP_SEQUENCE)


def value(item: dict[str, Any], tag: str) -> Any:
    """The first value of `tag` in a DICOM JSON object, or None."""
    values = item.get(tag, {}).get("Value")
    return values[0] if values else None


def failure_reasons(r: httpx.Response) -> list[int]:
    return [value(i, FAILURE_REASON) for i in failed(r)]


def blob_files(settings: Settings) -> list[Path]:
    """Every committed blob file of the archive."""
    root = settings.data_dir / "blobs" / "objects"
    return sorted(p for p in root.rglob("*") if p.is_file())


def staged_leftovers(settings: Settings) -> list[Path]:
    """Files staged by requests and not cleaned up (each process keeps only its `.lock`)."""
    root = settings.data_dir / "blobs" / "staging"
    return sorted(p for p in root.glob("*/*") if p.name != ".lock")


def assert_error(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """A DICOMweb error: the status and a JSON body {"status", "code", "message"}."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body: dict[str, Any] = r.json()
    assert set(body) == {"status", "code", "message"}, body
    assert body["status"] == status
    assert isinstance(body["message"], str) and body["message"], body
    if code is not None:
        assert body["code"] == code, body
    return body


def raw_multipart(
    parts: Sequence[tuple[dict[str, str], bytes]], *, boundary: str = "dicomhub-test-boundary"
) -> bytes:
    """A multipart body with the given headers on each part (and nothing checked)."""
    out = bytearray()
    for headers, payload in parts:
        out += f"--{boundary}\r\n".encode()
        for name, text in headers.items():
            out += f"{name}: {text}\r\n".encode()
        out += b"\r\n" + payload + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out)
