"""Denoisers that ``vitzoo bench --denoiser NAME`` can time, registered by the modules that define them.

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


def _import_diffusion_modules() -> None:
    """Import the model modules of ``vitzoo.diffusion`` so their ``@register_denoiser`` run."""
    import vitzoo.diffusion as diffusion
    from vitzoo._discovery import import_submodules

    import_submodules(diffusion.__name__, diffusion.__path__,
                      accept=lambda name: not name.startswith("_") and name not in ("cli", "pipelines", "benchmarks", "distill"))


def list_denoisers() -> list[str]:
    _import_diffusion_modules()
    return sorted(_DENOISERS)


def get_denoiser(name: str, **kwargs: Any) -> DenoiserBench:
    """Build the registered denoiser ``name``; ``ValueError`` listing the known ones otherwise."""
    _import_diffusion_modules()
    if name not in _DENOISERS:
        raise ValueError(f"unknown denoiser {name!r}; known: {', '.join(sorted(_DENOISERS)) or 'none'}")
    return _DENOISERS[name](**kwargs)
