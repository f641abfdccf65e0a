"""(Shifted) window softmax attention with relative position bias (Swin, Liu et al., arXiv:2103.14030).

The mixer owns what it derives from the map size: it pads the map with zero tokens to a multiple of
the window (unmasked, as the official Swin and L²ViT code do: padded tokens still enter the
projections, so their keys equal the qkv bias), rolls by the shift, and crops back. Prefix tokens
attend globally and every window also attends to them. Cost: linear in tokens for a fixed window.
"""

from __future__ import annotations

import torch
from timm.layers import trunc_normal_
from torch import nn

from ..layers import pad_to_multiple
from ..ops import relative_position_index, softmax_attention, window_attention
from ._base import TokenMixer, check_heads, register_mixer, split_prefix


@register_mixer("window")
class WindowMixer(TokenMixer):
    """Window attention.

    Args:
        dim: token width C.
        num_heads: heads.
        window_size: side of the square window.
        shift_size: cyclic shift (Swin's odd blocks use ``window_size // 2``); 0 for none.
        relative_position_bias: learn a ((2w-1)², heads) bias table (Swin); False gives L²ViT's LWA.
        qkv_bias: bias of the qkv projection.
    """

    complexity = "linear"

    def __init__(
            self,
            dim: int,
            num_heads: int = 8,
            *,
            window_size: int = 7,
            shift_size: int = 0,
            relative_position_bias: bool = True,
            qkv_bias: bool = True,
            proj_drop: float = 0.0,
    ):
        super().__init__()
        if window_size < 1 or not 0 <= shift_size < window_size:
            raise ValueError(f"need window_size >= 1 and 0 <= shift_size < window_size, got {window_size}, {shift_size}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = check_heads(dim, num_heads)
        self.window_size = window_size
        self.shift_size = shift_size
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        if relative_position_bias:
            self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
            trunc_normal_(self.relative_position_bias_table, std=0.02)
            self.register_buffer("relative_position_index", relative_position_index(window_size), persistent=False)
        else:
            self.relative_position_bias_table = None

    def _bias(self) -> torch.Tensor | None:
        if self.relative_position_bias_table is None:
            return None
        area = self.window_size ** 2
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(area, area, self.num_heads).permute(2, 0, 1)  # [heads, w², w²]

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        return t.view(t.shape[0], t.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def _qkv_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # unpacked by name: torch.fx cannot iterate a traced chunk() inside a generator
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self._heads(q), self._heads(k), self._heads(v)

    def forward(self, x: torch.Tensor, size: tuple[int, int], *, num_prefix_tokens: int = 0) -> torch.Tensor:
        self.check_tokens(x, size, num_prefix_tokens, self.dim)
        batch = x.shape[0]
        height, width = size
        window = self.window_size
        prefix, spatial = split_prefix(x, num_prefix_tokens)
        padded_h, padded_w = height + (-height) % window, width + (-width) % window
        grid = pad_to_multiple(spatial.view(batch, height, width, self.dim), window, channels_last=True)
        spatial = grid.flatten(1, 2)  # [B, Hp·Wp, C]
        q, k, v = self._qkv_heads(spatial)  # [B, heads, Hp·Wp, D]
        prefix_q = prefix_k = prefix_v = None
        if num_prefix_tokens:
            prefix_q, prefix_k, prefix_v = self._qkv_heads(prefix)
        out = window_attention(q, k, v, (padded_h, padded_w), window, self.shift_size, bias=self._bias(),
                               global_key=prefix_k, global_value=prefix_v)

        def crop(t: torch.Tensor) -> torch.Tensor:
            """[B, heads, Hp·Wp, D] -> [B, heads, H·W, D]; a view when nothing was padded."""
            return t.view(batch, self.num_heads, padded_h, padded_w, -1)[:, :, :height, :width].flatten(2, 3)

        out = crop(out)
        if num_prefix_tokens:
            # prefix tokens attend to themselves and every real (unpadded) spatial token
            keys, values = torch.cat([prefix_k, crop(k)], dim=2), torch.cat([prefix_v, crop(v)], dim=2)
            out = torch.cat([softmax_attention(prefix_q, keys, values), out], dim=2)
        out = out.transpose(1, 2).reshape(batch, -1, self.dim)
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:
        return f"window_size={self.window_size}, shift_size={self.shift_size}, " + super().extra_repr()
