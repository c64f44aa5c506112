"""parse_part10 and missing_part10_header: identity, findings and the DICOM JSON of a stored file."""

from __future__ import annotations

import base64
import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread, dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

from dicomhub.dicom.attributes import Level
from dicomhub.dicom.read import NotDicom, ParsedInstance, missing_part10_header, parse_part10
from dicomhub.dicom.validate import REQUIRED_UIDS, Severity
from tests.dicomfiles import CT_IMAGE, MR_IMAGE, make_dataset, sample_files, to_part10

BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}


@contextmanager
def _pydicom_quiet() -> Iterator[None]:
    # The server runs with pydicom's warnings as warnings; pytest makes them errors.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom\.")
        yield


def _bulk(path: str) -> str:
    return f"bulk:{path}"


def _parse(data: bytes) -> ParsedInstance:
    with _pydicom_quiet():
        return parse_part10(io.BytesIO(data), len(data), _bulk)


def _bare(ds: Dataset, *, implicit: bool = False, little: bool = True) -> bytes:
    """A data set written the way some clients send it: no preamble, maybe no File Meta."""
    buf = io.BytesIO()
    dcmwrite(buf, ds, implicit_vr=implicit, little_endian=little)
    return buf.getvalue()


# --- the DICOM JSON against pydicom ---------------------------------------------------------


def _json_differences(ds: Dataset, got: dict[str, Any], prefix: str = "") -> list[str]:
    """Where `got` departs from pydicom's to_json_dict (binary values: inline up to 1024 bytes)."""
    diffs: list[str] = []
    tags = list(ds.keys())  # iterating a Dataset would convert every element
    expected_keys = {f"{t:08X}" for t in tags if t & 0xFFFF}
    got_keys = set(got)
    if not prefix:  # the pixel data element is added from the frame index
        got_keys -= {"7FE00010", "7FE00008", "7FE00009"}
        expected_keys -= {"7FE00010", "7FE00008", "7FE00009"}
    if got_keys != expected_keys:
        diffs.append(f"{prefix}: keys {sorted(got_keys ^ expected_keys)}")
    for tag in tags:
        key = f"{tag:08X}"
        if key not in got or key not in expected_keys:
            continue
        path = f"{prefix}{key}"
        try:
            elem = ds[tag]
        except Exception:  # noqa: BLE001 - an unreadable value is left out by both
            if set(got[key]) != {"vr"}:
                diffs.append(f"{path}: unreadable value given as {got[key]}")
            continue
        if elem.VR == "SQ":
            items = got[key].get("Value", [])
            if got[key]["vr"] != "SQ" or len(items) != len(elem.value):
                diffs.append(f"{path}: sequence {got[key]}")
                continue
            for i, (item, item_json) in enumerate(zip(elem.value, items, strict=True)):
                diffs += _json_differences(item, item_json, f"{path}/{i}/")
        elif elem.VR in BINARY_VRS or elem.VR in ("OB or OW", "US or OW"):
            value = elem.value
            vr = got[key]["vr"]
            if not value:
                expected: dict[str, Any] = {"vr": vr}
            elif len(value) > 1024:
                expected = {"vr": vr, "BulkDataURI": _bulk(path)}
            else:
                expected = {"vr": vr, "InlineBinary": base64.b64encode(value).decode()}
            if got[key] != expected:
                diffs.append(f"{path}: {got[key]} != {expected}")
        else:
            try:
                expected = elem.to_json_dict(None, 1024)
            except Exception:  # noqa: BLE001 - pydicom cannot convert it: the value is left out
                expected = {"vr": elem.VR}
            if got[key] != expected:
                diffs.append(f"{path}: {got[key]} != {expected}")
    return diffs


def _bulk_uris(json: dict[str, Any]) -> Iterator[str]:
    for value in json.values():
        if "BulkDataURI" in value:
            yield value["BulkDataURI"]
        if value.get("vr") == "SQ":
            for item in value.get("Value", []):
                yield from _bulk_uris(item)


def _parsed_samples() -> Iterator[tuple[Path, bytes, ParsedInstance]]:
    for path in sample_files():
        data = path.read_bytes()
        try:
            parsed = _parse(data)
        except NotDicom:
            continue
        if not parsed.errors:
            yield path, data, parsed


def test_metadata_equals_pydicoms_json_for_every_sample() -> None:
    checked = 0
    problems: dict[str, list[str]] = {}
    sequences = bulk_in_sequence = 0
    for path, data, parsed in _parsed_samples():
        with _pydicom_quiet():
            # Deflated files are read whole by the parser; the others stop before the pixels.
            ds = dcmread(io.BytesIO(data), stop_before_pixels=parsed.frames is not None)
            diffs = _json_differences(ds, parsed.metadata)
        if diffs:
            problems[path.name] = diffs[:5]
        checked += 1
        uris = list(_bulk_uris(parsed.metadata))
        sequences += any(v.get("vr") == "SQ" and v.get("Value") for v in parsed.metadata.values())
        bulk_in_sequence += any("/" in uri for uri in uris)
    assert problems == {}
    assert checked > 200  # every storable sample was compared
    assert sequences > 50
    assert bulk_in_sequence >= 2  # e.g. waveform_ecg.dcm: WaveformData inside WaveformSequence


