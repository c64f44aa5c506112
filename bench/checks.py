"""Request bodies and answer checks shared by the phases of the driver.

A check takes the response and returns None when the answer is right, else a short reason.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable
from urllib.parse import quote

import httpx

from measure import Check

__all__ = [
    "JSON",
    "MULTIPART",
    "SINGLE_DICOMHUB",
    "STOW_TYPE",
    "check_metadata",
    "check_single",
    "check_stow",
    "check_study_retrieve",
    "check_study_set",
    "http_problem",
    "multipart_parts",
    "qido_url",
    "stow_body",
    "study_uids",
]

BOUNDARY = "dicomhub-bench-5f0c2a9e7d3b41c8"
STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
JSON = {"Accept": "application/dicom+json"}
# dicomhub serves a single instance as application/dicom; the Orthanc 1.10 / DICOMweb 1.7
# plugin answers 400 to that and wants multipart/related.
SINGLE_DICOMHUB = {"Accept": "application/dicom; transfer-syntax=*"}
MULTIPART = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}


def stow_body(instances: Iterable[bytes]) -> bytes:
    head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    chunks: list[bytes] = []
    for data in instances:
        if BOUNDARY.encode() in data:
            raise ValueError("the multipart boundary occurs inside an instance")
        chunks += [head, data, b"\r\n"]
    chunks.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(chunks)


def http_problem(response: httpx.Response, expected: int = 200) -> str | None:
    if response.status_code != expected:
        return f"HTTP {response.status_code}: {response.text[:200]!r}"
    return None


def check_stow(count: int) -> Check:
    def check(response: httpx.Response) -> str | None:
        if problem := http_problem(response):
            return problem
        body = response.json()
        failed = body.get("00081198", {}).get("Value") or []
        stored = body.get("00081199", {}).get("Value") or []
        if failed or len(stored) != count:
            return f"{len(stored)} stored and {len(failed)} failed of {count}"
        return None

    return check


def study_uids(response: httpx.Response) -> list[str]:
    data = response.json()
    if not isinstance(data, list):
        raise TypeError("the answer is not a JSON array")
    return [str(item["0020000D"]["Value"][0]) for item in data]


def check_study_set(expected: frozenset[str], limit: int) -> Check:
    """Right when the answer holds min(limit, |expected|) distinct studies, all matching."""

    def check(response: httpx.Response) -> str | None:
        if problem := http_problem(response):
            return problem
        got = study_uids(response)
        unique = set(got)
        if len(unique) != len(got):
            return f"{len(got) - len(unique)} duplicate studies"
        want = min(limit, len(expected))
        if len(got) != want:
            return f"{len(got)} studies, expected {want}"
        wrong = unique - expected
        if wrong:
            return f"{len(wrong)} studies that do not match, e.g. {sorted(wrong)[0]}"
        return None

    return check


def check_metadata(expected: frozenset[str]) -> Check:
    def check(response: httpx.Response) -> str | None:
        if problem := http_problem(response):
            return problem
        data = response.json()
        sops = [str(item["00080018"]["Value"][0]) for item in data]
        if len(sops) != len(expected) or set(sops) != expected:
            return f"{len(sops)} instances ({len(set(sops) & expected)} right), expected {len(expected)}"
        return None

    return check


_BOUNDARY_PARAM = re.compile(r'boundary="?([^";,\s]+)"?', re.IGNORECASE)


def multipart_parts(response: httpx.Response) -> list[bytes]:
    ctype = response.headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/related"):
        raise ValueError(f"not multipart/related but {ctype!r}")
    match = _BOUNDARY_PARAM.search(ctype)
    if match is None:
        raise ValueError("multipart answer without a boundary")
    delimiter = b"--" + match.group(1).encode()
    body = response.content
    parts: list[bytes] = []
    pos = body.find(delimiter)
    while pos != -1:
        start = pos + len(delimiter)
        if body[start : start + 2] == b"--":
            break
        header_end = body.find(b"\r\n\r\n", start)
        if header_end == -1:
            raise ValueError("truncated part headers")
        end = body.find(b"\r\n" + delimiter, header_end + 4)
        if end == -1:
            raise ValueError("missing closing delimiter")
        parts.append(body[header_end + 4 : end])
        pos = end + 2
    return parts


def check_single(expected: bytes, multipart: bool) -> Check:
    def check(response: httpx.Response) -> str | None:
        if problem := http_problem(response):
            return problem
        if multipart:
            parts = multipart_parts(response)
            if len(parts) != 1:
                return f"{len(parts)} parts, expected 1"
            data = parts[0]
        else:
            data = response.content
        if data != expected:
            return f"{len(data)} bytes differ from the {len(expected)} stored"
        return None

    return check


def check_study_retrieve(expected_digests: Counter[str]) -> Check:
    def check(response: httpx.Response) -> str | None:
        if problem := http_problem(response):
            return problem
        parts = multipart_parts(response)
        got = Counter(hashlib.sha256(p).hexdigest() for p in parts)
        if got != expected_digests:
            right = sum((got & expected_digests).values())
            return f"{len(parts)} parts, {right} identical to the {sum(expected_digests.values())} stored"
        return None

    return check


def qido_url(level_path: str, params: list[tuple[str, str]]) -> str:
    """Query strings as a browser-based viewer sends them: `*`, `,` and `-` left as they are.

    (Orthanc 1.10 with DICOMweb 1.7 passes GET arguments to the plugin without decoding them,
    so a percent-encoded `*` matches nothing there; see the notes of the report.)
    """
    return level_path + "?" + "&".join(f"{k}={quote(v, safe='*,-^')}" for k, v in params)
