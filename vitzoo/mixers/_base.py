"""The token-mixer contract shared by every family, and the registry that creates mixers by name.

A mixer maps tokens [B, N, C] to tokens [B, N, C] given the spatial size (H, W) of the map the
tokens came from, with ``num_prefix_tokens`` prefix tokens (a cls token) first:
``N == num_prefix_tokens + H * W``. It owns its projections and whatever it derives from the size
(RoPE tables, windows, padding), so a block never hands it private tensors.

Mixers must trace: under ``torch.fx`` the size (H, W) is a Proxy whenever a caller derives it from a
tensor's shape, so a mixer never branches on the size itself. Validation and every size-dependent
branch live in FX leaf functions (here: :func:`_check_tokens`); ``vitzoo/ops/README.md`` ("Tracing")
states the rule once for mixers, layers and models.
"""

from __future__ import annotations

import difflib
from typing import Callable, TypeVar

import torch
from timm.layers import register_notrace_function
from torch import nn

from ..layers import map_to_tokens, tokens_to_map

__all__ = [
    "TokenMixer",
    "register_mixer",
    "create_mixer",
    "list_mixers",
    "get_mixer_class",
    "split_prefix",
    "tokens_to_map",
    "map_to_tokens",
]

_MIXERS: dict[str, type["TokenMixer"]] = {}
MixerT = TypeVar("MixerT", bound=type)


class TokenMixer(nn.Module):
    """Base class of every vitzoo mixer.

    Subclasses set ``complexity`` to ``"linear"`` or ``"quadratic"`` (cost in tokens at fixed width;
    window attention with a fixed window is linear) and implement
    ``forward(x, size, *, num_prefix_tokens=0)``.
    """

    complexity: str = ""

    @staticmethod
    def check_tokens(x: torch.Tensor, size: tuple[int, int], num_prefix_tokens: int, dim: int | None = None) -> None:
        """Raise ``ValueError`` naming the numbers unless x is [B, num_prefix_tokens + H*W, dim].

        Every mixer validates its tokens here, and only here; the check is an FX leaf, so a traced
        mixer keeps it as one graph node that runs with the real sizes.
        """
        _check_tokens(x, size, num_prefix_tokens, dim)

    def extra_repr(self) -> str:
        return f"complexity={self.complexity}"


@register_notrace_function
@torch.fx.node.has_side_effect
@torch.fx.wrap
def _check_tokens(x: torch.Tensor, size: tuple[int, int], num_prefix_tokens: int, dim: int | None) -> None:
    if x.dim() != 3:
        raise ValueError(f"a mixer takes tokens [B, N, C], got a tensor of shape {tuple(x.shape)}")
    height, width = size
    if x.shape[1] != num_prefix_tokens + height * width:
        raise ValueError(
            f"got {x.shape[1]} tokens for {num_prefix_tokens} prefix + a {height}x{width} map "
            f"(expected {num_prefix_tokens + height * width})"
        )
    if dim is not None and x.shape[2] != dim:
        raise ValueError(f"mixer built for {dim} channels got tokens with {x.shape[2]}")


def check_heads(dim: int, num_heads: int) -> int:
    """Head width, or ``ValueError`` when ``dim`` does not split into ``num_heads`` heads."""
    if num_heads < 1 or dim % num_heads:
        raise ValueError(f"dim {dim} does not split into {num_heads} heads")
    return dim // num_heads


def split_prefix(x: torch.Tensor, num_prefix_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, P + H·W, C] -> (prefix [B, P, C], spatial [B, H·W, C])."""
    return x[:, :num_prefix_tokens], x[:, num_prefix_tokens:]


def register_mixer(name: str) -> Callable[[MixerT], MixerT]:
    """Class decorator: make a :class:`TokenMixer` creatable as ``create_mixer(name, ...)``."""

    def decorate(cls: MixerT) -> MixerT:
        if name in _MIXERS and _MIXERS[name] is not cls:
            raise ValueError(f"mixer name {name!r} is already registered by {_MIXERS[name].__qualname__}")
        if getattr(cls, "complexity", "") not in ("linear", "quadratic"):
            raise TypeError(f"{cls.__qualname__}.complexity must be 'linear' or 'quadratic'")
        _MIXERS[name] = cls
        return cls

    return decorate


def get_mixer_class(name: str) -> type[TokenMixer]:
    """The class registered under ``name``; ``ValueError`` listing close matches otherwise."""
    try:
        return _MIXERS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_MIXERS), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown mixer {name!r}{hint} Known mixers: {', '.join(sorted(_MIXERS))}") from None


def create_mixer(name: str, dim: int, num_heads: int, **kwargs) -> TokenMixer:
    """Build the mixer registered as ``name`` with width ``dim`` and ``num_heads`` heads."""
    return get_mixer_class(name)(dim, num_heads, **kwargs)


def list_mixers() -> list[str]:
    """Names of all registered mixers, sorted."""
    return sorted(_MIXERS)