def test_the_json_comparison_notices_a_difference() -> None:
    ds = make_dataset(PatientName="Doe^Jane")
    parsed = _parse(to_part10(ds))
    plain = dcmread(io.BytesIO(to_part10(ds)), stop_before_pixels=True)
    assert _json_differences(plain, parsed.metadata) == []
    altered = dict(parsed.metadata, **{"00100010": {"vr": "PN", "Value": [{"Alphabetic": "X"}]}})
    assert _json_differences(plain, altered) != []
    del altered["00100010"]
    assert _json_differences(plain, altered) != []


def test_uids_and_transfer_syntax_of_a_sample() -> None:
    ct = next(p for p in sample_files() if p.name == "CT_small.dcm")
    parsed = _parse(ct.read_bytes())
    ds = dcmread(ct)
    assert parsed.study_uid == ds.StudyInstanceUID
    assert parsed.series_uid == ds.SeriesInstanceUID
    assert parsed.sop_instance_uid == ds.SOPInstanceUID
    assert parsed.sop_class_uid == ds.SOPClassUID
    assert parsed.transfer_syntax == ds.file_meta.TransferSyntaxUID
    assert parsed.findings == []
    assert parsed.index["PatientID"] == ds.PatientID
    assert parsed.index["SeriesNumber"] == ds.SeriesNumber


def test_large_binary_values_become_bulk_data_uris_also_inside_sequences() -> None:
    ds = make_dataset()
    ds.add_new(0x00091010, "LO", "PRIVATE CREATOR")  # keep a private block readable
    ds.add_new(0x00420011, "OB", b"\x01" * 2000)  # Encapsulated Document: bulk
    ds.add_new(0x00189219, "OB", b"\x02" * 1024)  # at the threshold: inline
    inner = Dataset()
    inner.add_new(0x00420011, "OB", b"\x03" * 1025)
    inner.add_new(0x00189219, "OB", b"\x04" * 10)
    deeper = Dataset()
    deeper.add_new(0x00282000, "OB", b"\x05" * 4096)  # ICC profile, two sequences down
    deeper.CodeValue = "T-A0100"
    inner.IconImageSequence = Sequence([deeper])
    ds.ReferencedInstanceSequence = Sequence([Dataset(), inner])
    parsed = _parse(to_part10(ds))
    assert parsed.errors == []
    meta = parsed.metadata
    assert meta["00420011"] == {"vr": "OB", "BulkDataURI": "bulk:00420011"}
    assert meta["00189219"] == {
        "vr": "OB",
        "InlineBinary": base64.b64encode(b"\x02" * 1024).decode(),
    }
    items = meta["0008114A"]["Value"]
    assert items[0] == {}
    assert items[1]["00420011"] == {"vr": "OB", "BulkDataURI": "bulk:0008114A/1/00420011"}
    assert items[1]["00189219"] == {"vr": "OB", "InlineBinary": "BAQEBAQEBAQEBA=="}
    icon = items[1]["00880200"]["Value"][0]
    assert icon["00282000"] == {
        "vr": "OB",
        "BulkDataURI": "bulk:0008114A/1/00880200/0/00282000",
    }
    assert icon["00080100"] == {"vr": "SH", "Value": ["T-A0100"]}
    assert meta["7FE00010"] == {"vr": "OW", "BulkDataURI": "bulk:7FE00010"}
    # Nothing else departs from pydicom's JSON.
    assert (
        _json_differences(dcmread(io.BytesIO(to_part10(ds)), stop_before_pixels=True), meta) == []
    )


def test_metadata_keys_are_in_tag_order_and_split_by_level() -> None:
    parsed = _parse(to_part10(make_dataset(SpecificCharacterSet="ISO_IR 100")))
    assert list(parsed.metadata) == sorted(parsed.metadata)
    study, series, instance = (parsed.level_json[level] for level in Level)
    assert {"0020000D", "00100010", "00100020", "00080020"} <= set(study)
    assert {"0020000E", "00080060", "00200011"} <= set(series)
    assert {"00080018", "00080016", "00200013"} <= set(instance)
    assert "00080018" not in study and "0020000D" not in instance
    for level in (study, series, instance):  # the character set travels with every level
        assert level["00080005"] == {"vr": "CS", "Value": ["ISO_IR 100"]}


# --- identity findings -------------------------------------------------------------------------


@pytest.mark.parametrize("keyword", REQUIRED_UIDS)
def test_a_missing_uid_is_an_error(keyword: str) -> None:
    ds = make_dataset()
    data = to_part10(ds)  # File Meta from the complete data set
    ds = dcmread(io.BytesIO(data))
    delattr(ds, keyword)
    buf = io.BytesIO()
    ds.save_as(buf)
    parsed = _parse(buf.getvalue())
    assert [(f.severity, f.attribute) for f in parsed.errors] == [(Severity.ERROR, keyword)]
    assert parsed.errors[0].message == f"{keyword} is missing or empty"


