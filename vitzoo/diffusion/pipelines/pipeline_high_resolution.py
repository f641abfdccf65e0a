"""High-resolution text-to-image for Stable Diffusion UNets: a base pass, then upscale + partial denoise.

LinFusion's recipe for 16K images (``ultra_text2image_w_sdedit.ipynb`` in
https://github.com/Huage001/LinFusion, arXiv:2409.02097 §"ultra-high resolution"; re-implemented):
generate at a resolution the model knows, then repeatedly double the image (bicubic resize), encode
it and denoise only the last ``strength`` of the schedule (SDEdit), until the target size. With
LinFusion mounted every UNet pass is linear in pixels; this pipeline keeps the rest linear too:

- the VAE encodes and decodes in overlapping tiles (:mod:`vitzoo.diffusion.highres_vae`), the
  upscaled image is produced tile by tile from the previous stage and never exists whole;
- the classifier-free-guidance batch runs through the UNet in chunks (``unet_batch_size``, default
  one sample per call, as the official low-memory notebook does) and the feed-forward layers of the
  transformer blocks run in token chunks (``feed_forward_chunks``, diffusers' ``set_chunk_feed_forward``);
- intermediate images are uint8 (``[B, 3, H, W]`` on the CPU, one stage at a time) and the final image
  can be written to PNG band by band (``output_type="png"``), never held as floats.

Stage schedule: the base size is the target halved until its long side fits ``base_size`` (the
UNet's native resolution by default); each further stage doubles it, the last one is the target.
Stage ``s`` of ``S`` denoises with strength ``linspace(upscale_strength, 0, S + 1)[s - 1]``, which
gives the official SD-1.5 chain 0.4 / 0.3 / 0.2 / 0.1 for four stages (and the SD-XL chain
0.32 / 0.24 / 0.16 / 0.08 with ``upscale_strength=0.32``); ``strengths=`` sets them explicitly.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import numpy as np
import PIL.Image
import torch
from diffusers import StableDiffusionPipeline
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from ..highres_png import PngWriter
from ..highres_vae import decode_tiled, encode_tiled, resize_region, vae_scale_factor

__all__ = ["HighResolutionPipeline", "HighResolutionPipelineOutput", "HighResolutionStagesMixin", "stage_sizes",
           "stage_strengths", "to_canvas"]

_logger = logging.getLogger("vitzoo.diffusion.pipelines.high_resolution")


@dataclass
class HighResolutionPipelineOutput(BaseOutput):
    """Output of :class:`HighResolutionPipeline`.

    Args:
        images: PIL images, a NumPy array [B, H, W, 3] or a tensor [B, 3, H, W] in [0, 1], latents
            (``output_type="latent"``), or the PNG paths (``output_type="png"``).
        stage_sizes: (height, width) of every stage, the base first.
    """

    images: Union[list[PIL.Image.Image], np.ndarray, torch.Tensor, list[Path]]
    stage_sizes: list[tuple[int, int]]


def stage_sizes(height: int, width: int, base_size: int, multiple: int = 8) -> list[tuple[int, int]]:
    """(height, width) per stage: the target halved until its long side is <= ``base_size``, then doubled back.

    Intermediate sizes are rounded to the nearest ``multiple`` (the VAE factor; halves up); the last is the
    target itself.
    """
    if height % multiple or width % multiple:
        raise ValueError(f"height and width must be multiples of {multiple}, got {height}x{width}")
    doublings = max(0, math.ceil(math.log2(max(height, width) / base_size)))
    sizes = []
    for halvings in range(doublings, 0, -1):
        sizes.append(tuple(max(multiple, int(side / 2 ** halvings / multiple + 0.5) * multiple)
                           for side in (height, width)))
    return sizes + [(height, width)]


def stage_strengths(num_upscales: int, upscale_strength: float) -> list[float]:
    """``linspace(upscale_strength, 0, num_upscales + 1)[:-1]``: the denoising strength of each upscale stage."""
    return [upscale_strength * (1 - s / num_upscales) for s in range(num_upscales)]


def to_canvas(image: Any) -> torch.Tensor:
    """A user's image(s) as the uint8 canvas [B, 3, H, W] the stages start from.

    Takes a PIL image (converted to RGB), a list of them (same size), a uint8 array [H, W, 3] / [B, H, W, 3],
    or a uint8 tensor [3, H, W] / [B, 3, H, W]; float input is refused, since [0, 1] and [-1, 1] are both common.
    """
    if isinstance(image, PIL.Image.Image):
        image = [image]
    if isinstance(image, (list, tuple)) and image and all(isinstance(i, PIL.Image.Image) for i in image):
        if len({i.size for i in image}) != 1:
            raise ValueError(f"images of one call must share a size, got {sorted({i.size for i in image})}")
        image = np.stack([np.asarray(i.convert("RGB")) for i in image])
    if isinstance(image, np.ndarray):
        if image.ndim == 3:
            image = image[None]
        image = torch.from_numpy(np.ascontiguousarray(image)).permute(0, 3, 1, 2)
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a PIL image, a uint8 array or a uint8 tensor, got {type(image).__name__}")
    if image.ndim == 3:
        image = image[None]
    if image.dtype != torch.uint8 or image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"expected uint8 RGB images [B, 3, H, W] (or [B, H, W, 3] arrays), got {image.dtype} "
                         f"{tuple(image.shape)}")
    return image.cpu().contiguous()


def _chunk_size(tokens: int, chunks: int) -> int:
    """The largest divisor of ``tokens`` not above ceil(tokens / chunks) (diffusers needs exact chunks)."""
    for size in range(math.ceil(tokens / chunks), 0, -1):
        if tokens % size == 0:
            return size
    return 1


@contextlib.contextmanager
def feed_forward_chunking(unet: torch.nn.Module, chunks: Optional[int]) -> Iterator[None]:
    """Within the block every transformer block of ``unet`` runs its feed-forward in ``chunks`` token
    chunks (``set_chunk_feed_forward``, sized per call from the tokens it receives); restored on exit."""
    blocks = [m for m in unet.modules() if hasattr(m, "set_chunk_feed_forward") and hasattr(m, "ff")]
    if not chunks or chunks <= 1 or not blocks:
        yield
        return
    saved = [(block._chunk_size, block._chunk_dim) for block in blocks]

    def size_chunks(block, args, kwargs):
        tokens = (args[0] if args else kwargs["hidden_states"]).shape[1]
        block.set_chunk_feed_forward(_chunk_size(tokens, chunks), dim=1)

    handles = [block.register_forward_pre_hook(size_chunks, with_kwargs=True) for block in blocks]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        for block, (size, dim) in zip(blocks, saved):
            block.set_chunk_feed_forward(size, dim)


class HighResolutionStagesMixin:
    """The memory-linear stage machinery every vitzoo high-resolution pipeline shares (SD-1.x/2.x here,
    SD-XL in :mod:`.pipeline_high_resolution_sdxl`): a stage's image is upscaled and encoded tile by tile,
    decoded row of tiles by row of tiles into a uint8 canvas or straight into a PNG; it needs ``self.vae``
    and ``self.progress_bar`` of a diffusers pipeline."""

    def _to_latents(self, sample: torch.Tensor) -> torch.Tensor:
        """VAE latent sample -> diffusion latents (``scaling_factor``; ``latents_mean/std`` too when set)."""
        config = self.vae.config
        if getattr(config, "latents_mean", None) is not None and getattr(config, "latents_std", None) is not None:
            mean = torch.tensor(config.latents_mean, device=sample.device, dtype=sample.dtype).view(1, -1, 1, 1)
            std = torch.tensor(config.latents_std, device=sample.device, dtype=sample.dtype).view(1, -1, 1, 1)
            return (sample - mean) * config.scaling_factor / std
        return sample * config.scaling_factor

    def _from_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`_to_latents` (what the VAE decoder takes)."""
        config = self.vae.config
        if getattr(config, "latents_mean", None) is not None and getattr(config, "latents_std", None) is not None:
            mean = torch.tensor(config.latents_mean, device=latents.device, dtype=latents.dtype).view(1, -1, 1, 1)
            std = torch.tensor(config.latents_std, device=latents.device, dtype=latents.dtype).view(1, -1, 1, 1)
            return latents * std / config.scaling_factor + mean
        return latents / config.scaling_factor

    def _encode_upscaled(self, canvas: torch.Tensor, size: tuple[int, int], generator, tile_size: Optional[int],
                         dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """Latents of ``canvas`` resized to ``size``, encoded tile by tile from the small image."""

        def source(y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
            # the float32 operations of diffusers' VaeImageProcessor (x / 255, then 2x - 1), bit for bit
            return (resize_region(canvas, size, (y0, y1), (x0, x1)) / 255 * 2 - 1).to(device)

        with self._tile_bar(f"VAE encode {size[1]}x{size[0]}", size, tile_size, latent=False) as bar:
            moments = encode_tiled(self.vae, source, size[0], size[1], tile_sample_size=tile_size, progress=bar.update)
        latents = DiagonalGaussianDistribution(moments).sample(generator)
        return self._to_latents(latents).to(dtype)

    def _decode_bands(self, latents: torch.Tensor, tile_size: Optional[int], sink: Callable[[int, torch.Tensor], None]):
        """Decode and hand uint8 bands [B, rows, W, 3] (CPU) to ``sink`` as diffusers' postprocess rounds them."""

        def to_uint8(y0: int, band: torch.Tensor) -> None:
            band = (band.float() / 2 + 0.5).clamp(0, 1).mul(255).round().to(torch.uint8)
            sink(y0, band.permute(0, 2, 3, 1).cpu())

        factor = vae_scale_factor(self.vae)
        size = (latents.shape[2] * factor, latents.shape[3] * factor)
        with self._tile_bar(f"VAE decode {size[1]}x{size[0]}", latents.shape[2:], tile_size, latent=True) as bar:
            decode_tiled(self.vae, self._from_latents(latents), to_uint8, tile_sample_size=tile_size,
                         progress=bar.update)

    def _tile_bar(self, description: str, size: Sequence[int], tile_size: Optional[int], latent: bool):
        """A progress bar over the VAE tiles of one encode/decode (they dominate very large images)."""
        factor = vae_scale_factor(self.vae)
        tile = (tile_size or self.vae.tile_sample_min_size) // (factor if latent else 1)
        stride = max(1, int(tile * (1 - self.vae.tile_overlap_factor)))
        tiles = 1 if max(size) <= tile else math.ceil(size[0] / stride) * math.ceil(size[1] / stride)
        bar = self.progress_bar(total=tiles)
        bar.set_description(description)
        bar.leave = False
        return bar

    def _decode_to_canvas(self, latents: torch.Tensor, tile_size: Optional[int]) -> torch.Tensor:
        factor = vae_scale_factor(self.vae)
        canvas = torch.empty(latents.shape[0], 3, latents.shape[2] * factor, latents.shape[3] * factor,
                             dtype=torch.uint8)

        def store(y0: int, band: torch.Tensor) -> None:
            canvas[:, :, y0:y0 + band.shape[1]] = band.permute(0, 3, 1, 2)

        self._decode_bands(latents, tile_size, store)
        return canvas

    def _decode_to_png(self, latents: torch.Tensor, path: Path, tile_size: Optional[int], level: int) -> list[Path]:
        factor = vae_scale_factor(self.vae)
        height, width = latents.shape[2] * factor, latents.shape[3] * factor
        paths = _png_paths(path, latents.shape[0])
        writers = [PngWriter(p, width, height, compress_level=level) for p in paths]
        try:
            self._decode_bands(latents, tile_size, lambda y0, band: [w.write(b) for w, b in zip(writers, band)])
        except BaseException:
            for writer in writers:
                writer.abort()
            raise
        return [writer.close() for writer in writers]

    @staticmethod
    def _save_canvas(canvas: torch.Tensor, directory: Path, stem: str, level: int, band_rows: int = 256) -> None:
        for path, image in zip(_png_paths(directory / f"{stem}.png", canvas.shape[0]), canvas):
            with PngWriter(path, image.shape[2], image.shape[1], compress_level=level) as writer:
                for y0 in range(0, image.shape[1], band_rows):
                    writer.write(image[:, y0:y0 + band_rows].permute(1, 2, 0))

    @staticmethod
    def _canvas_output(canvas: torch.Tensor, output_type: str):
        if output_type == "pil":
            return [PIL.Image.fromarray(image.permute(1, 2, 0).numpy()) for image in canvas]
        images = canvas.float() / 255
        return images if output_type == "pt" else images.permute(0, 2, 3, 1).numpy()


class HighResolutionPipeline(HighResolutionStagesMixin, StableDiffusionPipeline):
    """Text-to-image at any size up to 16384 x 16384 (and beyond) with memory linear in pixels.

    Takes the components of a Stable Diffusion 1.x / 2.x pipeline (``HighResolutionPipeline.from_pipe(sd)``
    or ``from_pretrained``); mount LinFusion on its UNet first for linear-cost attention
    (``LinFusion.construct_for(pipe, ...)``). Any diffusers scheduler works. The safety checker, if
    present, is not run (it cannot look at a streamed image); a warning says so.
    """

    @torch.no_grad()
    def __call__(
            self,
            prompt: Union[str, list[str], None] = None,
            height: Optional[int] = None,
            width: Optional[int] = None,
            num_inference_steps: int = 50,
            guidance_scale: float = 7.5,
            negative_prompt: Union[str, list[str], None] = None,
            num_images_per_prompt: int = 1,
            eta: float = 0.0,
            generator: Union[torch.Generator, list[torch.Generator], None] = None,
            latents: Optional[torch.Tensor] = None,
            prompt_embeds: Optional[torch.Tensor] = None,
            negative_prompt_embeds: Optional[torch.Tensor] = None,
            base_size: Optional[int] = None,
            strengths: Optional[Sequence[float]] = None,
            upscale_strength: float = 0.4,
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
            callback_on_step_end: Optional[Callable[["HighResolutionPipeline", int, Any, dict], dict]] = None,
            callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
            image: Any = None,
    ) -> Union[HighResolutionPipelineOutput, tuple]:
        """Generate ``height`` x ``width`` images through the stage chain (or upscale ``image`` through it).

        Args:
            prompt: the prompt(s); or pass ``prompt_embeds``.
            height, width: target size, multiples of 8; default the UNet's native resolution.
            num_inference_steps: steps of the full schedule; stage ``s`` runs ``int(steps · strength)``
                of them (at least one).
            guidance_scale: classifier-free guidance scale (1 disables guidance).
            negative_prompt, num_images_per_prompt, eta, generator, latents, prompt_embeds,
            negative_prompt_embeds, cross_attention_kwargs, clip_skip: as in ``StableDiffusionPipeline``;
                ``latents`` are the base stage's initial noise.
            base_size: long side of the base stage (default: UNet sample size x VAE factor, 512 for SD-1.5).
            strengths: SDEdit strength of each upscale stage (overrides ``upscale_strength``).
            upscale_strength: first upscale stage's strength; later ones fall linearly towards 0.
            vae_tile_size: VAE tile size in pixels (default ``vae.tile_sample_min_size``).
            feed_forward_chunks: token chunks of each transformer feed-forward (None or 1: no chunking).
            unet_batch_size: most samples per UNet call (the guidance batch is split); None: all at once.
            output_type: ``"pil"``, ``"np"``, ``"pt"``, ``"latent"``, or ``"png"`` (stream to ``output_path``).
            output_path: PNG file for ``output_type="png"``; with several images ``<stem>_<i>.png``.
            intermediate_dir: when set, every earlier stage's images are saved there as PNG.
            png_compress_level: zlib level of written PNGs.
            return_dict: return a :class:`HighResolutionPipelineOutput` (else a tuple).
            callback_on_step_end: ``callback(pipe, step, t, tensors) -> dict`` after every step of
                every stage (``step`` counts across stages); may replace ``latents``.
            callback_on_step_end_tensor_inputs: tensors passed to the callback.
            image: start from this image instead of a generated base (upscaling a user's image, ``vitzoo
                upscale``): PIL / uint8 array / uint8 tensor (see :func:`to_canvas`), one per prompt or one for
                all. The stages are the chain's sizes above it (``base_size`` defaults to its long side), the
                first resized from the image itself.
        """
        factor = vae_scale_factor(self.vae)
        height = height or self.unet.config.sample_size * factor
        width = width or self.unet.config.sample_size * factor
        start = to_canvas(image) if image is not None else None
        if start is not None:
            base_size = base_size or max(start.shape[-2:])
            if max(height, width) <= base_size:
                raise ValueError(f"the target {width}x{height} must be larger than the image "
                                 f"{start.shape[-1]}x{start.shape[-2]} it starts from")
        base_size = base_size or self.unet.config.sample_size * factor
        self.check_inputs(prompt, height, width, None, negative_prompt, prompt_embeds, negative_prompt_embeds,
                          callback_on_step_end_tensor_inputs=list(callback_on_step_end_tensor_inputs))
        if output_type not in ("pil", "np", "pt", "latent", "png"):
            raise ValueError(f"output_type must be 'pil', 'np', 'pt', 'latent' or 'png', got {output_type!r}")
        if (output_type == "png") != (output_path is not None):
            raise ValueError("output_type='png' and output_path go together (the PNG is streamed to output_path)")
        sizes = stage_sizes(height, width, base_size, factor)
        if start is not None:
            sizes[0] = tuple(start.shape[-2:])
        if strengths is None:
            strengths = stage_strengths(len(sizes) - 1, upscale_strength)
        strengths = [float(s) for s in strengths]
        if len(strengths) != len(sizes) - 1 or not all(0 < s <= 1 for s in strengths):
            raise ValueError(f"need {len(sizes) - 1} strengths in (0, 1] for the stages {sizes}, got {strengths}")
        if self.safety_checker is not None:
            _logger.warning("HighResolutionPipeline does not run the safety checker")

        self._guidance_scale, self._clip_skip = guidance_scale, clip_skip
        self._cross_attention_kwargs, self._interrupt = cross_attention_kwargs, False
        device = self._execution_device
        if prompt_embeds is not None:
            batch = prompt_embeds.shape[0]
        else:
            batch = 1 if isinstance(prompt, str) else len(prompt)
        prompt_embeds, negative_prompt_embeds = self.encode_prompt(
            prompt, device, num_images_per_prompt, self.do_classifier_free_guidance, negative_prompt,
            prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds, clip_skip=clip_skip,
            lora_scale=(cross_attention_kwargs or {}).get("scale"))
        batch *= num_images_per_prompt
        if start is not None:
            if start.shape[0] not in (1, batch):
                raise ValueError(f"got {start.shape[0]} images for {batch} prompts x images per prompt")
            start = start.expand(batch, -1, -1, -1)
        extra_step_kwargs = self.prepare_extra_step_kwargs(generator, eta)
        upscale_steps = [max(1, min(int(num_inference_steps * s), num_inference_steps)) for s in strengths]
        steps_per_stage = [0 if start is not None else num_inference_steps] + upscale_steps
        self._num_timesteps = sum(steps_per_stage)

        order = self.scheduler.order
        images: Any = None
        with feed_forward_chunking(self.unet, feed_forward_chunks), \
                self.progress_bar(total=sum(steps_per_stage) * order) as progress:
            canvas: Optional[torch.Tensor] = None
            step = 0
            for index, (size, steps) in enumerate(zip(sizes, steps_per_stage)):
                if index == 0 and start is not None:
                    canvas = start
                    continue
                progress.set_description(f"stage {index + 1}/{len(sizes)} {size[1]}x{size[0]}")
                self.scheduler.set_timesteps(num_inference_steps, device=device)
                if index == 0:
                    timesteps = self.scheduler.timesteps
                    latents = self.prepare_latents(batch, self.unet.config.in_channels, size[0], size[1],
                                                   prompt_embeds.dtype, device, generator, latents)
                else:
                    timesteps = self.scheduler.timesteps[(num_inference_steps - steps) * order:]
                    if hasattr(self.scheduler, "set_begin_index"):
                        self.scheduler.set_begin_index((num_inference_steps - steps) * order)
                    latents = self._encode_upscaled(canvas, size, generator, vae_tile_size, prompt_embeds.dtype, device)
                    canvas = None
                    noise = randn_tensor(latents.shape, generator=generator, device=device, dtype=latents.dtype)
                    latents = self.scheduler.add_noise(latents, noise, timesteps[:1].repeat(batch))
                    del noise
                if len(timesteps) != steps * order:  # second-order schedulers (Heun) skip one evaluation
                    progress.total += len(timesteps) - steps * order
                    progress.refresh()
                latents, step = self._denoise(latents, timesteps, prompt_embeds, negative_prompt_embeds,
                                              unet_batch_size, extra_step_kwargs, progress, step,
                                              callback_on_step_end, callback_on_step_end_tensor_inputs)
                last = index == len(sizes) - 1
                if last and output_type == "latent":
                    images = latents
                elif last and output_type == "png":
                    images = self._decode_to_png(latents, Path(output_path), vae_tile_size, png_compress_level)
                else:
                    canvas = self._decode_to_canvas(latents, vae_tile_size)
                    if intermediate_dir is not None and not last:
                        self._save_canvas(canvas, Path(intermediate_dir), f"stage{index}_{size[1]}x{size[0]}",
                                          png_compress_level)
                del latents
                latents = None
            if output_type in ("pil", "np", "pt"):
                images = self._canvas_output(canvas, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return images, sizes
        return HighResolutionPipelineOutput(images=images, stage_sizes=sizes)

    def _denoise(self, latents, timesteps, prompt_embeds, negative_prompt_embeds, unet_batch_size, extra_step_kwargs,
                 progress, step, callback, callback_inputs):
        """One stage's loop; returns (latents, global step counter)."""
        guided = self.do_classifier_free_guidance
        embeds = torch.cat([negative_prompt_embeds, prompt_embeds]) if guided else prompt_embeds
        chunk = unet_batch_size or embeds.shape[0]
        for t in timesteps:
            model_input = torch.cat([latents] * 2) if guided else latents
            model_input = self.scheduler.scale_model_input(model_input, t)
            noise_pred = torch.empty_like(model_input)
            # the guidance batch in chunks: activations of one chunk at a time (the official low-memory trick)
            for start in range(0, model_input.shape[0], chunk):
                rows = slice(start, start + chunk)
                noise_pred[rows] = self.unet(model_input[rows], t, encoder_hidden_states=embeds[rows],
                                             cross_attention_kwargs=self.cross_attention_kwargs, return_dict=False)[0]
            del model_input
            if guided:
                uncond, cond = noise_pred.chunk(2)
                noise_pred = uncond + self.guidance_scale * (cond - uncond)
            latents = self.scheduler.step(noise_pred, t, latents, **extra_step_kwargs, return_dict=False)[0]
            del noise_pred
            if callback is not None:
                values = {"latents": latents, "prompt_embeds": prompt_embeds,
                          "negative_prompt_embeds": negative_prompt_embeds}
                returned = callback(self, step, t, {k: values[k] for k in callback_inputs})
                latents = returned.pop("latents", latents)
            step += 1
            progress.update()
        return latents, step


def _png_paths(path: Path, count: int) -> list[Path]:
    if count == 1:
        return [path]
    return [path.with_name(f"{path.stem}_{i}{path.suffix or '.png'}") for i in range(count)]
