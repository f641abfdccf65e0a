"""The zoo's own small convolutional VAE, trained in minutes on CPU to make aligned fakes of real photos.

It is a diffusers ``AutoencoderKL`` (so it saves, loads and reconstructs like Stable Diffusion's VAE)
at toy width: two encoder / decoder blocks (``block_out_channels=(32, 64)``, one downsampling, factor
2), four latent channels, no attention. Its decoder upsamples with nearest-neighbour interpolation
followed by convolutions, as SD's does, so its outputs carry the periodic upsampling traces that
detectors of generated images pick up, while keeping the content of the input (the aligned-pair idea
of ``../shared/specs/ppl.md`` §3.2).

:func:`train_tiny_vae` fits it on random square patches of the given photos with an L1 reconstruction
loss plus a small KL term (weight 1e-6 per latent element, the order SD's VAE used), Adam, a fixed
seed and a progress bar.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

__all__ = ["TINY_VAE_CONFIG", "random_patches", "tiny_vae", "train_tiny_vae"]

_logger = logging.getLogger("vitzoo.aigi")

TINY_VAE_CONFIG: dict[str, Any] = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64), layers_per_block=1,
    down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=8,
    sample_size=64, mid_block_add_attention=False,
)


def tiny_vae(seed: int = 0, **overrides: Any):
    """A randomly initialised small ``AutoencoderKL`` (:data:`TINY_VAE_CONFIG` with ``overrides``).

    ``block_out_channels`` of length n gives a factor 2^(n-1); the block type lists follow its length.
    """
    from diffusers import AutoencoderKL

    config = {**TINY_VAE_CONFIG, **overrides}
    blocks = len(config["block_out_channels"])
    if "down_block_types" not in overrides:
        config["down_block_types"] = ("DownEncoderBlock2D",) * blocks
    if "up_block_types" not in overrides:
        config["up_block_types"] = ("UpDecoderBlock2D",) * blocks
    torch.manual_seed(seed)
    return AutoencoderKL(**config)


def random_patches(photos: Sequence[np.ndarray], count: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` random ``size`` x ``size`` patches of uint8 [H, W, 3] photos, photos drawn uniformly.

    Returns:
        uint8 [count, size, size, 3].
    """
    small = [i for i, photo in enumerate(photos) if min(photo.shape[:2]) < size]
    if small:
        raise ValueError(f"photo(s) {small} are smaller than the {size}-pixel patch")
    out = np.empty((count, size, size, 3), dtype=np.uint8)
    for k in range(count):
        photo = photos[rng.integers(len(photos))]
        top = rng.integers(photo.shape[0] - size + 1)
        left = rng.integers(photo.shape[1] - size + 1)
        out[k] = photo[top:top + size, left:left + size]
    return out


def train_tiny_vae(photos: Sequence[Image.Image | np.ndarray], *, steps: int = 300, batch_size: int = 8,
                   patch: int = 32, lr: float = 1e-3, kl_weight: float = 1e-6, seed: int = 0, vae=None,
                   progress: bool = True, **config: Any) -> tuple[Any, list[float]]:
    """Train a small VAE on random patches of ``photos`` and return it in ``eval()`` mode.

    Args:
        photos: RGB photos (PIL images or uint8 [H, W, 3] arrays) the patches are drawn from.
        steps: optimisation steps.
        batch_size: patches per step.
        patch: patch side in pixels (a multiple of the VAE factor).
        lr: Adam learning rate.
        kl_weight: weight of the KL term (mean over latent elements) against the mean L1 loss.
        seed: seeds the initial weights, the patches and the latent samples.
        vae: an ``AutoencoderKL`` to train instead of a new :func:`tiny_vae` (``config`` then unused).
        progress: show a tqdm bar with the loss.
        **config: overrides of :data:`TINY_VAE_CONFIG` for a new VAE.

    Returns:
        ``(vae, losses)``: the trained VAE in ``eval()`` mode and the loss of every step.
    """
    from tqdm.auto import tqdm

    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be positive, got {steps} and {batch_size}")
    arrays = [np.asarray(p.convert("RGB") if isinstance(p, Image.Image) else p, dtype=np.uint8) for p in photos]
    if not arrays or any(a.ndim != 3 or a.shape[2] != 3 for a in arrays):
        raise ValueError("photos must be a non-empty list of RGB images or uint8 [H, W, 3] arrays")
    vae = vae if vae is not None else tiny_vae(seed, **config)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    if patch % factor:
        raise ValueError(f"patch {patch} must be a multiple of the VAE factor {factor}")
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(vae.parameters(), lr=lr)
    vae.train()
    history: list[float] = []
    bar = tqdm(range(steps), desc="train tiny VAE", unit="step", disable=not progress, leave=False)
    for _ in bar:
        pixels = torch.from_numpy(random_patches(arrays, batch_size, patch, rng))
        batch = pixels.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        posterior = vae.encode(batch).latent_dist
        output = vae.decode(posterior.sample(generator=generator)).sample
        kl = 0.5 * (posterior.mean.pow(2) + posterior.var - 1.0 - posterior.logvar).mean()
        loss = (output - batch).abs().mean() + kl_weight * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
        bar.set_postfix(loss=f"{history[-1]:.4f}")
    bar.close()
    _logger.info("tiny VAE: %d steps, loss %.4f -> %.4f", steps, history[0], history[-1])
    return vae.eval(), history
