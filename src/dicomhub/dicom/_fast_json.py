"""DICOM JSON of common raw elements straight from their bytes, as pydicom would give it.

The store path converts every element of every instance once; pydicom's generic conversion
(DataElement objects, value classes, validation hooks) costs several times the work. This
handles the plain cases: explicit VR, a single-byte or UTF-8 character set, well-formed
values. Everything else (None returned) goes through pydicom. tests/dicom/test_read.py checks
the result against pydicom's own `to_json_dict` for every sample file.
"""

from __future__ import annotations

import struct
from typing import Any

from pydicom.charset import convert_encodings
from pydicom.dataelem import RawDataElement

__all__ = ["codec_for", "fast_element_json"]

# pydicom decodes these with its default encoding (iso8859) whatever the character set.
_ASCII_LIKE = frozenset({"AS", "CS", "DA", "DT", "TM"})
# Decoded with the data set's character set, split on backslash, each value right-stripped.
_TEXT_MULTI = frozenset({"LO", "SH", "UC"})
_TEXT_SINGLE = frozenset({"LT", "ST", "UT"})
_NUMBERS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d", "SV": "q", "UV": "Q"}
_SIZES = {code: struct.calcsize("<" + code) for code in _NUMBERS.values()}
# Python codecs of the character sets whose decoding is a plain bytes.decode().
_PLAIN_CODECS = frozenset({"iso8859", "latin_1", "iso_ir_100", "UTF8", "utf_8", "ascii"})
_DEFAULT = "iso8859"


def codec_for(charset: Any, inherited: str | None) -> str | None:
    """The single codec of a SpecificCharacterSet value, or None when pydicom must decode."""
    if charset is None:
        return inherited
    try:
        encodings = convert_encodings(charset)
    except Exception:  # noqa: BLE001 - an unknown character set is pydicom's to handle
        return None
    if len(encodings) == 1 and encodings[0] in _PLAIN_CODECS:
        return str(encodings[0])
    return None


def _strings(values: list[str]) -> dict[str, Any] | None:
    return {"Value": values} if values != [""] else {}


def fast_element_json(raw: RawDataElement, codec: str | None) -> dict[str, Any] | None:
    """{"vr": ..., "Value": [...]} for a raw element, or None to leave it to pydicom."""
    vr = raw.VR
    value = raw.value
    if vr is None or value is None or raw.length == 0xFFFFFFFF:
        return None
    if not value:
        return {"vr": vr} if vr in _ASCII_LIKE or vr in _TEXT_MULTI or vr in _NUMBERS else None
    try:
        if vr in _ASCII_LIKE:
            body = _strings(value.decode(_DEFAULT).rstrip(" \x00").split("\\"))
        elif vr == "UI":
            body = _strings(value.decode(_DEFAULT).rstrip("\x00 ").split("\\"))
        elif vr == "AE":
            body = _strings([v.strip() for v in value.decode(_DEFAULT).split("\\")])
        elif vr in _TEXT_MULTI:
            if codec is None:
                return None
            body = _strings([v.rstrip("\x00 ") for v in value.decode(codec).split("\\")])
        elif vr in _TEXT_SINGLE:
            if codec is None:
                return None
            body = _strings([value.decode(codec).rstrip("\x00 ")])
        elif vr == "IS":
            items = value.decode(_DEFAULT).rstrip(" \x00").split("\\")
            body = {"Value": [int(v) for v in items]}
        elif vr == "DS":
            items = value.decode(_DEFAULT).rstrip(" \x00").split("\\")
            if any(not v.strip() for v in items):
                return None
            body = {"Value": [float(v) for v in items]}
        elif vr in _NUMBERS:
            code = _NUMBERS[vr]
            size = _SIZES[code]
            if len(value) % size:
                return None
            endian = "<" if raw.is_little_endian else ">"
            body = {"Value": list(struct.unpack(f"{endian}{len(value) // size}{code}", value))}
        else:
            return None
    except (UnicodeDecodeError, ValueError, struct.error):
        return None
    if body is None:
        return None
    return {"vr": vr, **body}
