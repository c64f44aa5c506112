"""dicomhub.fhir.validation: the instance entries of an ImagingStudy found valid once are not
validated again, and that never changes a verdict or the paths an error names."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from dicomhub.errors import Unprocessable
from dicomhub.fhir import validation
from dicomhub.fhir.validation import validate_resource

SOP_CLASS = {"system": "urn:ietf:rfc:3986", "code": "urn:oid:1.2.840.10008.5.1.4.1.1.2"}


def entry(n: int) -> dict[str, Any]:
    return {"uid": f"1.2.826.0.1.3680043.8.498.2.{n}", "sopClass": SOP_CLASS, "number": n}


def imaging_study(*series: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "ImagingStudy",
        "id": "s1",
        "status": "available",
        "subject": {"reference": "Patient/p1"},
        "series": [
            {
                "uid": f"1.2.826.0.1.3680043.8.498.1.{i}",
                "modality": {
                    "system": "http://dicom.nema.org/resources/ontology/DCM",
                    "code": "CT",
                },
                "instance": items,
            }
            for i, items in enumerate(series)
        ],
    }


@pytest.fixture(autouse=True)
def _fresh_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(validation, "_valid_items", validation._ValidItems())


def _error(resource: dict[str, Any]) -> Unprocessable:
    with pytest.raises(Unprocessable) as caught:
        validate_resource(resource)
    return caught.value


def test_entries_found_valid_are_remembered_and_the_rest_still_checked() -> None:
    study = imaging_study([entry(n) for n in range(1, 4)], [entry(n) for n in range(4, 6)])
    assert validate_resource(study) == "ImagingStudy"
    assert len(validation._valid_items.keys) == 5
    # the study grows by a bad entry: refused, with the path of that entry in the whole study
    grown = copy.deepcopy(study)
    grown["series"][1]["instance"].append({"uid": "1.2.3", "sopClass": SOP_CLASS, "number": "7"})
    grown["series"][1]["instance"].append({"sopClass": SOP_CLASS})
    error = _error(grown)
    # the model's errors come first; the JSON kinds are looked at once the model accepts
    assert error.locations == ("ImagingStudy.series[1].instance[3].uid",)
    # nothing of a refused study is remembered, and it is refused again
    assert len(validation._valid_items.keys) == 5
    assert _error(grown).message == error.message
    del grown["series"][1]["instance"][3]
    assert _error(grown).locations == ("ImagingStudy.series[1].instance[2].number",)


def test_a_json_kind_error_in_a_new_entry_names_it() -> None:
    study = imaging_study([entry(1), entry(2)])
    validate_resource(study)
    study["series"][0]["instance"].insert(1, {**entry(3), "number": "3"})
    error = _error(study)
    assert error.locations == ("ImagingStudy.series[0].instance[1].number",)


def test_the_verdict_is_the_same_with_and_without_memory() -> None:
    bad_elsewhere = imaging_study([entry(1), entry(2)])
    del bad_elsewhere["subject"]  # 1..1
    validate_resource(imaging_study([entry(1), entry(2)]))
    remembered = _error(bad_elsewhere)
    validation._valid_items.keys.clear()
    assert _error(bad_elsewhere).message == remembered.message


def test_the_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    validate_resource(imaging_study([entry(n) for n in range(3)]))
    held = validation._valid_items.size
    assert len(validation._valid_items.keys) == 3 and held > 3 * 100
    monkeypatch.setattr(validation, "_VALID_ITEMS_MAX_BYTES", held + 10)
    validate_resource(imaging_study([entry(n) for n in range(10, 13)]))
    assert len(validation._valid_items.keys) == 3  # emptied first, then the new ones
    # a large item (any client may send one) is checked every time, never kept
    validate_resource(imaging_study([{**entry(20), "title": "x" * 2000}]))
    assert len(validation._valid_items.keys) == 3


def test_entries_seen_again_do_not_fill_the_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """A growing study brings back its earlier entries at every pass; only new ones count."""
    study = imaging_study([entry(n) for n in range(3)])
    validate_resource(study)
    held = validation._valid_items.size
    monkeypatch.setattr(validation, "_VALID_ITEMS_MAX_BYTES", 2 * held)
    for _ in range(5):
        validate_resource(study)
    assert validation._valid_items.size == held
    study["series"][0]["instance"].append(entry(3))
    validate_resource(study)
    assert len(validation._valid_items.keys) == 4  # not emptied by the passes before


def test_items_holding_null_are_not_remembered() -> None:
    # NaN is written as null too: remembering {"number": null} would let NaN through
    validate_resource(imaging_study([{**entry(1), "number": None}]))
    assert validation._valid_items.keys == set()
    error = _error(imaging_study([{**entry(1), "number": float("nan")}]))
    assert error.locations == ("ImagingStudy.series[0].instance[0].number",)


def test_a_malformed_primitive_extension_is_a_client_error() -> None:
    # fhir.resources raises AttributeError on these: still a 422, never a server error
    error = _error({"resourceType": "Patient", "_gender": " 1.2 "})
    assert "malformed" in error.message


def test_other_resources_and_odd_shapes_are_validated_whole() -> None:
    odd = imaging_study([entry(1)])
    odd["series"][0]["instance"] = ["not an object"]
    assert _error(odd).locations[0].startswith("ImagingStudy.series[0].instance[0]")
    big = imaging_study([{**entry(1), "number": 2**70}])  # beyond what orjson writes
    assert _error(big).locations == ("ImagingStudy.series[0].instance[0].number",)
    assert validation._valid_items.keys == set()
