"""read_header: a Part-10 header read from memory must be exactly what dcmread reads."""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    PrivateTransferSyntaxes,
    register_transfer_syntax,
)

from dicomhub.dicom.header import read_header
from dicomhub.dicom.read import NotDicom, parse_part10
from tests.dicomfiles import make_dataset, sample_files, to_part10


@contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom\.")
        yield


def _reference(data: bytes) -> tuple[Dataset, int] | None:
    """dcmread's data set before the pixel data and where it left the file; None if it fails."""
    fp = io.BytesIO(data)
    try:
        with _quiet():
            ds = dcmread(fp, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - any failure: the fast reader must not read it either
        return None
    return ds, fp.tell()


def _differences(got: Dataset, expected: Dataset) -> list[str]:
    """Elements that differ: raw elements field by field, every element after conversion."""
    raw_got, raw_expected = dict(got._dict), dict(expected._dict)
    if list(raw_got) != list(raw_expected):
        return [f"tags {list(raw_got)} != {list(raw_expected)}"]
    out = []
    for tag, mine in raw_got.items():
        theirs = raw_expected[tag]
        # dcmread converts a few elements while reading (the character set, the first meta
        # element); a raw element is compared with a raw one, and both after conversion.
        if type(mine) is type(theirs) and not _equal(mine, theirs):
            out.append(f"{tag}: {mine!r} != {theirs!r}")
        converted, converted_expected = _converted(got, tag), _converted(expected, tag)
        if not _equal(converted, converted_expected):
            out.append(f"{tag}: {converted!r} != {converted_expected!r} once converted")
    return out


def _equal(a: object, b: object) -> bool:
    """a == b; comparing sequences converts their items, which may fail the same way for both."""
    try:
        with _quiet():
            return bool(a == b)
    except Exception as exc:  # noqa: BLE001 - then both must fail alike
        try:
            with _quiet():
                b == a  # noqa: B015 - only whether it raises matters
        except Exception as other:  # noqa: BLE001
            return type(exc) is type(other)
        return False


def _converted(ds: Dataset, tag: int) -> object:
    """The element as pydicom converts it, or the kind of error converting it raises."""
    with _quiet():
        try:
            return ds[tag]
        except Exception as exc:  # noqa: BLE001 - e.g. a sequence cut short by the end of the file
            return type(exc)


def _compare(data: bytes) -> list[str] | None:
    """None when read_header leaves the file to dcmread, else what differs from dcmread."""
    mine = read_header(data)
    if mine is None:
        return None
    reference = _reference(data)
    if reference is None:
        return ["read a file dcmread cannot read"]
    (got, end), (expected, tell) = mine, reference
    problems = _differences(got, expected)
    problems += [f"meta {p}" for p in _differences(got.file_meta, expected.file_meta)]
    if got.original_encoding != expected.original_encoding:
        problems.append(f"encoding {got.original_encoding} != {expected.original_encoding}")
    if got.original_character_set != expected.original_character_set:
        problems.append("character set")
    if end != tell:
        problems.append(f"stopped at {end}, dcmread at {tell}")
    return problems


def test_every_sample_reads_as_dcmread_reads_it() -> None:
    read = undefined_sequences = without_pixels = 0
    problems: dict[str, list[str]] = {}
    for path in sample_files():
        data = path.read_bytes()
        found = _compare(data)
        if found is None:
            continue
        read += 1
        if found:
            problems[path.name] = found[:3]
        header = read_header(data)
        assert header is not None
        ds, end = header
        undefined_sequences += any(isinstance(e, DataElement) for e in ds._dict.values())
        without_pixels += end == len(data)
    assert problems == {}
    # The comparison covers the cases that matter, not only files left to dcmread.
    assert read > 150
    assert undefined_sequences > 20
    assert without_pixels > 5


def test_parse_part10_gives_the_same_instance_with_and_without_the_bytes() -> None:
    compared = 0
    for path in sample_files():
        data = path.read_bytes()
        with _quiet():
            try:
                slow = parse_part10(io.BytesIO(data), len(data), lambda p: f"bulk:{p}")
            except NotDicom:
                with pytest.raises(NotDicom):
                    parse_part10(io.BytesIO(data), len(data), lambda p: f"bulk:{p}", data)
                continue
            fast = parse_part10(io.BytesIO(data), len(data), lambda p: f"bulk:{p}", data)
        assert fast == slow, path.name
        compared += 1
    assert compared > 200


def _written(transfer_syntax: str) -> bytes:
    return to_part10(make_dataset(PatientName="Doe^Jane"), transfer_syntax)


@pytest.mark.parametrize(
    "syntax", [ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian]
)
def test_syntaxes_dcmread_reads_differently_are_left_to_it(syntax: str) -> None:
    data = _written(syntax)
    assert read_header(data) is None
    assert _reference(data) is not None


def test_bytes_without_the_part10_header_are_left_to_dcmread() -> None:
    data = _written(ExplicitVRLittleEndian)
    assert read_header(data[128:]) is None  # no preamble
    assert read_header(b"not DICOM at all" * 20) is None
    assert read_header(data[:140]) is None  # ends inside the File Meta Information
    assert read_header(data[:132]) is None


def test_a_file_without_a_transfer_syntax_is_left_to_dcmread() -> None:
    ds = make_dataset()
    data = to_part10(ds)
    with _quiet():
        meta = dcmread(io.BytesIO(data)).file_meta
    del meta.TransferSyntaxUID
    ds.file_meta = meta
    buf = io.BytesIO()
    with _quiet():
        ds.save_as(buf, implicit_vr=False, little_endian=True)
    assert read_header(buf.getvalue()) is None


def test_an_invalid_vr_is_left_to_dcmread() -> None:
    data = bytearray(_written(ExplicitVRLittleEndian))
    at = data.index(b"PN")  # PatientName's VR
    data[at : at + 2] = b"zz"
    assert read_header(bytes(data)) is None


def test_undefined_length_sequences_and_nested_items_are_read() -> None:
    inner = Dataset()
    inner.CodeValue = "T-A0100"
    inner.CodingSchemeDesignator = "SRT"
    inner.CodeMeaning = "Thorax – Région"  # decoded with the character set of the data set
    item = Dataset()
    item.ReferencedSOPInstanceUID = "1.2.3.4"
    item.AnatomicRegionSequence = Sequence([inner])
    ds = make_dataset(SpecificCharacterSet="ISO_IR 192", PatientName="Müller^Jörg")
    ds.ReferencedImageSequence = Sequence([item, Dataset()])
    # Written with undefined lengths, as many modalities write them.
    ds["ReferencedImageSequence"].is_undefined_length = True
    item["AnatomicRegionSequence"].is_undefined_length = True
    item.is_undefined_length_sequence_item = True
    data = to_part10(ds)
    assert b"\xfe\xff\xdd\xe0" in data  # a sequence delimitation item
    header = read_header(data)
    assert header is not None
    assert isinstance(header[0]._dict[0x00081140], DataElement)  # read by pydicom's read_sequence
    assert _compare(data) == []
    read = header[0]
    assert str(read.PatientName) == "Müller^Jörg"
    nested = read.ReferencedImageSequence[0].AnatomicRegionSequence[0]
    assert nested.CodeMeaning == "Thorax – Région"


def _element(group: int, elem: int, vr: str, value: bytes) -> bytes:
    """One explicit VR little endian element."""
    if vr in ("OB", "OW", "SQ", "UN", "UT", "UC", "UR"):
        return struct.pack("<HH2sHL", group, elem, vr.encode(), 0, len(value)) + value
    return struct.pack("<HH2sH", group, elem, vr.encode(), len(value)) + value


def _uid(value: str) -> bytes:
    raw = value.encode()
    return raw + b"\0" * (len(raw) % 2)


def _file(meta: bytes, body: bytes) -> bytes:
    return b"\0" * 128 + b"DICM" + meta + body


_BODY = _element(0x0008, 0x0016, "UI", _uid("1.2.840.10008.5.1.4.1.1.7")) + _element(
    0x0010, 0x0010, "PN", b"Doe^Jane"
)


@pytest.mark.parametrize(
    "syntax", [DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian]
)
def test_a_transfer_syntax_written_with_another_vr_is_left_to_dcmread(syntax: str) -> None:
    # A PN value equals its string but does not hash as it: the syntax must still be seen.
    meta = _element(2, 1, "OB", b"\0\1") + _element(2, 0x10, "PN", _uid(syntax))
    assert _compare(_file(meta, _BODY)) in (None, [])


def test_file_meta_elements_out_of_order_are_left_to_dcmread() -> None:
    syntax = _element(2, 0x10, "UI", _uid(ExplicitVRLittleEndian))
    # dcmread converts the lowest tag (here a broken group length), not the first one read
    meta = _element(2, 1, "OB", b"\0\1") + _element(2, 0, "SQ", b"\0" * 4) + syntax
    assert _reference(_file(meta, _BODY)) is None
    assert read_header(_file(meta, _BODY)) is None
    assert read_header(_file(syntax + _element(2, 1, "OB", b"\0\1"), _BODY)) is None
    assert _compare(_file(_element(2, 1, "OB", b"\0\1") + syntax, _BODY)) == []


def test_a_private_syntax_registered_after_import_is_left_to_dcmread() -> None:
    private = register_transfer_syntax(
        UID("1.2.826.0.1.3680043.8.498.99.1"), implicit_vr=True, little_endian=True
    )
    try:
        meta = _element(2, 1, "OB", b"\0\1") + _element(2, 0x10, "UI", _uid(private))
        assert read_header(_file(meta, _BODY)) is None
    finally:
        PrivateTransferSyntaxes.remove(private)


@settings(max_examples=60, deadline=None)
@given(cut=st.integers(min_value=0, max_value=100_000))
def test_a_file_cut_anywhere_reads_as_dcmread_reads_it_or_is_left_to_it(cut: int) -> None:
    ds = make_dataset(SpecificCharacterSet="ISO_IR 100", PatientName="Doe^Jane", rows=64)
    item = Dataset()
    item.ReferencedSOPInstanceUID = "1.2.3.4"
    ds.ReferencedImageSequence = Sequence([item])
    data = to_part10(ds)
    cut_data = data[: cut % (len(data) + 1)]
    assert _compare(cut_data) in (None, [])


def test_the_comparison_notices_a_difference() -> None:
    data = _written(ExplicitVRLittleEndian)
    header = read_header(data)
    reference = _reference(data)
    assert header is not None and reference is not None
    ds, _ = header
    assert _differences(ds, reference[0]) == []
    ds.PatientName = "Other^Name"
    assert _differences(ds, reference[0]) != []
