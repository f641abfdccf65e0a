"""THE shared token mixers: one contract, created by name.

    mixer = vitzoo.create_mixer("linear", dim=64, num_heads=4)
    y = mixer(x, (H, W), num_prefix_tokens=1)     # x: [B, 1 + H*W, 64]

Every module in this package registers its mixers on import; adding a family file is enough.
"""

import importlib
import pkgutil

from ._base import (
    TokenMixer,
    create_mixer,
    get_mixer_class,
    list_mixers,
    map_to_tokens,
    register_mixer,
    split_prefix,
    tokens_to_map,
)

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "TokenMixer",
    "create_mixer",
    "get_mixer_class",
    "list_mixers",
    "map_to_tokens",
    "register_mixer",
    "split_prefix",
    "tokens_to_map",
]
