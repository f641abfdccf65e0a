"""High-resolution text-to-image for SD-XL: LinFusion's DemoFusion-style recipe with memory linear in pixels.

LinFusion's SD-XL "HighRes" pipeline (``src/pipelines/pipeline_highres_sdxl.py`` in
https://github.com/Huage001/LinFusion, arXiv:2409.02097; ``../shared/specs/linfusion.md`` §6 B;
re-implemented): DemoFusion without patch-wise views, the whole latent goes through the UNet.

- Stages (§6 B): the base has a long side of ``base_size`` (the UNet's native 1024 for SD-XL, latent L0 =
  128); a target whose latent long side is L takes S = ceil(log2(L / L0)) doublings; the base latent is
  ceil(L0 · side / L) per side and stage s is the base x 2^s (the last must be the target). Stage s of S
  denoises with strength ``linspace(upscale_strength, 0, S + 1)[s - 1]`` (0.32 by default).
- Each upscale stage decodes the previous image, resizes it x2 (Pillow bicubic), encodes it (the reference
  x0), draws one noise ε for the whole stage and starts from x0 noised to the stage's first timestep. At
  every timestep t, with the cosine factor ``f = 0.5 (1 + cos(π (T − t) / T))`` (T = 1000 training steps):
  the skip residual ``x ← (1 − f^c1) x + f^c1 noised(x0, ε, t)``; a UNet pass on x; a second pass on x
  Gaussian-blurred (kernel 2r − 1, σ = gaussian_sigma · (0.99 f^c3 + 0.01), re-standardised to x's
  per-channel mean and std) with every ``Conv2d``'s dilation and padding multiplied by r = 2^s; the two
  combined with weight f^c2 on the dilated one. After the stage the latents are re-standardised per
  channel to the base stage's final mean and std.
- SD-XL micro-conditioning: ``add_time_ids`` from ``original_size``, ``crops_coords_top_left`` and
  ``target_size`` (both sizes default to the final target for every stage, as the official pipeline does)
  plus the pooled ``text_embeds`` of ``text_encoder_2``.

Deliberate difference: the two passes are combined as model outputs and the scheduler steps once per
timestep (the official code steps twice from the same x and mixes the results). For schedulers whose step
is affine in the model output (Euler, DDIM with eta 0, DDPM without its noise) the result is the same; for
multistep schedulers it keeps their history to one entry per timestep.

Memory stays linear in pixels the way :class:`~.pipeline_high_resolution.HighResolutionPipeline` does it
(:class:`~.pipeline_high_resolution.HighResolutionStagesMixin`: tiled streaming VAE, uint8 canvases, PNG
written band by band; one guidance sample per UNet call; feed-forward token chunks). The skip residual
recomputes ``noised(x0, ε, t)`` each step from x0 and ε instead of keeping one noised copy per timestep.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from diffusers import StableDiffusionXLPipeline
from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl import rescale_noise_cfg
from diffusers.utils.torch_utils import randn_tensor

from ..highres_vae import vae_scale_factor
from .pipeline_high_resolution import (
    HighResolutionPipelineOutput,
    HighResolutionStagesMixin,
    _logger,
    feed_forward_chunking,
    stage_strengths,
)

__all__ = [
    "HighResolutionXLPipeline",
    "StagePlan",
    "blur_sigma",
    "cosine_factor",
    "dilated_convs",
    "gaussian_blur",
    "restandardize",
    "xl_stage_sizes",
]


def xl_stage_sizes(height: int, width: int, base_size: int, multiple: int = 8) -> list[tuple[int, int]]:
    """(height, width) per stage by §6 B: S = ceil(log2(L / L0)) doublings of a base latent ceil(L0 · side / L).

    L is the target's latent long side, L0 = ``base_size / multiple``. A target no larger than the base is one
    stage at the target. A target the doublings do not reach exactly is a ``ValueError`` naming the size they do.
    """
    if height % multiple or width % multiple:
        raise ValueError(f"height and width must be multiples of {multiple}, got {height}x{width}")
    base_latent = base_size // multiple
    latent = (height // multiple, width // multiple)
    long_side = max(latent)
    if long_side <= base_latent:
        return [(height, width)]
    doublings = math.ceil(math.log2(long_side / base_latent))
    base = tuple(math.ceil(base_latent * side / long_side) for side in latent)
    sizes = [tuple(side * 2 ** s * multiple for side in base) for s in range(doublings + 1)]
    if sizes[-1] != (height, width):
        raise ValueError(
            f"the SD-XL stage schedule (a {base[1] * multiple}x{base[0] * multiple} base doubled {doublings} times) "
            f"reaches {sizes[-1][1]}x{sizes[-1][0]}, not {width}x{height}: ask for that size, or a width and height "
            f"whose latent sides (/ {multiple}) are a base side times {2 ** doublings}")
    return sizes


def cosine_factor(timestep: float, num_train_timesteps: int = 1000) -> float:
    """§6 B: f = 0.5 (1 + cos(π (T − t) / T)), 1 at t = T and 0 at t = 0."""
    return 0.5 * (1 + math.cos(math.pi * (num_train_timesteps - float(timestep)) / num_train_timesteps))


def blur_sigma(factor: float, gaussian_sigma: float, c3: float) -> float:
    """§6 B: σ of the Gaussian blur before the dilated pass, gaussian_sigma · (0.99 f^c3 + 0.01)."""
    return gaussian_sigma * (0.99 * factor ** c3 + 0.01)


def gaussian_blur(latents: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    """Blur each channel of [B, C, H, W] with a normalised Gaussian of ``kernel_size`` taps (zero padding,
    same size out), as two 1-D passes; a one-tap kernel returns the input."""
    if kernel_size <= 1:
        return latents
    taps = torch.arange(kernel_size, dtype=torch.float64) - (kernel_size - 1) / 2
    kernel = torch.exp(-taps ** 2 / (2 * sigma ** 2))
    kernel = (kernel / kernel.sum()).to(latents)
    channels = latents.shape[1]
    pad = kernel_size // 2
    out = F.conv2d(latents, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), padding=(0, pad), groups=channels)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), padding=(pad, 0), groups=channels)


def restandardize(latents: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Per sample and channel: shift and scale [B, C, H, W] to ``mean`` / ``std`` [B, C, 1, 1] (unbiased std,
    as the official pipelines)."""
    return (latents - latents.mean(dim=(2, 3), keepdim=True)) / latents.std(dim=(2, 3), keepdim=True) * std + mean


