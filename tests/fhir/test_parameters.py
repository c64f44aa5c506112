"""The search-parameter registry generated from the official R4 definitions."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

from dicomhub.fhir.search import _r4_definitions as defs
from dicomhub.fhir.search.extract import (
    Branch,
    ExistsNotFalse,
    UnsupportedExpression,
    compile_expression,
    compile_param,
)
from dicomhub.fhir.search.parameters import (
    COMMON,
    INDEXED_TYPES,
    ParamType,
    SearchParam,
    search_param,
    search_params,
)

REPO = Path(__file__).resolve().parents[2]
TYPES = [
    "Patient",
    "ImagingStudy",
    "Endpoint",
    "Condition",
    "Observation",
    "DiagnosticReport",
    "MedicationRequest",
    "Procedure",
    "Encounter",
    "ServiceRequest",
    "Practitioner",
    "Organization",
    "Location",
    "DocumentReference",
    "Immunization",
    "AllergyIntolerance",
]
EVERY_PARAM = [p for t in INDEXED_TYPES for p in search_params(t).values() if p.resource_type == t]


def _param(resource_type: str, code: str) -> SearchParam:
    param = search_param(resource_type, code)
    assert param is not None, f"{resource_type}.{code} missing"
    return param


def test_indexed_types_are_the_sixteen() -> None:
    assert sorted(INDEXED_TYPES) == sorted(TYPES)


@pytest.mark.parametrize(
    ("resource_type", "code", "kind", "expression"),
    [
        ("Patient", "birthdate", ParamType.DATE, "Patient.birthDate"),
        ("Patient", "name", ParamType.STRING, "Patient.name"),
        ("Patient", "email", ParamType.TOKEN, "Patient.telecom.where(system='email')"),
        (
            "Patient",
            "deceased",
            ParamType.TOKEN,
            "Patient.deceased.exists() and Patient.deceased != false",
        ),
        ("ImagingStudy", "modality", ParamType.TOKEN, "ImagingStudy.series.modality"),
        (
            "ImagingStudy",
            "endpoint",
            ParamType.REFERENCE,
            "ImagingStudy.endpoint | ImagingStudy.series.endpoint",
        ),
        ("Condition", "code", ParamType.TOKEN, "Condition.code"),
        (
            "Condition",
            "patient",
            ParamType.REFERENCE,
            "Condition.subject.where(resolve() is Patient)",
        ),
        ("Encounter", "date", ParamType.DATE, "Encounter.period"),
        (
            "MedicationRequest",
            "code",
            ParamType.TOKEN,
            "(MedicationRequest.medication as CodeableConcept)",
        ),
        (
            "DocumentReference",
            "identifier",
            ParamType.TOKEN,
            "DocumentReference.masterIdentifier | DocumentReference.identifier",
        ),
        (
            "Observation",
            "value-quantity",
            ParamType.QUANTITY,
            "(Observation.value as Quantity) | (Observation.value as SampledData)",
        ),
        ("Procedure", "date", ParamType.DATE, "Procedure.performed"),
    ],
)
def test_definitions_as_the_specification_gives_them(
    resource_type: str, code: str, kind: ParamType, expression: str
) -> None:
    param = _param(resource_type, code)
    assert (param.type, param.expression, param.extra) == (kind, expression, False)
    assert param.url.startswith("http://hl7.org/fhir/SearchParameter/")
    assert param.description


def test_multi_base_parameters_keep_only_their_own_type() -> None:
    # clinical-code has 14 bases; each type sees only its own part of the union.
    assert _param("AllergyIntolerance", "code").expression == (
        "AllergyIntolerance.code | AllergyIntolerance.reaction.substance"
    )
    for param in EVERY_PARAM:
        roots = {re.sub(r"^\(*(\w+).*", r"\1", part) for part in param.expression.split(" | ")}
        assert roots == {param.resource_type}, param
    # ... and the description of its own type out of the per-type list.
    assert _param("Condition", "patient").description == "Who has the condition?"


def test_reference_targets() -> None:
    assert _param("Condition", "patient").targets == ("Patient",)
    assert _param("Condition", "subject").targets == ("Group", "Patient")
    assert _param("Encounter", "practitioner").targets == ("Practitioner",)


def test_study_is_the_documented_extra() -> None:
    study = _param("DiagnosticReport", "study")
    assert study.type is ParamType.REFERENCE
    assert study.expression == "DiagnosticReport.imagingStudy"
    assert study.targets == ("ImagingStudy",)
    assert study.url == "http://hl7.org/fhir/SearchParameter/DiagnosticReport-study"
    assert study.extra
    assert [p.code for p in EVERY_PARAM if p.extra] == ["study"]


def test_no_composite_or_special_parameters() -> None:
    kinds = {p.type for p in EVERY_PARAM} | {p.type for p in COMMON.values()}
    assert kinds == {
        ParamType.TOKEN,
        ParamType.STRING,
        ParamType.DATE,
        ParamType.REFERENCE,
        ParamType.QUANTITY,
        ParamType.URI,
    }
    assert search_param("Observation", "code-value-quantity") is None  # composite in R4
    assert search_param("Location", "near") is None  # special in R4


def test_common_parameters() -> None:
    assert {c: (p.type, p.expression) for c, p in COMMON.items()} == {
        "_id": (ParamType.TOKEN, "Resource.id"),
        "_lastUpdated": (ParamType.DATE, "Resource.meta.lastUpdated"),
        "_tag": (ParamType.TOKEN, "Resource.meta.tag"),
        "_profile": (ParamType.URI, "Resource.meta.profile"),
        "_security": (ParamType.TOKEN, "Resource.meta.security"),
        "_source": (ParamType.URI, "Resource.meta.source"),
    }
    assert set(search_params("Device")) == set(COMMON)  # a type the store does not index
    assert search_param("Patient", "_id") is COMMON["_id"]
    assert search_param("Patient", "nonsense") is None


@pytest.mark.parametrize("param", EVERY_PARAM + list(COMMON.values()), ids=str)
def test_every_expression_compiles(param: SearchParam) -> None:
    assert compile_param(param)


def test_compiled_branches_follow_choice_types() -> None:
    branches = compile_expression("Observation", "Observation.effective")
    assert [(b.keys, b.type, b.implicit) for b in branches if isinstance(b, Branch)] == [
        (("effectiveDateTime",), "dateTime", True),
        (("effectivePeriod",), "Period", True),
        (("effectiveTiming",), "Timing", True),
        (("effectiveInstant",), "instant", True),
    ]
    [text] = compile_expression("Observation", "(Observation.value as CodeableConcept).text")
    assert text == Branch(("valueCodeableConcept", "text"), "string")
    [onset] = compile_expression("Condition", "Condition.onset.as(Age)")
    assert onset == Branch(("onsetAge",), "Age")
    [patient] = compile_expression("Encounter", "Encounter.subject.where(resolve() is Patient)")
    assert patient == Branch(("subject",), "Reference", resolve_is="Patient")
    [email] = compile_expression("Patient", "Patient.telecom.where(system='email')")
    assert email == Branch(("telecom",), "ContactPoint", where=("system", "email"))
    assert compile_expression(
        "Patient", "Patient.deceased.exists() and Patient.deceased != false"
    ) == [ExistsNotFalse("deceased")]
    [tag] = compile_expression("Resource", "Resource.meta.tag")
    assert tag == Branch(("meta", "tag"), "Coding")


@pytest.mark.parametrize(
    "expression",
    [
        "Patient.name.first()",  # other functions
        "Patient.nickname",  # no such element
        "Observation.value as Money",  # a type the choice does not allow
        "Patient.name.where(use='official').family",  # where() not last
        "Patient.name.where(use=official)",  # a non-literal comparison
        "Patient.managingOrganization.resolve()",
        "Patient.name | Practitioner.name",  # a part for another type
        "Patient.name.given[0]",  # indexers
        "Patient.name.where(resolve() is Patient)",  # resolve() on a non-Reference
        "Patient.active.exists() and Patient.active != false",  # exists() form on a non-choice
        "Patient.name or Patient.address",
        "",
    ],
)
def test_unsupported_expressions_fail_at_compile_time(expression: str) -> None:
    with pytest.raises(UnsupportedExpression):
        compile_expression(expression.split(".", maxsplit=1)[0] or "Patient", expression)


def test_value_types_a_parameter_type_cannot_index_fail_at_compile_time() -> None:
    wrong = SearchParam("x", ParamType.DATE, "Patient", "Patient.name")
    with pytest.raises(UnsupportedExpression, match="date parameter cannot index HumanName"):
        compile_param(wrong)
    nothing = SearchParam("y", ParamType.NUMBER, "Patient", "Patient.deceased")
    with pytest.raises(UnsupportedExpression, match="nothing to index"):
        compile_param(nothing)


def test_resource_types_are_those_of_r4() -> None:
    assert len(defs.RESOURCE_TYPES) == 146
    assert {"Patient", "Bundle", "Binary", "Parameters", "ImagingStudy"} <= defs.RESOURCE_TYPES
    # abstract bases and the R4B SubscriptionStatus the package also carries are not R4 types
    assert not {"Resource", "DomainResource", "SubscriptionStatus"} & defs.RESOURCE_TYPES


def test_summary_and_mandatory_elements() -> None:
    assert set(defs.SUMMARY_ELEMENTS) == set(defs.RESOURCE_TYPES) == set(defs.MANDATORY_ELEMENTS)
    patient = defs.SUMMARY_ELEMENTS["Patient"]
    assert {"id", "meta", "identifier", "name", "gender", "birthDate", "deceased"} <= patient
    assert not {"text", "contained", "photo", "contact", "multipleBirth", "communication"} & patient
    assert "value" in defs.SUMMARY_ELEMENTS["Observation"]  # value[x] by its base name
    assert defs.MANDATORY_ELEMENTS["Observation"] == {"status", "code"}
    assert defs.MANDATORY_ELEMENTS["ImagingStudy"] == {"status", "subject"}
    assert defs.MANDATORY_ELEMENTS["Patient"] == frozenset()
    # Medplum's own Meta elements are not R4's
    assert "Meta.project" not in defs.ELEMENT_TYPES
    assert defs.ELEMENT_TYPES["Meta.lastUpdated"] == ("instant",)


def test_generated_module_says_where_it_came_from() -> None:
    header = Path(defs.__file__).read_text(encoding="utf-8")[:800]
    assert "GENERATED by scripts/generate_fhir_definitions.py" in header
    assert f"npm package {defs.SOURCE_PACKAGE}" in header
    assert "licence Apache-2.0" in header
    assert "CC0" in header


def _generator() -> ModuleType:
    path = REPO / "scripts" / "generate_fhir_definitions.py"
    spec = importlib.util.spec_from_file_location("generate_fhir_definitions", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_generator_narrows_unions_and_descriptions() -> None:
    gen = _generator()
    expression = "A.x | (B.value as Quantity) | (A.value as CodeableConcept).text | B.y"
    assert gen.split_union("(A.x | A.y).z | B.w") == ["(A.x | A.y).z", "B.w"]
    assert gen.narrow(expression, "A") == "A.x | (A.value as CodeableConcept).text"
    assert gen.narrow(expression, "B") == "(B.value as Quantity) | B.y"
    description = "Multiple Resources: \r\n\r\n* [A](a.html): For A\r\n* [B](b.html): For B\r\n"
    assert gen.describe(description, "B") == "For B"
    assert gen.describe("Plain  text", "B") == "Plain text"
