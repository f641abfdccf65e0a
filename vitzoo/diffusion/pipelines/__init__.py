"""diffusers pipelines of vitzoo. Every ``pipeline_<task>.py`` here is imported and its ``__all__``
re-exported, so ``from vitzoo.diffusion.pipelines import <Name>Pipeline`` works for each of them.

Keep class module paths stable: diffusers writes them into ``model_index.json`` on save.
"""

import importlib
import pkgutil

__all__: list[str] = []

for _info in pkgutil.iter_modules(__path__):
    if _info.name.startswith("pipeline_"):
        _module = importlib.import_module(f"{__name__}.{_info.name}")
        for _name in getattr(_module, "__all__", ()):
            globals()[_name] = getattr(_module, _name)
            __all__.append(_name)
