"""Inference-time optimisation of a built model: fusion (timm's ``fuse()`` / ``reparameterize()`` convention),
channels-last memory and ``torch.compile``, behind one call.

    import timm, vitzoo
    model = vitzoo.optimize(timm.create_model("ravlt_t", pretrained=True, ...), fuse=True)

Fusion folds every BatchNorm that directly follows a convolution into it (RAVLT / MAViT stems, merges and head
projection, the L²ViT stem), merges the projections of a mixer that read the same input into one Linear
(LightNet's q / k / v / gate, LiT's q / kv) and runs every Linear with the activation that follows it as one oneDNN
call on the CPU (MLP fc1 + GELU); :mod:`vitzoo.layers.fuse`. The fused model computes the same function in eval mode
(float32 rounding aside) and is for inference only: its BatchNorms are gone, so it cannot be trained or saved as a
checkpoint of the unfused architecture.
"""

from __future__ import annotations

import copy

import torch
from timm.utils import reparameterize_model
from torch import nn

from ..layers import fuse_linears

__all__ = ["fuse", "optimize"]


def fuse(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """The model in eval mode with every fusable part fused: the model's own ``reparameterize()`` (parts held by
    the model itself, which timm's walk does not visit), then timm's ``reparameterize_model`` over its children
    (``fuse()`` / ``reparameterize()`` / ``switch_to_deploy()``), then every Linear as a oneDNN inner product with
    the activation after it as a post-op (:func:`vitzoo.layers.fuse_linears`). A copy unless ``inplace``."""
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    if callable(getattr(model, "reparameterize", None)):
        model.reparameterize()
    return fuse_linears(reparameterize_model(model, inplace=True))


_fuse = fuse  # `optimize` takes a flag of the same name


def optimize(model: nn.Module, *, fuse: bool = True, channels_last: bool = False, compile: bool = False,
             inplace: bool = False, **compile_kwargs) -> nn.Module:
    """Fuse (:func:`fuse`), move to channels-last memory (``memory_format=torch.channels_last``; feed it
    channels-last inputs too) and ``torch.compile`` (``compile_kwargs`` go to it), in that order. Returns the
    model to call (the compiled wrapper when ``compile``)."""
    if fuse:
        model = _fuse(model, inplace=inplace)
    elif not inplace:
        model = copy.deepcopy(model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile:
        model = torch.compile(model, **compile_kwargs)
    return model
