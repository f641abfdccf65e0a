"""Size-dependent steps that backbones and mixers share, written as FX leaves so models trace.

"Pad only when the map is not a multiple" and "resize only when the grid differs" branch on the map
size, which is an FX Proxy inside a traced forward. Each helper therefore calls a private leaf
function that takes the decision with real sizes at run time (the mechanism is described in
``vitzoo/ops/README.md``, "Tracing"). Both return their input unchanged when there is nothing to do,
so eager results and costs are those of the hand-written branch.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function, resample_abs_pos_embed

__all__ = ["map_to_tokens", "pad_to_multiple", "resize_pos_embed", "tokens_to_map"]


def tokens_to_map(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Spatial tokens [B, H·W, C] (row-major) -> map [B, C, H, W], as a channels-last view of the same memory.

    Every tokens-to-map step of the zoo goes through here. ``view(B, H, W, C).permute`` gives the map the strides
    torch recognises as channels-last for any batch, so a depthwise convolution runs its channels-last kernel on
    the tokens in place. The obvious ``transpose(1, 2).reshape(B, C, H, W)`` is the same view except for the stride
    of a batch of one, which makes torch call the map contiguous, copy it to NCHW and run the NCHW kernel: on
    this CPU a 3×3 depthwise conv over [1, 224, 128, 128] took 20.3 ms that way and 0.72 ms this way.
    """
    height, width = size
    return x.reshape(x.shape[0], height, width, x.shape[2]).permute(0, 3, 1, 2)


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """Map [B, C, H, W] -> dense spatial tokens [B, H·W, C]: a view of a channels-last map, one copy of an NCHW
    map (a stem's output), so that every op after it runs on contiguous rows instead of strided columns."""
    return x.flatten(2).transpose(1, 2).contiguous()


def pad_to_multiple(x: torch.Tensor, multiple: Union[int, tuple[int, int]], *,
                    channels_last: bool = False) -> torch.Tensor:
    """Zero-pad a map on the bottom and right up to multiples of ``multiple`` (an int or (mh, mw)).

    Args:
        x: map [B, C, H, W], or [B, H, W, C] with ``channels_last=True``.
        multiple: the height and width multiple; (mh, mw) may hold sizes read from a tensor's shape.

    Returns:
        ``x`` itself when H and W are already multiples, otherwise the padded map.
    """
    return _pad_to_multiple(x, multiple, channels_last)


@register_notrace_function
@torch.fx.wrap
def _pad_to_multiple(x: torch.Tensor, multiple: Union[int, tuple[int, int]], channels_last: bool) -> torch.Tensor:
    multiple_h, multiple_w = multiple if isinstance(multiple, (tuple, list)) else (multiple, multiple)
    height, width = x.shape[1:3] if channels_last else x.shape[-2:]
    pad_h, pad_w = (-height) % multiple_h, (-width) % multiple_w
    if not (pad_h or pad_w):
        return x
    return F.pad(x, (0, 0, 0, pad_w, 0, pad_h) if channels_last else (0, pad_w, 0, pad_h))


def resize_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int], size: tuple[int, int], *,
                     num_prefix_tokens: int = 0, mode: str = "bicubic", antialias: bool = True,
                     align_corners: Optional[bool] = None) -> torch.Tensor:
    """An absolute position embedding learned on ``grid``, resampled to ``size`` when they differ.

    The resampling is timm's ``resample_abs_pos_embed`` (fp32 interpolation of the [1, C, h, w] map,
    prefix tokens kept as they are); ``mode="bilinear", antialias=False, align_corners=False`` is the
    PVT-style resize.

    Args:
        pos_embed: [1, P + h·w, C], prefix tokens first.
        grid: (h, w), the grid the embedding was built for.
        size: (H, W), the grid of the current input (may come from a tensor's shape).
        num_prefix_tokens: P.

    Returns:
        ``pos_embed`` itself when ``size == grid``, otherwise [1, P + H·W, C].
    """
    return _resize_pos_embed(pos_embed, grid, size, num_prefix_tokens, mode, antialias, align_corners)


@register_notrace_function
@torch.fx.wrap
def _resize_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int], size: tuple[int, int], num_prefix_tokens: int,
                      mode: str, antialias: bool, align_corners: Optional[bool]) -> torch.Tensor:
    if (size[0], size[1]) == (grid[0], grid[1]):
        return pos_embed
    return resample_abs_pos_embed(pos_embed, new_size=[size[0], size[1]], old_size=[grid[0], grid[1]],
                                  num_prefix_tokens=num_prefix_tokens, interpolation=mode, antialias=antialias,
                                  align_corners=align_corners)
