"""LiT's hybrid knowledge distillation: a frozen DiT teacher supervises both outputs of the LiT student.

Paper: Wang et al., "LiT: Delving into a Simple Linear Diffusion Transformer for Image Generation",
arXiv:2501.12976, guideline 5. Re-implemented from the paper's formula (the official code could not be
obtained; spec ``../shared/specs/lit.md`` §5)::

    L = L_simple + L_vb + λ1·mean((ε_T − ε_S)²) + λ2·mean((v_T − v_S)²)

with the teacher and student fed the same x_t, t and y. λ1 = 0.5, λ2 = 0.05 for class-conditional
ImageNet (paper); LiT's public text-to-image config uses λ1 = 1.0. Whether the variance term compares the
raw interpolation values v (default, our reading of "variance head output distillation") or the
log-variances they imply is not settled; both are offered.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..gaussian_diffusion import GaussianDiffusion

__all__ = ["LiTDistillationLoss"]

VARIANCE_TARGETS = ("raw", "log_variance")


def _mean_flat(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=tuple(range(1, x.dim())))


class LiTDistillationLoss:
    """DiT's diffusion loss on the student plus LiT's noise and variance distillation terms.

    Args:
        diffusion: the training diffusion (DiT's 1000-step linear schedule by default).
        noise_weight: λ1 on the ε distillation term.
        variance_weight: λ2 on the variance distillation term.
        variance_target: ``"raw"`` matches the predicted v in [-1, 1]; ``"log_variance"`` matches
            the model log-variance computed from v at each sample's timestep.
    """

    def __init__(self, diffusion: Optional[GaussianDiffusion] = None, *, noise_weight: float = 0.5,
                 variance_weight: float = 0.05, variance_target: str = "raw"):
        if variance_target not in VARIANCE_TARGETS:
            raise ValueError(f"variance_target must be one of {VARIANCE_TARGETS}, got {variance_target!r}")
        self.diffusion = diffusion or GaussianDiffusion()
        self.noise_weight = noise_weight
        self.variance_weight = variance_weight
        self.variance_target = variance_target

    def __call__(
            self,
            student_output: torch.Tensor,
            x_start: torch.Tensor,
            x_t: torch.Tensor,
            timesteps: torch.Tensor,
            noise: torch.Tensor,
            teacher_output: Optional[torch.Tensor] = None,
    ) -> dict[str, torch.Tensor]:
        """Per-sample loss terms [B].

        Args:
            student_output: the student's [B, 2C, H, W] (ε then v) on x_t.
            x_start, x_t, timesteps, noise: the clean latents, their noised version, t and the noise used.
            teacher_output: the frozen teacher's output on the same inputs (computed without grad); None
                trains with the diffusion loss alone.

        Returns:
            ``mse``, ``vb`` and, with a teacher, ``noise_kd`` and ``variance_kd``; ``loss`` is the weighted sum.
        """
        terms = self.diffusion.training_losses(student_output, x_start, x_t, timesteps, noise)
        if teacher_output is None:
            return terms
        if teacher_output.shape != student_output.shape:
            raise ValueError(f"teacher output {tuple(teacher_output.shape)} does not match the student's "
                             f"{tuple(student_output.shape)}: both must see the same latents and patch size")
        channels = x_t.shape[1]
        teacher_output = teacher_output.detach()
        eps_s, v_s = student_output.split(channels, dim=1)
        eps_t, v_t = teacher_output.split(channels, dim=1)
        if self.variance_target == "log_variance":
            v_s = self.diffusion.model_log_variance(v_s, timesteps)
            v_t = self.diffusion.model_log_variance(v_t, timesteps)
        terms["noise_kd"] = _mean_flat((eps_t - eps_s) ** 2)
        terms["variance_kd"] = _mean_flat((v_t - v_s) ** 2)
        terms["loss"] = (terms["loss"] + self.noise_weight * terms["noise_kd"]
                         + self.variance_weight * terms["variance_kd"])
        return terms
