"""Latents precomputed by a diffusers VAE for an ImageFolder (ImageNet layout), and the dataset that reads them.

DiT trains on ``vae.encode(image).latent_dist.sample() * 0.18215`` of ADM-centre-cropped, randomly
flipped images, re-encoding every image every epoch. :func:`cache_latents` encodes each image once (and
its mirror image, unless ``flip=False``) and stores the posterior's mean and standard deviation, so
:class:`LatentDataset` can still draw a fresh ``mean + std·ε`` and a random flip per use, as DiT does,
at no VAE cost. With ``vae=None`` the "latents" are the pixels themselves in [-1, 1] (pixel-space models).

A cache directory holds ``index.json`` (classes, shapes, VAE and preprocessing) and safetensors shards
with ``mean``/``std`` (or ``pixels``), their ``*_flip`` twins and ``labels``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

__all__ = ["LATENT_CACHE_FORMAT", "LatentDataset", "cache_latents", "center_crop_arr", "digits_pixel_cache",
           "read_cache_index"]

_logger = logging.getLogger("vitzoo.data")

LATENT_CACHE_FORMAT = "vitzoo-latents/1"
INDEX_FILE = "index.json"


def center_crop_arr(image: Image.Image, size: int) -> Image.Image:
    """ADM's centre crop (used by DiT): halve with a box filter while the short side is at least 2x the
    target, resize bicubically so the short side is ``size``, then crop the centre square."""
    while min(*image.size) >= 2 * size:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
    scale = size / min(*image.size)
    image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
    array = np.asarray(image)
    top, left = (array.shape[0] - size) // 2, (array.shape[1] - size) // 2
    return Image.fromarray(array[top: top + size, left: left + size])


def _image_tensor(image: Image.Image, size: int, grayscale: bool) -> torch.Tensor:
    """PIL image -> [C, size, size] in [-1, 1]."""
    image = center_crop_arr(image.convert("L" if grayscale else "RGB"), size)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def read_cache_index(root: Union[str, Path]) -> dict[str, Any]:
    """The ``index.json`` of a latent cache; a clear error when ``root`` is not one."""
    path = Path(root) / INDEX_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{root} is not a latent cache (no {INDEX_FILE}); create one with `vitzoo cache_latents`")
    index = json.loads(path.read_text())
    if index.get("format") != LATENT_CACHE_FORMAT:
        raise ValueError(f"{path} has format {index.get('format')!r}, expected {LATENT_CACHE_FORMAT!r}")
    return index


def cache_latents(
        data_dir: Union[str, Path],
        output: Union[str, Path],
        *,
        vae: Optional[Any] = None,
        vae_name: Optional[str] = None,
        image_size: int = 256,
        grayscale: bool = False,
        flip: bool = True,
        batch_size: int = 32,
        shard_size: int = 10_000,
        dtype: torch.dtype = torch.float16,
        device: Union[str, torch.device] = "cpu",
        progress: Optional[Callable[[int], None]] = None,
) -> Path:
    """Encode every image of an ImageFolder split once and write a latent cache.

    The cache is written to a temporary folder beside ``output`` and renamed into place at the end, so an
    interrupted run leaves no partial cache.

    Args:
        data_dir: one split folder, ``<split>/<class>/<image>``.
        output: the cache directory to create (must not exist).
        vae: a diffusers ``AutoencoderKL`` (eval mode is set here); None stores pixels (pixel space).
        vae_name: how to reload that VAE later (hub id or folder), recorded for the pipeline export.
        image_size: side of the ADM centre crop.
        grayscale: read images as one channel (pixel space only makes sense of this).
        flip: also store the mirror image, for DiT's random horizontal flip (off for digits and text).
        batch_size: images per VAE call.
        shard_size: images per safetensors shard.
        dtype: storage dtype of the latents.
        device: where the VAE runs.
        progress: called with the number of images done after every batch.
    """
    from safetensors.torch import save_file
    from timm.data import ImageDataset

    data_dir, output = Path(data_dir), Path(output)
    if output.exists():
        raise FileExistsError(f"{output} already exists; choose another --output or remove it")
    if not data_dir.is_dir():
        raise FileNotFoundError(f"image folder {data_dir} does not exist")
    dataset = ImageDataset(str(data_dir))
    if len(dataset) == 0:
        raise ValueError(f"no images in {data_dir} (layout: <split>/<class>/<image>)")
    classes = [name for name, _ in sorted(dataset.reader.class_to_idx.items(), key=lambda item: item[1])]
    device = torch.device(device)
    if vae is not None:
        vae = vae.to(device).eval()
    keys = ("mean", "std") if vae is not None else ("pixels",)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    shards, shape, done = [], None, 0
    try:
        buffer: dict[str, list[torch.Tensor]] = {}
        for start in range(0, len(dataset), batch_size):
            indices = range(start, min(start + batch_size, len(dataset)))
            samples = [dataset.reader.samples[i] for i in indices]
            images = []
            for path, _ in samples:
                with Image.open(path) as raw:
                    images.append(_image_tensor(raw, image_size, grayscale))
            pixels = torch.stack(images)
            views = {"": pixels, "_flip": pixels.flip(-1)} if flip else {"": pixels}
            for suffix, view in views.items():
                if vae is None:
                    encoded = {"pixels": view}
                else:
                    with torch.no_grad():
                        posterior = vae.encode(view.to(device, vae.dtype)).latent_dist
                    encoded = {"mean": posterior.mean, "std": posterior.std}
                for key, value in encoded.items():
                    buffer.setdefault(key + suffix, []).append(value.to("cpu", dtype))
            buffer.setdefault("labels", []).append(torch.tensor([target for _, target in samples]))
            shape = list(buffer[keys[0]][-1].shape[1:])
            done += len(samples)
            if sum(len(t) for t in buffer["labels"]) >= shard_size or done == len(dataset):
                name = f"shard-{len(shards):05d}.safetensors"
                save_file({k: torch.cat(v) for k, v in buffer.items()}, str(staging / name))
                shards.append({"file": name, "count": sum(len(t) for t in buffer["labels"])})
                buffer = {}
            if progress is not None:
                progress(done)
        index = {
            "format": LATENT_CACHE_FORMAT,
            "source": str(data_dir.resolve()),
            "classes": classes,
            "num_samples": done,
            "shape": shape,
            "stored": "moments" if vae is not None else "pixels",
            "flip": flip,
            "image_size": image_size,
            "grayscale": grayscale,
            "dtype": str(dtype).replace("torch.", ""),
            "vae": None if vae is None else {
                "name": vae_name,
                "scaling_factor": float(vae.config.scaling_factor),
                "config": {k: v for k, v in dict(vae.config).items() if not k.startswith("_")},
            },
            "shards": shards,
        }
        (staging / INDEX_FILE).write_text(json.dumps(index, indent=1) + "\n")
        os.replace(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _logger.info("cached %d images of %d classes as %s %s in %s", done, len(classes), index["stored"], shape, output)
    return output


def digits_pixel_cache(cache_dir: Optional[Union[str, Path]] = None, *, image_size: int = 8) -> Path:
    """The embedded digits' train split as a pixel-space cache (grey, no mirror images: a mirrored digit is
    another symbol), built once from the digits ImageFolder of :mod:`vitzoo.data.digits`.

    Args:
        cache_dir: where the cache lives (default: ``digits-pixels-<size>`` beside the digits folder).
        image_size: side of the cached images; 8 is the scans' own resolution.
    """
    from .digits import build_digits_imagefolder

    folder = build_digits_imagefolder()
    cache = Path(cache_dir) if cache_dir else folder.parent / f"digits-pixels-{image_size}"
    if (cache / INDEX_FILE).is_file():
        index = read_cache_index(cache)
        expected = {"source": str((folder / "train").resolve()), "shape": [1, image_size, image_size], "flip": False}
        found = {k: index.get(k) for k in expected}
        if found != expected:
            raise FileExistsError(f"{cache} holds another cache ({found}); expected {expected}")
        return cache
    return cache_latents(folder / "train", cache, image_size=image_size, grayscale=True, flip=False,
                         dtype=torch.float32)


class LatentDataset(Dataset):
    """Items ``(latent [C, h, w] float32, label)`` from a cache written by :func:`cache_latents`.

    Each access draws, as DiT's training does, a random orientation (when the cache holds both) and, for
    VAE moments, a fresh posterior sample ``(mean + std·ε)·scaling_factor``. Randomness comes from torch's
    global generator (seeded per process and captured in checkpoints), or from ``seed`` when an item is
    requested as ``(index, seed)``.

    Args:
        root: the cache directory.
        flip: use the stored mirror images (ignored when the cache has none).
        preload: read every shard into memory (small caches); otherwise rows are read from the files.
    """

    def __init__(self, root: Union[str, Path], *, flip: bool = True, preload: bool = False):
        self.root = Path(root)
        self.index = read_cache_index(self.root)
        self.flip = flip and self.index["flip"]
        self.scaling_factor = self.index["vae"]["scaling_factor"] if self.index["vae"] else 1.0
        self.classes: list[str] = list(self.index["classes"])
        counts = [shard["count"] for shard in self.index["shards"]]
        self._offsets = np.cumsum([0] + counts)
        self._files = [self.root / shard["file"] for shard in self.index["shards"]]
        missing = [str(f) for f in self._files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"latent cache {root} lacks shards: {', '.join(missing[:3])}")
        self._loaded: dict[int, dict[str, torch.Tensor]] = {}
        self._handles: dict[int, Any] = {}
        if preload:
            from safetensors.torch import load_file

            self._loaded = {i: load_file(str(f)) for i, f in enumerate(self._files)}

    def __len__(self) -> int:
        return int(self._offsets[-1])

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.index["shape"])

    def _row(self, shard: int, key: str, row: int) -> torch.Tensor:
        if shard in self._loaded:
            return self._loaded[shard][key][row]
        if shard not in self._handles:
            from safetensors import safe_open

            self._handles[shard] = safe_open(str(self._files[shard]), framework="pt")
        return self._handles[shard].get_slice(key)[row: row + 1][0]

    def __getitem__(self, item):
        index, seed = item if isinstance(item, tuple) else (item, None)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a cache of {len(self)} samples")
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        shard = int(np.searchsorted(self._offsets, index, side="right") - 1)
        row = index - int(self._offsets[shard])
        suffix = "_flip" if self.flip and torch.rand((), generator=generator) < 0.5 else ""
        label = int(self._row(shard, "labels", row))
        if self.index["stored"] == "pixels":
            return self._row(shard, "pixels" + suffix, row).float(), label
        mean = self._row(shard, "mean" + suffix, row).float()
        std = self._row(shard, "std" + suffix, row).float()
        return (mean + std * torch.randn(mean.shape, generator=generator)) * self.scaling_factor, label

    def __getstate__(self) -> dict[str, Any]:
        # open safetensors handles do not pickle into DataLoader workers; each worker reopens its own
        return dict(self.__dict__, _handles={})
