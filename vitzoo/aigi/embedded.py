"""The embedded default of AI-generated-image detection, ``vitzoo/aigi-photos``: built offline, in minutes.

Real images are square crops of the photographs that ship inside installed packages (nothing is
downloaded: scikit-image's bundled ``skimage.data`` images, scikit-learn's ``load_sample_images`` and
matplotlib's ``grace_hopper.jpg``). Fake images are the same crops reconstructed by the zoo's small
convolutional VAE (:mod:`vitzoo.aigi.tiny_vae`), trained by the builder on patches of the training
crops only: each fake is pixel-aligned with a real crop and differs from it by the decoder's traces,
the aligned-pair idea of PPL's reconstruction (``../shared/specs/ppl.md`` §3.2).

Whole photos are held out: the validation split holds crops of :data:`VAL_PHOTOS` only, never seen by
the VAE or in training, so a detector is scored on unseen content. Layout (GenImage, readable by
:class:`vitzoo.aigi.data.AigiFolderDataset`)::

    root/tinyvae/{train,val}/{nature,ai}/<photo>_<k>.png    real crop / its reconstruction (same name)
    root/tinyvae_jpeg/val/{nature,ai}/<photo>_<k>.jpg       the val pairs recompressed as JPEG (quality 75):
                                                            a second, held-out "generator" row
    root/recon/tinyvae/{train,val}/nature/<photo>_<k>.png   the reconstruction of each real crop, for RPR
    root/vae/                                              the trained VAE (save_pretrained)
    root/vitzoo_aigi_photos.json                           settings, photo lists, counts, VAE losses

Crop positions, VAE weights and training patches all derive from ``seed``, so a build is reproducible
on one machine (CPU float32). The folder is written under a temporary name and renamed into place at
the end; a later call with the same settings reuses it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
from PIL import Image

from ..data.manifest import reusable_build
from .reconstruct import VaeReconstructor, save_png_atomic
from .tiny_vae import train_tiny_vae

__all__ = ["AIGI_PHOTOS_DATASET", "GENERATOR", "HELD_OUT_GENERATOR", "TRAIN_PHOTOS", "VAL_PHOTOS",
           "build_embedded_aigi", "default_aigi_photos_dir", "load_photo"]

AIGI_PHOTOS_DATASET = "vitzoo/aigi-photos"
GENERATOR = "tinyvae"
HELD_OUT_GENERATOR = "tinyvae_jpeg"
_MANIFEST = "vitzoo_aigi_photos.json"

# bundled photographs (public domain / CC0 / CC BY per the packages' docstrings and READMEs); every
# skimage name here loads without pooch (eagle, lily, ... would need a download and are not used)
TRAIN_PHOTOS = (
    "skimage:astronaut", "skimage:camera", "skimage:chelsea", "skimage:rocket", "skimage:hubble_deep_field",
    "skimage:retina", "skimage:immunohistochemistry", "skimage:moon", "skimage:clock", "skimage:brick",
    "skimage:grass", "skimage:gravel", "sklearn:china.jpg",
)
VAL_PHOTOS = ("skimage:coffee", "skimage:coins", "sklearn:flower.jpg", "matplotlib:grace_hopper.jpg")


def default_aigi_photos_dir() -> Path:
    """``$VITZOO_DATA_DIR/aigi-photos`` or ``~/.cache/vitzoo/aigi-photos``."""
    base = os.environ.get("VITZOO_DATA_DIR") or Path.home() / ".cache" / "vitzoo"
    return Path(base) / "aigi-photos"


def load_photo(name: str) -> np.ndarray:
    """A bundled photo as uint8 [H, W, 3] (grey photos replicated to RGB).

    Args:
        name: ``"skimage:<function>"``, ``"sklearn:<file>"`` (china.jpg, flower.jpg) or
            ``"matplotlib:<sample file>"``.
    """
    source, _, item = name.partition(":")
    if source == "skimage":
        import skimage.data

        pixels = np.asarray(getattr(skimage.data, item)())
    elif source == "sklearn":
        from sklearn.datasets import load_sample_image

        pixels = np.asarray(load_sample_image(item))
    elif source == "matplotlib":
        from matplotlib import cbook

        with Image.open(cbook.get_sample_data(item, asfileobj=False)) as image:
            pixels = np.asarray(image.convert("RGB"))
    else:
        raise ValueError(f"photo {name!r}: expected 'skimage:<name>', 'sklearn:<file>' or 'matplotlib:<file>'")
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    return np.ascontiguousarray(pixels[:, :, :3]).astype(np.uint8)


def _photo_stem(name: str) -> str:
    return Path(name.partition(":")[2]).stem


def _crops(photo: np.ndarray, count: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    height, width = photo.shape[:2]
    if min(height, width) < size:
        raise ValueError(f"a {size}-pixel crop does not fit a {width}x{height} photo")
    tops = rng.integers(0, height - size + 1, count)
    lefts = rng.integers(0, width - size + 1, count)
    return [photo[t:t + size, l:l + size].copy() for t, l in zip(tops, lefts)]


def _settings(seed, crop, crops_per_photo, vae_steps, vae_batch_size, vae_patch, jpeg_quality, train_photos,
              val_photos) -> dict:
    return {"dataset": AIGI_PHOTOS_DATASET, "seed": seed, "crop": crop, "crops_per_photo": crops_per_photo,
            "vae_steps": vae_steps, "vae_batch_size": vae_batch_size, "vae_patch": vae_patch,
            "jpeg_quality": jpeg_quality, "train_photos": list(train_photos), "val_photos": list(val_photos)}


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _write_split(staging: Path, split: str, names: list[str], reals: list[np.ndarray], reconstructor,
                 jpeg_quality: Optional[int], batch_size: int, progress: bool) -> None:
    from tqdm.auto import tqdm

    generator_dir = staging / GENERATOR / split
    bar = tqdm(total=len(names), desc=f"{AIGI_PHOTOS_DATASET} {split}", unit="crop", disable=not progress, leave=False)
    for start in range(0, len(names), batch_size):
        chunk = [Image.fromarray(pixels) for pixels in reals[start:start + batch_size]]
        fakes = reconstructor.reconstruct_batch(chunk)
        for name, real, fake in zip(names[start:start + batch_size], chunk, fakes):
            save_png_atomic(real, generator_dir / "nature" / f"{name}.png")
            save_png_atomic(fake, generator_dir / "ai" / f"{name}.png")
            _link_or_copy(generator_dir / "ai" / f"{name}.png",
                          staging / "recon" / GENERATOR / split / "nature" / f"{name}.png")
            if jpeg_quality is not None:
                for label, image in (("nature", real), ("ai", fake)):
                    target = staging / HELD_OUT_GENERATOR / split / label / f"{name}.jpg"
                    target.parent.mkdir(parents=True, exist_ok=True)
                    image.save(target, format="JPEG", quality=jpeg_quality)
        bar.update(len(chunk))
    bar.close()


@contextlib.contextmanager
def _one_thread():
    """torch on one thread for the build: multi-threaded float reductions sum in an order that depends on the thread
    count, and the VAE trained on them (so every fake) would differ from machine to machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def build_embedded_aigi(root: Optional[Union[str, Path]] = None, *, seed: int = 0, crop: int = 56,
                        crops_per_photo: int = 48, vae_steps: int = 300, vae_batch_size: int = 8, vae_patch: int = 32,
                        jpeg_quality: Optional[int] = 75, train_photos: Sequence[str] = TRAIN_PHOTOS,
                        val_photos: Sequence[str] = VAL_PHOTOS, progress: bool = True) -> Path:
    """Build ``vitzoo/aigi-photos`` at ``root`` once (see the module docstring) and return ``root``.

    Args:
        root: target folder (default :func:`default_aigi_photos_dir`).
        seed: seeds crop positions, VAE initialisation and VAE training.
        crop: crop side in pixels (56 = 4 x 4 ViT patches of 14; a multiple of the VAE factor 2).
        crops_per_photo: crops drawn from each photo (positions may overlap).
        vae_steps: training steps of the small VAE.
        vae_batch_size: patches per VAE step.
        vae_patch: side of the VAE's training patches, drawn from the training crops.
        jpeg_quality: quality of the held-out ``tinyvae_jpeg`` generator; None leaves it out.
        train_photos: photos of the train split (names as :func:`load_photo` takes).
        val_photos: photos held out whole for the val split.
        progress: show progress bars.

    Raises:
        DatasetError: ``root`` exists but is not such a folder, or was built with other settings.
    """
    import torch

    root = Path(root) if root is not None else default_aigi_photos_dir()
    expected = _settings(seed, crop, crops_per_photo, vae_steps, vae_batch_size, vae_patch, jpeg_quality,
                         train_photos, val_photos)
    if reusable_build(root, _MANIFEST, expected, AIGI_PHOTOS_DATASET):
        return root
    overlap = sorted(set(train_photos) & set(val_photos))
    if overlap:
        raise ValueError(f"photos {overlap} are in both train_photos and val_photos; val photos are held out whole")
    if crop % 2:
        raise ValueError(f"crop {crop} must be even (a multiple of the VAE factor 2)")

    splits = {}
    for split, photos in (("train", train_photos), ("val", val_photos)):
        names, reals = [], []
        for index, photo in enumerate(photos):
            rng = np.random.default_rng([seed, index, split == "val"])
            for k, pixels in enumerate(_crops(load_photo(photo), crops_per_photo, crop, rng)):
                names.append(f"{_photo_stem(photo)}_{k:03d}")
                reals.append(pixels)
        splits[split] = (names, reals)

    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        with torch.random.fork_rng(devices=[]), _one_thread():
            vae, losses = train_tiny_vae(splits["train"][1], steps=vae_steps, batch_size=vae_batch_size,
                                         patch=min(vae_patch, crop), seed=seed, progress=progress)
            vae.save_pretrained(staging / "vae")
            reconstructor = VaeReconstructor(vae)
            for split, (names, reals) in splits.items():
                _write_split(staging, split, names, reals, reconstructor, jpeg_quality if split == "val" else None,
                             32, progress)
        counts = {split: len(names) for split, (names, _) in splits.items()}
        record = dict(expected, generators=[GENERATOR] + ([HELD_OUT_GENERATOR] if jpeg_quality is not None else []),
                      crops=counts, vae_loss_first=losses[0], vae_loss_last=losses[-1])
        (staging / _MANIFEST).write_text(json.dumps(record, indent=1) + "\n")
        os.replace(staging, root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return root
