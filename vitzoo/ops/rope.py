"""Two-dimensional rotary position embedding (2-D RoPE) on a row-major token map.

The first half of each head's channels is rotated by the token's row, the second half by its column.
Within each half, consecutive channel pairs (2t, 2t+1) form one 2-D vector that is turned by the
angle ``position · f_t``, with ``f = 1 / base ** linspace(0, 1, D/4)`` (D/4 pairs per half, frequencies
spaced geometrically from 1 down to 1/base). Positions are integer row / column
indices starting at 0, unnormalised, so a larger map simply extends them.

This is the layout of RMT / RAVLT / MAViT (Fan et al.); because the rotation is a product of
per-pair rotations, ``(R_i q)·(R_j k)`` depends on positions only through ``i - j`` (the relative
property the tests check).

Both forms take x [B, heads, H·W, D] (or any [..., H·W, D]) with D divisible by 4.
"""

from __future__ import annotations

from typing import Optional

import torch
from timm.layers import register_notrace_function

from ._backend import use_naive

__all__ = ["rope_2d", "rope_2d_naive", "rope_2d_frequencies", "rope_2d_tables"]


@register_notrace_function
@torch.fx.node.has_side_effect
@torch.fx.wrap
def _check(x: torch.Tensor, size: tuple[int, int]) -> None:
    height, width = size
    if x.dim() < 2 or x.shape[-2] != height * width:
        raise ValueError(f"rope_2d expects [..., H·W, D] with H·W = {height}x{width} = {height * width} tokens, "
                         f"got a tensor of shape {tuple(x.shape)}")
    if x.shape[-1] % 4:
        raise ValueError(f"2-D RoPE needs a head width divisible by 4 (two axes × channel pairs), got {x.shape[-1]}")


_PAIR_SIGNS = torch.tensor([-1.0, 1.0])


def rope_2d_frequencies(head_dim: int, *, base: float = 10000.0, device=None) -> torch.Tensor:
    """The D/4 rotation frequencies ``1 / base ** linspace(0, 1, D/4)`` in fp32 (one per channel pair)."""
    if head_dim % 4:
        raise ValueError(f"2-D RoPE needs a head width divisible by 4, got {head_dim}")
    exponents = torch.linspace(0, 1, head_dim // 4, dtype=torch.float32, device=device)
    return 1.0 / base ** exponents


def rope_2d_tables(size: tuple[int, int], head_dim: int, *, base: float = 10000.0,
                   device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(sin, cos), each [H·W, D] in fp32: row angles in the first D/2 columns, column angles in the
    last D/2, every pair's angle written twice (channels 2t and 2t+1 share it)."""
    return _rope_2d_tables(size, head_dim, base, device)


@register_notrace_function
@torch.fx.wrap
def _rope_2d_tables(size: tuple[int, int], head_dim: int, base: float, device) -> tuple[torch.Tensor, torch.Tensor]:
    height, width = size
    freqs = rope_2d_frequencies(head_dim, base=base, device=device).repeat_interleave(2)  # [D/2]
    rows = torch.arange(height, dtype=torch.float32, device=device)[:, None] * freqs  # [H, D/2]
    cols = torch.arange(width, dtype=torch.float32, device=device)[:, None] * freqs  # [W, D/2]
    angles = torch.cat([rows[:, None].expand(height, width, -1), cols[None].expand(height, width, -1)], dim=-1)
    angles = angles.reshape(height * width, head_dim)
    return angles.sin(), angles.cos()


def rope_2d_naive(x: torch.Tensor, size: tuple[int, int], *, base: float = 10000.0) -> torch.Tensor:
    """Reference: each channel pair is a complex number multiplied by ``exp(i · angle)``, in fp32.

    Args:
        x: [..., H·W, D] with row-major tokens.
        size: (H, W) of the token map.
        base: frequency base.
    """
    return _rope_2d_naive(x, size, base)


@register_notrace_function
@torch.fx.wrap
def _rope_2d_naive(x: torch.Tensor, size: tuple[int, int], base: float) -> torch.Tensor:
    _check(x, size)
    height, width = size
    dim = x.shape[-1]
    freqs = rope_2d_frequencies(dim, base=base, device=x.device)  # [D/4]
    rows = torch.arange(height, device=x.device).repeat_interleave(width).float()  # row of token n
    cols = torch.arange(width, device=x.device).repeat(height).float()  # column of token n
    angles = torch.cat([rows[:, None] * freqs, cols[:, None] * freqs], dim=-1)  # [H·W, D/2], one per pair
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], dim // 2, 2).contiguous())
    rotated = pairs * torch.polar(torch.ones_like(angles), angles)
    return torch.view_as_real(rotated).reshape(x.shape).to(x.dtype)


def rope_2d(x: torch.Tensor, size: tuple[int, int], *, base: float = 10000.0,
            tables: Optional[tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
    """Fast path: same contract as :func:`rope_2d_naive`, as ``x·cos + rotate_pairs(x)·sin``.

    Args:
        x: [..., H·W, D] with row-major tokens.
        size: (H, W) of the token map.
        base: frequency base.
        tables: ``rope_2d_tables(size, D, base=base)`` computed once by a caller that rotates several
            tensors (queries and keys) on the same map; computed here when None.
    """
    if use_naive():
        return rope_2d_naive(x, size, base=base)
    _check(x, size)
    sin, cos = tables if tables is not None else rope_2d_tables(size, x.shape[-1], base=base, device=x.device)
    # the 90° turn of every pair, (x0, x1, ...) -> (-x1, x0, ...), is the pair swap (x1, x0, ...) times the signs
    # (-1, +1, ...), which go into the sine table: one copy (the swap) and two fused passes
    swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
    signed_sin = (sin.unflatten(-1, (-1, 2)) * _PAIR_SIGNS.to(sin.device)).flatten(-2)
    return torch.addcmul(x * cos.to(x.dtype), swapped, signed_sin.to(x.dtype))
