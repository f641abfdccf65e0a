"""DiT, the class-conditional diffusion transformer, as a diffusers model whose self-attention is any vitzoo mixer.

Paper: Peebles and Xie, "Scalable Diffusion Models with Transformers", ICCV 2023, arXiv:2212.09748.
Origin: https://github.com/facebookresearch/DiT (``models.py`` at ed81ce2; CC BY-NC 4.0). Re-implemented.

:class:`VzDiTTransformer2DModel` keeps the official module names, so a DiT checkpoint's state dict
(``x_embedder``, ``t_embedder``, ``y_embedder``, ``blocks.{i}.attn/mlp/adaLN_modulation``,
``final_layer``, ``pos_embed``) loads into it unchanged when ``mixer="softmax"`` (``attn.qkv`` and
``attn.proj`` are timm's ``Attention`` names, which :class:`vitzoo.mixers.softmax.SoftmaxMixer` shares).
That softmax twin is the teacher and the baseline of LiT (:mod:`vitzoo.diffusion.lit`), which swaps the
mixer and nothing else.

Numerics follow the official code (spec ``../shared/specs/lit.md`` §1): the 2-D sin-cos position table
puts the column (w) index in its first half, the timestep features are cos-first, LayerNorms have no
affine and eps 1e-6, the MLP uses tanh-GELU, adaLN chunks are (shift, scale, gate) for attention then MLP.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar, Optional, Union

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import get_timestep_embedding
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin
from timm.layers import Mlp
from torch import nn

from ..mixers import create_mixer

__all__ = [
    "DIT_VARIANTS",
    "VzDiTTransformer2DModel",
    "sincos_pos_embed_2d",
    "variant_config",
]

# The paper's sizes (Table 1): depth, width and heads; the patch size is in the name.
DIT_VARIANTS: dict[str, dict[str, int]] = {
    "S/2": dict(depth=12, hidden_size=384, patch_size=2, num_heads=6),
    "B/2": dict(depth=12, hidden_size=768, patch_size=2, num_heads=12),
    "L/2": dict(depth=24, hidden_size=1024, patch_size=2, num_heads=16),
    "XL/2": dict(depth=28, hidden_size=1152, patch_size=2, num_heads=16),
}

# Stable Diffusion's VAE downsamples by 8: a 256 px image is a 32x32 latent.
VAE_DOWNSAMPLE = 8


def variant_config(variant: str, table: dict[str, dict[str, int]], resolution: int = 256) -> dict[str, int]:
    """The constructor arguments of ``variant`` (e.g. ``"XL/2"``) for images of ``resolution`` pixels."""
    if variant not in table:
        raise ValueError(f"unknown variant {variant!r}; expected one of {', '.join(table)}")
    multiple = VAE_DOWNSAMPLE * table[variant]["patch_size"]
    if resolution % multiple:
        raise ValueError(f"resolution {resolution} is not a multiple of {multiple}")
    return dict(table[variant], sample_size=resolution // VAE_DOWNSAMPLE)


def _sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """[P] -> [P, dim]: ``[sin(p·ω_i), cos(p·ω_i)]`` with ``ω_i = 10000^(-i / (dim/2))``."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float32, device=positions.device) / (dim / 2))
    angles = positions.float()[:, None] * omega[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_pos_embed_2d(dim: int, size: tuple[int, int], device: Optional[torch.device] = None) -> torch.Tensor:
    """DiT's fixed 2-D sin-cos table for an (h, w) token grid, [1, h·w, dim], row-major tokens.

    The first ``dim/2`` channels encode the column index and the last ``dim/2`` the row index
    (the official ``meshgrid(grid_w, grid_h)`` feeds the column grid to the half it calls "h").
    """
    if dim % 4:
        raise ValueError(f"the 2-D sin-cos table needs a width divisible by 4, got {dim}")
    height, width = size
    rows = torch.arange(height, device=device).repeat_interleave(width)
    cols = torch.arange(width, device=device).repeat(height)
    return torch.cat([_sincos_1d(dim // 2, cols), _sincos_1d(dim // 2, rows)], dim=1)[None]


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches of a latent [B, C, H, W] -> tokens [B, (H/p)·(W/p), D] (row-major)."""

    def __init__(self, patch_size: int, in_channels: int, hidden_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class TimestepEmbedder(nn.Module):
    """Timesteps [B] -> [B, D]: 256 sinusoidal features through Linear, SiLU, Linear.

    The features are the official ones, cosines first with frequency j = ``exp(-ln(10000) * j / 128)``:
    diffusers' ``get_timestep_embedding`` with ``flip_sin_to_cos=True`` and ``downscale_freq_shift=0``
    (diffusers' own DiT port keeps the shift of 1, which the official code does not have).
    """

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        features = get_timestep_embedding(timesteps, self.frequency_embedding_size, flip_sin_to_cos=True,
                                          downscale_freq_shift=0)
        return self.mlp(features.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Class ids [B] -> [B, D]. With label dropout, row ``num_classes`` is the null (unconditional) class.

    The official embedder also drops labels itself in training mode; here the forward is
    deterministic and :meth:`drop_labels` is called by the training loop (same distribution, explicit RNG).
    """

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float):
        super().__init__()
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob
        self.embedding_table = nn.Embedding(num_classes + int(dropout_prob > 0), hidden_size)

    def drop_labels(self, labels: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Replace each label by the null id with probability ``dropout_prob`` (classifier-free guidance training)."""
        if self.dropout_prob <= 0:
            return labels
        drop = torch.rand(labels.shape, generator=generator, device=labels.device) < self.dropout_prob
        return torch.where(drop, torch.full_like(labels, self.num_classes), labels)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.embedding_table(labels)


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    """adaLN-Zero block: x += gate·mixer(modulate(LN(x))), then x += gate·MLP(modulate(LN(x)))."""

    def __init__(self, hidden_size: int, num_heads: int, mixer: str, mixer_kwargs: Optional[dict] = None,
                 mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = create_mixer(mixer, hidden_size, num_heads, **(mixer_kwargs or {}))
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio), act_layer=lambda: nn.GELU(approximate="tanh"))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_msa[:, None] * self.attn(_modulate(self.norm1(x), shift_msa, scale_msa), size)
        return x + gate_mlp[:, None] * self.mlp(_modulate(self.norm2(x), shift_mlp, scale_mlp))


class FinalLayer(nn.Module):
    """adaLN (shift, scale) on LN(x), then a Linear to p·p·out_channels values per token."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(_modulate(self.norm_final(x), shift, scale))


def _init_with_defaults(init: Any, defaults: dict[str, Any]) -> Any:
    """A ``register_to_config`` ``__init__`` with ``init``'s arguments and body, and ``defaults`` for some arguments."""
    signature = inspect.signature(init)
    unknown = set(defaults) - set(signature.parameters)
    if unknown:
        raise TypeError(f"{init.__qualname__} has no arguments {sorted(unknown)}")
    signature = signature.replace(parameters=[
        param.replace(default=defaults[name]) if name in defaults else param
        for name, param in signature.parameters.items()])
    body = inspect.unwrap(init)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        body(*bound.args, **bound.kwargs)

    __init__.__signature__ = signature
    return register_to_config(__init__)


class VzDiTTransformer2DModel(ModelMixin, ConfigMixin):
    """DiT over latents with a pluggable token mixer; ``mixer="softmax"`` is the official DiT.

    Defaults are DiT-XL/2 at 256 px. ``forward`` returns, per latent channel, the noise prediction ε
    and (with ``learn_sigma``) the variance interpolation value v in [-1, 1] of improved DDPM:
    ``sample`` is [B, 2C, H, W] with ε in channels [0, C).

    Args:
        sample_size: latent side the fixed position table is stored for (32 for 256 px images).
            Other latent sizes, square or not, work: their table is computed with the same formula.
        patch_size: side p of the non-overlapping latent patches.
        in_channels: latent channels C.
        hidden_size: token width D.
        depth: number of adaLN-Zero blocks.
        num_heads: heads of every block's mixer.
        mlp_ratio: MLP hidden width over D.
        class_dropout_prob: label dropout during training; > 0 adds the null class row used by
            classifier-free guidance.
        num_classes: number of classes; the null class id is ``num_classes``.
        learn_sigma: predict the variance interpolation v as well (output has 2C channels).
        mixer: a mixer name from ``vitzoo.list_mixers()`` (``"softmax"``: DiT, ``"lit"``: LiT).
        mixer_kwargs: extra keyword arguments for every block's mixer.
        guidance_channels: how many leading latent channels classifier-free guidance acts on; the model does
            not use it, :class:`~vitzoo.diffusion.pipelines.LiTPipeline` reads it. The official DiT guides 3 of
            the 4 SD-VAE channels (its "exact reproducibility" choice) and that is the default; None guides
            all ``in_channels``, the textbook form. A model with fewer channels than this count guides all of
            them (the official slice would reach into v).
    """

    #: published sizes for :meth:`from_variant`
    VARIANTS: ClassVar[dict[str, dict[str, int]]] = DIT_VARIANTS
    _supports_gradient_checkpointing = True
    _no_split_modules = ["DiTBlock"]
    # tiny, precision-sensitive embeddings stay in the storage dtype under layerwise casting
    _skip_layerwise_casting_patterns = ["x_embedder", "t_embedder", "y_embedder"]

    def __init_subclass__(cls, defaults: Optional[dict[str, Any]] = None, **kwargs: Any):
        """``class LiT(VzDiTTransformer2DModel, defaults=dict(num_heads=4))``: a configuration of this class whose
        constructor has other defaults. They are the new ``__init__``'s signature defaults, so ``register_to_config``
        writes them into ``config.json`` like any argument."""
        super().__init_subclass__(**kwargs)
        if defaults:
            cls.__init__ = _init_with_defaults(cls.__init__, defaults)

    @register_to_config
    def __init__(
            self,
            sample_size: int = 32,
            patch_size: int = 2,
            in_channels: int = 4,
            hidden_size: int = 1152,
            depth: int = 28,
            num_heads: int = 16,
            mlp_ratio: float = 4.0,
            class_dropout_prob: float = 0.1,
            num_classes: int = 1000,
            learn_sigma: bool = True,
            mixer: str = "softmax",
            mixer_kwargs: Optional[dict[str, Any]] = None,
            guidance_channels: Optional[int] = 3,
    ):
        super().__init__()
        if guidance_channels is not None and guidance_channels < 1:
            raise ValueError(
                f"guidance_channels must be a positive count or None (all channels), got {guidance_channels}")
        if sample_size % patch_size:
            raise ValueError(f"sample_size {sample_size} is not a multiple of patch_size {patch_size}")
        self.out_channels = in_channels * 2 if learn_sigma else in_channels
        self.gradient_checkpointing = False
        self.x_embedder = PatchEmbed(patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob)
        grid = sample_size // patch_size
        # a frozen parameter, not a buffer: it is part of the official state dict and parameter count
        self.pos_embed = nn.Parameter(sincos_pos_embed_2d(hidden_size, (grid, grid)), requires_grad=False)
        self.blocks = nn.ModuleList(
            [DiTBlock(hidden_size, num_heads, mixer, mixer_kwargs, mlp_ratio) for _ in range(depth)])
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)
        self.initialize_weights()

    @classmethod
    def from_variant(cls, variant: str, resolution: int = 256, **kwargs: Any) -> "VzDiTTransformer2DModel":
        """A published size (``"S/2"``, ``"B/2"``, ``"L/2"``, ``"XL/2"``) for ``resolution`` px images, with the
        official initialisation; ``kwargs`` override constructor arguments."""
        return cls(**dict(variant_config(variant, cls.VARIANTS, resolution), **kwargs))

    def initialize_weights(self) -> None:
        """The official initialisation: xavier Linear layers with zero bias, zeroed adaLN and output layers
        (so a fresh model predicts zeros), N(0, 0.02) embeddings; mixer convolutions keep PyTorch's default."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        proj = self.x_embedder.proj
        nn.init.xavier_uniform_(proj.weight.view(proj.weight.shape[0], -1))
        nn.init.zeros_(proj.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        for layer in (self.final_layer.adaLN_modulation[-1], self.final_layer.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    @property
    def null_class_id(self) -> Optional[int]:
        """The class id of the unconditional embedding, or None when the model has none."""
        return self.config.num_classes if self.config.class_dropout_prob > 0 else None

    def _position_table(self, size: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
        grid = self.config.sample_size // self.config.patch_size
        if size == (grid, grid):
            return self.pos_embed.to(dtype)
        return sincos_pos_embed_2d(self.config.hidden_size, size, device=self.pos_embed.device).to(dtype)

    def _check_inputs(self, hidden_states: torch.Tensor, timestep: Any, class_labels: Optional[torch.Tensor]
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        patch = self.config.patch_size
        if hidden_states.dim() != 4 or hidden_states.shape[1] != self.config.in_channels:
            raise ValueError(f"expected latents [B, {self.config.in_channels}, H, W], got {tuple(hidden_states.shape)}")
        if hidden_states.shape[-2] % patch or hidden_states.shape[-1] % patch:
            raise ValueError(f"latent size {tuple(hidden_states.shape[-2:])} is not a multiple of patch_size {patch}")
        batch, device = hidden_states.shape[0], hidden_states.device
        timestep = torch.as_tensor(timestep, device=device)
        if timestep.dim() == 0:
            timestep = timestep.expand(batch)
        if timestep.shape != (batch,):
            raise ValueError(f"expected one timestep or {batch}, got shape {tuple(timestep.shape)}")
        if class_labels is None:
            if self.null_class_id is None:
                raise ValueError("class_labels is required: this model has no null class (class_dropout_prob=0)")
            class_labels = torch.full((batch,), self.null_class_id, device=device, dtype=torch.long)
        class_labels = torch.as_tensor(class_labels, device=device).reshape(-1)
        if class_labels.shape != (batch,):
            raise ValueError(f"expected {batch} class labels, got {class_labels.numel()}")
        rows = self.y_embedder.embedding_table.num_embeddings
        # checked on the CPU only: on an accelerator the check would cost a host sync every step
        if class_labels.device.type == "cpu" and class_labels.numel() and (
                class_labels.min() < 0 or class_labels.max() >= rows):
            raise ValueError(f"class labels must lie in [0, {rows - 1}] (the null class is {self.null_class_id}), "
                             f"got {class_labels.tolist()}")
        return timestep, class_labels

    def unpatchify(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Tokens [B, h·w, p·p·C] -> latents [B, C, h·p, w·p]."""
        patch, height, width = self.config.patch_size, *size
        x = x.reshape(x.shape[0], height, width, patch, patch, self.out_channels)
        return x.permute(0, 5, 1, 3, 2, 4).reshape(x.shape[0], self.out_channels, height * patch, width * patch)

    def forward(
            self,
            hidden_states: torch.Tensor,
            timestep: Union[torch.Tensor, float, int],
            class_labels: Optional[torch.Tensor] = None,
            return_dict: bool = True,
    ) -> Union[Transformer2DModelOutput, tuple[torch.Tensor]]:
        """One denoising prediction.

        Args:
            hidden_states: noisy latents [B, C, H, W]; H and W multiples of the patch size (need not be equal
                nor equal ``sample_size``; the official code assumes square maps).
            timestep: DDPM step index per sample [B] (or one for all), in [0, 1000).
            class_labels: class ids [B]; None means the null class (unconditional).
            return_dict: return a ``Transformer2DModelOutput`` instead of a tuple.

        Returns:
            ``sample`` [B, 2C, H, W] (ε then v) with ``learn_sigma``, else [B, C, H, W].
        """
        timestep, class_labels = self._check_inputs(hidden_states, timestep, class_labels)
        patch = self.config.patch_size
        size = (hidden_states.shape[-2] // patch, hidden_states.shape[-1] // patch)
        x = self.x_embedder(hidden_states)
        x = x + self._position_table(size, x.dtype)
        c = self.t_embedder(timestep) + self.y_embedder(class_labels)
        for block in self.blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                x = self._gradient_checkpointing_func(block, x, c, size)
            else:
                x = block(x, c, size)
        out = self.unpatchify(self.final_layer(x, c), size)
        if not return_dict:
            return (out,)
        return Transformer2DModelOutput(sample=out)
