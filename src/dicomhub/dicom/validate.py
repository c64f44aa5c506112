"""Store-time rules: what makes an instance unstorable (errors) or merely imperfect (warnings)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from pydicom.dataset import FileMetaDataset

from dicomhub.dicom.uid import uid_problem

__all__ = ["REQUIRED_UIDS", "Finding", "Severity", "check_identity"]

# Without these an instance cannot be addressed by DICOMweb at all.
REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Finding:
    severity: Severity
    message: str
    attribute: str | None = None


def _text(value: object) -> str | None:
    if value is None:
        return None
    return str(value).strip().rstrip("\x00")


def check_identity(
    found: Mapping[str, object], meta: FileMetaDataset | None
) -> tuple[dict[str, str], list[Finding]]:
    """The four identifying UIDs (`found`: keyword → value) and the findings about them."""
    uids: dict[str, str] = {}
    findings: list[Finding] = []
    for keyword in REQUIRED_UIDS:
        value = _text(found.get(keyword))
        if not value:
            findings.append(Finding(Severity.ERROR, f"{keyword} is missing or empty", keyword))
            continue
        problem = uid_problem(value)
        if problem:
            findings.append(Finding(Severity.ERROR, f"{keyword} '{value}' {problem}", keyword))
            continue
        uids[keyword] = value
    if meta is not None:
        for meta_kw, ds_kw in (
            ("MediaStorageSOPInstanceUID", "SOPInstanceUID"),
            ("MediaStorageSOPClassUID", "SOPClassUID"),
        ):
            meta_value = _text(meta.get(meta_kw))
            if meta_value and ds_kw in uids and meta_value != uids[ds_kw]:
                findings.append(
                    Finding(
                        Severity.WARNING,
                        f"{meta_kw} '{meta_value}' differs from {ds_kw} '{uids[ds_kw]}'",
                        meta_kw,
                    )
                )
    return uids, findings
