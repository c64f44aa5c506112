"""DICOMweb resource URLs (RetrieveURL, BulkDataURI) from the base URL a client used."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BULK_MARKER", "Urls", "resolve_bulk_uris"]

# Stored metadata names bulk data as BULK_MARKER + tag path; the real URL depends on how the
# client reached us (/dicom-web, /v1, a proxy), so it is filled in when served.
BULK_MARKER = "dicomhub:bulk/"
_STORED = b'"BulkDataURI":"' + BULK_MARKER.encode()


@dataclass(frozen=True, slots=True)
class Urls:
    base: str  # e.g. "http://127.0.0.1:8080/dicom-web", no trailing slash

    def study(self, study: str) -> str:
        return f"{self.base}/studies/{study}"

    def series(self, study: str, series: str) -> str:
        return f"{self.base}/studies/{study}/series/{series}"

    def instance(self, study: str, series: str, sop: str) -> str:
        return f"{self.base}/studies/{study}/series/{series}/instances/{sop}"


def resolve_bulk_uris(stored: bytes, instance_url: str) -> bytes:
    """Stored instance JSON with its bulk-data placeholders turned into URLs of this server."""
    if _STORED not in stored:
        return stored
    return stored.replace(_STORED, b'"BulkDataURI":"' + instance_url.encode() + b"/bulkdata/")
