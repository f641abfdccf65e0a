"""Aligned fakes: real images reconstructed by a generator's autoencoder or by a diffusion pipeline.

A reconstruction keeps the content and the size of the real image and adds the generator's fingerprint
(its decoder's upsampling artifacts, the diffusion texture), so a detector trained on pairs cannot
learn content and must learn the fingerprint (DRCT, ICML 2024; "Aligned Datasets Improve Detection of
Latent Diffusion-Generated Images", ICLR 2025); PPL's Randomized Patch Reconstruction pastes patches
of such a reconstruction into the real image (``../shared/specs/ppl.md`` §3.2).

Three reconstructors, each a callable ``PIL RGB image -> PIL RGB image of the same size``:

- :class:`VaeReconstructor`: encode, take the latent mode, decode, with any diffusers ``AutoencoderKL``
  (:func:`load_vae` reads a user's local folder, e.g. SD's ``vae/``);
- :class:`PipelineReconstructor`: a diffusers img2img or inpainting pipeline with the paper's setting
  (SD 1.4 inpainting, empty prompt, strength 0.25, 50 steps, guidance 7.5; the whole image as the mask)
  (:func:`load_pipeline` reads a user's local pipeline folder);
- the zoo's own small VAE, trained on the real images by :mod:`vitzoo.aigi.tiny_vae`, used through
  :class:`VaeReconstructor`.

Pixel alignment: an image whose sides are not multiples of the autoencoder's factor is padded on the
right and bottom by edge replication up to the next multiple, reconstructed, and cropped back, so the
output has the input's size and every output pixel sits over its input pixel (nothing is resampled).

:func:`reconstruct_folder` applies a reconstructor to a folder tree and writes PNGs at the same
relative paths (``a/b.jpg`` -> ``a/b.png``), each atomically (a temporary file renamed into place);
existing outputs are kept, so an interrupted run resumes where it stopped. Unreadable inputs are
reported and skipped.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from .._atomic import atomic_write
from ..diffusion.highres_vae import vae_scale_factor
from ..diffusion.hub import hub_errors
from .imageio import is_image_path, read_image_rgb

__all__ = ["PAPER_INPAINT_SETTINGS", "PipelineReconstructor", "ReconstructReport", "VaeReconstructor", "load_pipeline",
           "load_vae", "pad_to_multiple", "reconstruct_folder", "save_png_atomic"]

_logger = logging.getLogger("vitzoo.aigi")

# ../shared/specs/ppl.md §3.2: SD v1.4 inpainting, empty prompt, strength 0.25, 50 steps, guidance 7.5
PAPER_INPAINT_SETTINGS = dict(prompt="", strength=0.25, num_inference_steps=50, guidance_scale=7.5)


def pad_to_multiple(pixels: np.ndarray, multiple: int) -> np.ndarray:
    """Pad an [H, W, C] array on the bottom and right by edge replication to multiples of ``multiple``."""
    height, width = pixels.shape[:2]
    pad_h, pad_w = -height % multiple, -width % multiple
    if not pad_h and not pad_w:
        return pixels
    return np.pad(pixels, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def _to_tensor(images: Sequence[Image.Image], multiple: int) -> torch.Tensor:
    """Images of one size -> [B, 3, H', W'] in [-1, 1], padded to ``multiple``."""
    arrays = [pad_to_multiple(np.asarray(image.convert("RGB")), multiple) for image in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _to_images(batch: torch.Tensor, size: tuple[int, int]) -> list[Image.Image]:
    """[B, 3, H', W'] in [-1, 1] -> PIL images cropped to ``size`` (width, height)."""
    width, height = size
    pixels = batch[:, :, :height, :width].float().clamp(-1, 1).add(1).mul(127.5).round().byte()
    return [Image.fromarray(array) for array in pixels.permute(0, 2, 3, 1).cpu().numpy()]


class VaeReconstructor:
    """Encode -> latent mode -> decode with a diffusers ``AutoencoderKL`` (or any model with its API).

    Args:
        vae: the autoencoder (evaluated in ``eval()`` mode, under ``torch.inference_mode``).
        device: where to run it (the VAE is moved there).
        dtype: computation dtype (float32 on CPU; float16 / bfloat16 on a GPU to save memory).
        sample: decode a sample of the latent distribution instead of its mode (seeded by ``seed``).
        seed: seed of the latent sample.
    """

    def __init__(self, vae: torch.nn.Module, *, device: Union[str, torch.device] = "cpu",
                 dtype: torch.dtype = torch.float32, sample: bool = False, seed: int = 0):
        # diffusers warns on every dtype cast of a VAE, also a no-op one: cast only when needed
        vae = vae.to(device) if next(vae.parameters()).dtype == dtype else vae.to(device=device, dtype=dtype)
        self.vae = vae.eval()
        self.device, self.dtype, self.sample = torch.device(device), dtype, sample
        self.multiple = vae_scale_factor(vae)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    @torch.inference_mode()
    def reconstruct_batch(self, images: Sequence[Image.Image]) -> list[Image.Image]:
        """Reconstruct images of one size together; returns images of that size."""
        sizes = {image.size for image in images}
        if len(sizes) != 1:
            raise ValueError(f"reconstruct_batch takes images of one size, got sizes {sorted(sizes)}")
        batch = _to_tensor(images, self.multiple).to(self.device, self.dtype)
        posterior = self.vae.encode(batch).latent_dist
        latents = posterior.sample(generator=self.generator) if self.sample else posterior.mode()
        return _to_images(self.vae.decode(latents).sample, sizes.pop())

    def __call__(self, image: Image.Image) -> Image.Image:
        return self.reconstruct_batch([image])[0]


class PipelineReconstructor:
    """Reconstruction by partial denoising with a diffusers img2img or inpainting pipeline.

    An inpainting pipeline (one whose ``__call__`` takes ``mask_image``) gets an all-white mask: the
    whole image is the region, as in PPL. Defaults are the paper's (:data:`PAPER_INPAINT_SETTINGS`);
    sizes are padded to the VAE factor and cropped back.

    Args:
        pipe: e.g. ``StableDiffusionInpaintPipeline`` or ``StableDiffusionImg2ImgPipeline``.
        prompt: text prompt (empty in the paper).
        strength: share of the noise schedule that is re-run (0.25 in the paper).
        num_inference_steps: scheduler steps of the full schedule (50).
        guidance_scale: classifier-free guidance (7.5).
        seed: seed of the noise; each image uses a generator seeded with it, so a file's output does not
            depend on the order of the run (resumable runs write what an uninterrupted one would).
    """

    def __init__(self, pipe, *, prompt: str = PAPER_INPAINT_SETTINGS["prompt"],
                 strength: float = PAPER_INPAINT_SETTINGS["strength"],
                 num_inference_steps: int = PAPER_INPAINT_SETTINGS["num_inference_steps"],
                 guidance_scale: float = PAPER_INPAINT_SETTINGS["guidance_scale"], seed: int = 0):
        import inspect

        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        self.pipe = pipe
        self._parameters = set(inspect.signature(pipe.__call__).parameters)
        self.inpaint = "mask_image" in self._parameters
        self.multiple = int(getattr(pipe, "vae_scale_factor", 8))
        self.options = dict(prompt=prompt, strength=strength, num_inference_steps=num_inference_steps,
                            guidance_scale=guidance_scale)
        self.seed = seed

    def __call__(self, image: Image.Image) -> Image.Image:
        size = image.size
        padded = Image.fromarray(pad_to_multiple(np.asarray(image.convert("RGB")), self.multiple))
        kwargs = dict(self.options, image=padded, output_type="pil",
                      generator=torch.Generator(device="cpu").manual_seed(self.seed))
        # inpainting pipelines resize to height / width (default: the UNet's size); img2img keeps the input's
        kwargs.update({key: value for key, value in (("height", padded.height), ("width", padded.width))
                       if key in self._parameters})
        if self.inpaint:
            kwargs["mask_image"] = Image.new("L", padded.size, 255)
        out = self.pipe(**kwargs).images[0]
        if out.size != padded.size:
            raise RuntimeError(f"the pipeline returned {out.size} for a {padded.size} input")
        return out.crop((0, 0) + size)


def load_vae(path: Union[str, os.PathLike], *, subfolder: Optional[str] = None,
             torch_dtype: torch.dtype = torch.float32):
    """``AutoencoderKL.from_pretrained`` of a local folder (or a hub id, with a network), one clear error if absent.

    Args:
        path: a VAE folder (``config.json`` + weights) or a pipeline folder with ``subfolder="vae"``.
    """
    from diffusers import AutoencoderKL

    with hub_errors(path, what="VAE"):
        return AutoencoderKL.from_pretrained(path, subfolder=subfolder, torch_dtype=torch_dtype)


def load_pipeline(path: Union[str, os.PathLike], *, kind: str = "inpaint", torch_dtype: torch.dtype = torch.float32):
    """A local diffusers pipeline folder as an inpainting (``kind="inpaint"``) or img2img pipeline.

    The safety checker is dropped (it would blank some reconstructions of real photos) and the
    progress bar is hidden (:func:`reconstruct_folder` shows one over the files).
    """
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

    classes = {"inpaint": AutoPipelineForInpainting, "img2img": AutoPipelineForImage2Image}
    if kind not in classes:
        raise ValueError(f"kind={kind!r}: expected one of {sorted(classes)}")
    with hub_errors(path, what=f"{kind} pipeline"):
        pipe = classes[kind].from_pretrained(path, torch_dtype=torch_dtype, safety_checker=None,
                                             requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_png_atomic(image: Image.Image, path: Union[str, os.PathLike]) -> None:
    """Write ``image`` as a PNG at ``path`` atomically (:func:`vitzoo._atomic.atomic_write`)."""
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


@dataclass
class ReconstructReport:
    """What :func:`reconstruct_folder` did: files written, kept (already there), and unreadable ones."""

    written: list[Path] = field(default_factory=list)
    existing: list[Path] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)


def _listing(source: Path, files: Optional[Sequence[Union[str, Path]]]) -> list[Path]:
    if files is not None:
        return [Path(f) if Path(f).is_absolute() else source / f for f in files]
    return sorted(p for p in source.rglob("*") if p.is_file() and is_image_path(p) and not p.name.startswith("."))


def reconstruct_folder(source: Union[str, os.PathLike], output: Union[str, os.PathLike],
                       reconstructor: Callable[[Image.Image], Image.Image], *,
                       files: Optional[Sequence[Union[str, Path]]] = None, progress: bool = True) -> ReconstructReport:
    """Reconstruct every image under ``source`` into ``output`` at the same relative path, as PNG.

    Args:
        source: folder of real images (searched recursively for image extensions).
        output: folder receiving ``<relative path>.png``; outputs already there are kept (resume).
        reconstructor: a :class:`VaeReconstructor`, a :class:`PipelineReconstructor` or any callable
            returning an image of the input's size.
        files: only these files (relative to ``source`` or absolute under it) instead of the whole tree.
        progress: show a tqdm bar.
    """
    from tqdm.auto import tqdm

    source, output = Path(source), Path(output)
    if not source.is_dir():
        raise FileNotFoundError(f"source folder {source} does not exist")
    report = ReconstructReport()
    for path in tqdm(_listing(source, files), desc=f"reconstruct {source.name}", unit="image", disable=not progress):
        target = (output / path.relative_to(source)).with_suffix(".png")
        if target.exists():
            report.existing.append(target)
            continue
        image, reason = read_image_rgb(path)
        if image is None:
            _logger.warning("not reconstructed: %s: %s", path, reason)
            report.unreadable.append((path, reason))
            continue
        fake = reconstructor(image)
        if fake.size != image.size:
            raise RuntimeError(f"the reconstructor returned {fake.size} for {path} of size {image.size}")
        save_png_atomic(fake.convert("RGB"), target)
        report.written.append(target)
    if report.unreadable:
        _logger.warning("%d unreadable file(s) not reconstructed under %s", len(report.unreadable), source)
    return report
