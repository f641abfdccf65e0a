"""InLine-PVT: Pyramid Vision Transformer (v1) with injective linear attention in every stage.

Han et al., "Bridging the Divide: Reconsidering Softmax and Linear Attention", NeurIPS 2024,
arXiv:2412.06590. Origin: https://github.com/LeapLabTHU/InLine (``models/inline_pvt.py``; no
license file, built on PVT, Apache-2.0). Re-implemented, not copied.

Four stages, each a strided patch embed (4×4, then 2×2) with LayerNorm, an absolute position
embedding (bilinearly resized when the map differs from the construction grid) and pre-norm blocks.
Every official configuration uses InLine over the whole map with full-resolution keys (attn_type
'IIII', la_sr_ratios '1111'), so the cost is linear in tokens. There is no cls token and no final
norm: the logits come from the mean of the last stage's tokens.
"""

from __future__ import annotations

import re
from functools import partial
from typing import Sequence, Union

import torch
from timm.layers import trunc_normal_
from timm.models import generate_default_cfgs
from torch import nn

from ..layers import resize_pos_embed
from ..mixers import map_to_tokens
from ._builder import build_vitzoo_model
from ._checkpoint import CheckpointError, unwrap_state_dict
from ._facts import register_paper_facts
from ._factory import takes_device_dtype
from ._helpers import check_image_size
from ._hierarchical import (HierarchicalBackbone, MixerLayout, Stage, classifier_head_keys, expand_mixers,
                            stage_drop_path_rates)
from ._inline_common import (INLINE_INPUT_MULTIPLE, INLINE_WEIGHT_KEYS, Block, detection_weights, init_weights,
                             inline_cfg, inline_facts)
from ._registry import register_model

__all__ = ["InLinePVT"]

# the four InLine backbones share one model card, model_cards/inline.md
CARDS = {"inline": "*"}


