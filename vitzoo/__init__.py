"""vitzoo: linear-attention vision backbones and diffusion transformers from one shared set of token mixers.

    import timm, vitzoo                    # importing vitzoo registers its models with timm
    model = timm.create_model("vzvit_small", mixer="linear")
    mixer = vitzoo.create_mixer("linear", dim=64, num_heads=4)
"""

from __future__ import annotations

from typing import Any

from . import mixers, models, ops
from .mixers import TokenMixer, create_mixer, list_mixers
from .models import list_models, optimize

__version__ = "0.1.0"

__all__ = ["TokenMixer", "create_mixer", "create_model", "list_mixers", "list_models", "optimize", "__version__"]


def create_model(model_name: str, pretrained: bool = False, **kwargs: Any):
    """``timm.create_model`` for vitzoo's models, with an error listing close names for a typo."""
    import timm

    models.check_model_name(model_name)
    return timm.create_model(model_name, pretrained=pretrained, **kwargs)
