"""Imports point one way (docs/architecture.md): a module imports only from its own subpackage or from a
lower layer, so there are no cycles between subpackages, and nothing below the command line imports it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vitzoo"

# the layers of docs/architecture.md, lowest first; a unit is a subpackage or a top-level module of vitzoo
LAYERS = [
    {"_discovery", "_atomic"},
    {"ops"},
    {"layers"},
    {"mixers"},
    {"models"},
    {"__init__"},  # `import vitzoo`: create_model, list_models, list_mixers
    {"data", "diffusion", "detection"},
    {"aigi"},
    {"testing"},
    {"train"},
    {"benchmark"},
    {"cards"},
    {"commands"},
    {"cli"},
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def _module_name(path: Path) -> tuple[str, str]:
    """(module, package it resolves relative imports against)."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        name = ".".join(parts[:-1])
        return name, name
    name = ".".join(parts)
    return name, name.rsplit(".", 1)[0]


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path, source: str | None = None) -> list[tuple[int, str]]:
    """(line, absolute module) of every vitzoo import in ``path`` (or in ``source`` read as that file),
    wherever it sits (functions included)."""
    _, package = _module_name(path)
    found = []
    for node in ast.walk(ast.parse(path.read_text() if source is None else source, str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                if node.module:
                    found.append((node.lineno, ".".join(base + [node.module])))
                else:
                    found += [(node.lineno, ".".join(base + [alias.name])) for alias in node.names]
            elif node.module:
                found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name == "vitzoo" or name.startswith("vitzoo.")]


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_unit_of_the_package_has_a_layer():
    units = {_unit(_module_name(path)[0]) for path in _sources()}
    assert units - set(RANK) == set(), "add the new subpackage to LAYERS here and to docs/architecture.md"


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_a_module_imports_only_its_own_subpackage_or_lower_layers(path):
    unit = _unit(_module_name(path)[0])
    upward = [f"{path.relative_to(ROOT)}:{line} imports {name} ({_unit(name)} is not below {unit})"
              for line, name in _imports(path)
              if _unit(name) != unit and RANK.get(_unit(name), len(LAYERS)) >= RANK[unit]]
    assert not upward, "\n".join(upward)


def test_the_checker_sees_relative_and_nested_imports():
    """The rule can fail: an upward import written relatively inside a function is found."""
    fake = PACKAGE / "models" / "_not_a_module.py"
    source = "def f():\n    from ..train import Trainer\n    from . import _factory\n    import vitzoo.cli\n"
    assert _imports(fake, source) == [(2, "vitzoo.train"), (3, "vitzoo.models._factory"), (4, "vitzoo.cli")]
    assert RANK[_unit("vitzoo.train")] > RANK["models"] and RANK[_unit("vitzoo.cli")] > RANK["models"]

