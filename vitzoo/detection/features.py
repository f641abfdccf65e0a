"""Creating the ``features_only`` model a detector's backbone wraps, with its weights and a clear error for a
model that has no multi-scale features.

Weights come through vitzoo's one checkpoint path: a vitzoo model is created with ``pretrained=True,
pretrained_cfg_overlay=dict(file=...)``, so its family's ``checkpoint_filter_fn`` maps official
classification files, official mmdet detection files (``state_dict`` with ``backbone.`` / ``neck.`` / head
keys: the ``backbone.`` part is kept) and vitzoo files, and the load is strict. A timm model's file goes
through the same reader and strict loader (:func:`~vitzoo.models._checkpoint.load_pretrained_file`), which
drops the classifier and keeps only a detector's ``backbone.`` keys. Either way a missing, unexpected or
mis-shaped key raises :class:`~vitzoo.models.CheckpointError` naming it.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import timm
from timm.models._builder import resolve_pretrained_cfg
from torch import nn

from ..models import list_models, model_family
from ..models._checkpoint import load_pretrained_file
from ..models._hierarchical import HierarchicalBackbone

__all__ = ["create_features", "default_out_indices", "hierarchical_models"]

_SIZE_SUFFIX = re.compile(r"_(?:t|s|m|b|l|tiny|small|medium|base|large)(?:_\d+)?$")


def hierarchical_models() -> list[str]:
    """vitzoo's models built on the hierarchical base: the ones with multi-scale ``features_only``."""
    found = []
    for name in list_models():
        module = importlib.import_module(f"vitzoo.models.{model_family(name)}")
        if any(isinstance(obj, type) and issubclass(obj, HierarchicalBackbone) and obj.__module__ == module.__name__
               for obj in vars(module).values()):
            found.append(name)
    return found


def _families_message() -> str:
    patterns = sorted({_SIZE_SUFFIX.sub("_*", name) for name in hierarchical_models()})
    return (f"the vitzoo families with multi-scale features_only are {', '.join(patterns)}; any timm model with "
            "hierarchical features_only (e.g. resnet50, convnext_tiny, swin_tiny_patch4_window7_224) works too")


def default_out_indices(reductions: Sequence[int], num_levels: int) -> tuple[int, ...]:
    """The last ``num_levels`` feature levels of stride >= 4 (C2-C5 for 4, C3-C5 for 3), as torchvision's
    detectors take from ResNet; for a vitzoo backbone (strides 4, 8, 16, 32) that is (0, 1, 2, 3) / (1, 2, 3)."""
    usable = [i for i, reduction in enumerate(reductions) if reduction >= 4]
    return tuple(usable[-num_levels:])


def _check_multiscale(name: str, features: nn.Module) -> None:
    reductions = features.feature_info.reduction()
    if any(b <= a for a, b in zip(reductions, reductions[1:])):
        raise ValueError(f"backbone {name!r} has features_only maps of strides {reductions}, not a pyramid of "
                         f"increasing strides; {_families_message()}")


def create_features(
        name: str,
        out_indices: Union[Sequence[int], int],
        *,
        pretrained_backbone: Optional[Union[str, Path]] = None,
        backbone_kwargs: Optional[dict[str, Any]] = None,
) -> nn.Module:
    """``timm.create_model(name, features_only=True, out_indices=...)`` for detection.

    ``out_indices`` is a tuple of levels, or an int: take that many of the deepest levels of stride >= 4
    (:func:`default_out_indices`). A vitzoo hierarchical model is built with ``num_classes=0`` and
    ``out_norms=out_indices`` (the official detection backbones' per-output LayerNorms) unless
    ``backbone_kwargs`` says otherwise.

    Raises:
        ValueError: an unknown name, or a model without multi-scale ``features_only``, naming the families
            that have it.
        CheckpointError: ``pretrained_backbone`` does not fit the backbone.
    """
    kwargs = dict(backbone_kwargs or {})
    ours = name.split(".", 1)[0] in set(list_models())
    if ours and name.split(".", 1)[0] not in hierarchical_models():
        raise ValueError(f"backbone {name!r} has no multi-scale features_only (a plain ViT); {_families_message()}")
    if not ours and not timm.is_model(name.split(".", 1)[0]):
        raise ValueError(f"unknown backbone {name!r}: neither a vitzoo nor a timm model; {_families_message()}")
    if isinstance(out_indices, int):
        probe = _create(name, (), kwargs, ours, None)
        out_indices = default_out_indices(probe.feature_info.reduction(), out_indices)
    out_indices = tuple(out_indices)
    if ours:
        kwargs.setdefault("num_classes", 0)
        kwargs.setdefault("out_norms", out_indices)
    features = _create(name, out_indices, kwargs, ours, pretrained_backbone)
    _check_multiscale(name, features)
    return features


def _create(name: str, out_indices: tuple[int, ...], kwargs: dict, ours: bool,
            file: Optional[Union[str, Path]]) -> nn.Module:
    """The features net; ``out_indices=()`` means all levels (used to read the strides first)."""
    indices = dict(out_indices=out_indices) if out_indices else {}
    overlay = dict(file=str(file)) if (file is not None and ours) else None
    try:
        features = timm.create_model(name, features_only=True, pretrained=overlay is not None,
                                     pretrained_cfg_overlay=overlay, **indices, **kwargs)
    except (RuntimeError, NotImplementedError, AssertionError) as err:
        raise ValueError(f"backbone {name!r} has no features_only ({err}); {_families_message()}") from err
    if file is not None and not ours:
        cfg = resolve_pretrained_cfg(name.split(".", 1)[0]).to_dict()
        load_pretrained_file(features, file, pretrained_cfg=cfg, in_chans=kwargs.get("in_chans", 3))
    return features
