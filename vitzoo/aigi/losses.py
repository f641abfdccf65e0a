"""PPL's training losses: the patch-wise contrastive loss, its InfoNCE alternative, and the total loss.

Spec ``../shared/specs/ppl.md`` §3.3 (Patch-wise Contrastive Learning, from third-party notes of the ICLR
2026 paper; no official code exists):

    L_con = Σ_{i≠j} [ Y_ij · d_ij² + (1 − Y_ij) · max(0, α − d_ij²) ],    α = 1.0
    L     = λ · L_con + (1 − λ) · L_bce,                                  λ = 0.3

over all pairs of patch tokens in the batch, with ``Y_ij = 1`` when tokens i and j have the same patch label
and ``d_ij`` their Euclidean distance. The squared distance sits inside the hinge (not Hadsell's
``max(0, m − d)²``). Choices the notes leave open, marked [infer] in the spec and taken here:

- the embeddings are L2-normalised first (``normalize=True``), so ``d² ∈ [0, 4]`` and ``α = 1`` is a margin
  on that scale;
- the sum is divided by the number of ordered pairs ``N(N − 1)`` (a mean), so λ = 0.3 weighs two terms of
  the same scale whatever the batch size;
- the tokens are the last block's, after the final norm (:attr:`DetectorOutput.patch_embed`).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .detector import DetectorOutput

__all__ = ["patch_contrastive_loss", "patch_infonce_loss", "ppl_loss", "CONTRASTIVE_LOSSES"]

CONTRASTIVE_LOSSES = ("margin", "infonce")


def _flat_tokens(patch_embed: torch.Tensor, patch_labels: torch.Tensor, max_tokens: Optional[int],
                 generator: Optional[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens [N, D] and labels [N] from [B, h, w, D] / [B, h, w] (or already flat), optionally a random
    subset of ``max_tokens`` of them (drawn on the CPU with ``generator``, so a seed gives the same subset
    on every device)."""
    if patch_embed.shape[:-1] != patch_labels.shape:
        raise ValueError(f"patch_embed {tuple(patch_embed.shape)} and patch_labels {tuple(patch_labels.shape)} "
                         "disagree: labels need the shape of the embeddings without their last dim")
    tokens, labels = patch_embed.reshape(-1, patch_embed.shape[-1]), patch_labels.reshape(-1)
    if max_tokens is not None:
        if max_tokens < 2:
            raise ValueError(f"max_tokens must be at least 2, got {max_tokens}")
        if tokens.shape[0] > max_tokens:
            keep = torch.randperm(tokens.shape[0], generator=generator)[:max_tokens].to(tokens.device)
            tokens, labels = tokens[keep], labels[keep]
    if tokens.shape[0] < 2:
        raise ValueError(f"the contrastive loss needs at least 2 tokens, got {tokens.shape[0]}")
    return tokens, labels


