"""The distillation engine: a diffusers text-to-image pipeline teaches itself a linear-attention UNet.

    accelerate launch tools/distill.py --method linfusion -c configs/diffusion/linfusion_sd15.yaml \\
        --model stable-diffusion-v1-5/stable-diffusion-v1-5 --data-dir /data/laion-aesthetics --experiment lf15

One step (per micro-batch): encode the images with the frozen VAE and the captions with the pipeline's own
``encode_prompt`` (SD-1.x/2.x, and SD-XL with its pooled embeddings and micro-conditioning), draw the noise
and t ~ U{0..T-1}, noise the latents with the training scheduler (DDPM ``add_noise``), then run the method's
objective (for LinFusion: teacher = same UNet with its original attention, student = LinFusion, see
:mod:`vitzoo.diffusion.distill.linfusion`). Only the method's parameters train (AdamW, no schedule, no EMA, as
the official recipe); the rest is frozen in the dtype of ``--amp-dtype`` when ``--amp`` is on. The flags are
defined in :mod:`vitzoo.commands.distill`; the loop, checkpoints of the trainable weights, exact resume and
signals are the training core's (:mod:`vitzoo.train.loop`). ``<run>/<method>/`` receives the final weights in
the official layout.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from .engine import Engine, StepResult
from .loop import Trainer, TrainResult

__all__ = ["DISTILL_METHODS", "DistillEngine", "DistillMethod", "diffusion_target", "distill",
           "load_text_to_image_pipeline"]

_AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class DistillMethod:
    """How a method turns a pipeline into (objective module, trainable module, export function).

    ``build(pipe, args)`` returns the objective (an ``nn.Module`` whose forward takes ``noisy_latents,
    timesteps, target, encoder_hidden_states, added_cond_kwargs`` and returns a dict with ``loss``) and
    the module holding the trainable weights; ``export(trainable, directory)`` writes them for users;
    ``metadata(trainable)`` describes them in the checkpoint file.
    """

    build: Callable[[Any, argparse.Namespace], tuple[nn.Module, nn.Module]]
    export: Callable[[nn.Module, Path], None]
    metadata: Callable[[nn.Module], dict[str, str]]


def _build_linfusion(pipe, args: argparse.Namespace) -> tuple[nn.Module, nn.Module]:
    from ..diffusion.distill.linfusion import LinFusionDistiller
    from ..diffusion.linfusion import LinFusion

    linfusion = LinFusion.construct_for(pipe.unet, pretrained=args.init or False, dtype=torch.float32,
                                        mid_dim_scale=args.mid_dim_scale if not args.init else None)
    linfusion.requires_grad_(True)
    objective = LinFusionDistiller(pipe.unet, linfusion, kd_weight=args.kd_weight, feature_weight=args.feature_weight)
    return objective, linfusion


DISTILL_METHODS: dict[str, DistillMethod] = {
    "linfusion": DistillMethod(build=_build_linfusion, export=lambda module, path: module.save_pretrained(path),
                               metadata=lambda module: module.file_metadata()),
}


def load_text_to_image_pipeline(model: str, dtype: torch.dtype = torch.float32):
    """A Stable Diffusion (1.x / 2.x / XL) pipeline from a directory or hub id; ``"tiny-random"`` builds the
    offline tiny one of :mod:`vitzoo.testing.tiny_diffusion`."""
    from diffusers import DiffusionPipeline

    if model == "tiny-random":
        from ..testing.tiny_diffusion import tiny_stable_diffusion

        return tiny_stable_diffusion().to(dtype=dtype)
    from ..diffusion.hub import hub_errors

    with hub_errors(model, what="--model"):
        pipe = DiffusionPipeline.from_pretrained(model, dtype=dtype, safety_checker=None,
                                                 requires_safety_checker=False)
    if not hasattr(pipe, "unet") or not hasattr(pipe, "encode_prompt"):
        raise ValueError(f"{model} is a {type(pipe).__name__}; distillation needs a Stable Diffusion "
                         "text-to-image pipeline")
    return pipe


def _conditioning(pipe, captions: list[str], batch: dict[str, torch.Tensor], resolution: int,
                  device: torch.device) -> tuple[torch.Tensor, Optional[dict[str, torch.Tensor]]]:
    """Text embeddings exactly as the pipeline computes them at inference (and SD-XL's added conditions)."""
    if hasattr(pipe, "text_encoder_2"):
        embeds, _, pooled, _ = pipe.encode_prompt(prompt=captions, device=device, num_images_per_prompt=1,
                                                  do_classifier_free_guidance=False)
        target = torch.tensor([resolution, resolution]).expand(len(captions), 2)
        time_ids = torch.cat([batch["original_size"], batch["crop_top_left"], target], dim=1)
        return embeds, {"text_embeds": pooled, "time_ids": time_ids.to(device=device, dtype=embeds.dtype)}
    embeds, _ = pipe.encode_prompt(captions, device, 1, False)
    return embeds, None


def diffusion_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the UNet regresses: the noise (ε-prediction) or the velocity (v-prediction, SD-2.1 768)."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"the pipeline predicts {kind!r}; distillation supports epsilon and v_prediction")


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"pixel_values": torch.stack([item["pixel_values"] for item in items]),
            "caption": [item["caption"] for item in items],
            "original_size": torch.stack([item["original_size"] for item in items]),
            "crop_top_left": torch.stack([item["crop_top_left"] for item in items])}


