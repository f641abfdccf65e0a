"""LightNet attention (LNA): linear attention whose keys are a softmax over tokens, so one scan is global.

Paper: "You Only Scan Once: Efficient Multi-dimension Sequential Modeling with LightNet", Qin et al.,
arXiv:2405.21022. The official repository (https://github.com/OpenNLPLab/LightNet) could not be obtained; both
layouts follow the first author's own code (``../shared/specs/lightnet.md`` §3 and §9), re-implemented, not copied:

- non-causal (images, the default): the layout of ``Doraemonzzz/notes`` ``script/lightnet_compile/test.py``
  (spec §9): q = SiLU(x Wq), k = softmax over all tokens per key channel, o = q (kᵀ v), LayerNorm, times a low-rank
  sigmoid gate of the mixer's input, output projection. The additive recurrence gives this state in one scan
  whatever the token order (:func:`vitzoo.ops.lightnet_attention`).
- causal: ``LightNetAttention`` of ``Doraemonzzz/xmixers`` (commit a3e8681, spec §3) with its 1-D cosine LRPE
  (``lrpe_type=4``), the virtual zero token of its log-sum-exp, the gate before its RMSNorm; it reproduces the golden
  ``mixer_lightnet_attention_causal``.

MD-LRPE (the paper's 2-D relative encoding on q and k, spec §1 and §4.2) is an option of the non-causal layout
(``use_lrpe=True``), off by default: neither non-causal author code of spec §9 has it, and the spec leaves it on
only where a model's config says so. It acts where the causal author code puts its 1-D LRPE (spec §3): on q and
on the key side after the softmax over tokens.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.fuse import merge_linears
from ..layers.lightnet_pe import MdLrpeCosine
from ..ops import additive_recurrence, lightnet_attention
from ._base import TokenMixer, check_heads, register_mixer

__all__ = ["LightNetMixer"]


@register_mixer("lightnet")
class LightNetMixer(TokenMixer):
    """LightNet attention, Qin et al., arXiv:2405.21022. Linear in tokens.

    Non-causal (default), per head with head width d and all N = prefix + H·W tokens:

        o = SiLU(q) · Σ_s softmax_s(k)ᵀ v_s,   y = (LayerNorm(o) ⊙ σ(x W_u1 W_u2)) W_o

    Prefix tokens take part in the global state like every other token, and without ``use_lrpe`` the output does
    not depend on the token order (there is no positional term), so ``size`` is only checked.

    With ``use_lrpe=True`` (non-causal only) the cosine MD-LRPE of :func:`vitzoo.layers.lightnet_pe.md_lrpe_cosine`
    over the H x W grid acts on q and on the softmax-normalised keys, as the causal author code orders LRPE and the
    key normalisation (spec §3: LRPE after the key activation, as also in xopes' ``flao_al_non_causal``):

        o_t = LRPE(q_t) · Σ_s LRPE(softmax_s(k))_sᵀ v_s
            = Σ_s Σ_j q_tj softmax_s(k)_sj cos((p_t − p_s)·θ_j) v_s

    LRPE(u) = [u cos(angle), u sin(angle)] doubles the key width, so the per-head state is [2d, d] instead of
    [d, d]; v and the output keep width d. In the additive recurrence (k ≡ 1, g = key) this is the key
    [cos(angle_s), sin(angle_s)] with gate logits (k_s, k_s): still one softmax over all tokens, now a linear
    attention whose q·k similarity depends on the per-axis position differences. Prefix tokens have angle 0
    (they become [u, 0]), so they carry no position. The frequencies are the persistent buffer ``lrpe.theta``
    [1, e] of :class:`vitzoo.layers.lightnet_pe.MdLrpeCosine` (θ_j = lrpe_base^(−2j/e) per axis, e = ceil(d/2);
    the official vision initialisation is unknown, spec §4.2). With LRPE the output depends on token positions:
    permuting tokens no longer just permutes the output. No virtual zero token is added (the notes' softmax has
    none; whether the official vision code keeps the causal "1 +" is unverified, spec §3).

    With ``causal=True`` it is the first author's causal mixer exactly (xmixers ``LightNetAttention(D, h,
    lrpe_type=4, bias=False)``): keys are a softmax over the prefix s ≤ t plus a virtual token of logit 0 and value
    0, q and the key side carry the 1-D cosine LRPE of their position t (angles t·θ_j, θ_j = base^(-2j/d), j < d),
    and y = (RMSNorm(o ⊙ σ(x W_u1 W_u2))) W_o with the author's RMSNorm sqrt(D)·u/sqrt(Σu² + eps)·w. The N tokens
    (prefix included) are a 1-D sequence at positions 0..N-1; ``size`` is only checked. Both layouts encode positions
    with the one cosine LRPE of :mod:`vitzoo.layers.lightnet_pe` (one axis of N positions causal, the H x W grid
    non-causal); its frequencies are the persistent buffer ``lrpe.theta``, so the author's causal state dict
    (which carries ``lrpe.theta`` [1, d]) loads as it is.

    Choices the spec leaves open, each an argument (the model card records what a model uses):

    Args:
        dim: token width D.
        num_heads: heads; D must divide evenly (head width d = D / num_heads).
        causal: the causal 1-D language-model mixer instead of the image layout.
        bias: biases of the q/k/v/output projections and of the gate. ``None`` takes each layout's source:
            True non-causal (the notes' ``bias=True``; the xgeners copy uses False), False causal (xmixers).
        gate_rank: inner width of the low-rank gate W_u1 (D -> r), W_u2 (r -> D); ``None`` is the head width d, as
            in both author codes.
        norm_eps: eps of the LayerNorm (non-causal; torch's default, the notes do not set one) or of the author's
            RMSNorm (causal; 1e-5 on Σu², as in xopes).
        scale: non-causal only: scale q and kᵀv by 1/sqrt(d) each, as the xgeners copy does; the notes do not
            scale. It changes the output only through the LayerNorm's eps.
        use_lrpe: the relative positional encoding on q and k. ``None`` takes each layout's source: off
            non-causal (the notes and xgeners have none; ``True`` adds the 2-D MD-LRPE described above), on causal
            (xmixers' 1-D cosine LRPE, always present; ``False`` is rejected there).
        lrpe_base: base of the LRPE frequencies: the 1-D table of the causal mixer (xmixers' ``base``) or the
            per-axis MD-LRPE table of the non-causal mixer with ``use_lrpe=True``.
        proj_drop: dropout after the output projection.
    """

    complexity = "linear"

    def __init__(
            self,
            dim: int,
            num_heads: int = 8,
            *,
            causal: bool = False,
            bias: Optional[bool] = None,
            gate_rank: Optional[int] = None,
            norm_eps: float = 1e-5,
            scale: bool = False,
            use_lrpe: Optional[bool] = None,
            lrpe_base: float = 10000.0,
            proj_drop: float = 0.0,
    ):
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = check_heads(dim, num_heads)
        if causal and scale:
            raise ValueError("scale=True is the non-causal xgeners variant; the causal mixer has no such scaling")
        if causal and use_lrpe is False:
            raise ValueError("use_lrpe=False: the causal mixer is xmixers' LightNetAttention, which always carries "
                             "its 1-D LRPE")
        self.causal = causal
        self.use_lrpe = causal if use_lrpe is None else use_lrpe
        self.bias = not causal if bias is None else bias
        self.scale = scale
        self.lrpe_base = lrpe_base
        gate_rank = self.head_dim if gate_rank is None else gate_rank
        # Separate q/k/v projections, named as in xmixers; the notes' fused to_qkv is the same map.
        self.q_proj = nn.Linear(dim, dim, bias=self.bias)
        self.k_proj = nn.Linear(dim, dim, bias=self.bias)
        self.v_proj = nn.Linear(dim, dim, bias=self.bias)
        self.output_gate = nn.Sequential(nn.Linear(dim, gate_rank, bias=self.bias),
                                         nn.Linear(gate_rank, dim, bias=self.bias))
        if causal:
            # xopes' sqrt(D)·u / sqrt(Σu² + eps) equals u / sqrt(mean u² + eps / D): torch's RMSNorm with eps / D.
            self.norm = nn.RMSNorm(dim, eps=norm_eps / dim)
        else:
            self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.o_proj = nn.Linear(dim, dim, bias=self.bias)
        # one LRPE module for both layouts: 1 axis (the token sequence) causal, 2 axes (the grid) non-causal; for one
        # axis its table base^(-2j/d) is xmixers' fixed causal table
        self.lrpe = MdLrpeCosine(self.head_dim, 1 if causal else 2, base=lrpe_base) if self.use_lrpe else None
        self.proj_drop = nn.Dropout(proj_drop)
        # set by fuse(): q, k, v and the gate's first projection as one Linear
        self.in_proj: Optional[nn.Linear] = None

    def fuse(self) -> "LightNetMixer":
        """Inference (timm's ``fuse()`` convention): q, k, v and the gate's first projection all read x, so they
        become one Linear (one matrix product); the outputs are unchanged."""
        if self.in_proj is None:
            self.in_proj = merge_linears(self.q_proj, self.k_proj, self.v_proj, self.output_gate[0])
            self.q_proj = self.k_proj = self.v_proj = None
            self.output_gate[0] = nn.Identity()
        return self

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """q, k, v [B, N, C] and the gate's low-rank hidden [B, N, r], from the separate or the merged projections."""
        if self.in_proj is None:
            return self.q_proj(x), self.k_proj(x), self.v_proj(x), self.output_gate[0](x)
        return self.in_proj(x).split([self.dim, self.dim, self.dim, self.output_gate[1].in_features], dim=-1)

    def forward(self, x: torch.Tensor, size: tuple[int, int], *, num_prefix_tokens: int = 0) -> torch.Tensor:
        self.check_tokens(x, size, num_prefix_tokens, self.dim)
        batch, tokens, _ = x.shape
        q, k, v, hidden = self._project(x)
        q, k, v = (t.reshape(batch, tokens, self.num_heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
        q = F.silu(q)
        gate = torch.sigmoid(self.output_gate[1](hidden))
        if self.scale:
            # xgeners scales q and kᵀv by d^-1/2 each; the op is linear in q, so one factor 1/d does both.
            q = q / self.head_dim
        if self.lrpe is None:
            out = lightnet_attention(q, k, v, causal=False)
        else:
            # the causal mixer reads the N tokens (prefix included) as positions 0..N-1 of one axis
            positions, prefix = ((tokens,), 0) if self.causal else (size, num_prefix_tokens)
            # LRPE(softmax(k)) = softmax(k, k) ⊙ [cos, sin]: the positional key of the additive recurrence
            query = self.lrpe(q, positions, num_prefix_tokens=prefix)  # [B, heads, N, 2d]
            key = self.lrpe(torch.ones_like(k), positions, num_prefix_tokens=prefix)
            logits = torch.cat([k, k], dim=-1)
            if self.causal:
                # xmixers' "1 +" in the log-sum-exp: a leading token of logit 0 and value 0, its output dropped
                query, key, logits, v = (F.pad(t, (0, 0, 1, 0)) for t in (query, key, logits, v))
                out = additive_recurrence(query, key, v, logits, causal=True)[:, :, 1:]
            else:
                out = additive_recurrence(query, key, v, logits, causal=False)
        out = out.transpose(1, 2).reshape(batch, tokens, self.dim)
        # xmixers gates before its RMSNorm; the image layout gates after its LayerNorm
        out = self.norm(out * gate) if self.causal else self.norm(out) * gate
        return self.proj_drop(self.o_proj(out))

    def extra_repr(self) -> str:
        return f"causal={self.causal}, use_lrpe={self.use_lrpe}, scale={self.scale}, " + super().extra_repr()

