"""Parse a stored Part-10 file once: identity, index values, DICOM JSON and the frame index."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from pydicom import dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from dicomhub.dicom.attributes import MATCHABLE, Level, level_of_tag
from dicomhub.dicom.frames import (
    FrameIndex,
    PixelDataError,
    PixelLayout,
    read_frame_index,
    trailing_problem,
)
from dicomhub.dicom.header import read_header
from dicomhub.dicom.json_model import BulkUri, dataset_to_json, tag_key
from dicomhub.dicom.validate import REQUIRED_UIDS, Finding, Severity, check_identity

__all__ = ["NotDicom", "ParsedInstance", "missing_part10_header", "parse_part10"]

_IMPLICIT_LE = "1.2.840.10008.1.2"
_EXPLICIT_LE = "1.2.840.10008.1.2.1"
_EXPLICIT_BE = "1.2.840.10008.1.2.2"
# Attributes computed by the server; never read from an instance.
_NOT_FROM_INSTANCE = {"ModalitiesInStudy", "SOPClassesInStudy"}


def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    return int(tag)


_TAGS = {
    keyword: _tag(keyword)
    for keyword in (
        *MATCHABLE,
        "NumberOfFrames",
        "Rows",
        "Columns",
        "SamplesPerPixel",
        "BitsAllocated",
        "PhotometricInterpretation",
    )
}


class NotDicom(ValueError):
    """The bytes are not a readable DICOM Part-10 file."""


@dataclass(slots=True)
class ParsedInstance:
    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax: str
    metadata: dict[str, Any]
    index: dict[str, str | int | None]
    level_json: dict[Level, dict[str, Any]]
    frames: FrameIndex | None
    number_of_frames: int
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.WARNING]


def parse_part10(
    fp: BinaryIO, file_size: int, bulk_uri: BulkUri, data: bytes | None = None
) -> ParsedInstance:
    """Read the header of the file in `fp` and index its pixel data without loading it.

    `data`, when the caller holds the file's bytes, lets the common case skip dcmread.
    Raises NotDicom when the bytes are not DICOM; problems with a readable file are findings.
    """
    ds = _read_header(fp, data)
    meta = ds.file_meta if "TransferSyntaxUID" in getattr(ds, "file_meta", {}) else None
    findings: list[Finding] = []
    transfer_syntax = _transfer_syntax(ds, findings)
    findings.extend(_truncation_findings(ds, file_size))
    if fp.tell() >= file_size:
        findings.extend(_cut_pixel_header(ds, fp, file_size))

    deflated = transfer_syntax == DeflatedExplicitVRLittleEndian
    if deflated:
        # The inflated stream has no byte offsets in the file: read it whole (deflated files are small).
        fp.seek(0)
        try:
            ds = dcmread(fp)
        except Exception as exc:
            raise NotDicom(f"deflated data set cannot be inflated: {exc}") from exc

    metadata, problems = dataset_to_json(ds, bulk_uri)
    findings.extend(Finding(Severity.WARNING, p) for p in problems)
    # Everything below reads the JSON just built: converting the same elements again through
    # pydicom (ds.get) costs more than building the JSON did.
    uids, identity = check_identity({kw: _first(metadata, kw) for kw in REQUIRED_UIDS}, meta)
    findings.extend(identity)

    frames: FrameIndex | None = None
    number_of_frames = _number(_first(metadata, "NumberOfFrames"), 1) or 1
    if not deflated and fp.tell() < file_size:
        layout = _layout(ds, metadata, transfer_syntax, number_of_frames)
        try:
            frames = read_frame_index(fp, file_size, layout)
        except PixelDataError as exc:
            findings.append(Finding(Severity.ERROR, str(exc), "PixelData"))
        else:
            trailing = trailing_problem(fp, file_size, layout)
            if trailing:
                findings.append(Finding(Severity.ERROR, f"file is truncated: {trailing}"))
            if frames.problem:
                findings.append(
                    Finding(Severity.WARNING, f"frames not indexed: {frames.problem}", "PixelData")
                )

    if frames is not None:
        metadata[tag_key(frames.tag)] = {
            "vr": frames.vr,
            "BulkDataURI": bulk_uri(tag_key(frames.tag)),
        }
        metadata = dict(sorted(metadata.items()))

    return ParsedInstance(
        study_uid=uids.get("StudyInstanceUID", ""),
        series_uid=uids.get("SeriesInstanceUID", ""),
        sop_instance_uid=uids.get("SOPInstanceUID", ""),
        sop_class_uid=uids.get("SOPClassUID", ""),
        transfer_syntax=transfer_syntax,
        metadata=metadata,
        index=_index_values(metadata, findings),
        level_json=_split_levels(metadata),
        frames=frames,
        number_of_frames=number_of_frames,
        findings=findings,
    )


def _read_header(fp: BinaryIO, data: bytes | None) -> Dataset:
    """The data set up to its pixel data, `fp` left at the pixel data element (or the end)."""
    header = read_header(data) if data is not None else None
    if header is not None:
        ds, end = header
        fp.seek(end)
        return ds
    try:
        return dcmread(fp, stop_before_pixels=True)
    except Exception as exc:
        raise NotDicom(f"not a readable DICOM Part-10 file: {exc}") from exc


def _transfer_syntax(ds: Dataset, findings: list[Finding]) -> str:
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts:
        return str(ts).strip().rstrip("\x00")
    implicit, little = ds.original_encoding
    inferred = _IMPLICIT_LE if implicit else (_EXPLICIT_LE if little else _EXPLICIT_BE)
    findings.append(
        Finding(
            Severity.WARNING,
            f"File Meta Information has no TransferSyntaxUID; read as {inferred}",
            "TransferSyntaxUID",
        )
    )
    return inferred


def _truncation_findings(ds: Dataset, file_size: int) -> list[Finding]:
    out: list[Finding] = []
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        if isinstance(raw, RawDataElement) and raw.length != 0xFFFFFFFF:
            if raw.value is not None and len(raw.value) < raw.length:
                out.append(
                    Finding(
                        Severity.ERROR,
                        f"file is truncated inside ({tag_key(tag)[:4]},{tag_key(tag)[4:]}): "
                        f"{raw.length} bytes declared, {len(raw.value)} present",
                    )
                )
            elif raw.value_tell + raw.length > file_size:
                out.append(Finding(Severity.ERROR, "file is truncated"))
    return out


def _cut_pixel_header(ds: Dataset, fp: BinaryIO, file_size: int) -> list[Finding]:
    """pydicom drops an element header cut short by the end of the file without a word."""
    tags = list(ds.keys())
    raw = ds.get_item(tags[-1]) if tags else None
    if not isinstance(raw, RawDataElement) or raw.length == 0xFFFFFFFF:
        return []
    end = raw.value_tell + raw.length
    if not 0 < file_size - end < 8:
        return []
    fp.seek(end)
    group = fp.read(2)
    fp.seek(file_size)
    # Only the pixel data group is told apart: other trailing bytes may be a writer's padding.
    if group in (b"\xe0\x7f", b"\x7f\xe0"):
        return [Finding(Severity.ERROR, "file ends inside the pixel data element header")]
    return []


def _first(metadata: dict[str, Any], keyword: str) -> Any:
    """The first value of a top-level attribute of the DICOM JSON; a PN as its DICOM string."""
    element = metadata.get(tag_key(_TAGS[keyword]))
    values = element.get("Value") if element else None
    if not values:
        return None
    value = values[0]
    if isinstance(value, dict):  # PN: {"Alphabetic": ..., "Ideographic": ..., "Phonetic": ...}
        groups = [str(value.get(g, "")) for g in ("Alphabetic", "Ideographic", "Phonetic")]
        while groups and not groups[-1]:
            groups.pop()
        return "=".join(groups) or None
    return value


def _number(value: Any, default: int | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _layout(
    ds: Dataset, metadata: dict[str, Any], transfer_syntax: str, number_of_frames: int
) -> PixelLayout:
    implicit, little = ds.original_encoding
    offsets = lengths = None
    if 0x7FE00001 in ds and 0x7FE00002 in ds:
        try:
            eot = ds[0x7FE00001].value
            eotl = ds[0x7FE00002].value
            offsets = struct.unpack(f"<{len(eot) // 8}Q", eot)
            lengths = struct.unpack(f"<{len(eotl) // 8}Q", eotl)
        except Exception:  # noqa: BLE001 - a broken table is ignored; fragments are scanned instead
            offsets = lengths = None
    return PixelLayout(
        transfer_syntax=transfer_syntax,
        implicit_vr=bool(implicit),
        little_endian=little is not False,
        rows=_number(_first(metadata, "Rows"), 0) or 0,
        columns=_number(_first(metadata, "Columns"), 0) or 0,
        samples_per_pixel=_number(_first(metadata, "SamplesPerPixel"), 1) or 1,
        bits_allocated=_number(_first(metadata, "BitsAllocated"), 0) or 0,
        number_of_frames=number_of_frames,
        photometric=str(_first(metadata, "PhotometricInterpretation") or "").strip(),
        extended_offsets=offsets,
        extended_lengths=lengths,
    )


def _index_values(metadata: dict[str, Any], findings: list[Finding]) -> dict[str, str | int | None]:
    values: dict[str, str | int | None] = {}
    for keyword, attr in MATCHABLE.items():
        if keyword in _NOT_FROM_INSTANCE:
            continue
        value = _first(metadata, keyword)
        if value is None:
            values[keyword] = None
        elif attr.vr == "IS":
            number = _number(value, None)
            if number is None:
                findings.append(
                    Finding(Severity.WARNING, f"{keyword} '{value}' is not searchable", keyword)
                )
            values[keyword] = number
        else:
            values[keyword] = str(value).strip().rstrip("\x00") or None
    return values


def _split_levels(metadata: dict[str, Any]) -> dict[Level, dict[str, Any]]:
    levels: dict[Level, dict[str, Any]] = {Level.STUDY: {}, Level.SERIES: {}, Level.INSTANCE: {}}
    for key, value in metadata.items():
        tag = int(key, 16)
        level = level_of_tag(tag)
        if level is not None:
            levels[level][key] = value
        if tag in (0x00080005, 0x00080201):  # charset and time zone belong to every level
            for other in levels.values():
                other[key] = value
    return levels


def missing_part10_header(fp: BinaryIO) -> bytes | None:
    """The preamble, prefix and (if absent) File Meta Information that would make `fp` Part 10.

    Some clients send a bare data set (pydicom's dcmwrite of a built Dataset writes no preamble).
    None when `fp` is already Part 10 or is not a DICOM data set at all.
    """
    fp.seek(0)
    head = fp.read(132)
    if len(head) == 132 and head[128:] == b"DICM":
        return None
    fp.seek(0)
    try:
        ds = dcmread(fp, force=True, stop_before_pixels=True)
        sop_class = str(
            ds.get("SOPClassUID", "") or ds.file_meta.get("MediaStorageSOPClassUID", "")
        )
        sop_instance = str(
            ds.get("SOPInstanceUID", "") or ds.file_meta.get("MediaStorageSOPInstanceUID", "")
        )
    except Exception:  # noqa: BLE001 - not a data set in any encoding pydicom knows
        return None
    if not sop_class or not sop_instance:
        return None
    prefix = b"\0" * 128 + b"DICM"
    if head[:2] == b"\x02\x00":  # the File Meta Information is there; only the prefix is missing
        return prefix
    implicit, little = ds.original_encoding
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = UID(
        _IMPLICIT_LE if implicit else (_EXPLICIT_LE if little else _EXPLICIT_BE)
    )
    buf = DicomBytesIO()
    buf.is_little_endian = True
    buf.is_implicit_VR = False
    write_file_meta_info(buf, meta, enforce_standard=True)
    return prefix + buf.getvalue()
