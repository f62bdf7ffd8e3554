"""The two layers of docs/ARCHITECTURE.md: the library (plain PyTorch) imports neither Ray nor the
application layer that runs it on Ray; faiss, boto3 and pycocotools have one importer each; no module
imports itself back through another."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mmray

PACKAGE = Path(mmray.__file__).parent
LIBRARY_PACKAGES = ("config", "data", "models", "losses", "metrics", "artifacts", "index", "tasks")
LIBRARY_MODULES = (
    "devices", "distributed", "errors", "figures", "pretrained", "progress", "s3_client", "s3_settings", "storage",
)  # fmt: skip
FORBIDDEN = (
    "ray", "mmray.train", "mmray.retrieval", "mmray.tune", "mmray.serving", "mmray.cli", "mmray.pipeline",
    "mmray.cluster",
)  # fmt: skip


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, submodules: bool = False) -> list[str]:
    """Every module a file imports, at any depth; with `submodules`, `from a import b` counts as a.b too."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names if submodules]
    return names


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _is_library(module: str) -> bool:
    parts = module.split(".")
    return len(parts) > 1 and (parts[1] in LIBRARY_PACKAGES or (len(parts) == 2 and parts[1] in LIBRARY_MODULES))


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_every_module_belongs_to_a_layer() -> None:
    app = ("train", "retrieval", "tune", "serving", "cli", "pipeline", "cluster")
    unplaced = [m for m in _modules() if m != "mmray" and not _is_library(m) and m.split(".")[1] not in app]
    assert not unplaced, f"modules in neither layer (add them to the library or the app layer): {unplaced}"


def test_the_library_imports_neither_ray_nor_the_app_layer() -> None:
    violations = [
        f"{module} imports {name}"
        for module, path in _modules().items()
        if _is_library(module)
        for name in sorted(set(_imports(path)))
        if any(_within(name, forbidden) for forbidden in FORBIDDEN)
    ]
    assert not violations, "the library layer must not import Ray or the app layer:\n" + "\n".join(violations)


@pytest.mark.parametrize(
    ("library", "importer"),
    [("faiss", "mmray.index.faiss_index"), ("boto3", "mmray.s3_client"), ("botocore", "mmray.s3_client"),
     ("pycocotools", "mmray.data.coco")],
)  # fmt: skip
def test_each_third_party_library_has_one_importer(library: str, importer: str) -> None:
    importers = [m for m, path in _modules().items() if any(_within(n, library) for n in _imports(path))]
    assert importers == [importer]


@pytest.mark.parametrize(
    "package", ["serving", "tune", "train", "retrieval", "tasks", "models", "artifacts", "cluster"]
)
def test_no_import_cycles_inside_a_package(package: str) -> None:
    modules = {m: p for m, p in _modules().items() if _within(m, f"mmray.{package}")}
    edges = {m: {n for n in _imports(p, submodules=True) if n in modules and n != m} for m, p in modules.items()}

    def cycle_from(start: str) -> list[str] | None:
        stack, seen = [(start, [start])], set()
        while stack:
            node, trail = stack.pop()
            for nxt in edges[node]:
                if nxt == start:
                    return [*trail, start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*trail, nxt]))
        return None

    cycles = [" -> ".join(c) for m in modules if (c := cycle_from(m))]
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_data_and_config_sit_below_models() -> None:
    """Models read data (processors, tokenizers) and configs; neither reads models back."""
    violations = [
        f"{module} imports {name}"
        for module, path in _modules().items()
        if _within(module, "mmray.data") or _within(module, "mmray.config")
        for name in sorted(set(_imports(path)))
        if _within(name, "mmray.models")
    ]
    assert not violations, "\n".join(violations)
