"""Rank-augmented linear attention (RALA) and the gated RoPE softmax attention of RAVLT's later stages.

Paper: Qihang Fan, Huaibo Huang, Ran He, "Breaking the Low-Rank Dilemma of Linear Attention",
CVPR 2025, arXiv:2411.07635. Origin: https://github.com/qhfan/RALA (no license file; re-implemented
from the paper's description and the reference notes, not copied).

Both mixers share one skeleton, :class:`GatedRopeAttention`, which MALA (``vitzoo.mixers.mala``)
reuses: one projection gives queries, keys, values and an output gate ``o``; a 5×5 depthwise LePE
runs on V in image layout; positions enter through 2-D RoPE (:func:`vitzoo.ops.rope_2d`); the result
is ``proj((attention + LePE(V)) * o)`` with no activation on the gate (the paper's output-feature
rank augmentation). Only the attention core differs:

- ``rala``: kernelised (φ = elu + 1) linear attention whose keys are re-weighted by
  α_j = softmax_j(d^-½ · mean_i φ(q_i) · φ(k_j)) (the KV-buffer rank augmentation); RoPE rotates the
  kernelised features in the numerator while the normaliser uses the unrotated ones. Linear in tokens.
- ``rala_softmax``: global softmax attention on RoPE-rotated q, k (RAVLT's stages 3 and 4, the
  official ``VanillaSelfAttention``). Quadratic in tokens.

Prefix tokens (a cls token in ``vzvit``) take part in attention as queries, keys and values, but have
no map position: RoPE leaves them unrotated and they get no LePE term.

The official mixers use 1×1 ``Conv2d`` layers for ``qkvo`` and ``proj`` on channels-first maps;
here they are ``nn.Linear`` on tokens (the same map), and the RAVLT checkpoint filter squeezes
official weights from [out, in, 1, 1] to [out, in].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import DepthwiseConv2d
from ..ops import get_feature_map, linear_attention, rope_2d, rope_2d_tables, softmax_attention
from ._base import TokenMixer, check_heads, register_mixer

__all__ = ["GatedRopeAttention", "RalaMixer", "RalaSoftmaxMixer"]


class GatedRopeAttention(TokenMixer):
    """The RAVLT/MAViT attention skeleton: ``qkvo`` projection, LePE on V, 2-D RoPE, output gate, ``proj``.

    Subclasses implement :meth:`attend`, the attention core on per-head tensors.

    Args:
        dim: token width C.
        num_heads: heads; the head width C / heads must be divisible by 4 (2-D RoPE).
        lepe_kernel: side of the depthwise LePE convolution on V.
        rope_base: frequency base of the 2-D RoPE.
        qkv_bias: bias of the ``qkvo`` projection.
        proj_drop: dropout after the output projection (the official code has none).
    """

    def __init__(
            self,
            dim: int,
            num_heads: int = 8,
            *,
            lepe_kernel: int = 5,
            rope_base: float = 10000.0,
            qkv_bias: bool = True,
            proj_drop: float = 0.0,
    ):
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = check_heads(dim, num_heads)
        if self.head_dim % 4:
            raise ValueError(f"2-D RoPE needs a head width divisible by 4; dim {dim} / {num_heads} heads "
                             f"= {self.head_dim}")
        self.scale = self.head_dim ** -0.5
        self.rope_base = rope_base
        self.qkvo = nn.Linear(dim, 4 * dim, bias=qkv_bias)
        self.lepe = DepthwiseConv2d(dim, lepe_kernel)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rotate) -> torch.Tensor:
        """The attention core.

        Args:
            q, k, v: per-head queries, keys, values [B, heads, N, D] (prefix tokens first).
            rotate: applies the 2-D RoPE of this map to a [B, heads, N, D] tensor (prefix tokens unrotated).

        Returns:
            [B, heads, N, D].
        """
        raise NotImplementedError

    def forward(self, x: torch.Tensor, size: tuple[int, int], *, num_prefix_tokens: int = 0) -> torch.Tensor:
        self.check_tokens(x, size, num_prefix_tokens, self.dim)
        batch, tokens, _ = x.shape
        q, k, v, gate = self.qkvo(x).chunk(4, dim=-1)  # each [B, N, C], channels head-major
        lepe = self.lepe.tokens(v[:, num_prefix_tokens:], size)  # [B, H·W, C]
        if num_prefix_tokens:
            lepe = F.pad(lepe, (0, 0, num_prefix_tokens, 0))
        q, k, v = (t.view(batch, tokens, self.num_heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
        tables = rope_2d_tables(size, self.head_dim, base=self.rope_base, device=x.device)

        def rotate(t: torch.Tensor) -> torch.Tensor:
            spatial = rope_2d(t[:, :, num_prefix_tokens:], size, base=self.rope_base, tables=tables)
            return torch.cat([t[:, :, :num_prefix_tokens], spatial], dim=2) if num_prefix_tokens else spatial

        out = self.attend(q, k, v, rotate).transpose(1, 2).reshape(batch, tokens, self.dim)
        return self.proj_drop(self.proj((out + lepe) * gate))

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_heads={self.num_heads}, lepe_kernel={self.lepe.kernel_size[0]}, "
                + super().extra_repr())


@register_mixer("rala")
class RalaMixer(GatedRopeAttention):
    """Rank-augmented linear attention (RALA), Fan et al., CVPR 2025, arXiv:2411.07635. Linear in tokens.

    Per head and query i, with φ = elu + 1, R_t the RoPE rotation of token t and
    α = softmax_j(d^-½ · mean_m φ(q_m) · φ(k_j)):

        y_i = Σ_j α_j (R_i φ(q_i))·(R_j φ(k_j)) v_j / (Σ_j α_j φ(q_i)·φ(k_j) + eps)

    Args:
        dim, num_heads, lepe_kernel, rope_base, qkv_bias, proj_drop: see :class:`GatedRopeAttention`.
        feature_map: kernel φ by name (``"elu"`` = elu + 1, the official choice).
        eps: added to the normaliser (the official 1e-6, on the α-weighted sum).
    """

    complexity = "linear"

    def __init__(self, dim: int, num_heads: int = 8, *, feature_map: str = "elu", eps: float = 1e-6, **kwargs):
        super().__init__(dim, num_heads, **kwargs)
        self.feature_map_name = feature_map
        self.feature_map = get_feature_map(feature_map)
        self.eps = eps

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rotate) -> torch.Tensor:
        q, k = self.feature_map(q), self.feature_map(k)
        tokens = k.shape[2]
        # KV-buffer rank augmentation: α over tokens from the mean query, per image and head
        alpha = (q.mean(dim=2, keepdim=True) @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)  # [B, heads, 1, N]
        # scaled by N so the means that linear_attention takes are the α-weighted sums
        k = k * alpha.transpose(-2, -1) * tokens
        denominator = q @ k.mean(dim=2, keepdim=True).transpose(-2, -1) + self.eps  # [B, heads, N, 1], no RoPE
        return linear_attention(rotate(q), rotate(k), v, normalize=False) / denominator

    def extra_repr(self) -> str:
        return f"feature_map={self.feature_map_name}, " + super().extra_repr()


@register_mixer("rala_softmax")
class RalaSoftmaxMixer(GatedRopeAttention):
    """Global softmax attention with 2-D RoPE, LePE and the output gate: stages 3-4 of RAVLT and MAViT.

    ``softmax_j(d^-½ (R_i q_i)·(R_j k_j)) v_j`` over all tokens (the official ``VanillaSelfAttention``),
    computed with SDPA. Quadratic in tokens.

    Args:
        dim, num_heads, lepe_kernel, rope_base, qkv_bias, proj_drop: see :class:`GatedRopeAttention`.
    """

    complexity = "quadratic"

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rotate) -> torch.Tensor:
        return softmax_attention(rotate(q), rotate(k), v, scale=self.scale)
