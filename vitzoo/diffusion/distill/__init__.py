"""Distillation objectives of the diffusion families, one module each (``lit.py``, ``linfusion.py``),
re-exported here: ``from vitzoo.diffusion.distill import <objective>``."""

from ..._discovery import import_submodules

__all__: list[str] = []

for _module in import_submodules(__name__, __path__).values():
    for _name in getattr(_module, "__all__", ()):
        globals()[_name] = getattr(_module, _name)
        __all__.append(_name)
