"""Injective linear attention (InLine) with its local residual.

Han et al., "Bridging the Divide: Reconsidering Softmax and Linear Attention", NeurIPS 2024,
arXiv:2412.06590. Origin: https://github.com/LeapLabTHU/InLine (no license file; re-implemented,
not copied).

Per head, with s = head_dim ** -0.5 and n the tokens of one call (the whole map, or one window),
the injective normalisation of the paper's Eq. (5) gives every query weights that sum to one:

    g_i = Σ_j ((s·q_i·k_j − s·q_i·mean_j k_j + 1) / n) v_j
        = (1/n) Σ_j (s·q_i·k_j) v_j + (1 − s·q_i·mean_j k_j) · mean_j v_j

The first term is the unnormalised mean-scaled linear attention of :mod:`vitzoo.ops`, so the cost is
linear in tokens; φ is the identity as in every official configuration, and there is no eps because
there is no division. The local residual adds a 3×3 depthwise convolution of V whose kernels are
generated per sample from the mean token by two head-grouped 1×1 convolutions (``residual``).
InLine-CSwin also adds LePE, a learned depthwise 3×3 convolution of V (``lepe=True``).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function
from torch import nn

from ..layers import DepthwiseConv2d, GroupedPointwiseConv1d
from ..ops import injective_linear_attention, window_partition, window_reverse
from ._base import TokenMixer, check_heads, register_mixer, split_prefix

__all__ = ["InLineMixer", "injective_linear_attention", "dynamic_depthwise_conv"]


def dynamic_depthwise_conv(image: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """A 3×3 depthwise cross-correlation with zero padding and a different kernel per sample.

    Args:
        image: [B, C, H, W].
        kernels: [B, C, 3, 3].
    """
    batch, channels, height, width = image.shape
    out = F.conv2d(image.reshape(1, batch * channels, height, width), kernels.reshape(batch * channels, 1, 3, 3),
                   padding=1, groups=batch * channels)
    return out.view(batch, channels, height, width)


@register_mixer("inline")
class InLineMixer(TokenMixer):
    """Injective linear attention plus the dynamic 3×3 local residual of V.

    Prefix tokens (a cls token) take part in every sum and mean of the call, as in InLine-DeiT, but
    get no local residual (they have no place on the map). In windowed mode the prefix tokens join
    every window and themselves attend to all tokens.

    Args:
        dim: token width C.
        num_heads: heads; C must divide evenly.
        window_size: None attends over the whole map (every official configuration). An int splits
            the map into square windows (InLine-Swin with a window smaller than the map); the map is
            padded with zero tokens to a multiple of the window, as Swin pads.
        shift_size: cyclic shift of the windows (Swin's odd blocks). Like the official code, InLine
            uses no shift mask: tokens wrapped around from the opposite border interact.
        lepe: add LePE, a learned depthwise 3×3 convolution of V (InLine-CSwin).
        norm_layer: normalise inside the mixer. The mixer then receives the block's raw input, and the
            kernel generator reads the mean of that raw input, as InLine-CSwin does.
        qkv_bias: bias of the qkv projection.
        proj_drop: dropout after the output projection.
    """

    complexity = "linear"

    def __init__(
            self,
            dim: int,
            num_heads: int = 8,
            *,
            window_size: Optional[int] = None,
            shift_size: int = 0,
            lepe: bool = False,
            norm_layer: Optional[Callable[[int], nn.Module]] = None,
            qkv_bias: bool = True,
            proj_drop: float = 0.0,
    ):
        super().__init__()
        if window_size is None and shift_size:
            raise ValueError(f"shift_size={shift_size} needs a window_size")
        if window_size is not None and (window_size < 1 or not 0 <= shift_size < window_size):
            raise ValueError(
                f"need window_size >= 1 and 0 <= shift_size < window_size, got {window_size}, {shift_size}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = check_heads(dim, num_heads)
        self.scale = self.head_dim ** -0.5
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm = norm_layer(dim) if norm_layer is not None else nn.Identity()
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        # kernel generator: head g's 9·D kernel values depend only on head g's D mean channels
        self.residual = nn.Sequential(
            GroupedPointwiseConv1d(dim, dim, groups=num_heads),
            nn.GELU(),
            GroupedPointwiseConv1d(dim, dim * 9, groups=num_heads),
        )
        self.lepe = DepthwiseConv2d(dim, 3) if lepe else None
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        return t.view(t.shape[0], t.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = self.qkv(self.norm(x)).chunk(3, dim=-1)
        return self._heads(q), self._heads(k), self._heads(v)

    def attend(
            self,
            query: torch.Tensor,
            key: torch.Tensor,
            value: torch.Tensor,
            mean_token: torch.Tensor,
            size: tuple[int, int],
            num_prefix_tokens: int = 0,
    ) -> torch.Tensor:
        """InLine on projected heads, before the output projection.

        Args:
            query, key, value: [B, heads, P + H·W, D], prefix tokens first.
            mean_token: the mean of the call's input tokens [B, C], which drives the kernel generator.
            size: (H, W) of the spatial tokens.

        Returns:
            [B, P + H·W, C].
        """
        batch, _, tokens, _ = value.shape
        out = injective_linear_attention(query, key, value, scale=self.scale)
        out = out.transpose(1, 2).reshape(batch, tokens, self.dim)
        kernels = self.residual(mean_token.unsqueeze(-1)).view(batch, self.dim, 3, 3)
        height, width = size
        v_map = value[:, :, num_prefix_tokens:].transpose(-2, -1).reshape(batch, self.dim, height, width)
        local = dynamic_depthwise_conv(v_map, kernels)
        if self.lepe is not None:
            local = local + self.lepe(v_map)
        local = local.flatten(2).transpose(1, 2)  # [B, H·W, C]
        if num_prefix_tokens:
            return torch.cat([out[:, :num_prefix_tokens], out[:, num_prefix_tokens:] + local], dim=1)
        return out + local

    def _mix(self, x: torch.Tensor, size: tuple[int, int], num_prefix_tokens: int) -> torch.Tensor:
        q, k, v = self._project(x)
        return self.attend(q, k, v, x.mean(dim=1), size, num_prefix_tokens)

    def _mix_windows(self, x: torch.Tensor, size: tuple[int, int], num_prefix_tokens: int) -> torch.Tensor:
        batch = x.shape[0]
        height, width = size
        window, shift = self.window_size, self.shift_size
        prefix, spatial = split_prefix(x, num_prefix_tokens)
        padded_h, padded_w = height + (-height) % window, width + (-width) % window
        grid = F.pad(spatial.view(batch, height, width, self.dim), (0, 0, 0, padded_w - width, 0, padded_h - height))
        if shift:
            grid = torch.roll(grid, shifts=(-shift, -shift), dims=(1, 2))
        windows = window_partition(grid, window)  # [B·nW, w², C]
        num_windows = windows.shape[0] // batch
        if num_prefix_tokens:
            windows = torch.cat([prefix.repeat_interleave(num_windows, dim=0), windows], dim=1)
        out = self._mix(windows, (window, window), num_prefix_tokens)[:, num_prefix_tokens:]
        grid = window_reverse(out, window, padded_h, padded_w)
        if shift:
            grid = torch.roll(grid, shifts=(shift, shift), dims=(1, 2))
        out = grid[:, :height, :width].reshape(batch, height * width, self.dim)
        if num_prefix_tokens:
            # the prefix tokens attend to themselves and every real (unpadded) spatial token
            q, k, v = self._project(x)
            prefix_out = injective_linear_attention(q[:, :, :num_prefix_tokens], k, v, scale=self.scale)
            out = torch.cat([prefix_out.transpose(1, 2).reshape(batch, num_prefix_tokens, self.dim), out], dim=1)
        return out

    def forward(self, x: torch.Tensor, size: tuple[int, int], *, num_prefix_tokens: int = 0) -> torch.Tensor:
        self.check_tokens(x, size, num_prefix_tokens, self.dim)
        if self.window_size is None:
            out = self._mix(x, size, num_prefix_tokens)
        else:
            out = self._mix_windows(x, size, num_prefix_tokens)
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:
        window = "global"
        if self.window_size is not None:
            window = f"window_size={self.window_size}, shift_size={self.shift_size}"
        return f"{window}, lepe={self.lepe is not None}, " + super().extra_repr()
