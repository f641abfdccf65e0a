"""diffusers pipelines of vitzoo. Every ``pipeline_<task>.py`` here is imported and its ``__all__``
re-exported, so ``from vitzoo.diffusion.pipelines import <Name>Pipeline`` works for each of them.

Keep class module paths stable: diffusers writes them into ``model_index.json`` on save.
"""

from ..._discovery import import_submodules

__all__: list[str] = []

for _module in import_submodules(__name__, __path__, accept=lambda name: name.startswith("pipeline_")).values():
    for _name in getattr(_module, "__all__", ()):
        globals()[_name] = getattr(_module, _name)
        __all__.append(_name)
