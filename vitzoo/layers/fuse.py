"""Inference-time fusion: BatchNorm folded into the convolution before it; projections of one input merged.

In eval mode a BatchNorm is a per-channel affine map, y = γ (x − μ) / √(σ² + ε) + β, so a conv followed by it is one
conv with weight W·γ/√(σ² + ε) and bias (b − μ)·γ/√(σ² + ε) + β (PyTorch's ``fuse_conv_bn_eval`` does the algebra).
Modules that hold such pairs implement timm's ``fuse()`` convention with these helpers, so
``timm.utils.reparameterize_model`` and :func:`vitzoo.models.fuse` fold them. A BatchNorm that follows an activation,
or that precedes a padded convolution, is not a pure affine map of the conv output and is left alone.

Linear maps that read the same input (a mixer's separate q, k, v and gate projections) concatenate into one Linear
whose output splits back into theirs: one matrix product instead of several (:func:`merge_linears`).

On the CPU a Linear can run through oneDNN's inner product with its bias and a following activation as post-ops
(:class:`FusedLinear`, the kernel ``torch.compile``'s CPU backend emits for the same pattern): no separate pass that
broadcasts the bias into the output and no separate pass for the GELU. Measured on this 2-core CPU, fp32,
[25,088 × 64] → 512 (InLine-PVT's first MLP at batch 8): Linear + GELU 44.2 → 24.0 ms, equal to the bit. Where the
product is compute-bound MKL's GEMM is the faster one instead ([1,025 × 320] → 1,280 + GELU: oneDNN 3.13 ms, MKL's
addmm then GELU 2.94 ms), so the first call of each shape times both and keeps the faster, as
``torch.backends.cudnn.benchmark`` does for convolutions (:func:`_onednn_is_faster`).
"""

from __future__ import annotations

from typing import Optional

import time

import torch
import torch.nn.functional as F
from timm.layers import Mlp, register_notrace_function
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["FusedLinear", "fold_batchnorm", "fold_batchnorm_sequence", "fuse_linear", "fuse_linears", "merge_linears"]

# activation name -> (eager function, oneDNN post-op, its algorithm); the eager function is the module it replaces
_ACTIVATIONS = {
    "none": (lambda x: x, "none", ""),
    "gelu": (F.gelu, "gelu", "none"),  # erf GELU, nn.GELU()'s default
    "relu": (F.relu, "relu", ""),
    "silu": (F.silu, "swish", ""),
}
_ACTIVATION_MODULES = {nn.GELU: "gelu", nn.ReLU: "relu", nn.SiLU: "silu"}
# below this many rows the plain addmm is faster than oneDNN's setup (a classifier head on a small batch)
_MIN_ROWS = 128
_ONEDNN = torch.backends.mkldnn.is_available()
_onednn_linear = torch.ops.mkldnn._linear_pointwise
# (rows rounded up to a power of two, in, out, bias, activation, threads) -> whether oneDNN was the faster kernel
_FASTER_KERNEL: dict[tuple, bool] = {}
_TIMED_CALLS = 3


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


class FusedLinear(nn.Linear):
    """A Linear with an optional activation applied to its output, computed in one oneDNN call on the CPU.

    It is an ``nn.Linear`` (same ``weight`` and ``bias``), so state dicts are unchanged. The fused call runs for
    fp32 CPU inputs of at least 128 rows when no gradient is needed (oneDNN's post-op kernel has no backward) and
    when it timed faster than MKL's GEMM for the shape (:func:`_onednn_is_faster`);
    anything else (training, CUDA, half precision, a small batch, and ``torch.compile``, whose CPU backend makes the
    same fusion itself) takes ``activation(F.linear(x))``, the same function.

    Args:
        in_features, out_features, bias: as ``nn.Linear``.
        activation: ``"none"``, ``"gelu"`` (exact, erf), ``"relu"`` or ``"silu"``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, activation: str = "none",
                 device=None, dtype=None):
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _linear_activation(x, self.weight, self.bias, self.activation)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", activation={self.activation}"


@register_notrace_function
@torch.fx.wrap
def _linear_activation(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                       activation: str) -> torch.Tensor:
    """activation(x Wᵀ + b); through oneDNN where it can run. An FX leaf: it branches on the input."""
    eager, post_op, algorithm = _ACTIVATIONS[activation]
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                              or (bias is not None and bias.requires_grad))
    if (_ONEDNN and x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32 and not needs_grad
            and x.numel() >= _MIN_ROWS * x.shape[-1] and not torch.compiler.is_compiling()
            and _onednn_is_faster(x, weight, bias, activation)):
        return _onednn_linear(x, weight, bias, post_op, [], algorithm)
    return eager(F.linear(x, weight, bias))


def _onednn_is_faster(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], activation: str) -> bool:
    """Whether oneDNN's fused call beats ``activation(F.linear(x))`` (MKL's GEMM) for this shape, timed once.

    The first call of a shape (rows rounded up to a power of two, so a detector's varying image sizes time a
    few buckets, not every size) runs each kernel once to warm it up, then ``_TIMED_CALLS`` times, and keeps
    the one with the smaller best time. The two agree to float rounding (about 1e-6 relative), so the choice
    changes speed, not results beyond that.
    """
    rows = x.numel() // x.shape[-1]
    key = (1 << (rows - 1).bit_length(), weight.shape[1], weight.shape[0], bias is not None, activation,
           torch.get_num_threads())
    faster = _FASTER_KERNEL.get(key)
    if faster is None:
        eager, post_op, algorithm = _ACTIVATIONS[activation]
        onednn = _best_time(lambda: _onednn_linear(x, weight, bias, post_op, [], algorithm))
        aten = _best_time(lambda: eager(F.linear(x, weight, bias)))
        faster = _FASTER_KERNEL[key] = onednn < aten
    return faster


def _best_time(call) -> float:
    """The shortest of ``_TIMED_CALLS`` timed calls after one warm-up call, in seconds."""
    call()
    best = float("inf")
    for _ in range(_TIMED_CALLS):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def fuse_linear(linear: nn.Linear, activation: str = "none") -> FusedLinear:
    """A :class:`FusedLinear` sharing ``linear``'s parameters, computing ``activation(linear(x))``."""
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"fuse_linear takes an nn.Linear, got {type(linear).__name__}")
    fused = FusedLinear(linear.in_features, linear.out_features, bias=linear.bias is not None, activation=activation,
                        device="meta")
    fused.weight, fused.bias = linear.weight, linear.bias
    return fused


def fuse_linears(model: nn.Module) -> nn.Module:
    """In place: every timm ``Mlp`` whose activation is GELU / ReLU / SiLU gets its ``fc1`` fused with it (the
    activation becomes Identity), then every other ``nn.Linear`` becomes a :class:`FusedLinear` without activation.
    Modules with their own fc1 → activation pattern fuse it in their ``fuse()`` with :func:`fuse_linear`."""
    for module in model.modules():
        if type(module) is Mlp and isinstance(module.fc1, nn.Linear) and not isinstance(module.fc1, FusedLinear):
            activation = _ACTIVATION_MODULES.get(type(module.act))
            if activation is not None and getattr(module.act, "approximate", "none") == "none":
                module.fc1, module.act = fuse_linear(module.fc1, activation), nn.Identity()
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if type(child) is nn.Linear:
                setattr(parent, name, fuse_linear(child))
    return model
