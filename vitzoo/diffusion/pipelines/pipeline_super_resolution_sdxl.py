"""SD-XL super-resolution: an image to a larger size with LinFusion's SuperRes recipe, memory linear in pixels.

LinFusion's ``src/pipelines/pipeline_superres_sdxl.py`` (https://github.com/Huage001/LinFusion,
arXiv:2409.02097; ``../shared/specs/linfusion.md`` §6 C; re-implemented): the input image is resized
(Pillow bicubic) to the target and encoded (the reference x0, whose per-channel mean and std are the anchor),
then denoised from ``upscale_strength`` with the stage of §6 B (skip residual, dilated second UNet pass on
the blurred latents, see :mod:`.pipeline_high_resolution_sdxl`) with dilation ``ceil(long side / base_size)``
(``base_size`` = the UNet's native 1024 for SD-XL), and re-standardised to the anchor at the end. A
dilation of 1 (an output no larger than ``base_size``) runs no second pass: a one-tap blur and undilated
convolutions would repeat the first. The newest official file (6261ab1) counts the dilation in ``base_size``
as the spec does; an older one used the call's scale factor ceil(target / input) (``dilation=`` sets it).

The authors recommend 2x per call: that is the default target. ``chain=True`` runs the low-memory 16K
chain of ``superres_sdxl_low_w_mem.ipynb``: doubling stages from the image to the target (the target halved
until it fits the image, as :func:`~.pipeline_high_resolution.stage_sizes`), each one call of the recipe with
strengths ``linspace(upscale_strength, 0, S + 1)[:-1]`` (1024x512 -> 16384x8192: 0.32, 0.24, 0.16, 0.08).
Each call conditions SD-XL on its own size (``original_size = target_size`` = the call's output size).
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Callable, Optional, Sequence, Union

import torch

from ..highres_vae import vae_scale_factor
from .pipeline_high_resolution import HighResolutionPipelineOutput, feed_forward_chunking, stage_sizes, stage_strengths
from .pipeline_high_resolution import to_canvas
from .pipeline_high_resolution_sdxl import HighResolutionXLPipeline, _checked_strengths, _moments, restandardize

__all__ = ["SuperResolutionXLPipeline", "super_resolution_dilation"]


def super_resolution_dilation(height: int, width: int, base_size: int) -> int:
    """§6 C: the dilation of the second UNet pass, ceil(long side / base_size)."""
    return math.ceil(max(height, width) / base_size)


class SuperResolutionXLPipeline(HighResolutionXLPipeline):
    """SD-XL super-resolution of a user's image (§6 C), 2x per call by default, or chained to any size.

    Same components as :class:`~.pipeline_high_resolution_sdxl.HighResolutionXLPipeline` (``from_pipe(sdxl)``,
    ``from_pretrained``); mount LinFusion-XL first for linear-cost attention.
    """

    @torch.no_grad()
    def __call__(
            self,
            prompt: Union[str, list[str], None] = None,
            image: Any = None,
            height: Optional[int] = None,
            width: Optional[int] = None,
            chain: bool = False,
            prompt_2: Union[str, list[str], None] = None,
            num_inference_steps: int = 50,
            guidance_scale: float = 5.0,
            negative_prompt: Union[str, list[str], None] = None,
            negative_prompt_2: Union[str, list[str], None] = None,
            num_images_per_prompt: int = 1,
            eta: float = 0.0,
            generator: Union[torch.Generator, list[torch.Generator], None] = None,
            prompt_embeds: Optional[torch.Tensor] = None,
            negative_prompt_embeds: Optional[torch.Tensor] = None,
            pooled_prompt_embeds: Optional[torch.Tensor] = None,
            negative_pooled_prompt_embeds: Optional[torch.Tensor] = None,
            guidance_rescale: float = 0.0,
            crops_coords_top_left: tuple[int, int] = (0, 0),
            base_size: Optional[int] = None,
            strengths: Optional[Sequence[float]] = None,
            upscale_strength: float = 0.32,
            dilation: Optional[int] = None,
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
            callback_on_step_end: Optional[Callable[["SuperResolutionXLPipeline", int, Any, dict], dict]] = None,
            callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> Union[HighResolutionPipelineOutput, tuple]:
        """Upscale ``image`` to ``height`` x ``width``.

        Args:
            prompt: what the image shows (may be empty); or pass ``prompt_embeds``.
            image: PIL image(s), uint8 array or uint8 tensor (:func:`~.pipeline_high_resolution.to_canvas`),
                any size; one per prompt or one for all.
            height, width: the output size, multiples of 8 (default: twice the image, rounded up to 8).
            chain: double stage by stage up to the target (the low-memory 16K chain) instead of one call.
            base_size: the size the dilation counts in (default: UNet sample size x VAE factor, 1024 for SD-XL).
            strengths: strength of each stage (default: ``upscale_strength``, or the chain's linspace).
            dilation: the dilation of the second pass (default: §6 C's ceil(long side / base_size) per stage).
            prompt_2, num_inference_steps, guidance_scale, negative_prompt, negative_prompt_2,
            num_images_per_prompt, eta, generator, prompt_embeds, negative_prompt_embeds, pooled_prompt_embeds,
            negative_pooled_prompt_embeds, guidance_rescale, crops_coords_top_left, upscale_strength,
            cosine_scales, gaussian_sigma, vae_tile_size, feed_forward_chunks, unet_batch_size, output_type,
            output_path, intermediate_dir, png_compress_level, return_dict, cross_attention_kwargs, clip_skip,
            callback_on_step_end, callback_on_step_end_tensor_inputs: as in
                :class:`~.pipeline_high_resolution_sdxl.HighResolutionXLPipeline`.

        Returns:
            :class:`~.pipeline_high_resolution.HighResolutionPipelineOutput`; ``stage_sizes`` starts with the
            input image's size.
        """
        if image is None:
            raise ValueError("SuperResolutionXLPipeline needs an image to upscale")
        start = to_canvas(image)
        factor = vae_scale_factor(self.vae)
        size_in = tuple(start.shape[-2:])
        height = height or math.ceil(2 * size_in[0] / factor) * factor
        width = width or math.ceil(2 * size_in[1] / factor) * factor
        if height % factor or width % factor:
            raise ValueError(f"height and width must be multiples of {factor}, got {height}x{width}")
        if max(height, width) <= max(size_in):
            raise ValueError(f"the target {width}x{height} must be larger than the image {size_in[1]}x{size_in[0]}")
        sizes = stage_sizes(height, width, max(size_in), factor) if chain else [size_in, (height, width)]
        sizes[0] = size_in
        self._check_call(prompt, prompt_2, sizes[-1], negative_prompt, negative_prompt_2, prompt_embeds,
                         negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds, output_type,
                         output_path, callback_on_step_end_tensor_inputs)
        if strengths is None:
            strengths = stage_strengths(len(sizes) - 1, upscale_strength)
        base_size = base_size or self.default_sample_size * factor
        plans = [self.stage_plan(size, strength, num_inference_steps,
                                 dilation or super_resolution_dilation(*size, base_size), cosine_scales, gaussian_sigma)
                 for size, strength in _checked_strengths(strengths, sizes)]
        cond, batch = self._conditioning(
            prompt, prompt_2, negative_prompt, negative_prompt_2, num_images_per_prompt, prompt_embeds,
            negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds, guidance_scale,
            guidance_rescale, clip_skip, cross_attention_kwargs, sizes[-1], crops_coords_top_left, sizes[-1],
            None, (0, 0), None)
        if start.shape[0] not in (1, batch):
            raise ValueError(f"got {start.shape[0]} images for {batch} prompts x images per prompt")
        canvas = start.expand(batch, -1, -1, -1)
        device = self._execution_device
        extra_step_kwargs = self.prepare_extra_step_kwargs(generator, eta)
        self._num_timesteps = sum(plan.steps for plan in plans)
        images: Any = None
        with feed_forward_chunking(self.unet, feed_forward_chunks), \
                self.progress_bar(total=self._num_timesteps * self.scheduler.order) as progress:
            counter = [0]
            for index, plan in enumerate(plans, start=1):
                progress.set_description(f"stage {index}/{len(plans)} {plan.size[1]}x{plan.size[0]} "
                                         f"(dilation {plan.dilation})")
                stage_cond = dataclasses.replace(cond, time_ids=self._time_ids(
                    plan.size, crops_coords_top_left, plan.size, None, (0, 0), None, cond.text_embeds, batch))
                reference = self._encode_upscaled(canvas, plan.size, generator, vae_tile_size,
                                                  cond.prompt_embeds.dtype, device)
                canvas = None
                anchor = _moments(reference)
                self._schedule(num_inference_steps, plan.steps)
                latents = self._refine(reference, plan, stage_cond, generator, unet_batch_size, extra_step_kwargs,
                                       progress, counter, callback_on_step_end, callback_on_step_end_tensor_inputs)
                del reference
                latents = restandardize(latents, *anchor)
                images, canvas = self._stage_output(latents, index == len(plans), output_type, output_path,
                                                    intermediate_dir, vae_tile_size, png_compress_level, index)
                latents = None
        self.maybe_free_model_hooks()
        if not return_dict:
            return images, sizes
        return HighResolutionPipelineOutput(images=images, stage_sizes=sizes)