@pytest.mark.parametrize(
    ("uid", "problem"),
    [
        ("1.2.840.abc", "contains characters other than digits and '.'"),
        ("1.2..3", "has an empty component"),
        ("1." + "2" * 63, "is 65 characters long (at most 64)"),
        ("1.2.3.", "has an empty component"),
    ],
)
def test_uid_syntax_is_checked(uid: str, problem: str) -> None:
    parsed = _parse(to_part10(make_dataset(series_uid=uid)))
    assert [(f.attribute, f.message) for f in parsed.errors] == [
        ("SeriesInstanceUID", f"SeriesInstanceUID '{uid}' {problem}")
    ]
    assert parsed.series_uid == ""


def test_leading_zeros_in_a_uid_are_tolerated() -> None:
    parsed = _parse(to_part10(make_dataset(study_uid="1.2.03.4")))
    assert parsed.findings == []
    assert parsed.study_uid == "1.2.03.4"


def test_a_media_storage_uid_mismatch_is_a_warning() -> None:
    ds = make_dataset()
    data = to_part10(ds)
    ds = dcmread(io.BytesIO(data))
    other = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = other
    ds.file_meta.MediaStorageSOPClassUID = UID(MR_IMAGE)
    buf = io.BytesIO()
    ds.save_as(buf)
    parsed = _parse(buf.getvalue())
    assert parsed.errors == []
    assert [(f.severity, f.attribute) for f in parsed.warnings] == [
        (Severity.WARNING, "MediaStorageSOPInstanceUID"),
        (Severity.WARNING, "MediaStorageSOPClassUID"),
    ]
    assert other in parsed.warnings[0].message
    assert parsed.sop_instance_uid == ds.SOPInstanceUID  # the data set wins
    assert parsed.sop_class_uid == CT_IMAGE


def test_not_dicom_is_refused() -> None:
    with pytest.raises(NotDicom):
        _parse(b"%PDF-1.7\n" + b"x" * 500)
    # A preamble and prefix followed by garbage reads as an empty data set: refused by its findings.
    parsed = _parse(b"\0" * 128 + b"DICM" + b"\xff" * 20)
    assert {f.attribute for f in parsed.errors} >= set(REQUIRED_UIDS)


def test_a_value_cut_short_by_the_end_of_the_file_is_an_error() -> None:
    ds = make_dataset()
    del ds.PixelData
    ds.CommentsOnThePerformedProcedureStep = "x" * 400  # (0040,0280), the last element
    data = to_part10(ds)
    parsed = _parse(data[:-100])
    assert [f.message for f in parsed.errors] == [
        "file is truncated inside (0040,0280): 400 bytes declared, 300 present"
    ]
    assert _parse(data).findings == []


# --- missing_part10_header -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("implicit", "little", "transfer_syntax"),
    [
        (True, True, ImplicitVRLittleEndian),
        (False, True, ExplicitVRLittleEndian),
        (False, False, ExplicitVRBigEndian),
    ],
)
def test_a_bare_data_set_gets_preamble_and_file_meta(
    implicit: bool, little: bool, transfer_syntax: str
) -> None:
    ds = make_dataset(frames=2)
    bare = _bare(ds, implicit=implicit, little=little)
    header = missing_part10_header(io.BytesIO(bare))
    assert header is not None
    assert header[:132] == b"\0" * 128 + b"DICM"
    fixed = header + bare
    assert fixed.endswith(bare)  # the sender's bytes stay as they were
    read = dcmread(io.BytesIO(fixed))  # a proper Part-10 file: no force needed
    assert read.file_meta.TransferSyntaxUID == transfer_syntax
    assert read.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert read.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
    assert read.PixelData == dcmread(io.BytesIO(bare), force=True).PixelData
    parsed = _parse(fixed)
    assert parsed.findings == []
    assert parsed.transfer_syntax == transfer_syntax
    assert parsed.sop_instance_uid == ds.SOPInstanceUID
    assert parsed.frames is not None and parsed.frames.frames is not None
    assert len(parsed.frames.frames) == 2


def test_file_meta_without_preamble_gets_only_the_preamble() -> None:
    ds = make_dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    bare = _bare(ds)
    assert bare[:2] == b"\x02\x00"
    header = missing_part10_header(io.BytesIO(bare))
    assert header == b"\0" * 128 + b"DICM"
    parsed = _parse(header + bare)
    assert parsed.findings == [] and parsed.sop_instance_uid == ds.SOPInstanceUID


def test_nothing_is_missing_from_a_part10_file_or_from_non_dicom() -> None:
    assert missing_part10_header(io.BytesIO(to_part10(make_dataset()))) is None
    assert missing_part10_header(io.BytesIO(b"hello, this is not DICOM at all")) is None
    assert missing_part10_header(io.BytesIO(b"")) is None
    no_uids = make_dataset()
    del no_uids.SOPInstanceUID
    assert missing_part10_header(io.BytesIO(_bare(no_uids))) is None


def test_a_bare_data_set_without_header_is_not_part10() -> None:
    """Without the header the parser cannot read it: the header is what makes it storable."""
    bare = _bare(make_dataset(), implicit=True)
    with pytest.raises(NotDicom):
        _parse(bare)
