"""Import every public submodule of a package: how mixers, models, commands and pipelines register."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType
from typing import Callable

__all__ = ["import_submodules"]


def import_submodules(package: str, path, *, accept: Callable[[str], bool] = lambda name: not name.startswith("_")
                      ) -> dict[str, ModuleType]:
    """Import ``<package>.<name>`` for every module in ``path`` whose name ``accept`` takes, sorted by name."""
    names = sorted(info.name for info in pkgutil.iter_modules(path) if accept(info.name))
    return {name: importlib.import_module(f"{package}.{name}") for name in names}
