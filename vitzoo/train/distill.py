"""Distillation engine on accelerate: a diffusers text-to-image pipeline teaches itself a linear-attention UNet.

    accelerate launch tools/distill.py --method linfusion -c configs/diffusion/linfusion_sd15.yaml \\
        --model stable-diffusion-v1-5/stable-diffusion-v1-5 --data-dir /data/laion-aesthetics --output runs/lf15

One step (per micro-batch): encode the images with the frozen VAE and the captions with the pipeline's own
``encode_prompt`` (SD-1.x/2.x, and SD-XL with its pooled embeddings and micro-conditioning), draw the noise
and t ~ U{0..T-1}, noise the latents with the training scheduler (DDPM ``add_noise``), then run the method's
objective (for LinFusion: teacher = same UNet with its original attention, student = LinFusion, see
:mod:`vitzoo.diffusion.distill.linfusion`). Only the method's parameters train (AdamW, no schedule, no EMA, as
the official recipe); the rest is frozen in the weight dtype of ``--mixed-precision``.

Checkpoints (``<output>/last.safetensors`` + ``last.state.pt``, atomic, :class:`vitzoo.train.Checkpointer`)
hold the trainable weights, the optimizer, the step, the position in the epoch and every process's RNG
state, so ``--resume`` continues the same sequence of batches, timesteps and noise. SIGINT/SIGTERM save
a checkpoint before exiting. ``<output>/linfusion/`` receives the final weights in the official layout.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from .checkpoint import Checkpointer, capture_rng_state, restore_rng_state
from .metrics import MetricsLogger
from .signals import graceful_stop

__all__ = ["DISTILL_METHODS", "DistillMethod", "diffusion_target", "distill", "load_text_to_image_pipeline"]

_logger = logging.getLogger("vitzoo.train.distill")


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
    pipe = DiffusionPipeline.from_pretrained(model, torch_dtype=dtype, safety_checker=None,
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


def _json_safe(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items()
            if not k.startswith("_") and isinstance(v, (str, int, float, bool, list, type(None)))}


def distill(args: argparse.Namespace) -> dict[str, Any]:
    """Run a distillation as the ``vitzoo distill`` flags describe; returns a summary (final step, losses)."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, gather_object, set_seed
    from diffusers import DDPMScheduler

    from ..data.captions import ImageCaptionFolder

    if args.method not in DISTILL_METHODS:
        raise ValueError(f"unknown distillation method {args.method!r}; known: {', '.join(DISTILL_METHODS)}")
    method = DISTILL_METHODS[args.method]
    accelerator = Accelerator(mixed_precision=args.mixed_precision, gradient_accumulation_steps=args.grad_accum_steps,
                              cpu=args.device == "cpu",
                              # one data order for every process and every resume: seed + epoch
                              dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed))
    set_seed(args.seed + accelerator.process_index)
    output = Path(args.output)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)

    pipe = load_text_to_image_pipeline(args.model, weight_dtype)
    for component in (pipe.unet, pipe.vae, getattr(pipe, "text_encoder", None), getattr(pipe, "text_encoder_2", None)):
        if component is not None:
            component.requires_grad_(False).eval()
    pipe.to(accelerator.device)
    if args.grad_checkpointing:
        pipe.unet.enable_gradient_checkpointing()
    objective, trainable = method.build(pipe, args)
    trainable.to(accelerator.device)
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    diffusion_target(noise_scheduler, *[torch.zeros(1)] * 2, torch.zeros(1, dtype=torch.long))  # fail early

    dataset = ImageCaptionFolder(args.data_dir, args.resolution, resize=args.resize)
    # a generator of its own: creating an iterator must not draw from the global stream the noise comes from,
    # or a resumed run (which creates one more iterator) would draw different noise
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                         num_workers=args.workers, collate_fn=_collate,
                                         generator=torch.Generator().manual_seed(args.seed))
    if len(loader) == 0:
        raise ValueError(f"{len(dataset)} images make no full batch of {args.batch_size}")
    optimizer = torch.optim.AdamW(trainable.parameters(), lr=args.lr, weight_decay=args.weight_decay,
                                  betas=(args.adam_beta1, args.adam_beta2))
    objective, optimizer, loader = accelerator.prepare(objective, optimizer, loader)
    steps_per_epoch = len(loader) // args.grad_accum_steps
    if steps_per_epoch == 0:
        raise ValueError(f"{len(loader)} batches per epoch are fewer than --grad-accum-steps {args.grad_accum_steps}")
    max_steps = args.max_steps or args.epochs * steps_per_epoch

    checkpointer = Checkpointer(output)
    metadata = {**method.metadata(trainable), "method": args.method, "model": args.model}
    step, epoch, batches_done = 0, 0, 0
    resume = output / "last.state.pt" if args.resume == "auto" else (Path(args.resume) if args.resume else None)
    if resume is not None and (args.resume != "auto" or resume.is_file()):
        state = Checkpointer.load(resume)
        if state["metadata"].get("linfusion_modules_list", "") != metadata.get("linfusion_modules_list", ""):
            raise ValueError(f"{resume} was written for other modules than this run builds (--model / --mid-dim-scale)")
        trainable.load_state_dict({k: v.to(accelerator.device) for k, v in state["model"].items()})
        optimizer.load_state_dict(state["optimizer"])
        if accelerator.scaler is not None and "scaler" in state:
            accelerator.scaler.load_state_dict(state["scaler"])
        step, epoch, batches_done = state["step"], state["epoch"], state["batches_done"]
        rng = state["rng"]
        if len(rng) == accelerator.num_processes:
            restore_rng_state(rng[accelerator.process_index])
        else:
            _logger.warning("resuming %d processes from a run of %d: fresh random streams",
                            accelerator.num_processes, len(rng))
        _logger.info("resumed %s at step %d (epoch %d, batch %d)", resume, step, epoch, batches_done)

    def save() -> None:
        rng = gather_object([capture_rng_state()])
        if accelerator.is_main_process:
            state = {"step": step, "epoch": epoch, "batches_done": batches_done, "rng": rng,
                     "optimizer": optimizer.state_dict(), "args": _json_safe(args)}
            if accelerator.scaler is not None:
                state["scaler"] = accelerator.scaler.state_dict()
            checkpointer.save("last", state, trainable.state_dict(), {**metadata, "step": str(step)})
        accelerator.wait_for_everyone()

    logger = MetricsLogger(output, step_key="step", tensorboard=False) if accelerator.is_main_process else None
    totals: dict[str, float] = {}
    micro = 0
    last_log = time.perf_counter()
    stopped = False
    with graceful_stop() as stop:
        while step < max_steps and not stopped:
            loader.set_epoch(epoch)
            batches = accelerator.skip_first_batches(loader, batches_done) if batches_done else loader
            for batch in batches:
                with accelerator.accumulate(objective):
                    with torch.no_grad():
                        pixels = batch["pixel_values"].to(dtype=pipe.vae.dtype)
                        latents = pipe.vae.encode(pixels).latent_dist.sample() * pipe.vae.config.scaling_factor
                        cond, added = _conditioning(pipe, batch["caption"], batch, args.resolution, accelerator.device)
                    noise = torch.randn_like(latents)
                    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],),
                                              device=latents.device)
                    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
                    target = diffusion_target(noise_scheduler, latents, noise, timesteps)
                    with accelerator.autocast():
                        losses = objective(noisy, timesteps, target, cond, added)
                    accelerator.backward(losses["loss"])
                    if accelerator.sync_gradients and args.max_grad_norm:
                        accelerator.clip_grad_norm_(trainable.parameters(), args.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                batches_done += 1
                micro += 1
                for key, value in losses.items():
                    totals[key] = totals.get(key, 0.0) + accelerator.reduce(value.detach().float(), "mean").item()
                if not accelerator.sync_gradients:
                    continue
                step += 1
                if step % args.log_every == 0 or step == max_steps:
                    row = {"step": step, "epoch": epoch, **{k: v / micro for k, v in totals.items()},
                           "lr": optimizer.param_groups[0]["lr"],
                           "seconds_per_step": (time.perf_counter() - last_log) * args.grad_accum_steps / micro}
                    if logger is not None:
                        logger.log(row)
                        _logger.info("step %d/%d loss %.4f", step, max_steps, row["loss"])
                    totals, micro, last_log = {}, 0, time.perf_counter()
                stop_now = bool(accelerator.reduce(torch.tensor(float(bool(stop)), device=accelerator.device), "max"))
                if step % args.checkpoint_every == 0 or step == max_steps or stop_now:
                    save()
                if stop_now:
                    stopped = True
                    _logger.warning("stopped at step %d; continue with --resume %s", step, output / "last.state.pt")
                if step >= max_steps or stopped:
                    break
            else:
                epoch, batches_done = epoch + 1, 0
    if accelerator.is_main_process and not stopped:
        method.export(accelerator.unwrap_model(trainable), output / args.method)
        if logger is not None and logger.rows:
            logger.plot(title=f"{args.method} distillation of {args.model}")
    accelerator.wait_for_everyone()
    return {"step": step, "stopped": stopped, "output": str(output),
            "last_loss": logger.rows[-1].get("loss") if logger is not None and logger.rows else math.nan}
