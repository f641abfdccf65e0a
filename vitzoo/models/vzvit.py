"""vzvit: a plain isotropic ViT in the DeiT layout whose token mixer is a constructor argument.

It is the zoo's common testbed: ``timm.create_model("vzvit_small", mixer="inline")`` puts any
registered mixer (or a per-block list of them) into the same patch embed, cls token, absolute
position embedding, pre-norm blocks and head, so mixers are compared under one backbone.
Sizes follow DeiT (Touvron et al., "Training data-efficient image transformers", arXiv:2012.12877).
With ``mixer="softmax"`` the state dict has timm's ViT key names, so DeiT weights load unchanged.

The position encoding (``pos_embed``), channel mixer (``mlp_layer``), norm (``norm_layer``) and the place of the
final norm (``fc_norm``) are arguments too, so other isotropic papers are configurations of this one class:
LightNet (:mod:`vitzoo.models.lightnet`) is MD-TPE + GLU + RMSNorm + a pooled-feature norm.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

import torch
from timm.layers import (DropPath, LayerScale, Mlp, PatchEmbed, SwiGLU, calculate_drop_path_rates,
                         resample_abs_pos_embed, trunc_normal_)
from timm.models import generate_default_cfgs
from timm.models._features import feature_take_indices
from timm.models._manipulate import checkpoint
from torch import nn

from ..layers import resize_pos_embed, tokens_to_map
from ..layers.lightnet_pe import MdTpe
from ..mixers import create_mixer
from ._builder import build_vitzoo_model, make_cfg
from ._checkpoint import unwrap_state_dict
from ._factory import takes_device_dtype
from ._helpers import check_image_input, check_image_size
from ._registry import register_model

__all__ = ["VzViT"]

POS_EMBEDS = ("learn", "md_tpe", "none")
MLP_LAYERS = ("mlp", "glu")
NORM_LAYERS = ("layernorm", "rmsnorm")


def _choice(name: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    return value


def make_norm(kind: str, dim: int) -> nn.Module:
    """LayerNorm (DeiT, eps 1e-6) or RMSNorm with a weight (eps 1e-6; LightNet's team template)."""
    return nn.LayerNorm(dim, eps=1e-6) if kind == "layernorm" else nn.RMSNorm(dim, eps=1e-6)


def make_mlp(kind: str, dim: int, hidden: int) -> nn.Module:
    """DeiT's GELU MLP (fc1, fc2 with biases) or the GLU ``w3(SiLU(w1 x) ⊙ w2 x)`` without biases (timm's
    SwiGLU: ``fc1_g`` = w1, ``fc1_x`` = w2, ``fc2`` = w3), the channel mixer of LightNet (spec §5)."""
    if kind == "mlp":
        return Mlp(dim, hidden, act_layer=nn.GELU)
    return SwiGLU(dim, hidden, bias=False)


class Block(nn.Module):
    """Pre-norm transformer block: x + mixer(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(
            self,
            dim: int,
            num_heads: int,
            mixer: str,
            mixer_kwargs: Optional[dict] = None,
            mlp_ratio: float = 4.0,
            init_values: Optional[float] = None,
            drop_path: float = 0.0,
            norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
            mlp_layer: str = "mlp",
    ):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = create_mixer(mixer, dim, num_heads, **(mixer_kwargs or {}))
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = make_mlp(mlp_layer, dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, size: tuple[int, int], num_prefix_tokens: int) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x), size, num_prefix_tokens=num_prefix_tokens)))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class VzViT(nn.Module):
    """Isotropic ViT with a pluggable token mixer.

    Args:
        img_size: training resolution; sets the position-embedding grid. Other sizes (multiples of
            the patch size) work at run time by resampling the embedding bicubically.
        patch_size: patch side.
        in_chans: input channels.
        num_classes: classifier outputs; 0 for none.
        global_pool: ``"token"`` (cls token), ``"avg"`` (mean of patch tokens) or ``""``.
        embed_dim, depth, num_heads, mlp_ratio: the DeiT sizes.
        mixer: a mixer name from ``vitzoo.list_mixers()``, or one name per block.
        mixer_kwargs: keyword arguments for every block's mixer.
        class_token: prepend a cls token (a prefix token for the mixers).
        pos_embed: ``"learn"`` (DeiT's absolute embedding, resampled for other sizes), ``"md_tpe"`` (LightNet's
            multi-dimensional Toeplitz encoding of the patch grid, :class:`vitzoo.layers.lightnet_pe.MdTpe`, whose
            output replaces the embedding; the cls token is added after it) or ``"none"``.
        mlp_layer: ``"mlp"`` (GELU MLP) or ``"glu"`` (SiLU-gated GLU without biases); hidden width
            ``embed_dim * mlp_ratio``.
        norm_layer: ``"layernorm"`` or ``"rmsnorm"``, for every block norm and the final norm.
        fc_norm: put the final norm after pooling (timm's ``fc_norm``, in ``forward_head``) instead of on every
            token in ``forward_features``.
        init_values: LayerScale init; None for no LayerScale (DeiT).
        drop_rate: dropout before the head. drop_path_rate: stochastic depth, linear over blocks.
    """

    # the name input errors use; subclasses that are another paper's model give their own
    model_name = "VzViT"

    @takes_device_dtype
    def __init__(
            self,
            img_size: Union[int, tuple[int, int]] = 224,
            patch_size: int = 16,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = "token",
            embed_dim: int = 384,
            depth: int = 12,
            num_heads: int = 6,
            mlp_ratio: float = 4.0,
            mixer: Union[str, Sequence[str]] = "softmax",
            mixer_kwargs: Optional[dict[str, Any]] = None,
            class_token: bool = True,
            pos_embed: str = "learn",
            mlp_layer: str = "mlp",
            norm_layer: str = "layernorm",
            fc_norm: bool = False,
            init_values: Optional[float] = None,
            drop_rate: float = 0.0,
            drop_path_rate: float = 0.0,
    ):
        super().__init__()
        if global_pool not in ("token", "avg", ""):
            raise ValueError(f"global_pool must be 'token', 'avg' or '', got {global_pool!r}")
        if global_pool == "token" and not class_token:
            raise ValueError("global_pool='token' needs class_token=True")
        self.pos_embed_kind = _choice("pos_embed", pos_embed, POS_EMBEDS)
        _choice("mlp_layer", mlp_layer, MLP_LAYERS)
        _choice("norm_layer", norm_layer, NORM_LAYERS)
        img_size = check_image_size(img_size, multiple_of=patch_size, model=self.model_name)
        mixers = [mixer] * depth if isinstance(mixer, str) else list(mixer)
        if len(mixers) != depth:
            raise ValueError(f"got {len(mixers)} mixers for depth {depth}")
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.in_chans = in_chans
        self.patch_size = patch_size
        self.img_size = img_size
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.num_prefix_tokens = 1 if class_token else 0
        self.mixers = tuple(mixers)
        self.grad_checkpointing = False

        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, output_fmt="NHWC", strict_img_size=False)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        self.pos_embed = (nn.Parameter(torch.zeros(1, self.num_prefix_tokens + self.patch_embed.num_patches,
                                                   embed_dim)) if pos_embed == "learn" else None)
        self.tpe = MdTpe(embed_dim, num_heads) if pos_embed == "md_tpe" else None
        dpr = calculate_drop_path_rates(drop_path_rate, depth)
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, mixers[i], self._block_mixer_kwargs(mixers[i], mixer_kwargs), mlp_ratio,
                  init_values, dpr[i], norm_layer=lambda d: make_norm(norm_layer, d), mlp_layer=mlp_layer)
            for i in range(depth)
        ])
        self.norm = nn.Identity() if fc_norm else make_norm(norm_layer, embed_dim)
        self.fc_norm = make_norm(norm_layer, embed_dim) if fc_norm else nn.Identity()
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.feature_info = [dict(module=f"blocks.{i}", num_chs=embed_dim, reduction=patch_size) for i in range(depth)]
        self._init_weights()

    def _block_mixer_kwargs(self, mixer: str, mixer_kwargs: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
        """The keyword arguments of one block's mixer; a subclass may add its own per mixer name."""
        return mixer_kwargs

    def _init_weights(self) -> None:
        if self.pos_embed is not None:
            trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {name for name in ("pos_embed", "cls_token") if getattr(self, name) is not None}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r"^cls_token|^pos_embed|^patch_embed|^tpe",
                    blocks=[(r"^blocks\.(\d+)", None), (r"^norm|^fc_norm", (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            if global_pool not in ("token", "avg", ""):
                raise ValueError(f"global_pool must be 'token', 'avg' or '', got {global_pool!r}")
            if global_pool == "token" and self.cls_token is None:
                raise ValueError("global_pool='token' needs a model built with class_token=True")
            self.global_pool = global_pool
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        check_image_input(x, self.in_chans, multiple_of=self.patch_size, min_size=self.patch_size,
                          model=self.model_name)
        x = self.patch_embed(x)  # [B, gh, gw, C]
        size = (x.shape[1], x.shape[2])
        x = x.flatten(1, 2)
        if self.tpe is not None:
            x = self.tpe(x, size)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        if self.pos_embed is not None:
            x = x + resize_pos_embed(self.pos_embed, self.patch_embed.grid_size, size,
                                     num_prefix_tokens=self.num_prefix_tokens)
        return x, size

    def _run_block(self, block: nn.Module, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, x, size, self.num_prefix_tokens)
        return block(x, size, self.num_prefix_tokens)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x, size = self._embed(x)
        for block in self.blocks:
            x = self._run_block(block, x, size)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "token":
            x = x[:, 0]
        elif self.global_pool == "avg":
            x = x[:, self.num_prefix_tokens:].mean(dim=1)
        x = self.head_drop(self.fc_norm(x))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, list[int]]] = None,
            return_prefix_tokens: bool = False,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = "NCHW",
            intermediates_only: bool = False,
    ):
        """Block outputs for dense tasks (timm's ``forward_intermediates`` contract).

        Returns ``(final_features, intermediates)`` or only the intermediates. NCHW maps are
        [B, C, H/patch, W/patch]; with ``return_prefix_tokens`` each item is ``(map, prefix)``.
        """
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        x, size = self._embed(x)
        blocks = self.blocks if not stop_early else self.blocks[:max_index + 1]
        intermediates = []
        for i, block in enumerate(blocks):
            x = self._run_block(block, x, size)
            if i in take_indices:
                out = self.norm(x) if norm else x
                prefix, spatial = out[:, :self.num_prefix_tokens], out[:, self.num_prefix_tokens:]
                if output_fmt == "NCHW":
                    spatial = tokens_to_map(spatial, size)
                intermediates.append((spatial, prefix) if return_prefix_tokens else spatial)
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def prune_intermediate_layers(self, indices: Union[int, list[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop blocks after the last wanted index (and optionally the norm and head)."""
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[:max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: VzViT) -> dict[str, torch.Tensor]:
    """DeiT / timm ViT weights: drop what vzvit does not have (distillation head, non-persistent buffers)
    and resample the position embedding when the checkpoint's grid differs."""
    out = {}
    own = model.state_dict()
    for key, value in unwrap_state_dict(state_dict).items():
        if key.startswith(("dist_token", "head_dist")) or key.endswith("relative_position_index"):
            continue
        if key == "pos_embed" and "pos_embed" in own and value.shape != own["pos_embed"].shape:
            value = resample_abs_pos_embed(value, new_size=model.patch_embed.grid_size,
                                           num_prefix_tokens=model.num_prefix_tokens)
        out[key] = value
    return out


def _create_vzvit(variant: str, pretrained: bool = False, **kwargs) -> VzViT:
    return build_vitzoo_model(
        VzViT, variant, pretrained,
        checkpoint_filter_fn=checkpoint_filter_fn,
        weight_keys=("model", "state_dict"),
        feature_cfg=dict(out_indices=3, feature_cls="getter"),
        **kwargs,
    )


def _cfg(**kwargs) -> dict:
    return make_cfg(
        first_conv="patch_embed.proj",
        classifier="head",
        license="apache-2.0",
        paper_ids="arXiv:2012.12877",
        origin_url="https://github.com/facebookresearch/deit",
        description="no released weights (random init); DeiT checkpoints load with mixer='softmax'",
        **kwargs,
    )


default_cfgs = generate_default_cfgs({
    "vzvit_tiny.untrained": _cfg(),
    "vzvit_small.untrained": _cfg(),
    "vzvit_base.untrained": _cfg(),
})


@register_model
def vzvit_tiny(pretrained: bool = False, **kwargs) -> VzViT:
    """DeiT-Tiny sizes (192 wide, 12 deep, 3 heads) with a pluggable mixer."""
    model_args = dict(embed_dim=192, depth=12, num_heads=3)
    return _create_vzvit("vzvit_tiny", pretrained, **dict(model_args, **kwargs))


@register_model
def vzvit_small(pretrained: bool = False, **kwargs) -> VzViT:
    """DeiT-Small sizes (384 wide, 12 deep, 6 heads) with a pluggable mixer."""
    model_args = dict(embed_dim=384, depth=12, num_heads=6)
    return _create_vzvit("vzvit_small", pretrained, **dict(model_args, **kwargs))


@register_model
def vzvit_base(pretrained: bool = False, **kwargs) -> VzViT:
    """DeiT-Base sizes (768 wide, 12 deep, 12 heads) with a pluggable mixer."""
    model_args = dict(embed_dim=768, depth=12, num_heads=12)
    return _create_vzvit("vzvit_base", pretrained, **dict(model_args, **kwargs))


# Reduced configurations for fast contract tests and examples: same code paths, tiny widths.
REDUCED_CONFIGS = {
    "vzvit_*": dict(kwargs=dict(embed_dim=32, depth=3, num_heads=2, img_size=64), input_size=(3, 64, 96)),
}