class DistillEngine(Engine):
    """Distillation of a method's modules (``--method``) inside a frozen Stable Diffusion pipeline."""

    kind = "vitzoo-distill"
    step_key = "step"

    def default_experiment(self) -> str:
        return f"{self.args.method}-distill"

    def build(self, trainer: Trainer, state: Optional[dict[str, Any]]) -> None:
        from diffusers import DDPMScheduler

        from ..data.captions import ImageCaptionFolder

        args, accelerator = self.args, trainer.accelerator
        if args.method not in DISTILL_METHODS:
            raise ValueError(f"unknown distillation method {args.method!r}; known: {', '.join(DISTILL_METHODS)}")
        self.method = DISTILL_METHODS[args.method]
        weight_dtype = _AMP_DTYPES[args.amp_dtype] if args.amp else torch.float32
        pipe = self.pipe = load_text_to_image_pipeline(args.model, weight_dtype)
        for component in (pipe.unet, pipe.vae, getattr(pipe, "text_encoder", None),
                          getattr(pipe, "text_encoder_2", None)):
            if component is not None:
                component.requires_grad_(False).eval()
        pipe.to(accelerator.device)
        if args.grad_checkpointing:
            pipe.unet.enable_gradient_checkpointing()
        objective, trainable = self.method.build(pipe, args)
        self.model, self.trainable = objective, trainable.to(accelerator.device)
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        diffusion_target(self.noise_scheduler, *[torch.zeros(1)] * 2, torch.zeros(1, dtype=torch.long))  # fail early
        self.train_set = ImageCaptionFolder(args.data_dir, args.resolution, resize=args.resize)
        self.collate_fn = _collate
        self.optimizer = torch.optim.AdamW(trainable.parameters(), lr=args.lr, weight_decay=args.weight_decay,
                                           betas=(args.adam_beta1, args.adam_beta2))

    def identity(self) -> dict[str, str]:
        return {"method": self.args.method, **self.method.metadata(self.trainable)}

    def metadata(self) -> dict[str, str]:
        return {"model": str(self.args.model)}

    def step(self, model, batch) -> StepResult:
        pipe, device = self.pipe, self.accelerator.device
        with torch.no_grad():
            pixels = batch["pixel_values"].to(device=device, dtype=pipe.vae.dtype)
            latents = pipe.vae.encode(pixels).latent_dist.sample() * pipe.vae.config.scaling_factor
            cond, added = _conditioning(pipe, batch["caption"], batch, self.args.resolution, device)
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (latents.shape[0],),
                                  device=latents.device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        target = diffusion_target(self.noise_scheduler, latents, noise, timesteps)
        with self.accelerator.autocast():
            losses = model(noisy, timesteps, target, cond, added)
        terms = {k: v for k, v in losses.items() if k != "loss"}
        return StepResult(loss=losses["loss"], samples=latents.shape[0], terms=terms)

    def finish(self, trainer: Trainer) -> Optional[Path]:
        path = trainer.run_dir / self.args.method
        self.method.export(self.trainable, path)
        return path


def distill(args: argparse.Namespace, *, on_update=None) -> TrainResult:
    """Run a distillation with resolved ``vitzoo distill`` flags (:func:`vitzoo.commands.distill.parse_args`)."""
    return Trainer(DistillEngine(args), on_update=on_update).fit()
