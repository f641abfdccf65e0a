"""Distillation objectives of the diffusion families, one module each (``lit.py``, ``linfusion.py``),
re-exported here: ``from vitzoo.diffusion.distill import <objective>``."""

import importlib
import pkgutil

__all__: list[str] = []

for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_"):
        _module = importlib.import_module(f"{__name__}.{_info.name}")
        for _name in getattr(_module, "__all__", ()):
            globals()[_name] = getattr(_module, _name)
            __all__.append(_name)
