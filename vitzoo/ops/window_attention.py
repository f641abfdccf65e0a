"""(Shifted) window softmax attention with relative position bias, as in Swin (Liu et al., arXiv:2103.14030).

The op takes spatial tokens of a map whose height and width are multiples of the window; padding a map
to such a size is the mixer's business (it decides whether padded tokens are zeros of the input, as
the official Swin and L²ViT do). ``shift`` is the cyclic shift of Swin's odd blocks: tokens that the
roll wraps to the opposite border do not attend to each other.

Optional ``global_key`` / ``global_value`` ([B, heads, P, D]) are extra keys every window attends to
with zero bias; this is how prefix tokens (a cls token) take part in window attention.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function

from ._backend import use_naive
from .softmax_attention import softmax_attention

__all__ = [
    "relative_position_index",
    "shifted_window_mask",
    "window_partition",
    "window_reverse",
    "window_attention",
    "window_attention_naive",
]


def relative_position_index(window_size: int) -> torch.Tensor:
    """[w², w²] index into a ((2w-1)², heads) table: (dy + w - 1)·(2w - 1) + (dx + w - 1), as in Swin."""
    coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij"))
    coords = coords.flatten(1)  # [2, w²]
    delta = (coords[:, :, None] - coords[:, None, :]) + (window_size - 1)  # [2, w², w²]
    return delta[0] * (2 * window_size - 1) + delta[1]


@register_notrace_function
@torch.fx.wrap
def _region_labels(length: int, window: int, shift: int) -> torch.Tensor:
    """Swin's three regions along one axis of the rolled map: [0, L-w), [L-w, L-s), [L-s, L)."""
    labels = torch.zeros(length, dtype=torch.long)
    if shift > 0:
        labels[length - window:length - shift] = 1
        labels[length - shift:] = 2
    return labels


def shifted_window_mask(height: int, width: int, window: int, shift: int, *, device=None) -> torch.Tensor:
    """Additive mask [nW, w², w²]: 0 inside one region of a rolled window, -inf across regions."""
    rows = _region_labels(height, window, shift)
    cols = _region_labels(width, window, shift)
    label = (rows[:, None] * 3 + cols[None, :]).to(device)  # [H, W]
    label = window_partition(label[None, :, :, None], window).squeeze(-1)  # [nW, w²]
    same = label[:, :, None] == label[:, None, :]
    return torch.zeros(same.shape, device=device).masked_fill(~same, float("-inf"))


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """[B, H, W, C] -> [B·nW, w², C], windows in row-major order."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_reverse(windows: torch.Tensor, window: int, height: int, width: int) -> torch.Tensor:
    """[B·nW, w², C] -> [B, H, W, C], the inverse of :func:`window_partition`."""
    c = windows.shape[-1]
    x = windows.view(-1, height // window, width // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, c)


@register_notrace_function
@torch.fx.node.has_side_effect
@torch.fx.wrap
def _check(query: torch.Tensor, size: tuple[int, int], window: int, shift: int) -> None:
    height, width = size
    if query.dim() != 4 or query.shape[2] != height * width:
        raise ValueError(f"expected tokens [B, heads, {height}*{width}, D], got {tuple(query.shape)}")
    if height % window or width % window:
        raise ValueError(f"a {height}x{width} map is not a multiple of the window {window}; pad it first")
    if not 0 <= shift < window:
        raise ValueError(f"shift must be in [0, {window}), got {shift}")


def window_attention_naive(
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        size: tuple[int, int],
        window: int,
        shift: int = 0,
        *,
        bias: Optional[torch.Tensor] = None,
        scale: Optional[float] = None,
        global_key: Optional[torch.Tensor] = None,
        global_value: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Reference: global attention over all H·W tokens with an explicit [N, N] mask and bias, no partitioning.

    Args:
        query, key, value: spatial tokens [B, heads, H·W, D], row-major.
        size: (H, W), multiples of ``window``.
        bias: relative position bias [heads, w², w²] indexed by positions inside a window.
    """
    _check(query, size, window, shift)
    height, width = size
    rows = torch.arange(height).repeat_interleave(width)
    cols = torch.arange(width).repeat(height)
    # coordinates in the rolled map: torch.roll(x, -shift) moves token r to r - shift
    rolled_r, rolled_c = (rows - shift) % height, (cols - shift) % width
    window_id = (rolled_r // window) * (width // window) + rolled_c // window
    region = _region_labels(height, window, shift)[rolled_r] * 3 + _region_labels(width, window, shift)[rolled_c]
    position = (rolled_r % window) * window + rolled_c % window
    allowed = (window_id[:, None] == window_id[None, :]) & (region[:, None] == region[None, :])
    heads = query.shape[1]
    scores = torch.zeros(allowed.shape, device=query.device).masked_fill(~allowed.to(query.device), float("-inf"))
    scores = scores.expand(heads, -1, -1)  # [heads, N, N]
    if bias is not None:
        scores = scores + bias.float()[:, position[:, None], position[None, :]]
    if global_key is not None:
        scores = torch.cat([scores.new_zeros(heads, scores.shape[1], global_key.shape[2]), scores], dim=-1)
        key = torch.cat([global_key, key], dim=2)
        value = torch.cat([global_value, value], dim=2)
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    logits = (query.float() * scale) @ key.float().transpose(-2, -1) + scores
    return (logits.softmax(dim=-1) @ value.float()).to(value.dtype)


def window_attention(
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        size: tuple[int, int],
        window: int,
        shift: int = 0,
        *,
        bias: Optional[torch.Tensor] = None,
        scale: Optional[float] = None,
        global_key: Optional[torch.Tensor] = None,
        global_value: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Fast path: same contract as :func:`window_attention_naive`; roll, partition, batched SDPA, reverse."""
    if use_naive():
        return window_attention_naive(query, key, value, size, window, shift, bias=bias, scale=scale,
                                      global_key=global_key, global_value=global_value)
    _check(query, size, window, shift)
    height, width = size
    batch, heads, _, dim = query.shape
    num_windows = (height // window) * (width // window)

    def to_windows(t: torch.Tensor) -> torch.Tensor:
        t = t.transpose(1, 2).reshape(batch, height, width, -1)
        if shift:
            t = torch.roll(t, shifts=(-shift, -shift), dims=(1, 2))
        t = window_partition(t, window)  # [B·nW, w², heads·D]
        return t.view(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)  # [B·nW, heads, w², D]

    q, k, v = to_windows(query), to_windows(key), to_windows(value)
    scores = torch.zeros(1, 1, window * window, window * window, device=query.device)
    if bias is not None:
        scores = scores + bias.float()[None]
    if shift:
        mask = shifted_window_mask(height, width, window, shift, device=query.device)  # [nW, w², w²]
        scores = (scores + mask[:, None]).repeat(batch, 1, 1, 1)  # [B·nW, heads or 1, w², w²]
    if global_key is not None:
        num_global = global_key.shape[2]
        k = torch.cat([global_key.repeat_interleave(num_windows, dim=0), k], dim=2)
        v = torch.cat([global_value.repeat_interleave(num_windows, dim=0), v], dim=2)
        scores = F.pad(scores, (num_global, 0))  # zero bias for the global keys in front
    out = softmax_attention(q, k, v, bias=scores, scale=scale)  # [B·nW, heads, w², Dv]
    out = out.transpose(1, 2).reshape(out.shape[0], window * window, -1)
    out = window_reverse(out, window, height, width)
    if shift:
        out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
    return out.reshape(batch, height * width, heads, -1).transpose(1, 2)
