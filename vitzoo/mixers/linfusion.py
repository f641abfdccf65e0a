"""LinFusion's generalized linear attention as a vitzoo token mixer.

Paper: "LinFusion: 1 GPU, 1 Minute, 16K Image", Liu, Yu, Tan and Wang, arXiv:2409.02097.
Origin: https://github.com/Huage001/LinFusion (``src/linfusion/attention.py`` at 62ef289; the
repository has no license file). Re-implemented from the paper and ``shared/specs/linfusion.md``,
not copied.

The same module serves two callers: a vitzoo block calls ``mixer(x, (H, W))`` with the token
contract, and :class:`vitzoo.diffusion.linfusion.LinFusionAttnProcessor` calls :meth:`attend` from
inside a diffusers ``Attention`` (where the map size is not known and not needed).
"""

from __future__ import annotations

from typing import Optional

import torch
from timm.layers import register_notrace_function
from torch import nn

from ..ops import get_feature_map, linear_attention
from ._base import TokenMixer, check_heads, register_mixer

__all__ = ["LinFusionMixer"]


def _residual_mlp(dim: int, mid_dim: Optional[int]) -> nn.Module:
    """The low-rank non-linear branch applied before ``to_q`` / ``to_k``: Linear -> LayerNorm -> LeakyReLU -> Linear.

    Indices 0, 1, 3 hold the parameters, as in the official checkpoints (``to_q_.0.weight``, ...).
    ``mid_dim=-1`` gives the official "no MLP" variant, an identity (so the projection sees 2x).
    """
    if mid_dim == -1:
        return nn.Identity()
    hidden = mid_dim or dim
    return nn.Sequential(nn.Linear(dim, hidden), nn.LayerNorm(hidden, eps=1e-5),
                         nn.LeakyReLU(negative_slope=0.01), nn.Linear(hidden, dim))


@register_notrace_function
@torch.fx.node.has_side_effect
@torch.fx.wrap
def _check_attend_inputs(hidden_states: torch.Tensor, context: Optional[torch.Tensor],
                         key_weights: Optional[torch.Tensor], dim: int) -> None:
    """The shape checks of :meth:`LinFusionMixer.attend`, an FX leaf so that the method traces."""
    if hidden_states.dim() != 3 or hidden_states.shape[-1] != dim:
        raise ValueError(f"LinFusion mixer built for {dim} channels expects tokens [B, N, {dim}], "
                         f"got {tuple(hidden_states.shape)}")
    context = hidden_states if context is None else context
    if context.dim() != 3 or context.shape[0] != hidden_states.shape[0] or context.shape[-1] != dim:
        raise ValueError(f"context must be [B={hidden_states.shape[0]}, Nk, {dim}] "
                         f"(to_k_/to_k act on it), got {tuple(context.shape)}")
    if key_weights is not None and key_weights.shape != (hidden_states.shape[0], context.shape[1]):
        raise ValueError(f"key_weights must be [B, Nk] = {(hidden_states.shape[0], context.shape[1])}, "
                         f"got {tuple(key_weights.shape)}")


@register_mixer("linfusion")
class LinFusionMixer(TokenMixer):
    """Generalized linear attention (LinFusion), non-causal and normalised.

    With φ(u) = elu(u) + 1 and per head (spec §1)::

        Q = (X + MLP_q(X)) W_q,   K = (X + MLP_k(X)) W_k,   V = X W_v
        o_i = φ(q_i) [(1/N) Σ_j φ(k_j)ᵀ v_j] / (φ(q_i) · mean_j φ(k_j) + eps)

    so every row of the implicit attention matrix sums to one at any resolution (the property the
    paper credits for zero-shot cross-resolution generation). There is no 1/√d scale, no softmax and
    no positional term. Prefix tokens (a cls token) therefore simply join the token set: they attend
    to and are attended by every token like any other.

    Parameter names follow the official checkpoints (``to_q``, ``to_k``, ``to_v`` without bias,
    ``to_out.0`` with bias, ``to_q_.{0,1,3}`` and ``to_k_.{0,1,3}``), and the submodules are created
    in the official order, so a seeded construction draws the same initial weights.

    Args:
        dim: token width C.
        num_heads: heads; C must divide evenly.
        mid_dim: width M of the MLP branch (``projection_mid_dim``): None for M = C (SD-1.5, SD-2.1),
            C/16 for SD-XL; -1 for no branch (the official code then feeds 2x to the projections).
        eps: added to the normaliser after the mean (not to a sum).
        proj_drop: dropout after ``to_out`` (0 in every released model).
    """

    complexity = "linear"

    def __init__(self, dim: int, num_heads: int = 8, *, mid_dim: Optional[int] = None, eps: float = 1e-4,
                 proj_drop: float = 0.0):
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = check_heads(dim, num_heads)
        self.mid_dim = mid_dim
        self.eps = eps
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(proj_drop))
        self.to_q_ = _residual_mlp(dim, mid_dim)
        self.to_k_ = _residual_mlp(dim, mid_dim)
        self.feature_map = get_feature_map("elu")

    def forward(self, x: torch.Tensor, size: tuple[int, int], *, num_prefix_tokens: int = 0) -> torch.Tensor:
        self.check_tokens(x, size, num_prefix_tokens, self.dim)
        return self.attend(x)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, N, C] -> [B, heads, N, d]; head j holds channels [j·d, (j+1)·d)."""
        return x.view(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def attend(self, hidden_states: torch.Tensor, context: Optional[torch.Tensor] = None, *,
               key_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The mixer without the map-size contract.

        Args:
            hidden_states: query tokens [B, Nq, C].
            context: key/value tokens [B, Nk, C]; None for self-attention (every LinFusion UNet).
            key_weights: optional per-key weights [B, Nk] that multiply φ(k_j) (1 keeps a key, 0 drops
                it), the linear-attention form of a key mask.

        Returns:
            tokens [B, Nq, C].
        """
        _check_attend_inputs(hidden_states, context, key_weights, self.dim)
        cross_attention = context is not None
        context = hidden_states if context is None else context
        batch, queries, _ = hidden_states.shape
        query = self.feature_map(self._heads(self.to_q(hidden_states + self.to_q_(hidden_states))))
        key = self.feature_map(self._heads(self.to_k(context + self.to_k_(context))))
        value = self._heads(self.to_v(context))
        if key_weights is not None:
            key = key * key_weights[:, None, :, None].to(key.dtype)
        out = linear_attention(query, key, value, eps=self.eps)  # [B, heads, Nq, d]
        if cross_attention:
            # The official module scales KV by 1/N with N the QUERY length (the mean over φ(K) runs over
            # the keys); kept for parity. It only matters for cross-attention, which LinFusion UNets never use
            # (for equal lengths the factor is exactly 1).
            out = out * (context.shape[1] / queries)
        out = out.transpose(1, 2).reshape(batch, queries, self.dim)
        return self.to_out(out)

    def extra_repr(self) -> str:
        own = f"dim={self.dim}, num_heads={self.num_heads}, mid_dim={self.mid_dim}, eps={self.eps}"
        return f"{own}, {super().extra_repr()}"

