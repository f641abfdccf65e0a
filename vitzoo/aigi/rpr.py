"""Patch mixing of PPL: Randomized Patch Reconstruction (ICLR 2026) and Random Patch Replacement (arXiv v1/v2).

Spec ``../shared/specs/ppl.md`` §1 and §3.2. Both build a mixed image from two pixel-aligned images on the
ViT's patch grid (patch 14 in the paper, so masks line up with tokens) and give per-patch labels
(1 = synthetic patch) for the patch contrastive loss:

- ICLR form, :func:`randomized_patch_reconstruction`: ``x_rpr = M ⊙ x̂_r + (1 − M) ⊙ x_r``, a **real** image
  with a fraction ``r_rpr = 0.5`` of its patches taken from its diffusion (or VAE) reconstruction; image label
  fake, patch labels = M.
- v1 form, :func:`random_patch_replacement`: ``R(P_ij(I')) = P_ij(I) if M_ij = 1 else P_ij(I')``, a **fake**
  image with real patches pasted in; patch labels = 1 − M (1 where the fake remains).

:func:`apply_rpr` is the per-sample rule of §3.2 step 5 that the training engine applies to a batch: each fake
sample that has an aligned partner is replaced by a mixed image with probability ``p_rpr = 0.9``.

Masks are drawn on the CPU from the caller's ``torch.Generator`` and moved to the images' device, so a seed
gives the same masks on every device. The number of mixed patches is ``round(ratio · h · w)`` rounded half
up (4.5 → 5), exactly that many per image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

__all__ = ["RPR_MODES", "RPRBatch", "apply_rpr", "num_mixed_patches", "random_patch_mask",
           "random_patch_replacement", "randomized_patch_reconstruction"]

RPR_MODES = ("reconstruction", "replacement")


def num_mixed_patches(ratio: float, height: int, width: int) -> int:
    """``round(ratio · height · width)``, half up: how many patches one mixed image takes from the other."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must be in [0, 1], got {ratio}")
    return int(math.floor(ratio * height * width + 0.5))


def _grid(images: torch.Tensor, patch: int) -> tuple[int, int]:
    if images.ndim != 4:
        raise ValueError(f"expected images [B, C, H, W], got shape {tuple(images.shape)}")
    if patch < 1:
        raise ValueError(f"patch must be positive, got {patch}")
    height, width = images.shape[-2:]
    if height % patch or width % patch:
        raise ValueError(f"image size {height}x{width} is not a multiple of the patch size {patch}")
    return height // patch, width // patch