def patch_contrastive_loss(patch_embed: torch.Tensor, patch_labels: torch.Tensor, margin: float = 1.0, *,
                           normalize: bool = True, max_tokens: Optional[int] = None,
                           generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """PPL's patch-wise margin contrastive loss (spec §3.3), the mean over ordered pairs i ≠ j of
    ``Y_ij d_ij² + (1 − Y_ij) max(0, α − d_ij²)``.

    Args:
        patch_embed: patch tokens [B, h, w, D] (or [N, D]).
        patch_labels: 1 = synthetic patch, 0 = real, [B, h, w] (or [N]).
        margin: α; pairs with different labels stop pushing once ``d² ≥ α``.
        normalize: L2-normalise the tokens first ([infer], see the module docstring).
        max_tokens: use a random subset of this many tokens when there are more (the pair matrix is N²).
        generator: seeds that subset.

    Returns:
        the scalar loss. ``d²`` is computed as ``|x_i|² + |x_j|² − 2 x_i·x_j`` (one matrix product, smooth
        gradients at d = 0) and floored at 0 against rounding below zero.
    """
    tokens, labels = _flat_tokens(patch_embed, patch_labels, max_tokens, generator)
    tokens = tokens.float()
    if normalize:
        tokens = F.normalize(tokens, dim=-1)
    sq_norm = tokens.pow(2).sum(dim=-1)
    dist_sq = (sq_norm[:, None] + sq_norm[None, :] - 2 * tokens @ tokens.T).clamp_min(0)  # [N, N]
    same = (labels[:, None] == labels[None, :]).float()
    pair_loss = same * dist_sq + (1 - same) * (margin - dist_sq).clamp_min(0)
    count = tokens.shape[0]
    off_diagonal = 1 - torch.eye(count, device=tokens.device)
    return (pair_loss * off_diagonal).sum() / (count * (count - 1))


def patch_infonce_loss(patch_embed: torch.Tensor, patch_labels: torch.Tensor, temperature: float = 0.5, *,
                       max_tokens: Optional[int] = None, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """The InfoNCE alternative of the paper's ablation ("InfoNCE / τ = 0.5", spec §3.3), in the supervised
    form of Khosla et al. 2020 (arXiv:2004.11362, their L_out) [infer: the notes give only the name]:

        L = mean_i  −1/|P(i)| Σ_{p ∈ P(i)} log( exp(s_ip / τ) / Σ_{a ≠ i} exp(s_ia / τ) )

    with ``s`` the cosine similarity of tokens and ``P(i)`` the other tokens with i's label; anchors without
    a positive are left out of the mean (a ValueError when no anchor has one).
    """
    tokens, labels = _flat_tokens(patch_embed, patch_labels, max_tokens, generator)
    tokens = F.normalize(tokens.float(), dim=-1)
    count = tokens.shape[0]
    self_mask = torch.eye(count, dtype=torch.bool, device=tokens.device)
    logits = (tokens @ tokens.T / temperature).masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive = (labels[:, None] == labels[None, :]) & ~self_mask
    num_positive = positive.sum(dim=1)
    anchors = num_positive > 0
    if not anchors.any():
        raise ValueError("InfoNCE needs at least two tokens with the same label")
    per_anchor = -log_prob.masked_fill(~positive, 0).sum(dim=1)[anchors] / num_positive[anchors]
    return per_anchor.mean()


def ppl_loss(output: DetectorOutput, image_labels: torch.Tensor, patch_labels: torch.Tensor, *, lam: float = 0.3,
             margin: float = 1.0, contrastive: str = "margin", temperature: float = 0.5,
             patch_probe_weight: float = 1.0, max_tokens: Optional[int] = None,
             generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPL's total loss ``λ·L_con + (1 − λ)·L_bce`` (spec §3.3, λ = 0.3, α = 1.0), plus the patch probe's BCE.

    Args:
        output: the detector's ``logit`` [B], ``patch_embed`` [B, h, w, D] and ``patch_logit`` [B, h, w] or None.
        image_labels: 1 = AI-generated, 0 = real, [B].
        patch_labels: 1 = synthetic patch, [B, h, w] (from :func:`~vitzoo.aigi.rpr.apply_rpr`).
        lam: λ, the contrastive term's weight.
        margin: α of :func:`patch_contrastive_loss`.
        contrastive: ``"margin"`` (the paper's default) or ``"infonce"`` (its ablation, τ = ``temperature``).
        patch_probe_weight: weight of the probe's mean patch BCE, added outside the λ mix (vitzoo's extension,
            spec §6; 1.0 by default: the probe is a separate linear head, and a unit weight puts its BCE on the
            image BCE's scale). Ignored when the output has no ``patch_logit``; 0 switches it off.
        max_tokens, generator: token sub-sampling of the contrastive term.

    Returns:
        ``(total, terms)``: the differentiable total, and detached ``{"loss", "contrastive", "bce"[,
        "patch_bce"]}`` for logging.
    """
    if contrastive not in CONTRASTIVE_LOSSES:
        raise ValueError(f"contrastive must be one of {CONTRASTIVE_LOSSES}, got {contrastive!r}")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    if image_labels.shape != output.logit.shape:
        raise ValueError(f"image_labels {tuple(image_labels.shape)} do not match logits {tuple(output.logit.shape)}")
    if contrastive == "margin":
        con = patch_contrastive_loss(output.patch_embed, patch_labels, margin, max_tokens=max_tokens,
                                     generator=generator)
    else:
        con = patch_infonce_loss(output.patch_embed, patch_labels, temperature, max_tokens=max_tokens,
                                 generator=generator)
    bce = F.binary_cross_entropy_with_logits(output.logit.float(), image_labels.float())
    total = lam * con + (1 - lam) * bce
    terms = {"contrastive": con.detach(), "bce": bce.detach()}
    if output.patch_logit is not None and patch_probe_weight > 0:
        patch_bce = F.binary_cross_entropy_with_logits(output.patch_logit.float(), patch_labels.float())
        total = total + patch_probe_weight * patch_bce
        terms["patch_bce"] = patch_bce.detach()
    terms["loss"] = total.detach()
    return total, terms
