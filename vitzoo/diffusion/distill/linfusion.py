"""LinFusion's distillation objective: the UNet with its original attention teaches the same UNet with LinFusion.

Paper: "LinFusion: 1 GPU, 1 Minute, 16K Image", arXiv:2409.02097 (L_simple + α·L_kd + β·L_feat).
Origin: https://github.com/Huage001/LinFusion (``src/train/distill.py``); re-implemented from
``shared/specs/linfusion.md`` §5, not copied::

    L = MSE(ε̂_s, target) + 0.5 · MSE(ε̂_s, ε̂_t) + 0.5 · mean_l MSE(attn1_s[l], attn1_t[l])

``target`` is the noise (ε-prediction, SD-1.5 / SD-XL) or the velocity (v-prediction, SD-2.1); the
feature term compares the outputs (after ``to_out``) of every replaced ``attn1``; every MSE is taken
in fp32. The teacher needs no copy of the UNet: it is the same UNet with its original processors
back for one forward (:meth:`vitzoo.diffusion.linfusion.LinFusion.original_attention`), so the
teacher costs no memory beyond its activations, which are not kept for backward.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..linfusion import LinFusion

__all__ = ["LinFusionDistiller", "linfusion_distillation_loss", "record_outputs"]


def linfusion_distillation_loss(
        student: torch.Tensor,
        teacher: torch.Tensor,
        target: torch.Tensor,
        student_features: Sequence[torch.Tensor],
        teacher_features: Sequence[torch.Tensor],
        *,
        kd_weight: float = 0.5,
        feature_weight: float = 0.5,
) -> dict[str, torch.Tensor]:
    """The three terms and their weighted sum (``loss``); the official weights are 0.5 and 0.5.

    Args:
        student: the student UNet's prediction [B, C, h, w].
        teacher: the teacher's prediction (no gradient).
        target: the diffusion target (noise or velocity).
        student_features: outputs of the replaced ``attn1`` modules in the student pass.
        teacher_features: the same modules' outputs with the original attention.
    """
    if len(student_features) != len(teacher_features) or not student_features:
        raise ValueError(f"got {len(student_features)} student and {len(teacher_features)} teacher attention features")
    denoise = F.mse_loss(student.float(), target.float())
    kd = F.mse_loss(student.float(), teacher.float())
    feature = torch.stack([F.mse_loss(s.float(), t.float()) for s, t in zip(student_features, teacher_features)]).mean()
    return {"loss": denoise + kd_weight * kd + feature_weight * feature,
            "loss_denoise": denoise.detach(), "loss_kd": kd.detach(), "loss_feature": feature.detach()}


@contextlib.contextmanager
def record_outputs(modules: Sequence[nn.Module]) -> Iterator[list[Optional[torch.Tensor]]]:
    """Within the block, ``outputs[i]`` is the latest output of ``modules[i]`` (forward hooks, removed on exit)."""
    outputs: list[Optional[torch.Tensor]] = [None] * len(modules)

    def hook(index: int):
        def store(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            outputs[index] = output

        return store

    handles = [module.register_forward_hook(hook(i)) for i, module in enumerate(modules)]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


class LinFusionDistiller(nn.Module):
    """One distillation step's forward: teacher pass (original attention, no grad), student pass, losses.

    Wrap this module with ``accelerator.prepare`` (DDP): only the LinFusion parameters require
    gradients, so only they are synchronised and trained.

    Args:
        unet: the UNet with ``linfusion`` mounted; its own parameters should be frozen.
        linfusion: the mounted LinFusion (the trainable parameters).
        kd_weight: α on the output distillation term.
        feature_weight: β on the attention-feature term.
    """

    def __init__(self, unet: nn.Module, linfusion: LinFusion, *, kd_weight: float = 0.5, feature_weight: float = 0.5):
        super().__init__()
        if linfusion.unet is not unet:
            raise ValueError("mount the LinFusion on this UNet first (LinFusion.construct_for(unet, ...))")
        self.unet = unet
        self.kd_weight = kd_weight
        self.feature_weight = feature_weight
        # the LinFusion modules are reachable through the UNet's processors; kept out of the child list
        object.__setattr__(self, "linfusion", linfusion)

    def forward(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, target: torch.Tensor,
                encoder_hidden_states: torch.Tensor, added_cond_kwargs: Optional[dict[str, torch.Tensor]] = None
                ) -> dict[str, torch.Tensor]:
        attention = [module for _, module in self.linfusion.attention_modules()]
        inputs = dict(encoder_hidden_states=encoder_hidden_states, added_cond_kwargs=added_cond_kwargs)
        with torch.no_grad(), self.linfusion.original_attention(), record_outputs(attention) as teacher_features:
            teacher = self.unet(noisy_latents, timesteps, **inputs).sample
        with record_outputs(attention) as student_features:
            student = self.unet(noisy_latents, timesteps, **inputs).sample
        return linfusion_distillation_loss(student, teacher, target, student_features, teacher_features,
                                           kd_weight=self.kd_weight, feature_weight=self.feature_weight)