class PatchEmbed(nn.Module):
    """Conv2d(kernel = stride = patch) then LayerNorm (eps 1e-5) over channels. Map in, map out."""

    def __init__(self, in_chans: int, dim: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class PVTStage(Stage):
    """A PVT stage: patch embed, + position embedding, blocks."""

    def __init__(self, downsample: nn.Module, blocks: Sequence[nn.Module], dim: int, grid: tuple[int, int],
                 drop_rate: float = 0.0):
        super().__init__(downsample, blocks)
        self.grid = grid
        self.pos_embed = nn.Parameter(torch.zeros(1, grid[0] * grid[1], dim))
        self.pos_drop = nn.Dropout(drop_rate)

    def tokens(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        # official: bilinear, align_corners=False, from the construction grid (the identity at that grid)
        pos_embed = resize_pos_embed(self.pos_embed, self.grid, size, mode="bilinear", antialias=False,
                                     align_corners=False)
        return self.pos_drop(map_to_tokens(x) + pos_embed)


class InLinePVT(HierarchicalBackbone):
    """InLine-PVT.

    Args:
        img_size: construction size; sets each stage's position-embedding grid. Other sizes
            (multiples of 32) resize the embeddings bilinearly, as the official code does.
        in_chans, num_classes: input channels and classes (0 for no head).
        global_pool: ``"avg"`` or ``""`` (no pooling).
        embed_dims, num_heads, mlp_ratios, depths: per stage.
        mixers: per stage, a mixer name or one name per block (``"inline"`` everywhere officially).
        qkv_bias: qkv bias.
        drop_rate: dropout after position embeddings, projections and before the head.
        drop_path_rate: stochastic depth, linear over all blocks.
        out_norms: stages whose dense outputs get a LayerNorm (True for all); none officially.
    """

    stem_pattern = r"^stages\.0\.(?:downsample|pos_embed)"

    @takes_device_dtype
    def __init__(
            self,
            img_size: Union[int, tuple[int, int]] = 224,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = "avg",
            embed_dims: Sequence[int] = (64, 128, 320, 512),
            num_heads: Sequence[int] = (2, 4, 10, 16),
            mlp_ratios: Sequence[float] = (8, 8, 4, 4),
            depths: Sequence[int] = (2, 2, 2, 2),
            mixers: MixerLayout = "inline",
            qkv_bias: bool = True,
            drop_rate: float = 0.0,
            drop_path_rate: float = 0.0,
            out_norms: Union[bool, Sequence[int], None] = None,
    ):
        super().__init__()
        if not len(embed_dims) == len(num_heads) == len(mlp_ratios) == len(depths) == 4:
            raise ValueError("InLine-PVT has 4 stages: give 4 embed_dims, num_heads, mlp_ratios and depths")
        names = expand_mixers(mixers, depths)
        self.mixers = tuple(tuple(n) for n in names)
        dpr = stage_drop_path_rates(drop_path_rate, depths)
        img_size = check_image_size(img_size, multiple_of=INLINE_INPUT_MULTIPLE, model="InLine-PVT")
        grid = (img_size[0] // 4, img_size[1] // 4)
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        stages = []
        for s in range(4):
            if s:
                grid = (grid[0] // 2, grid[1] // 2)
            embed = PatchEmbed(in_chans if s == 0 else embed_dims[s - 1], embed_dims[s], 4 if s == 0 else 2)
            kwargs = {} if qkv_bias else dict(qkv_bias=False)
            blocks = [Block(embed_dims[s], num_heads[s], name, kwargs, mlp_ratios[s], dpr[s][i], norm_layer,
                            proj_drop=drop_rate) for i, name in enumerate(names[s])]
            stages.append(PVTStage(embed, blocks, embed_dims[s], grid, drop_rate))
        self.stem = nn.Identity()
        self.stages = nn.ModuleList(stages)
        # PVT-v1 ends with a LayerNorm; InLine-PVT removed it
        self.init_backbone(embed_dims=embed_dims, reductions=(4, 8, 16, 32), in_chans=in_chans,
                           num_classes=num_classes, global_pool=global_pool, drop_rate=drop_rate,
                           model_name="InLine-PVT", img_size=img_size, out_norms=out_norms,
                           input_multiple=INLINE_INPUT_MULTIPLE)
        for stage in self.stages:
            if not stage.pos_embed.is_meta:
                trunc_normal_(stage.pos_embed, std=0.02)
        self.apply(init_weights)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {f"stages.{i}.pos_embed" for i in range(len(self.stages))}


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: InLinePVT) -> dict[str, torch.Tensor]:
    """Official InLine-PVT keys -> vitzoo: ``patch_embed{i}`` -> ``stages.{i-1}.downsample``,
    ``pos_embed{i}`` -> ``stages.{i-1}.pos_embed``, ``block{i}.j`` -> ``stages.{i-1}.blocks.j``; the
    separate ``attn.q`` and ``attn.kv`` projections are concatenated into ``attn.qkv`` (kv is k then v).
    Position embeddings of another grid are resized to the model's construction grid."""
    renamed = {}
    for key, value in classifier_head_keys(unwrap_state_dict(state_dict)).items():
        key = re.sub(r"^patch_embed(\d)\.", lambda m: f"stages.{int(m[1]) - 1}.downsample.", key)
        key = re.sub(r"^pos_embed(\d)$", lambda m: f"stages.{int(m[1]) - 1}.pos_embed", key)
        key = re.sub(r"^block(\d)\.", lambda m: f"stages.{int(m[1]) - 1}.blocks.", key)
        renamed[key] = value
    out = {}
    for key, value in renamed.items():
        if re.search(r"\.attn\.kv\.(weight|bias)$", key):
            continue
        match = re.fullmatch(r"(.*\.attn\.)q\.(weight|bias)", key)
        if match:
            kv_key = f"{match[1]}kv.{match[2]}"
            if kv_key not in renamed:
                raise CheckpointError(f"checkpoint has {key} but no {kv_key} to form {match[1]}qkv.{match[2]}")
            key, value = f"{match[1]}qkv.{match[2]}", torch.cat([value, renamed[kv_key]])
        out[key] = value
    for key in [k for k in out if re.fullmatch(r"stages\.\d\.pos_embed", k)]:
        stage = model.stages[int(key.split(".")[1])]
        side = int(round(out[key].shape[1] ** 0.5))
        if side * side != out[key].shape[1]:
            raise CheckpointError(f"{key} has {out[key].shape[1]} positions, not a square grid to resize")
        out[key] = resize_pos_embed(out[key], (side, side), stage.grid, mode="bilinear", antialias=False,
                                    align_corners=False)
    return detection_weights(out, model)


def _create_inline_pvt(variant: str, pretrained: bool = False, **kwargs) -> InLinePVT:
    return build_vitzoo_model(
        InLinePVT, variant, pretrained,
        checkpoint_filter_fn=checkpoint_filter_fn,
        # main.py evaluates checkpoint['model']; the InLine-PVT trainer keeps no EMA
        weight_keys=("model", "state_dict_ema") + INLINE_WEIGHT_KEYS,
        feature_cfg=dict(feature_cls="getter", out_indices=(0, 1, 2, 3)),
        **kwargs,
    )


def _cfg(**kwargs) -> dict:
    return inline_cfg(first_conv="stages.0.downsample.proj", classifier="head.fc", **kwargs)


default_cfgs = generate_default_cfgs({
    "inline_pvt_tiny.official_in1k": _cfg(),
    "inline_pvt_small.official_in1k": _cfg(),
    "inline_pvt_medium.official_in1k": _cfg(),
    "inline_pvt_large.official_in1k": _cfg(),
})

PAPER_FACTS = register_paper_facts({
    "inline_pvt_tiny.official_in1k": inline_facts(
        "InLine-PVT-T", top1=78.2, checkpoint="90ac52b1555b401eb5e6", params_m=12.0, gflops=2.0),
    "inline_pvt_small.official_in1k": inline_facts(
        "InLine-PVT-S", top1=82.0, checkpoint="1ab953b2479d433080a3", params_m=21.6, gflops=3.9),
    "inline_pvt_medium.official_in1k": inline_facts(
        "InLine-PVT-M", top1=83.2, checkpoint="a72aec31e6084bc0a280", params_m=37.6, gflops=6.9),
    # the README's 50.2M does not match the official code (51.15M), which the checkpoint was built with
    "inline_pvt_large.official_in1k": inline_facts(
        "InLine-PVT-L", top1=83.6, checkpoint="efd91318ba964f01b288", params_m=50.2, gflops=10.2),
})

_PVT = dict(embed_dims=(64, 128, 320, 512), num_heads=(2, 4, 10, 16), mlp_ratios=(8, 8, 4, 4))


@register_model
def inline_pvt_tiny(pretrained: bool = False, **kwargs) -> InLinePVT:
    """InLine-PVT-T (official attn_type 'IIII': InLine in every stage)."""
    model_args = dict(_PVT, depths=(2, 2, 2, 2), mixers=("inline", "inline", "inline", "inline"))
    return _create_inline_pvt("inline_pvt_tiny", pretrained, **dict(model_args, **kwargs))


@register_model
def inline_pvt_small(pretrained: bool = False, **kwargs) -> InLinePVT:
    """InLine-PVT-S (official attn_type 'IIII')."""
    model_args = dict(_PVT, depths=(3, 4, 6, 3), mixers=("inline", "inline", "inline", "inline"))
    return _create_inline_pvt("inline_pvt_small", pretrained, **dict(model_args, **kwargs))


@register_model
def inline_pvt_medium(pretrained: bool = False, **kwargs) -> InLinePVT:
    """InLine-PVT-M (official attn_type 'IIII')."""
    model_args = dict(_PVT, depths=(3, 4, 18, 3), mixers=("inline", "inline", "inline", "inline"))
    return _create_inline_pvt("inline_pvt_medium", pretrained, **dict(model_args, **kwargs))


@register_model
def inline_pvt_large(pretrained: bool = False, **kwargs) -> InLinePVT:
    """InLine-PVT-L (official attn_type 'IIII'; the official config file is ``inline_pvt_b.yaml``)."""
    model_args = dict(_PVT, depths=(3, 8, 27, 3), mixers=("inline", "inline", "inline", "inline"))
    return _create_inline_pvt("inline_pvt_large", pretrained, **dict(model_args, **kwargs))


# Reduced configuration for the contract tests: tiny widths, a non-square input (resized position embeddings).
REDUCED_CONFIGS = {
    "inline_pvt_*": dict(
        kwargs=dict(img_size=64, embed_dims=(16, 32, 48, 64), num_heads=(1, 2, 3, 4), depths=(1, 2, 1, 1)),
        input_size=(3, 64, 96),
    ),
}
