"""Multi-scan decay recurrence: a baseline that scans the image grid in four directions.

Not a paper's model. It is the approach that LightNet ("You Only Scan Once", Qin et al., arXiv:2405.21022) argues
against, built so that LightNet's single scan can be benchmarked against it under one backbone: a causal linear
recurrence with a multiplicative decay only sees the tokens before the current one, so an image needs several
directional scans, as in Vision Mamba (Vim, arXiv:2401.09417; forward and backward) and VMamba (arXiv:2401.10166;
four cross-scan directions). Here each scan is RetNet's data-independent per-head decay (arXiv:2307.08621) instead
of a selective state space, via :func:`vitzoo.ops.decay_recurrence`. Written for vitzoo; no code was adapted.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import decay_recurrence
from ._base import TokenMixer, check_heads, register_mixer

__all__ = ["MultiScanMixer"]

# row-major forward, row-major backward, column-major forward, column-major backward
NUM_DIRECTIONS = 4


def _to_scan_orders(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Grid tokens [B, heads, H·W, d] (row-major) -> the four scan orders stacked as heads [B, 4·heads, H·W, d]."""
    height, width = size
    batch, heads, _, channels = x.shape
    columns = x.reshape(batch, heads, height, width, channels).transpose(2, 3).flatten(2, 3)
    return torch.cat([x, x.flip(2), columns, columns.flip(2)], dim=1)


def _from_scan_orders(y: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`_to_scan_orders` followed by the sum over directions: [B, 4·heads, H·W, d] -> row-major
    [B, heads, H·W, d]."""
    height, width = size
    rows, rows_back, columns, columns_back = y.chunk(NUM_DIRECTIONS, dim=1)
    batch, heads, _, channels = rows.shape
    columns = columns + columns_back.flip(2)
    columns = columns.reshape(batch, heads, width, height, channels).transpose(2, 3).flatten(2, 3)
    return rows + rows_back.flip(2) + columns


def _retnet_decays(num_heads: int) -> torch.Tensor:
    """RetNet's per-head decays λ_i = 1 − 2^(−5−i) (arXiv:2307.08621, §2.2): memories from ~32 tokens upward."""
    return 1 - 2.0 ** (-5 - torch.arange(num_heads, dtype=torch.float64))


@register_mixer("multiscan")
class MultiScanMixer(TokenMixer):
    """Four-direction decay-recurrence baseline (multi-scan, RetNet-style decay). Linear in tokens.

    Per head, with head width d:

        q = SiLU(x W_q) · d^−1/2,   k = SiLU(x W_k),   v = x W_v
        o^(r)_t = Σ_{s before or at t in scan r} λ_r^{dist_r(s, t)} (q_t·k_s) v_s      for the 4 scans r
        y = LayerNorm(Σ_r o^(r)) W_o

    The scans walk the H x W grid row-major forward, row-major backward, column-major forward and column-major
    backward (VMamba's cross-scan); a token sees the whole grid only through the union of the four scans, and
    tokens far from it along a scan fade as λ^distance. SiLU on q is LightNet's query map; on k it stands in for
    LightNet's softmax over all tokens, which a causal scan cannot compute. The 1/sqrt(d) is RetNet's scaling
    (there on k; the product is the same) and matters only through the LayerNorm's eps. There is no normaliser:
    as in RetNet, the LayerNorm rescales the sum. Each direction has its own learnable decay per head,
    λ = sigmoid(decay_logit) ∈ (0, 1).

    Prefix tokens (a cls token) are appended after the grid in every scan: each reads the decayed state of all
    grid tokens of that scan (and of the prefix tokens before it), summed over the four scans, like the last
    token that a recurrent model is read out from; they do not feed the grid tokens' states. Their output
    therefore weights most the grid tokens near where the scans end: the last and first rows and columns.

    The output depends on the token order: permuting the grid changes the result, unlike ``lightnet``.

    Args:
        dim: token width C.
        num_heads: heads; C must divide evenly.
        qkv_bias: bias of the fused q/k/v projection.
        decay_init: initial λ of every head and direction, in (0, 1); ``None`` is RetNet's schedule
            1 − 2^(−5−i) for head i (the same for the four directions).
        chunk_size: tokens per chunk of the parallel recurrence.
        norm_eps: eps of the LayerNorm over the merged heads.
        proj_drop: dropout after the output projection.
    """

    complexity = "linear"

    def __init__(
            self,
            dim: int,
            num_heads: int = 8,
            *,
            qkv_bias: bool = True,
            decay_init: Optional[float] = None,
            chunk_size: int = 64,
            norm_eps: float = 1e-5,
            proj_drop: float = 0.0,
    ):
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = check_heads(dim, num_heads)
        if decay_init is not None and not 0.0 < decay_init < 1.0:
            raise ValueError(f"decay_init must lie in (0, 1), got {decay_init}")
        self.chunk_size = chunk_size
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        if decay_init is None:
            decay = _retnet_decays(num_heads)
        else:
            decay = torch.full((num_heads,), decay_init, dtype=torch.float64)
        logit = torch.log(decay) - torch.log1p(-decay)
        # per-head decay logits of each scan direction in turn, the head order of _to_scan_orders; kept 1-D so
        # that timm's optimizer factory leaves them out of weight decay, like biases and norm weights
        self.decay_logit = nn.Parameter(logit.float().repeat(NUM_DIRECTIONS))
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def log_decay(self) -> torch.Tensor:
        """log λ of every direction and head [4·heads], direction-major (all < 0)."""
        return F.logsigmoid(self.decay_logit)

    def forward(self, x: torch.Tensor, size: tuple[int, int], *, num_prefix_tokens: int = 0) -> torch.Tensor:
        self.check_tokens(x, size, num_prefix_tokens, self.dim)
        batch, tokens, _ = x.shape
        height, width = size
        grid = height * width
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q = F.silu(q) * self.head_dim ** -0.5
        k = F.silu(k)
        # each scan: the grid in that direction's order, then the prefix tokens [B, 4·heads, H·W + P, d]
        q, k, v = (torch.cat([_to_scan_orders(t[:, :, num_prefix_tokens:], size),
                              t[:, :, :num_prefix_tokens].repeat(1, NUM_DIRECTIONS, 1, 1)], dim=2)
                   for t in (q, k, v))
        out = decay_recurrence(q, k, v, self.log_decay(), self.chunk_size)
        prefix = out[:, :, grid:].reshape(batch, NUM_DIRECTIONS, self.num_heads, num_prefix_tokens, self.head_dim)
        out = torch.cat([prefix.sum(dim=1), _from_scan_orders(out[:, :, :grid], size)], dim=2)
        out = out.transpose(1, 2).reshape(batch, tokens, self.dim)
        return self.proj_drop(self.proj(self.norm(out)))

    def extra_repr(self) -> str:
        return f"directions={NUM_DIRECTIONS}, chunk_size={self.chunk_size}, " + super().extra_repr()
