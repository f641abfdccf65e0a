"""Inference-time fusion: BatchNorm folded into the convolution before it; projections of one input merged.

In eval mode a BatchNorm is a per-channel affine map, y = γ (x − μ) / √(σ² + ε) + β, so a conv followed by it is one
conv with weight W·γ/√(σ² + ε) and bias (b − μ)·γ/√(σ² + ε) + β (PyTorch's ``fuse_conv_bn_eval`` does the algebra).
Modules that hold such pairs implement timm's ``fuse()`` convention with these helpers, so
``timm.utils.reparameterize_model`` and :func:`vitzoo.models.fuse` fold them. A BatchNorm that follows an activation,
or that precedes a padded convolution, is not a pure affine map of the conv output and is left alone.

Linear maps that read the same input (a mixer's separate q, k, v and gate projections) concatenate into one Linear
whose output splits back into theirs: one matrix product instead of several (:func:`merge_linears`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["fold_batchnorm", "fold_batchnorm_sequence", "merge_linears"]


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """One conv equal (in eval mode) to ``bn(conv(x))``; refuses a BatchNorm that tracks no running statistics."""
    if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.modules.batchnorm._BatchNorm):
        raise TypeError(f"fold_batchnorm takes a Conv2d and a BatchNorm, got {type(conv).__name__} and "
                        f"{type(bn).__name__}")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("a BatchNorm without running statistics uses batch statistics at inference and cannot be "
                         "folded")
    if conv.out_channels != bn.num_features:
        raise ValueError(f"conv has {conv.out_channels} output channels, the BatchNorm {bn.num_features}")
    return fuse_conv_bn_eval(conv.eval(), bn.eval())


def fold_batchnorm_sequence(seq: nn.Sequential) -> nn.Sequential:
    """A Sequential with every (Conv2d, BatchNorm) neighbour pair folded into one conv; other modules kept."""
    out, modules, i = [], list(seq), 0
    while i < len(modules):
        module = modules[i]
        following = modules[i + 1] if i + 1 < len(modules) else None
        if isinstance(module, nn.Conv2d) and isinstance(following, nn.modules.batchnorm._BatchNorm):
            out.append(fold_batchnorm(module, following))
            i += 2
        else:
            out.append(module)
            i += 1
    return nn.Sequential(*out)


def merge_linears(*linears: nn.Linear) -> nn.Linear:
    """One Linear whose output is the concatenation of ``linears``' outputs (same input width); split it with
    ``out.split([l.out_features for l in linears], -1)``. A missing bias counts as zero."""
    if not linears or any(not isinstance(m, nn.Linear) for m in linears):
        raise TypeError("merge_linears takes one or more nn.Linear")
    widths = {m.in_features for m in linears}
    if len(widths) != 1:
        raise ValueError(f"the projections read inputs of different widths {sorted(widths)}; they cannot be merged")
    first = linears[0].weight
    has_bias = any(m.bias is not None for m in linears)
    merged = nn.Linear(first.shape[1], sum(m.out_features for m in linears), bias=has_bias, device=first.device,
                       dtype=first.dtype)
    with torch.no_grad():
        merged.weight.copy_(torch.cat([m.weight for m in linears]))
        if has_bias:
            merged.bias.copy_(torch.cat([m.bias if m.bias is not None else m.weight.new_zeros(m.out_features)
                                         for m in linears]))
    return merged
