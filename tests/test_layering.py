"""The package layering, enforced by reading every import statement under src/dicomhub.

dicom (pure DICOM) <- storage (index and blobs) <- services (transport-free) <- dicomweb (HTTP).
Imports inside functions and under TYPE_CHECKING count like any other.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import dicomhub

SRC = Path(dicomhub.__file__).parent
WEB_FRAMEWORKS = ("fastapi", "starlette")
SERVERS = ("fastapi", "starlette", "uvicorn", "pynetdicom")
# The one storage thing the HTTP layer may name: the blob interfaces it streams from.
BLOB_PROTOCOLS = {"BlobStore", "BlobWriter"}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # what it imports: a module, or package.name for `from package import name`
    name: str | None  # the name taken by `from x import name`
    line: int

    def __str__(self) -> str:
        what = f"{self.target} ({self.name})" if self.name else self.target
        return f"{self.module}:{self.line} imports {what}"


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_under(root: Path) -> Iterator[Import]:
    """Every import of every module in the package at `root`, relative ones resolved."""
    for path in sorted(root.rglob("*.py")):
        module = _module_name(root, path)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield Import(module, alias.name, None, node.lineno)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base_parts = package.split(".")
                    base = ".".join(base_parts[: len(base_parts) - node.level + 1])
                    source = f"{base}.{node.module}" if node.module else base
                else:
                    assert node.module is not None
                    source = node.module
                for alias in node.names:
                    # `from dicomhub import errors` imports the module dicomhub.errors.
                    candidate = root.parent / Path(*f"{source}.{alias.name}".split("."))
                    is_module = candidate.with_suffix(".py").is_file() or candidate.is_dir()
                    target = f"{source}.{alias.name}" if is_module else source
                    yield Import(module, target, alias.name, node.lineno)


def _within(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


Rule = Callable[[Import], bool]  # True when the import breaks the rule


@dataclass(frozen=True)
class Layer:
    name: str
    applies_to: tuple[str, ...]
    broken_by: Rule


# The FHIR store's service modules (everything in dicomhub.fhir but its search and api packages).
FHIR_SERVICES = (
    "dicomhub.fhir.service",
    "dicomhub.fhir.bundles",
    "dicomhub.fhir.bulk",
    "dicomhub.fhir.references",
    "dicomhub.fhir.validation",
    "dicomhub.fhir.capability",
    "dicomhub.fhir.search_service",
    "dicomhub.fhir.searchset",
)

LAYERS = [
    Layer(
        "dicom imports nothing else of dicomhub",
        ("dicomhub.dicom",),
        lambda i: _within(i.target, "dicomhub") and not _within(i.target, "dicomhub.dicom"),
    ),
    Layer(
        "storage imports only storage, the pure packages and errors of dicomhub",
        ("dicomhub.storage",),
        lambda i: (
            _within(i.target, "dicomhub")
            and not _within(
                i.target,
                "dicomhub.storage",
                "dicomhub.dicom",
                "dicomhub.fhir.search",
                "dicomhub.errors",
            )
        ),
    ),
    Layer(
        "services know no web framework, server, DIMSE library or dicomweb",
        ("dicomhub.services",),
        lambda i: _within(i.target, *SERVERS, "dicomhub.dicomweb"),
    ),
    Layer(
        "dicomweb reaches storage only through the blob protocols",
        ("dicomhub.dicomweb",),
        lambda i: (
            _within(i.target, "dicomhub.storage")
            and not (i.target == "dicomhub.storage.blobs.base" and i.name in BLOB_PROTOCOLS)
        ),
    ),
    Layer(
        "no web framework below the HTTP layer",
        ("dicomhub.dicom", "dicomhub.storage", "dicomhub.services"),
        lambda i: _within(i.target, *WEB_FRAMEWORKS),
    ),
    Layer(
        "fhir.search imports nothing else of dicomhub",
        ("dicomhub.fhir.search",),
        lambda i: _within(i.target, "dicomhub") and not _within(i.target, "dicomhub.fhir.search"),
    ),
    Layer(
        "the FHIR store's services know no web framework, server or HTTP layer",
        FHIR_SERVICES,
        lambda i: _within(i.target, *SERVERS, "dicomhub.dicomweb", "dicomhub.fhir.api"),
    ),
    Layer(
        "the FHIR API reaches storage only through the services",
        ("dicomhub.fhir.api",),
        lambda i: _within(i.target, "dicomhub.storage"),
    ),
    Layer(
        "the DICOM -> FHIR mapping is pure: only dicom and itself, no I/O library",
        ("dicomhub.sync.mapping", "dicomhub.sync.body_parts"),
        lambda i: (
            _within(i.target, "dicomhub", "sqlalchemy", "httpx", *SERVERS)
            and not _within(
                i.target, "dicomhub.dicom", "dicomhub.sync.mapping", "dicomhub.sync.body_parts"
            )
        ),
    ),
    Layer(
        "the sync knows no web framework, server or HTTP layer",
        ("dicomhub.sync",),
        lambda i: _within(i.target, *SERVERS, "dicomhub.dicomweb", "dicomhub.fhir.api"),
    ),
]


def violations(root: Path, layer: Layer) -> list[str]:
    return sorted(
        str(i)
        for i in imports_under(root)
        if _within(i.module, *layer.applies_to) and layer.broken_by(i)
    )


@pytest.mark.parametrize("layer", LAYERS, ids=[layer.name for layer in LAYERS])
def test_layer(layer: Layer) -> None:
    assert violations(SRC, layer) == []


def test_the_walker_sees_the_imports_that_are_there() -> None:
    found = {(i.module, i.target) for i in imports_under(SRC)}
    assert ("dicomhub.dicom.read", "dicomhub.dicom.frames") in found
    assert ("dicomhub.dicomweb.errors", "dicomhub.errors") in found  # from dicomhub import errors
    assert ("dicomhub.dicomweb.errors", "fastapi") in found
    assert ("dicomhub.cli", "uvicorn") in found  # imported inside a function
    assert ("dicomhub.dicomweb.streaming", "dicomhub.storage.blobs.base") in found
    modules = {i.module for i in imports_under(SRC)}
    for package in ("dicomhub.dicom", "dicomhub.storage", "dicomhub.services", "dicomhub.dicomweb"):
        assert any(_within(m, package) for m in modules), package


def test_each_rule_catches_a_planted_violation(tmp_path: Path) -> None:
    root = tmp_path / "dicomhub"
    files = {
        "__init__.py": "",
        "errors.py": "",
        "dicom/__init__.py": "",
        "dicom/bad.py": "from ..storage import engine\n",
        "storage/__init__.py": "",
        "storage/engine.py": "from dicomhub.errors import X\n",
        "storage/bad.py": "def f():\n    from dicomhub.services import store\n",
        "services/__init__.py": "",
        "services/store.py": "",
        "services/bad.py": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n"
            "    from dicomhub.dicomweb.deps import Ctx\n"
            "import pynetdicom\n"
        ),
        "dicomweb/__init__.py": "",
        "dicomweb/deps.py": "",
        "dicomweb/ok.py": "from dicomhub.storage.blobs.base import BlobStore\n",
        "dicomweb/bad.py": "from dicomhub.storage.blobs.base import new_blob_id\n",
        "dicomweb/worse.py": "from dicomhub.storage.engine import Database\n",
        "storage/blobs/__init__.py": "",
        "storage/blobs/base.py": "import starlette.responses\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    found = {layer.name: violations(root, layer) for layer in LAYERS}
    assert found == {
        LAYERS[0].name: ["dicomhub.dicom.bad:1 imports dicomhub.storage.engine (engine)"],
        LAYERS[1].name: ["dicomhub.storage.bad:2 imports dicomhub.services.store (store)"],
        LAYERS[2].name: [
            "dicomhub.services.bad:3 imports dicomhub.dicomweb.deps (Ctx)",
            "dicomhub.services.bad:4 imports pynetdicom",
        ],
        LAYERS[3].name: [
            "dicomhub.dicomweb.bad:1 imports dicomhub.storage.blobs.base (new_blob_id)",
            "dicomhub.dicomweb.worse:1 imports dicomhub.storage.engine (Database)",
        ],
        LAYERS[4].name: ["dicomhub.storage.blobs.base:1 imports starlette.responses"],
        LAYERS[5].name: [],
        LAYERS[6].name: [],
        LAYERS[7].name: [],
        LAYERS[8].name: [],
        LAYERS[9].name: [],
    }
