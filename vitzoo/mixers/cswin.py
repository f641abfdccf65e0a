"""Cross-shaped window (stripe) softmax attention with LePE, the softmax mixer of CSWin Transformer.

Dong et al., "CSWin Transformer: A General Vision Transformer Backbone with Cross-Shaped Windows",
CVPR 2022, arXiv:2107.00652. Origin: https://github.com/microsoft/CSWin-Transformer (MIT), as used
by InLine-CSwin (https://github.com/LeapLabTHU/InLine); re-implemented, not copied.

The channels split into two branches with half the heads each: branch 0 attends within vertical
stripes (full height × ``split_size`` columns), branch 1 within horizontal stripes (``split_size``
rows × full width). A single branch attends over the whole map (CSWin's last stage, or a stripe as
wide as the map). Each branch adds LePE, a depthwise 3×3 convolution of V computed inside each stripe
with zero padding at the stripe borders. Cost: O(N·√N) per branch, quadratic in the last stage.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function
from torch import nn

from ..layers import DepthwiseConv2d
from ..ops import softmax_attention
from ._base import TokenMixer, check_heads, register_mixer, split_prefix

__all__ = ["CSwinMixer"]


def _to_stripes(image: torch.Tensor, stripe: tuple[int, int]) -> torch.Tensor:
    """[B, C, H, W] -> [B·nS, C, h, w] for stripes (h, w) that tile the map, row-major."""
    batch, channels, height, width = image.shape
    h, w = stripe
    image = image.view(batch, channels, height // h, h, width // w, w)
    return image.permute(0, 2, 4, 1, 3, 5).reshape(-1, channels, h, w)


def _from_stripes(stripes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[B·nS, C, h, w] -> [B, C, H, W], the inverse of :func:`_to_stripes`."""
    _, channels, h, w = stripes.shape
    height, width = size
    image = stripes.view(-1, height // h, width // w, channels, h, w)
    return image.permute(0, 3, 1, 4, 2, 5).reshape(-1, channels, height, width)


@register_notrace_function
@torch.fx.wrap
def _stripe_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, size: tuple[int, int],
                      stripe: tuple[int, int], batch: int) -> torch.Tensor:
    """Softmax attention within stripes of the zero-padded map, padded keys masked out.

    Args:
        q: [B·nS, heads, h·w, D]; k, v: [B·nS, heads, P + h·w, D] with P prefix keys first.
        size: (H, W) of the map before padding; stripe: (h, w); batch: B.

    An FX leaf: whether there is a padding mask at all depends on the size.
    """
    height, width = size
    stripe_h, stripe_w = stripe
    pad_h, pad_w = (-height) % stripe_h, (-width) % stripe_w
    bias = None
    if pad_h or pad_w:
        valid = torch.zeros(1, 1, height + pad_h, width + pad_w, dtype=torch.bool, device=q.device)
        valid[..., :height, :width] = True
        valid = _to_stripes(valid, stripe).flatten(1).repeat(batch, 1)  # [B·nS, h·w]
        bias = torch.zeros(valid.shape, device=q.device).masked_fill(~valid, float("-inf"))[:, None, None]
        num_prefix_keys = k.shape[2] - q.shape[2]
        if num_prefix_keys:
            bias = torch.cat([bias.new_zeros(*bias.shape[:-1], num_prefix_keys), bias], dim=-1)
    return softmax_attention(q, k, v, bias=bias)


