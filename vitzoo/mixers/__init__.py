"""THE shared token mixers: one contract, created by name.

    mixer = vitzoo.create_mixer("linear", dim=64, num_heads=4)
    y = mixer(x, (H, W), num_prefix_tokens=1)     # x: [B, 1 + H*W, 64]

Every module in this package registers its mixers on import; adding a family file is enough.
"""

from .._discovery import import_submodules
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

import_submodules(__name__, __path__)

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