def _moments(latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return latents.mean(dim=(2, 3), keepdim=True), latents.std(dim=(2, 3), keepdim=True)


@contextlib.contextmanager
def dilated_convs(module: torch.nn.Module, rate: int) -> Iterator[None]:
    """Within the block every ``Conv2d`` of ``module`` has its dilation and padding multiplied by ``rate``
    (§6 B: the UNet sees the latent as if it were ``rate`` times smaller); restored on exit."""
    convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)] if rate > 1 else []
    saved = [(conv.dilation, conv.padding) for conv in convs]
    for conv in convs:
        conv.dilation = tuple(rate * d for d in conv.dilation)
        conv.padding = tuple(rate * p for p in conv.padding)
    try:
        yield
    finally:
        for conv, (dilation, padding) in zip(convs, saved):
            conv.dilation, conv.padding = dilation, padding


@dataclass
class StagePlan:
    """One refinement stage of §6 B / C, with the weights of each of its timesteps.

    Args:
        size: (height, width) of the stage.
        strength: SDEdit strength; the stage runs ``steps`` of the schedule's last timesteps.
        steps: denoising steps.
        dilation: r, the dilation of the second UNet pass (1: no second pass).
        timesteps: the stage's timesteps.
        skip_weights: f^c1 per timestep, the weight of the noised reference in the skip residual.
        dilated_weights: f^c2 per timestep, the weight of the dilated pass.
        blur_sigmas: σ of the blur before the dilated pass per timestep (kernel 2r − 1).
    """

    size: tuple[int, int]
    strength: float
    steps: int
    dilation: int
    timesteps: torch.Tensor
    skip_weights: list[float]
    dilated_weights: list[float]
    blur_sigmas: list[float]

    @property
    def kernel_size(self) -> int:
        return 2 * self.dilation - 1


