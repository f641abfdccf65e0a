"""LightNet's positional encodings: TPE / MD-TPE (Toeplitz) and the cosine MD-LRPE.

Qin et al., "You Only Scan Once: Efficient Multi-dimension Sequential Modeling with LightNet", arXiv:2405.21022.
The official repository (https://github.com/OpenNLPLab/LightNet) could not be obtained; the maths follows the
first author's libraries (Doraemonzzz/xmixers @ a3e8681: ``Tpe``, ``MdTpe``; Doraemonzzz/xopes @ 1dfa3df:
``lrpe_cosine_md_torch``) as described in ``../shared/specs/lightnet.md`` §4. Re-implemented, not copied.

TPE (Toeplitz positional encoding), per head h with learned vectors q, k and decay logit ``log_decay``:

    λ_h = sigmoid(log_decay_h),   o_t = (q_h · k_h) Σ_{s≤t} λ_h^{t−s} x_s,   out = W_o RMSNorm(o)

where the causal exponential filter is applied to each head's channels and RMSNorm is the xopes form
``sqrt(C) · o / sqrt(Σ o² + 1e-5) · w`` over all C channels. MD-TPE runs one TPE causally along each listed
grid axis (the other axes fold into the batch) and sums the results. Its output *replaces* its input in the
first author's code (no residual); callers add a residual themselves if a model wants one.

MD-LRPE (cosine): a token at grid position (p_1, ..., p_m) gets the angles ``concat_i(p_i · θ[:, :e])[:d]``
(the first e features turn with the first axis, the next e with the second, ...), and x becomes
``[x cos(angle), x sin(angle)]`` (width 2d). Prefix tokens become ``[x, 0]``. Dot products of two encoded
vectors depend only on the per-axis position differences.

The parameter names are the official ones (``q``, ``k``, ``log_decay``, ``norm.weight``, ``o_proj.weight``;
``tpes.{i}.*`` for MD-TPE), so official state dicts load with no key mapping.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from timm.layers import register_notrace_function
from torch import nn

__all__ = ["MdLrpeCosine", "MdTpe", "Tpe", "md_lrpe_cosine"]


@register_notrace_function
@torch.fx.wrap
def _decay_matrix(log_decay: torch.Tensor, length: int) -> torch.Tensor:
    """Lower-triangular Toeplitz matrices ``λ_h^{t−s}`` (s ≤ t), [heads, length, length], in fp32; an FX leaf."""
    log_lambda = nn.functional.logsigmoid(log_decay.float())  # [heads]
    pos = torch.arange(length, device=log_decay.device)
    lag = pos[:, None] - pos[None, :]  # [length, length], t − s
    causal = lag >= 0
    # the upper triangle is masked before exp, so that exp never sees a positive exponent
    exponent = torch.where(causal, lag, torch.zeros_like(lag)).float() * log_lambda[:, None, None]
    return torch.exp(exponent) * causal


@register_notrace_function
@torch.fx.node.has_side_effect
@torch.fx.wrap
def _check_sequence(x: torch.Tensor, dim: int) -> None:
    """``ValueError`` unless x is [..., N, C] with C = dim; an FX leaf, so it also runs inside traced graphs."""
    if x.dim() < 2 or x.shape[-1] != dim:
        raise ValueError(f"expected tokens [..., N, {dim}], got {tuple(x.shape)}")


@register_notrace_function
@torch.fx.node.has_side_effect
@torch.fx.wrap
def _check_grid_tokens(x: torch.Tensor, size: tuple[int, ...], dim: int, dims: tuple[int, ...]) -> None:
    """``ValueError`` unless x is [B, prod(size), dim] and every scan axis in ``dims`` is a grid axis of
    [B, *size, C]; an FX leaf."""
    # plain loops and lists only: torch.compile traces into this function and rejects generator expressions
    sides = [int(s) for s in size]
    grid = " * ".join([str(s) for s in sides])
    if x.dim() != 3 or x.shape[1] != math.prod(sides) or x.shape[2] != dim:
        raise ValueError(f"expected grid tokens [B, {grid}, {dim}] for size {tuple(sides)}, got {tuple(x.shape)}")
    bad = [d for d in dims if not -(len(sides) + 1) <= d <= -2]
    if bad:
        raise ValueError(f"scan dims {bad} are not grid axes of [B, {grid}, C]: expected dims in "
                         f"[-{len(sides) + 1}, -2] for a {len(sides)}-D size")


class _RmsNormXopes(nn.Module):
    """xopes' RMSNorm: ``sqrt(C) · x / sqrt(Σ x² + eps) · w``; eps is added to the sum of squares, not the mean."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        out = xf * torch.rsqrt(xf.pow(2).sum(-1, keepdim=True) + self.eps) * math.sqrt(x.shape[-1])
        return out.to(x.dtype) * self.weight


