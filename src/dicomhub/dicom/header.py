"""A Part-10 header read from memory, element for element as pydicom's dcmread reads it.

`dcmread(stop_before_pixels=True)` costs about 0.7 ms for a CT header of 50 elements, most
of it in per-element file reads and bookkeeping; the store path reads every instance once.
This reads the common case (DICM prefix, File Meta Information, then an explicit VR little
endian data set) straight from the bytes and builds the same raw elements, so everything
after it (conversion, DICOM JSON) is pydicom's as before. Anything else, or anything odd,
returns None and the caller reads with pydicom. tests/dicom/test_header.py compares the
result with dcmread's for every sample file.
"""

from __future__ import annotations

import io
import struct
from collections.abc import MutableSequence
from typing import cast

from pydicom import config
from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import (
    DataElement,
    RawDataElement,
    convert_raw_data_element,
    empty_value_for_VR,
)
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_sequence
from pydicom.tag import BaseTag
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    PrivateTransferSyntaxes,
)
from pydicom.valuerep import EXPLICIT_VR_LENGTH_16, EXPLICIT_VR_LENGTH_32
from pydicom.values import convert_string

__all__ = ["read_header"]

_HEADER = struct.Struct("<HH2sH")
_LONG = struct.Struct("<L")
_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00009, 0x7FE00008})
_LONG_VRS = frozenset(str(vr) for vr in EXPLICIT_VR_LENGTH_32)
# The two bytes of every VR pydicom reads with an explicit length, and the VR's name.
_VRS = {str(vr).encode(): str(vr) for vr in EXPLICIT_VR_LENGTH_16 | EXPLICIT_VR_LENGTH_32}
# Transfer syntaxes dcmread does not read as explicit VR little endian, or reads specially
# (and the private ones registered with pydicom, looked up at each read).
_OTHER_SYNTAXES = frozenset(
    {ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian}
)

Elements = dict[BaseTag, RawDataElement | DataElement]


class _Unusual(Exception):
    """Something only pydicom's reader handles the way pydicom does."""


def read_header(data: bytes) -> tuple[Dataset, int] | None:
    """The data set before the pixel data, and the offset of the pixel data element (or of
    the end); None when the file is not the common case and dcmread must read it."""
    if len(data) < 132 or data[128:132] != b"DICM":
        return None
    try:
        return _read(data)
    except Exception:  # noqa: BLE001 - whatever failed here, dcmread reports it its own way
        return None


def _read(data: bytes) -> tuple[Dataset, int] | None:
    meta_elements, start = _scan(data, 132, in_meta=True)
    file_meta = FileMetaDataset(meta_elements)
    file_meta.set_original_encoding(False, True, default_encoding)
    tags = list(file_meta._dict)
    if tags != sorted(tags):
        return None  # dcmread converts the lowest tag and the group length, not the first read
    if tags:
        file_meta[tags[0]]  # dcmread converts it to check the encoding
    syntax = file_meta.get("TransferSyntaxUID")
    # dcmread compares with ==; only a str or a UID hashes as it compares (a PN does not).
    if syntax is None or type(syntax) not in (UID, str):
        return None
    if syntax in _OTHER_SYNTAXES or syntax in PrivateTransferSyntaxes:
        return None
    if len(data) - start < 6 or data[start + 4 : start + 6] not in _VRS:
        return None  # dcmread would switch to implicit VR
    if data[start : start + 2] == b"\x00\x00":
        return None  # a command set, which dcmread reads as implicit VR
    elements, end = _scan(data, start, in_meta=False)
    dataset = Dataset(elements, parent_encoding=default_encoding)
    character_set: str | MutableSequence[str] = default_encoding
    charset = elements.get(BaseTag(0x00080005))
    if charset is not None:
        if not isinstance(charset, RawDataElement):
            raise _Unusual("a character set that is a sequence")
        character_set = convert_encodings(convert_raw_data_element(charset).value)
    dataset.set_original_encoding(False, True, character_set)
    dataset.file_meta = file_meta
    return dataset, end


def _scan(data: bytes, pos: int, *, in_meta: bool) -> tuple[Elements, int]:
    """Explicit VR little endian elements from `pos`: the File Meta group, or the data set up
    to its pixel data; and the offset where reading stopped, as dcmread leaves its file."""
    elements: Elements = {}
    encoding: str | MutableSequence[str] = default_encoding
    size = len(data)
    unpack = _HEADER.unpack_from
    while size - pos >= 8:
        group, elem, raw_vr, length = unpack(data, pos)
        vr = _VRS.get(raw_vr)
        if vr is None:
            raise _Unusual("not an explicit VR")
        tag = BaseTag(group << 16 | elem)
        header = 8
        if vr in _LONG_VRS:
            if size - pos < 12:
                raise _Unusual("element header cut short")
            length = _LONG.unpack_from(data, pos + 8)[0]
            header = 12
        if tag == 0xFFFEE00D:
            raise _Unusual("item delimiter in a data set")
        if (in_meta and group != 2) or (not in_meta and tag in _PIXEL_TAGS):
            return elements, pos
        value_tell = pos + header
        if length == 0xFFFFFFFF:
            if vr == "UN" and config.settings.infer_sq_for_un_vr:
                vr = "SQ"
            if vr != "SQ":
                raise _Unusual("undefined length outside a sequence")
            fp = io.BytesIO(data)
            fp.seek(value_tell)
            sequence = read_sequence(fp, False, True, length, encoding)
            elements[tag] = DataElement(tag, vr, sequence, value_tell, is_undefined_length=True)
            pos = fp.tell()
            continue
        if length > 0:
            value: bytes | None = data[value_tell : value_tell + length]
        else:
            value = cast(bytes | None, empty_value_for_VR(vr, raw=True))
        if tag == 0x00080005:
            encoding = convert_encodings(convert_string(value or b"", True))
        elements[tag] = RawDataElement(tag, vr, length, value, value_tell, False, True)
        pos = value_tell + length
    if in_meta:
        raise _Unusual("the file ends in its File Meta Information")
    return elements, size  # dcmread reads what is left when fewer than 8 bytes remain