@dataclass
class _Conditioning:
    """Text conditioning of one call, already in guidance order ([negative; positive] when guided)."""

    prompt_embeds: torch.Tensor
    text_embeds: torch.Tensor
    time_ids: torch.Tensor


class HighResolutionXLPipeline(HighResolutionStagesMixin, StableDiffusionXLPipeline):
    """SD-XL text-to-image at any size up to 16384 x 16384 with memory linear in pixels (§6 B).

    Takes SD-XL components (``HighResolutionXLPipeline.from_pipe(sdxl)`` or ``from_pretrained``); mount
    LinFusion first (``LinFusion.construct_for(pipe, ...)``, ``Yuanshi/LinFusion-XL``) for linear-cost
    attention. The watermarker, when installed, is not run on a streamed image; a warning says so.
    """

    @torch.no_grad()
    def __call__(
            self,
            prompt: Union[str, list[str], None] = None,
            prompt_2: Union[str, list[str], None] = None,
            height: Optional[int] = None,
            width: Optional[int] = None,
            num_inference_steps: int = 50,
            guidance_scale: float = 5.0,
            negative_prompt: Union[str, list[str], None] = None,
            negative_prompt_2: Union[str, list[str], None] = None,
            num_images_per_prompt: int = 1,
            eta: float = 0.0,
            generator: Union[torch.Generator, list[torch.Generator], None] = None,
            latents: Optional[torch.Tensor] = None,
            prompt_embeds: Optional[torch.Tensor] = None,
            negative_prompt_embeds: Optional[torch.Tensor] = None,
            pooled_prompt_embeds: Optional[torch.Tensor] = None,
            negative_pooled_prompt_embeds: Optional[torch.Tensor] = None,
            guidance_rescale: float = 0.0,
            original_size: Optional[tuple[int, int]] = None,
            crops_coords_top_left: tuple[int, int] = (0, 0),
            target_size: Optional[tuple[int, int]] = None,
            negative_original_size: Optional[tuple[int, int]] = None,
            negative_crops_coords_top_left: tuple[int, int] = (0, 0),
            negative_target_size: Optional[tuple[int, int]] = None,
            base_size: Optional[int] = None,
            strengths: Optional[Sequence[float]] = None,
            upscale_strength: float = 0.32,
            cosine_scales: Sequence[float] = (3.0, 1.0, 1.0),
            gaussian_sigma: float = 1.0,
            vae_tile_size: Optional[int] = None,
            feed_forward_chunks: Optional[int] = 16,
            unet_batch_size: Optional[int] = 1,
            output_type: str = "pil",
            output_path: Union[str, os.PathLike, None] = None,
            intermediate_dir: Union[str, os.PathLike, None] = None,
            png_compress_level: int = 6,
            return_dict: bool = True,
            cross_attention_kwargs: Optional[dict[str, Any]] = None,
            clip_skip: Optional[int] = None,
            callback_on_step_end: Optional[Callable[["HighResolutionXLPipeline", int, Any, dict], dict]] = None,
            callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> Union[HighResolutionPipelineOutput, tuple]:
        """Generate ``height`` x ``width`` images through the §6 B stages.

        Args:
            prompt, prompt_2, negative_prompt, negative_prompt_2, num_images_per_prompt, eta, generator,
            latents, prompt_embeds, negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds,
            guidance_rescale, original_size, crops_coords_top_left, target_size, negative_original_size,
            negative_crops_coords_top_left, negative_target_size, cross_attention_kwargs, clip_skip: as in
                ``StableDiffusionXLPipeline``; ``latents`` are the base stage's initial noise; the sizes of the
                micro-conditioning default to the final target for every stage.
            height, width: target size (multiples of 8 that the stage schedule reaches, see :func:`xl_stage_sizes`).
            num_inference_steps: steps of the full schedule; stage s runs ``int(steps · strength)`` (at least 1).
            guidance_scale: classifier-free guidance scale (<= 1 disables guidance).
            base_size: long side of the base stage (default: UNet sample size x VAE factor, 1024 for SD-XL).
            strengths: strength of each upscale stage (overrides ``upscale_strength``).
            upscale_strength: the first upscale stage's strength; later ones fall linearly towards 0.
            cosine_scales: (c1, c2, c3), the exponents of the skip residual, dilated-pass and blur weights.
            gaussian_sigma: σ of the blur at f = 1.
            vae_tile_size, feed_forward_chunks, unet_batch_size, output_type, output_path, intermediate_dir,
            png_compress_level, return_dict, callback_on_step_end, callback_on_step_end_tensor_inputs: as in
                :class:`~.pipeline_high_resolution.HighResolutionPipeline`.
        """
        factor = vae_scale_factor(self.vae)
        native = self.default_sample_size * factor
        height, width = height or native, width or native
        sizes = xl_stage_sizes(height, width, base_size or native, factor)
        self._check_call(prompt, prompt_2, sizes[0], negative_prompt, negative_prompt_2, prompt_embeds,
                         negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds, output_type,
                         output_path, callback_on_step_end_tensor_inputs)
        if strengths is None:
            strengths = stage_strengths(len(sizes) - 1, upscale_strength)
        plans = [self.stage_plan(size, strength, num_inference_steps, 2 ** s, cosine_scales, gaussian_sigma)
                 for s, (size, strength) in enumerate(_checked_strengths(strengths, sizes), start=1)]
        cond, batch = self._conditioning(
            prompt, prompt_2, negative_prompt, negative_prompt_2, num_images_per_prompt, prompt_embeds,
            negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds, guidance_scale,
            guidance_rescale, clip_skip, cross_attention_kwargs, original_size or (height, width),
            crops_coords_top_left, target_size or (height, width), negative_original_size,
            negative_crops_coords_top_left, negative_target_size)
        device = self._execution_device
        extra_step_kwargs = self.prepare_extra_step_kwargs(generator, eta)
        order = self.scheduler.order
        self._num_timesteps = num_inference_steps + sum(plan.steps for plan in plans)
        images: Any = None
        with feed_forward_chunking(self.unet, feed_forward_chunks), \
                self.progress_bar(total=self._num_timesteps * order) as progress:
            progress.set_description(f"stage 1/{len(sizes)} {sizes[0][1]}x{sizes[0][0]}")
            timesteps = self._schedule(num_inference_steps, num_inference_steps)
            latents = self.prepare_latents(batch, self.unet.config.in_channels, sizes[0][0], sizes[0][1],
                                           cond.prompt_embeds.dtype, device, generator, latents)
            counter = [0]
            for t in timesteps:
                noise = self._noise_prediction(latents, t, cond, unet_batch_size)
                latents = self.scheduler.step(noise, t, latents, **extra_step_kwargs, return_dict=False)[0]
                latents = self._after_step(latents, t, cond, counter, progress, callback_on_step_end,
                                           callback_on_step_end_tensor_inputs)
            anchor = _moments(latents)
            canvas = None
            for index, plan in enumerate([None, *plans]):
                if plan is not None:
                    progress.set_description(f"stage {index + 1}/{len(sizes)} {plan.size[1]}x{plan.size[0]}")
                    reference = self._encode_upscaled(canvas, plan.size, generator, vae_tile_size,
                                                      cond.prompt_embeds.dtype, device)
                    canvas = None
                    self._schedule(num_inference_steps, plan.steps)
                    latents = self._refine(reference, plan, cond, generator, unet_batch_size, extra_step_kwargs,
                                           progress, counter, callback_on_step_end,
                                           callback_on_step_end_tensor_inputs)
                    latents = restandardize(latents, *anchor)
                images, canvas = self._stage_output(latents, index == len(plans), output_type, output_path,
                                                    intermediate_dir, vae_tile_size, png_compress_level, index)
                latents = None
        self.maybe_free_model_hooks()
        if not return_dict:
            return images, sizes
        return HighResolutionPipelineOutput(images=images, stage_sizes=sizes)

    @contextlib.contextmanager
    def _vae_in_float32(self) -> Iterator[None]:
        """SD-XL's VAE overflows in float16 (``force_upcast`` in its config): it encodes and decodes in float32
        then, as ``StableDiffusionXLPipeline`` does; restored on exit."""
        dtype = self.vae.dtype
        if dtype != torch.float16 or not getattr(self.vae.config, "force_upcast", False):
            yield
            return
        torch.nn.Module.to(self.vae, dtype=torch.float32)
        try:
            yield
        finally:
            torch.nn.Module.to(self.vae, dtype=dtype)

    def _encode_upscaled(self, *args, **kwargs) -> torch.Tensor:
        with self._vae_in_float32():
            return super()._encode_upscaled(*args, **kwargs)

    def _decode_bands(self, *args, **kwargs) -> None:
        with self._vae_in_float32():
            super()._decode_bands(*args, **kwargs)

    def stage_plan(self, size: tuple[int, int], strength: float, num_inference_steps: int, dilation: int,
                   cosine_scales: Sequence[float], gaussian_sigma: float) -> StagePlan:
        """The timesteps and per-timestep weights of one refinement stage (§6 B / C); sets the scheduler's
        timesteps and begin index for it."""
        c1, c2, c3 = (float(c) for c in cosine_scales)
        steps = max(1, min(int(num_inference_steps * strength), num_inference_steps))
        timesteps = self._schedule(num_inference_steps, steps)
        total = self.scheduler.config.num_train_timesteps
        factors = [cosine_factor(t, total) for t in timesteps.tolist()]
        return StagePlan(size=tuple(size), strength=float(strength), steps=steps, dilation=int(dilation),
                         timesteps=timesteps, skip_weights=[f ** c1 for f in factors],
                         dilated_weights=[f ** c2 for f in factors],
                         blur_sigmas=[blur_sigma(f, gaussian_sigma, c3) for f in factors])

    def _schedule(self, num_inference_steps: int, steps: int) -> torch.Tensor:
        """Set the scheduler to run the last ``steps`` of ``num_inference_steps`` (SDEdit); their timesteps."""
        self.scheduler.set_timesteps(num_inference_steps, device=self._execution_device)
        begin = (num_inference_steps - steps) * self.scheduler.order
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(begin)
        return self.scheduler.timesteps[begin:]

    def _check_call(self, prompt, prompt_2, base, negative_prompt, negative_prompt_2, prompt_embeds,
                    negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds, output_type,
                    output_path, callback_inputs) -> None:
        self.check_inputs(prompt, prompt_2, base[0], base[1], None, negative_prompt, negative_prompt_2,
                          prompt_embeds, negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds,
                          callback_on_step_end_tensor_inputs=list(callback_inputs))
        if output_type not in ("pil", "np", "pt", "latent", "png"):
            raise ValueError(f"output_type must be 'pil', 'np', 'pt', 'latent' or 'png', got {output_type!r}")
        if (output_type == "png") != (output_path is not None):
            raise ValueError("output_type='png' and output_path go together (the PNG is streamed to output_path)")
        if getattr(self, "watermark", None) is not None and output_type != "latent":
            _logger.warning("%s does not apply the SD-XL watermark", type(self).__name__)

    def _conditioning(self, prompt, prompt_2, negative_prompt, negative_prompt_2, num_images_per_prompt,
                      prompt_embeds, negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds,
                      guidance_scale, guidance_rescale, clip_skip, cross_attention_kwargs, original_size,
                      crops_coords_top_left, target_size, negative_original_size, negative_crops_coords_top_left,
                      negative_target_size) -> tuple[_Conditioning, int]:
        """Encode the prompts and build SD-XL's added conditions, as ``StableDiffusionXLPipeline`` does."""
        self._guidance_scale, self._guidance_rescale, self._clip_skip = guidance_scale, guidance_rescale, clip_skip
        self._cross_attention_kwargs, self._interrupt, self._denoising_end = cross_attention_kwargs, False, None
        device = self._execution_device
        if prompt_embeds is not None:
            batch = prompt_embeds.shape[0]
        else:
            batch = 1 if isinstance(prompt, str) else len(prompt)
        embeds, negative, pooled, negative_pooled = self.encode_prompt(
            prompt=prompt, prompt_2=prompt_2, device=device, num_images_per_prompt=num_images_per_prompt,
            do_classifier_free_guidance=self.do_classifier_free_guidance, negative_prompt=negative_prompt,
            negative_prompt_2=negative_prompt_2, prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds, pooled_prompt_embeds=pooled_prompt_embeds,
            negative_pooled_prompt_embeds=negative_pooled_prompt_embeds,
            lora_scale=(cross_attention_kwargs or {}).get("scale"), clip_skip=clip_skip)
        if self.do_classifier_free_guidance:
            embeds, pooled = torch.cat([negative, embeds]), torch.cat([negative_pooled, pooled])
        batch *= num_images_per_prompt
        time_ids = self._time_ids(original_size, crops_coords_top_left, target_size, negative_original_size,
                                  negative_crops_coords_top_left, negative_target_size, pooled, batch)
        return _Conditioning(embeds.to(device), pooled.to(device), time_ids), batch

    def _time_ids(self, original_size, crops_coords_top_left, target_size, negative_original_size,
                  negative_crops_coords_top_left, negative_target_size, pooled: torch.Tensor,
                  batch: int) -> torch.Tensor:
        """SD-XL's ``add_time_ids`` [guidance x batch, 6]: (original size, crop corner, target size) per sample."""
        projection = (int(pooled.shape[-1]) if self.text_encoder_2 is None
                      else self.text_encoder_2.config.projection_dim)
        time_ids = self._get_add_time_ids(tuple(original_size), tuple(crops_coords_top_left), tuple(target_size),
                                          dtype=pooled.dtype, text_encoder_projection_dim=projection)
        negative_time_ids = time_ids
        if negative_original_size is not None and negative_target_size is not None:
            negative_time_ids = self._get_add_time_ids(
                tuple(negative_original_size), tuple(negative_crops_coords_top_left), tuple(negative_target_size),
                dtype=pooled.dtype, text_encoder_projection_dim=projection)
        if self.do_classifier_free_guidance:
            time_ids = torch.cat([negative_time_ids, time_ids])
        return time_ids.to(self._execution_device).repeat(batch, 1)

    def _noise_prediction(self, latents: torch.Tensor, t, cond: _Conditioning,
                          unet_batch_size: Optional[int]) -> torch.Tensor:
        """The guided model output at ``t``; the guidance batch runs ``unet_batch_size`` samples per UNet call."""
        guided = self.do_classifier_free_guidance
        model_input = self.scheduler.scale_model_input(torch.cat([latents] * 2) if guided else latents, t)
        chunk = unet_batch_size or model_input.shape[0]
        prediction = torch.empty_like(model_input)
        for start in range(0, model_input.shape[0], chunk):
            rows = slice(start, start + chunk)
            prediction[rows] = self.unet(
                model_input[rows], t, encoder_hidden_states=cond.prompt_embeds[rows],
                cross_attention_kwargs=self.cross_attention_kwargs,
                added_cond_kwargs={"text_embeds": cond.text_embeds[rows], "time_ids": cond.time_ids[rows]},
                return_dict=False)[0]
        del model_input
        if not guided:
            return prediction
        uncond, text = prediction.chunk(2)
        guided_prediction = uncond + self.guidance_scale * (text - uncond)
        if self.guidance_rescale > 0:
            guided_prediction = rescale_noise_cfg(guided_prediction, text, guidance_rescale=self.guidance_rescale)
        return guided_prediction

    def _refine(self, reference: torch.Tensor, plan: StagePlan, cond: _Conditioning, generator,
                unet_batch_size: Optional[int], extra_step_kwargs: dict, progress, counter: list[int],
                callback, callback_inputs) -> torch.Tensor:
        """One §6 B / C stage from the encoded reference latents x0: skip residual, UNet pass, dilated pass on
        the blurred latents, combination, scheduler step; returns the stage's final latents."""
        noise = randn_tensor(reference.shape, generator=generator, device=reference.device, dtype=reference.dtype)
        latents = self.scheduler.add_noise(reference, noise, plan.timesteps[:1].repeat(reference.shape[0]))
        for t, skip, dilated, sigma in zip(plan.timesteps, plan.skip_weights, plan.dilated_weights, plan.blur_sigmas):
            noised = self.scheduler.add_noise(reference, noise, t.repeat(reference.shape[0]))
            latents = (1 - skip) * latents + skip * noised
            del noised
            prediction = self._noise_prediction(latents, t, cond, unet_batch_size)
            if plan.dilation > 1 and dilated > 0:
                blurred = restandardize(gaussian_blur(latents, plan.kernel_size, sigma), *_moments(latents))
                with dilated_convs(self.unet, plan.dilation):
                    second = self._noise_prediction(blurred, t, cond, unet_batch_size)
                del blurred
                prediction = (1 - dilated) * prediction + dilated * second
                del second
            latents = self.scheduler.step(prediction, t, latents, **extra_step_kwargs, return_dict=False)[0]
            del prediction
            latents = self._after_step(latents, t, cond, counter, progress, callback, callback_inputs)
        return latents

    def _after_step(self, latents, t, cond: _Conditioning, counter: list[int], progress, callback, callback_inputs):
        """The step callback (``step`` counts across stages; it may replace ``latents``) and the progress bar."""
        if callback is not None:
            values = {"latents": latents, "prompt_embeds": cond.prompt_embeds, "add_text_embeds": cond.text_embeds,
                      "add_time_ids": cond.time_ids}
            latents = callback(self, counter[0], t, {k: values[k] for k in callback_inputs}).pop("latents", latents)
        counter[0] += 1
        progress.update()
        return latents

    def _stage_output(self, latents, last: bool, output_type, output_path, intermediate_dir, tile_size, level,
                      index: int):
        """(final images or None, the stage's uint8 canvas or None) after stage ``index``."""
        if last and output_type == "latent":
            return latents, None
        if last and output_type == "png":
            return self._decode_to_png(latents, Path(output_path), tile_size, level), None
        canvas = self._decode_to_canvas(latents, tile_size)
        if last:
            return self._canvas_output(canvas, output_type), None
        if intermediate_dir is not None:
            height, width = canvas.shape[-2:]
            self._save_canvas(canvas, Path(intermediate_dir), f"stage{index}_{width}x{height}", level)
        return None, canvas


def _checked_strengths(strengths: Sequence[float], sizes: list[tuple[int, int]]) -> list[tuple[tuple[int, int], float]]:
    strengths = [float(s) for s in strengths]
    if len(strengths) != len(sizes) - 1 or not all(0 < s <= 1 for s in strengths):
        raise ValueError(f"need {len(sizes) - 1} strengths in (0, 1] for the stages {sizes}, got {strengths}")
    return list(zip(sizes[1:], strengths))
