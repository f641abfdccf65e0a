"""Inference-time fusion: BatchNorm folded into the convolution before it.

In eval mode a BatchNorm is a per-channel affine map, y = γ (x − μ) / √(σ² + ε) + β, so a conv followed by it is one
conv with weight W·γ/√(σ² + ε) and bias (b − μ)·γ/√(σ² + ε) + β (PyTorch's ``fuse_conv_bn_eval`` does the algebra).
Modules that hold such pairs implement timm's ``fuse()`` convention with these helpers, so
``timm.utils.reparameterize_model`` and :func:`vitzoo.models.fuse` fold them. A BatchNorm that follows an activation,
or that precedes a padded convolution, is not a pure affine map of the conv output and is left alone.
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["fold_batchnorm", "fold_batchnorm_sequence"]


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