class Tpe(nn.Module):
    """Toeplitz positional encoding along one axis (causal exponential filter per head, RMSNorm, projection).

    Args:
        dim: channels C (split into ``num_heads`` heads of C / num_heads channels).
        num_heads: heads; each has its own decay and its own q·k scale.
        eps: RMSNorm epsilon (added to the sum of squares, as in xopes).

    ``forward(x [..., N, C]) -> [..., N, C]``: the scan runs over N, leading dims are batch.
    """

    def __init__(self, dim: int, num_heads: int, *, eps: float = 1e-5):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.q = nn.Parameter(torch.empty(dim))
        self.k = nn.Parameter(torch.empty(dim))
        self.log_decay = nn.Parameter(torch.empty(num_heads))
        self.norm = _RmsNormXopes(dim, eps)
        self.o_proj = nn.Linear(dim, dim, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.q, std=self.dim ** -0.5)
        nn.init.normal_(self.k, std=self.dim ** -0.5)
        # decays spread over heads, from short to long range (sigmoid(0) = 0.5 ... sigmoid(3) ≈ 0.95)
        with torch.no_grad():
            self.log_decay.copy_(torch.linspace(0.0, 3.0, self.num_heads))
        nn.init.ones_(self.norm.weight)
        nn.init.xavier_uniform_(self.o_proj.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_sequence(x, self.dim)
        heads = self.num_heads
        xh = x.unflatten(-1, (heads, -1)).float()  # [..., N, heads, d]
        scale = (self.q.float() * self.k.float()).unflatten(0, (heads, -1)).sum(-1)  # [heads], q_h · k_h
        decay = _decay_matrix(self.log_decay, x.shape[-2]) * scale[:, None, None]  # [heads, N, N]
        o = torch.einsum("hts,...shd->...thd", decay, xh).flatten(-2).to(x.dtype)  # [..., N, C]
        return self.o_proj(self.norm(o))


class MdTpe(nn.Module):
    """Multi-dimensional TPE: one :class:`Tpe` per scan axis, each causal along its axis, outputs summed.

    Applied once after the patch embedding, on the patch grid only: the spec records no rule for prefix (cls)
    tokens, so add them after this module. The output replaces the input (no residual), as in the first
    author's code.

    Args:
        dim: channels C.
        num_heads: heads of each TPE.
        dims: the scan axes as negative indices of the grid view [B, *size, C] (official convention, keys
            ``tpes.{i}`` in this order): for a 2-D size (H, W), -2 is W and -3 is H; for a 3-D size (T, H, W),
            -4 is T. The default scans W then H, as in the golden ``MdTpe(dims=[-2, -3])``.
        eps: RMSNorm epsilon of each TPE.

    ``forward(x [B, prod(size), C], size (H, W) or any tuple of grid sides, row-major tokens) -> [B, N, C]``.
    """

    def __init__(self, dim: int, num_heads: int, *, dims: Sequence[int] = (-2, -3), eps: float = 1e-5):
        super().__init__()
        dims = tuple(int(d) for d in dims)
        if not dims or any(d > -2 for d in dims) or len(set(dims)) != len(dims):
            raise ValueError(f"dims must be distinct negative grid axes (<= -2; -1 is the channel axis), got {dims}")
        self.dim = dim
        self.dims = dims
        self.tpes = nn.ModuleList(Tpe(dim, num_heads, eps=eps) for _ in dims)

    def forward(self, x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
        _check_grid_tokens(x, size, self.dim, self.dims)
        grid = x.reshape(x.shape[0], *size, x.shape[-1])  # [B, *size, C]
        out = None
        for axis, tpe in zip(self.dims, self.tpes):
            y = tpe(grid.movedim(axis, -2)).movedim(-2, axis)
            out = y if out is None else out + y
        return out.flatten(1, -2)


@register_notrace_function
@torch.fx.wrap
def _md_angles(theta: torch.Tensor, size: tuple[int, ...], head_dim: int) -> torch.Tensor:
    """Angles ``concat_i(p_i · θ[:, :e])[:d]`` for the row-major grid, [heads or 1, prod(size), d], fp32; an FX
    leaf (it checks θ too)."""
    sides = [int(s) for s in size]
    if theta.dim() != 2 or theta.shape[1] * len(sides) < head_dim:
        raise ValueError(f"expected theta [heads or 1, e] with e >= ceil({head_dim}/{len(sides)}) = "
                         f"{-(-head_dim // len(sides))} for a {len(sides)}-D grid, got {tuple(theta.shape)}")
    coords = torch.meshgrid(*(torch.arange(s, device=theta.device, dtype=torch.float32) for s in sides),
                            indexing="ij")
    theta = theta.float()
    # [h, n, e] per axis, concatenated over axes along the feature dim, cut to d
    angles = torch.cat([c.reshape(-1)[None, :, None] * theta[:, None, :] for c in coords], dim=-1)
    return angles[..., :head_dim]


@register_notrace_function
@torch.fx.node.has_side_effect
@torch.fx.wrap
def _check_lrpe_input(x: torch.Tensor, theta: torch.Tensor, size: tuple[int, ...], num_prefix_tokens: int) -> None:
    """``ValueError`` unless x is [B, heads, prefix + prod(size), d] and θ is [heads or 1, e]; an FX leaf."""
    sides = tuple(int(s) for s in size)
    grid = " * ".join(map(str, sides))
    if x.dim() != 4 or x.shape[2] != num_prefix_tokens + math.prod(sides):
        raise ValueError(f"expected x [B, heads, {num_prefix_tokens} + {grid}, d] for size {sides}, "
                         f"got {tuple(x.shape)}")
    if theta.dim() != 2 or theta.shape[0] not in (1, x.shape[1]):
        raise ValueError(f"expected theta [1 or {x.shape[1]} heads, e], got {tuple(theta.shape)}")


def md_lrpe_cosine(x: torch.Tensor, theta: torch.Tensor, size: tuple[int, ...], *,
                   num_prefix_tokens: int = 0) -> torch.Tensor:
    """Cosine MD-LRPE of queries or keys.

    Args:
        x: [B, heads, num_prefix_tokens + prod(size), d], grid tokens row-major (first axis outermost).
        theta: frequencies [heads or 1, e] with e >= ceil(d / len(size)).
        size: grid sides, (H, W) for images.
        num_prefix_tokens: leading tokens left unrotated (they become ``[x, 0]``).

    Returns:
        [B, heads, N, 2d]: ``[x cos(angle), x sin(angle)]``, in x's dtype (angles in fp32).
    """
    _check_lrpe_input(x, theta, size, num_prefix_tokens)
    angles = _md_angles(theta, size, x.shape[-1])  # [heads or 1, prod(size), d]
    # prefix tokens get angle 0: cos 1, sin 0
    angles = nn.functional.pad(angles, (0, 0, num_prefix_tokens, 0))
    xf = x.float()
    return torch.cat([xf * torch.cos(angles), xf * torch.sin(angles)], dim=-1).to(x.dtype)


class MdLrpeCosine(nn.Module):
    """Cosine MD-LRPE with its frequencies held as a buffer ``theta`` [1, e], shared by all heads.

    The official vision initialisation is unknown (spec §4.2); θ_j = base^(−2j/e) per axis is ours, the 1-D
    module's fixed ``base^(−2j/d)`` applied to each axis' e = ceil(d / num_axes) features. θ is a persistent
    buffer, like the 1-D module's ``lrpe.theta``, so a checkpoint's θ loads over the default.

    Args:
        head_dim: d, the width of each head (the output has 2d).
        num_axes: grid dimensions m (2 for images).
        base: frequency base.

    ``forward(x [B, heads, prefix + prod(size), d], size, *, num_prefix_tokens=0) -> [B, heads, N, 2d]``.
    """

    def __init__(self, head_dim: int, num_axes: int = 2, *, base: float = 10000.0):
        super().__init__()
        self.head_dim = head_dim
        self.num_axes = num_axes
        e = -(-head_dim // num_axes)
        self.register_buffer("theta", base ** (-2.0 / e * torch.arange(e, dtype=torch.float32))[None])

    def forward(self, x: torch.Tensor, size: tuple[int, ...], *, num_prefix_tokens: int = 0) -> torch.Tensor:
        return md_lrpe_cosine(x, self.theta, size, num_prefix_tokens=num_prefix_tokens)
