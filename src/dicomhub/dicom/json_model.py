"""Dataset to DICOM JSON (PS3.18 Annex F), with large binary values given as BulkDataURI."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from typing import Any

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filewriter import correct_ambiguous_vr

from dicomhub.dicom._fast_json import codec_for, fast_element_json

__all__ = ["BINARY_VRS", "BULK_THRESHOLD", "BulkUri", "dataset_to_json", "subset", "tag_key"]

# Binary values above this many bytes become BulkDataURIs (OHIF and Orthanc use the same order).
BULK_THRESHOLD = 1024
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})

# Called with a tag path such as "00420011" or "00400275/0/00420011"; returns the URI to emit.
BulkUri = Callable[[str], str]

_AMBIGUOUS_DEFAULT = {"US or SS": "US", "OB or OW": "OW", "US or OW": "OW", "US or SS or OW": "OW"}


def tag_key(tag: int) -> str:
    return f"{tag:08X}"


def dataset_to_json(
    ds: Dataset, bulk_uri: BulkUri, *, threshold: int = BULK_THRESHOLD
) -> tuple[dict[str, Any], list[str]]:
    """The DICOM JSON of `ds` and the problems met (values that could not be converted are left out)."""
    problems: list[str] = []
    try:
        correct_ambiguous_vr(ds, ds.original_encoding[1] is not False)
    except Exception as exc:  # noqa: BLE001 - any failure here only means VRs stay ambiguous
        problems.append(f"ambiguous VRs could not be resolved: {exc}")
    return _convert(ds, "", bulk_uri, threshold, problems, "iso8859"), problems


def _charset(ds: Dataset, inherited: str | None) -> str | None:
    raw = ds.get_item(0x00080005)
    if raw is None:
        return inherited
    try:
        return codec_for(ds[0x00080005].value, inherited)
    except Exception:  # noqa: BLE001 - an unreadable character set is pydicom's to handle
        return None


def _convert(
    ds: Dataset,
    prefix: str,
    bulk_uri: BulkUri,
    threshold: int,
    problems: list[str],
    inherited: str | None,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    codec = _charset(ds, inherited)
    for tag in list(ds.keys()):
        if tag & 0xFFFF == 0:  # group lengths carry no meaning in JSON
            continue
        key = tag_key(tag)
        raw = ds.get_item(tag)
        if isinstance(raw, RawDataElement):
            fast = fast_element_json(raw, codec)
            if fast is not None:
                out[key] = fast
                continue
        try:
            elem = ds[tag]
        except Exception as exc:  # noqa: BLE001 - one bad value must not lose the rest
            problems.append(f"({key[:4]},{key[4:]}) could not be read: {exc}")
            vr = getattr(raw, "VR", None) or "UN"
            out[key] = {"vr": _AMBIGUOUS_DEFAULT.get(vr, vr)}
            continue
        vr = _AMBIGUOUS_DEFAULT.get(elem.VR, elem.VR)
        path = f"{prefix}{key}"
        if vr == "SQ":
            items = [
                _convert(item, f"{path}/{i}/", bulk_uri, threshold, problems, codec)
                for i, item in enumerate(elem.value or [])
            ]
            out[key] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
        elif vr in BINARY_VRS:
            value = elem.value
            if value is None or len(value) == 0:
                out[key] = {"vr": vr}
            elif len(value) > threshold:
                out[key] = {"vr": vr, "BulkDataURI": bulk_uri(path)}
            else:
                out[key] = {"vr": vr, "InlineBinary": base64.b64encode(value).decode("ascii")}
        else:
            try:
                converted = elem.to_json_dict(None, 0)
            except Exception as exc:  # noqa: BLE001 - e.g. a DS that is not a number
                problems.append(
                    f"({key[:4]},{key[4:]}) {vr} value {elem.value!r} is invalid: {exc}"
                )
                out[key] = {"vr": vr}
                continue
            converted["vr"] = vr
            out[key] = converted
    return out


def subset(full: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """The attributes of `full` whose tag keys are in `keys`, in tag order."""
    wanted = set(keys)
    return {k: v for k, v in full.items() if k in wanted}
