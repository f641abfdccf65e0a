"""Denoisers that ``vitzoo bench --denoiser NAME`` can time: DiT, LiT and Stable Diffusion UNets (with or
without LinFusion), built with random weights. The model classes stay pure; what a benchmark needs
(inputs at a resolution, the attention's token count) is defined here.

A factory takes keyword arguments (``NAME:key=value`` on the command line) and returns a
:class:`DenoiserBench`: the network, how to make one step's inputs at an image resolution, and how
many tokens (or latent pixels) that resolution means for its attention.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

__all__ = ["DenoiserBench", "register_denoiser", "get_denoiser", "list_denoisers"]


@dataclass
class DenoiserBench:
    """``module(**make_inputs(resolution, batch, device, dtype))`` is one denoising step."""

    module: nn.Module
    make_inputs: Callable[[int, int, torch.device, torch.dtype], dict[str, Any]]
    tokens: Callable[[int], int]


_DENOISERS: dict[str, Callable[..., DenoiserBench]] = {}


def register_denoiser(name: str) -> Callable:
    """Decorator for a factory ``(**kwargs) -> DenoiserBench``."""

    def decorate(factory: Callable[..., DenoiserBench]) -> Callable[..., DenoiserBench]:
        _DENOISERS[name] = factory
        return factory

    return decorate


def list_denoisers() -> list[str]:
    return sorted(_DENOISERS)


def get_denoiser(name: str, **kwargs: Any) -> DenoiserBench:
    """Build the registered denoiser ``name``; ``ValueError`` listing the known ones otherwise."""
    if name not in _DENOISERS:
        raise ValueError(f"unknown denoiser {name!r}; known: {', '.join(sorted(_DENOISERS)) or 'none'}")
    return _DENOISERS[name](**kwargs)


VAE_DOWNSAMPLE = 8


def _transformer_bench(model) -> DenoiserBench:
    """One step of a DiT-style transformer at a resolution: latents of side resolution/8, a timestep and a
    class per sample."""
    config = model.config

    def make_inputs(resolution: int, batch: int, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
        side = resolution // VAE_DOWNSAMPLE
        return dict(hidden_states=torch.randn(batch, config.in_channels, side, side, device=device, dtype=dtype),
                    timestep=torch.full((batch,), 500, device=device),
                    class_labels=torch.zeros(batch, dtype=torch.long, device=device))

    def tokens(resolution: int) -> int:
        return (resolution // VAE_DOWNSAMPLE // config.patch_size) ** 2

    return DenoiserBench(model, make_inputs, tokens)


@register_denoiser("dit")
def dit_denoiser(variant: str = "XL/2", resolution: int = 256, **kwargs: Any) -> DenoiserBench:
    """``vitzoo bench --denoiser dit:variant=XL/2``: the official DiT (softmax mixer), random weights."""
    from ..diffusion.dit import VzDiTTransformer2DModel

    return _transformer_bench(VzDiTTransformer2DModel.from_variant(variant, resolution, **kwargs))


@register_denoiser("lit")
def lit_denoiser(variant: str = "XL/2", resolution: int = 256, **kwargs: Any) -> DenoiserBench:
    """``vitzoo bench --denoiser lit:variant=XL/2``: LiT with random weights."""
    from ..diffusion.lit import LiTTransformer2DModel

    return _transformer_bench(LiTTransformer2DModel.from_variant(variant, resolution, **kwargs))


@register_denoiser("lightnet")
def lightnet_denoiser(variant: str = "XL/2", resolution: int = 256, **kwargs: Any) -> DenoiserBench:
    """``vitzoo bench --denoiser lightnet:variant=S/2``: DiT with the LightNet attention, random weights."""
    from ..diffusion.lightnet import LightNetTransformer2DModel

    return _transformer_bench(LightNetTransformer2DModel.from_variant(variant, resolution, **kwargs))


@register_denoiser("sd15_unet")
def sd15_unet_bench(linfusion: bool = False, arch: str = "sd15", seed: int = 0) -> DenoiserBench:
    """One UNet denoising step of SD-1.5's architecture (random weights), with or without LinFusion."""
    from ..diffusion.linfusion import LinFusion, stable_diffusion_unet

    torch.manual_seed(seed)
    unet = stable_diffusion_unet(arch)
    if linfusion:
        LinFusion.construct_for(unet, pretrained=False)
    context = unet.config.cross_attention_dim

    def make_inputs(resolution: int, batch: int, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
        if resolution % 8:
            raise ValueError(f"resolution {resolution} is not a multiple of the VAE factor 8")
        latent = resolution // 8
        inputs = dict(sample=torch.randn(batch, 4, latent, latent, device=device, dtype=dtype),
                      timestep=torch.full((batch,), 500, device=device),
                      encoder_hidden_states=torch.randn(batch, 77, context, device=device, dtype=dtype))
        if arch == "sdxl":
            inputs["added_cond_kwargs"] = dict(text_embeds=torch.randn(batch, 1280, device=device, dtype=dtype),
                                               time_ids=torch.randn(batch, 6, device=device, dtype=dtype))
        return inputs

    first = unet.config.down_block_types.index(next(b for b in unet.config.down_block_types if "CrossAttn" in b))
    return DenoiserBench(unet, make_inputs, lambda resolution: (resolution // 8 // 2 ** first) ** 2)


@register_denoiser("sd15_unet_linfusion")
def sd15_unet_linfusion_bench(arch: str = "sd15", seed: int = 0) -> DenoiserBench:
    """:func:`sd15_unet_bench` with LinFusion mounted (fresh modules: timing does not depend on weights)."""
    return sd15_unet_bench(linfusion=True, arch=arch, seed=seed)