def random_patch_mask(batch: int, height: int, width: int, ratio: float,
                      generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """A float mask [batch, height, width] with exactly :func:`num_mixed_patches` ones per image, at uniformly
    random places (drawn on the CPU with ``generator``)."""
    count = num_mixed_patches(ratio, height, width)
    order = torch.rand(batch, height * width, generator=generator).argsort(dim=1)
    mask = torch.zeros(batch, height * width)
    mask.scatter_(1, order[:, :count], 1.0)
    return mask.reshape(batch, height, width)


def _paste(base: torch.Tensor, source: torch.Tensor, mask: torch.Tensor, patch: int) -> torch.Tensor:
    """``base`` with the patches where ``mask`` [B, h, w] is 1 taken from ``source``."""
    pixels = mask.to(base.device).repeat_interleave(patch, dim=1).repeat_interleave(patch, dim=2)
    return torch.where(pixels[:, None].bool(), source, base)


def _check_pair(first: torch.Tensor, second: torch.Tensor, names: str) -> None:
    if first.shape != second.shape:
        raise ValueError(f"{names} must be pixel-aligned images of one shape, got {tuple(first.shape)} and "
                         f"{tuple(second.shape)}")


def randomized_patch_reconstruction(real: torch.Tensor, recon: torch.Tensor, ratio: float = 0.5, patch: int = 14,
                                    generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """RPR, ICLR form (spec §3.2): ``real`` [B, C, H, W] with ``round(ratio·h·w)`` random patches from its
    pixel-aligned reconstruction ``recon``.

    Returns:
        ``(mixed [B, C, H, W], patch_labels [B, h, w])``: labels 1 on the reconstructed patches, 0 elsewhere;
        the image label of a mixed image is fake (1).
    """
    _check_pair(real, recon, "real and recon")
    height, width = _grid(real, patch)
    mask = random_patch_mask(real.shape[0], height, width, ratio, generator)
    return _paste(real, recon, mask, patch), mask.to(real.device)


def random_patch_replacement(fake: torch.Tensor, real: torch.Tensor, ratio: float = 0.5, patch: int = 14,
                             generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random patch replacement, arXiv v1/v2 form (spec §1): ``fake`` [B, C, H, W] with ``round(ratio·h·w)``
    random patches replaced by those of its aligned real counterpart ``real``.

    Returns:
        ``(mixed [B, C, H, W], patch_labels [B, h, w])``: labels 1 where the fake remains, 0 on pasted real
        patches; the image label stays fake (1).
    """
    _check_pair(fake, real, "fake and real")
    height, width = _grid(fake, patch)
    mask = random_patch_mask(fake.shape[0], height, width, ratio, generator)
    return _paste(fake, real, mask, patch), (1 - mask).to(fake.device)


@dataclass
class RPRBatch:
    """A training batch after :func:`apply_rpr`.

    Attributes:
        images: [B, C, H, W], mixed where ``mixed`` is True.
        labels: image labels [B] (unchanged: a mixed image is fake).
        patch_labels: float [B, h, w]; 0 for reals, 1 for untouched fakes, the mask for mixed images.
        mixed: bool [B], which samples were replaced by a mixed image.
    """

    images: torch.Tensor
    labels: torch.Tensor
    patch_labels: torch.Tensor
    mixed: torch.Tensor


def apply_rpr(images: torch.Tensor, labels: torch.Tensor, aligned: Optional[torch.Tensor] = None, *,
              p: float = 0.9, ratio: float = 0.5, patch: int = 14, mode: str = "reconstruction",
              has_aligned: Optional[torch.Tensor] = None,
              generator: Optional[torch.Generator] = None) -> RPRBatch:
    """PPL's per-sample rule (spec §3.2 step 5): each fake sample with an aligned partner becomes a mixed image
    with probability ``p``; reals keep all-0 patch labels, the other fakes all-1.

    Args:
        images: [B, C, H, W]; a fake sample is a synthetic image pixel-aligned with ``aligned`` (for the ICLR
            form, the reconstruction of the real image ``aligned[i]``; for the v1 form, a fake whose real
            counterpart is ``aligned[i]``).
        labels: image labels [B], 1 = fake, 0 = real.
        aligned: the pixel-aligned real partner of each sample [B, C, H, W], or None when there is none (then
            nothing is mixed and only the patch labels are made). Entries of real samples are not read.
        p: probability that a fake sample with a partner is replaced (p_rpr = 0.9).
        ratio, patch: as in :func:`randomized_patch_reconstruction`.
        mode: ``"reconstruction"`` (ICLR: the real partner with reconstructed patches, labels = mask) or
            ``"replacement"`` (v1: the fake with real patches pasted, labels = 1 − mask).
        has_aligned: bool [B], which samples have a partner in ``aligned`` (default: all of them).
        generator: seeds the coin flips and the masks; the same seed and batch give the same result. The
            draws do not depend on the labels (one flip and one mask per sample, always).
    """
    if mode not in RPR_MODES:
        raise ValueError(f"mode must be one of {RPR_MODES}, got {mode!r}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    height, width = _grid(images, patch)
    batch = images.shape[0]
    if labels.shape != (batch,):
        raise ValueError(f"labels must have shape [{batch}], got {tuple(labels.shape)}")
    flips = torch.rand(batch, generator=generator) < p
    mask = random_patch_mask(batch, height, width, ratio, generator)
    fake = labels.detach().cpu() > 0.5
    patch_labels = fake.float()[:, None, None].expand(batch, height, width).clone()
    if aligned is None:
        mixed = torch.zeros(batch, dtype=torch.bool)
    else:
        _check_pair(images, aligned, "images and aligned")
        partner = torch.ones(batch, dtype=torch.bool) if has_aligned is None else has_aligned.detach().cpu().bool()
        mixed = fake & flips & partner
    if mixed.any():
        pick = mixed.to(images.device)
        if mode == "reconstruction":
            mixed_images = _paste(aligned, images, mask, patch)
            patch_labels[mixed] = mask[mixed]
        else:
            mixed_images = _paste(images, aligned, mask, patch)
            patch_labels[mixed] = 1 - mask[mixed]
        images = torch.where(pick[:, None, None, None], mixed_images, images)
    return RPRBatch(images=images, labels=labels, patch_labels=patch_labels.to(images.device),
                    mixed=mixed.to(images.device))