@register_mixer("cswin")
class CSwinMixer(TokenMixer):
    """Two-branch stripe attention with LePE (or one branch over the whole map).

    Maps that are not a multiple of ``split_size`` along the stripe axis are padded with zero q/k/v;
    padded keys are masked out, so a border stripe behaves like a narrower stripe (the official
    classification code only runs at its training size). Prefix tokens (a cls token) attend to all
    tokens and every stripe also attends to them; they get no LePE.

    Args:
        dim: token width C.
        num_heads: heads, split evenly between the branches.
        split_size: stripe width.
        num_branches: 2 (cross-shaped stripes) or 1 (global attention over the map).
        qkv_bias: bias of the qkv projection.
        proj_drop: dropout after the output projection.
    """

    complexity = "quadratic"

    def __init__(
            self,
            dim: int,
            num_heads: int = 8,
            *,
            split_size: int = 7,
            num_branches: int = 2,
            qkv_bias: bool = True,
            proj_drop: float = 0.0,
    ):
        super().__init__()
        if num_branches not in (1, 2):
            raise ValueError(f"num_branches must be 1 or 2, got {num_branches}")
        if num_heads % num_branches:
            raise ValueError(f"{num_heads} heads do not split into {num_branches} branches")
        if split_size < 1:
            raise ValueError(f"split_size must be >= 1, got {split_size}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = check_heads(dim, num_heads)
        self.split_size = split_size
        self.num_branches = num_branches
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.lepe = nn.ModuleList([DepthwiseConv2d(dim // num_branches, 3) for _ in range(num_branches)])
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        """[B, N, C] -> [B, heads, N, D] over all heads."""
        return t.reshape(t.shape[0], -1, self.num_heads, self.head_dim).transpose(1, 2)

    def _stripe_shape(self, branch: int, size: tuple[int, int]) -> tuple[int, int]:
        height, width = size
        if self.num_branches == 1:
            return height, width
        return (height, self.split_size) if branch == 0 else (self.split_size, width)

    def _branch(
            self,
            branch: int,
            q: torch.Tensor,
            k: torch.Tensor,
            v: torch.Tensor,
            size: tuple[int, int],
            prefix_kv: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> torch.Tensor:
        """One branch on its channel share: q, k, v maps [B, Cb, H, W] -> [B, Cb, H, W]."""
        batch, channels, height, width = q.shape
        heads = self.num_heads // self.num_branches
        stripe = self._stripe_shape(branch, size)
        pad_h, pad_w = (-height) % stripe[0], (-width) % stripe[1]
        padded = (height + pad_h, width + pad_w)
        q, k, v = (F.pad(t, (0, pad_w, 0, pad_h)) for t in (q, k, v))
        stripes = [_to_stripes(t, stripe) for t in (q, k, v)]  # [B·nS, Cb, h, w]
        lepe = self.lepe[branch](stripes[2])
        # [B·nS, heads, h·w, D]
        q, k, v = (t.reshape(t.shape[0], heads, self.head_dim, -1).transpose(-2, -1) for t in stripes)
        if prefix_kv is not None:
            num_stripes = q.shape[0] // batch
            prefix_k, prefix_v = (t.repeat_interleave(num_stripes, dim=0) for t in prefix_kv)
            k, v = torch.cat([prefix_k, k], dim=2), torch.cat([prefix_v, v], dim=2)
        out = _stripe_attention(q, k, v, size, stripe, batch)  # [B·nS, heads, h·w, D]
        out = out.transpose(-2, -1).reshape(lepe.shape) + lepe
        return _from_stripes(out, padded)[..., :height, :width]

    def forward(self, x: torch.Tensor, size: tuple[int, int], *, num_prefix_tokens: int = 0) -> torch.Tensor:
        self.check_tokens(x, size, num_prefix_tokens, self.dim)
        batch = x.shape[0]
        height, width = size
        qkv = self.qkv(x)
        prefix, spatial = split_prefix(qkv, num_prefix_tokens)
        spatial = spatial.transpose(1, 2).reshape(batch, 3, self.dim, height, width)
        share = self.dim // self.num_branches
        heads = self.num_heads // self.num_branches
        outputs = []
        for branch in range(self.num_branches):
            channels = slice(branch * share, (branch + 1) * share)
            q, k, v = spatial[:, 0, channels], spatial[:, 1, channels], spatial[:, 2, channels]
            prefix_kv = None
            if num_prefix_tokens:
                prefix_k, prefix_v = prefix[..., self.dim:2 * self.dim], prefix[..., 2 * self.dim:]
                prefix_kv = tuple(
                    t[..., channels].reshape(batch, num_prefix_tokens, heads, self.head_dim).transpose(1, 2)
                    for t in (prefix_k, prefix_v))
            outputs.append(self._branch(branch, q, k, v, size, prefix_kv))
        out = torch.cat(outputs, dim=1).flatten(2).transpose(1, 2)  # [B, H·W, C]
        if num_prefix_tokens:
            # prefix tokens attend to themselves and every spatial token, in every head
            q, k, v = qkv.chunk(3, dim=-1)
            q, k, v = self._heads(q), self._heads(k), self._heads(v)
            prefix_out = softmax_attention(q[:, :, :num_prefix_tokens], k, v)
            out = torch.cat([prefix_out.transpose(1, 2).reshape(batch, num_prefix_tokens, self.dim), out], dim=1)
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:
        return f"split_size={self.split_size}, num_branches={self.num_branches}, " + super().extra_repr()
