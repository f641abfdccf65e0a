"""InLine-Swin: Swin Transformer with injective linear attention in its early stages.

Han et al., "Bridging the Divide: Reconsidering Softmax and Linear Attention", NeurIPS 2024,
arXiv:2412.06590. Origin: https://github.com/LeapLabTHU/InLine (``models/inline_swin.py``; no
license file, built on Swin Transformer, MIT). Re-implemented, not copied.

A Swin-v1 skeleton (4×4 patch embed, four stages joined by patch merging, final norm, average pool).
Each block's mixer is named explicitly: ``inline`` (the official window of 56 at 224 and 96 at 384
covers the whole map, so every official InLine block is global attention, here at any input size) or
``window`` (the shared shifted-window softmax mixer with relative position bias). The official
``attn_type`` strings map as 'I' -> inline, 'S' -> window, 'M' + k -> k InLine blocks then window.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence, Union

import torch
from timm.layers import LayerNorm2d
from timm.models import generate_default_cfgs
from torch import nn

from ._builder import build_vitzoo_model
from ._checkpoint import unwrap_state_dict
from ._facts import register_paper_facts
from ._factory import takes_device_dtype
from ._helpers import check_image_size
from ._hierarchical import (HierarchicalBackbone, MixerLayout, Stage, classifier_head_keys, expand_mixers,
                            stage_drop_path_rates, stage_out_norms)
from ._inline_common import (INLINE_INPUT_MULTIPLE, INLINE_WEIGHT_KEYS, Block, detection_weights, init_weights,
                             inline_cfg, inline_facts)
from ._registry import register_model

__all__ = ["InLineSwin", "PatchEmbed", "PatchMerging"]

# the four InLine backbones share one model card, model_cards/inline.md
CARDS = {"inline": "*"}


class PatchEmbed(nn.Module):
    """4×4 patches: Conv2d(kernel = stride = 4) then LayerNorm over channels. Map in, map out."""

    def __init__(self, in_chans: int, dim: int, patch_size: int = 4):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class PatchMerging(nn.Module):
    """Swin's 2×2 merge: concatenate the neighbours (0,0), (1,0), (0,1), (1,1) (row, column) to 4C,
    LayerNorm, then a bias-free Linear to 2C. Map [B, C, H, W] -> [B, 2C, H/2, W/2]."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x)).permute(0, 3, 1, 2)


def _block_mixer_kwargs(name: str, index: int, resolution: int, window_size: Optional[int],
                        softmax_window_size: int) -> dict:
    """Window and shift of one block, resolved from its stage's map at the construction size as the
    official code does: a window at least as large as the map becomes the whole map, unshifted;
    otherwise odd blocks shift by half a window."""
    if name == "inline":
        if window_size is None or resolution <= window_size:
            return {}
        return dict(window_size=window_size, shift_size=window_size // 2 if index % 2 else 0)
    if name == "window":
        if resolution <= softmax_window_size:
            return dict(window_size=resolution, shift_size=0)
        return dict(window_size=softmax_window_size, shift_size=softmax_window_size // 2 if index % 2 else 0)
    return {}


class InLineSwin(HierarchicalBackbone):
    """InLine-Swin.

    Args:
        img_size: construction size. It fixes each block's window and shift (the official rule);
            other sizes (multiples of 32) run with the same windows, padding where needed.
        in_chans, num_classes: input channels and classes (0 for no head).
        global_pool: ``"avg"`` or ``""`` (no pooling).
        embed_dim: width of stage 1; stage i has ``embed_dim * 2**i``.
        depths, num_heads: blocks and heads per stage.
        mixers: per stage, a mixer name or one name per block (``"inline"``, ``"window"``, or any mixer).
        window_size: InLine window; None attends over the whole map (the official configurations).
        softmax_window_size: window of ``"window"`` blocks (the official code uses max(7, window // 8)).
        mlp_ratio, qkv_bias: MLP width ratio and qkv bias.
        drop_rate: dropout after the projections and before the head. drop_path_rate: stochastic depth.
        out_norms: stages whose dense outputs get a LayerNorm (True for all), as detection backbones add;
            with any, the final norm is dropped (the official RAVLT / L²ViT detection backbones have none).
    """

    @takes_device_dtype
    def __init__(
            self,
            img_size: Union[int, tuple[int, int]] = 224,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = "avg",
            embed_dim: int = 96,
            depths: Sequence[int] = (2, 2, 6, 2),
            num_heads: Sequence[int] = (3, 6, 12, 24),
            mixers: MixerLayout = ("inline", "inline", "inline", "window"),
            window_size: Optional[int] = None,
            softmax_window_size: int = 7,
            mlp_ratio: float = 4.0,
            qkv_bias: bool = True,
            drop_rate: float = 0.0,
            drop_path_rate: float = 0.0,
            out_norms: Union[bool, Sequence[int], None] = None,
    ):
        super().__init__()
        if len(depths) != 4 or len(num_heads) != 4:
            raise ValueError(f"InLine-Swin has 4 stages, got depths {depths} and num_heads {num_heads}")
        names = expand_mixers(mixers, depths)
        self.mixers = tuple(tuple(n) for n in names)
        dims = [embed_dim * 2 ** i for i in range(4)]
        dpr = stage_drop_path_rates(drop_path_rate, depths)
        img_size = check_image_size(img_size, multiple_of=INLINE_INPUT_MULTIPLE, model="InLine-Swin")
        base_resolution = min(img_size) // 4
        self.stem = PatchEmbed(in_chans, embed_dim)
        stages = []
        for s in range(4):
            resolution = base_resolution // 2 ** s
            blocks = []
            for i, name in enumerate(names[s]):
                kwargs = _block_mixer_kwargs(name, i, resolution, window_size, softmax_window_size)
                if not qkv_bias:
                    kwargs["qkv_bias"] = False
                blocks.append(Block(dims[s], num_heads[s], name, kwargs, mlp_ratio, dpr[s][i], nn.LayerNorm,
                                    proj_drop=drop_rate))
            stages.append(Stage(nn.Identity() if s == 0 else PatchMerging(dims[s - 1]), blocks))
        self.stages = nn.ModuleList(stages)
        self.init_backbone(embed_dims=dims, reductions=(4, 8, 16, 32), in_chans=in_chans, num_classes=num_classes,
                           global_pool=global_pool, drop_rate=drop_rate, model_name="InLine-Swin", img_size=img_size,
                           norm=None if stage_out_norms(out_norms, 4) else LayerNorm2d(dims[-1], eps=1e-5),
                           out_norms=out_norms, input_multiple=INLINE_INPUT_MULTIPLE)
        self.apply(init_weights)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {n for n, _ in self.named_parameters() if n.endswith("relative_position_bias_table")}


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: InLineSwin) -> dict[str, torch.Tensor]:
    """Official InLine-Swin keys -> vitzoo: ``patch_embed`` -> ``stem``, ``layers.s.blocks`` ->
    ``stages.s.blocks``, ``layers.s.downsample`` -> ``stages.{s+1}.downsample`` (merging opens the next
    stage, as in timm); ``relative_position_index`` and ``attn_mask`` are derived, so dropped."""
    out = {}
    for key, value in classifier_head_keys(unwrap_state_dict(state_dict)).items():
        if key.endswith(("relative_position_index", "attn_mask")):
            continue
        key = re.sub(r"^patch_embed\.", "stem.", key)
        key = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"stages.{int(m[1]) + 1}.downsample.", key)
        key = re.sub(r"^layers\.(\d+)\.blocks\.", r"stages.\1.blocks.", key)
        out[key] = value
    return detection_weights(out, model)


def _create_inline_swin(variant: str, pretrained: bool = False, **kwargs) -> InLineSwin:
    return build_vitzoo_model(
        InLineSwin, variant, pretrained,
        checkpoint_filter_fn=checkpoint_filter_fn,
        # main.py evaluates checkpoint['model']; the InLine-Swin trainer keeps no EMA
        weight_keys=("model", "state_dict_ema") + INLINE_WEIGHT_KEYS,
        feature_cfg=dict(feature_cls="getter", out_indices=(0, 1, 2, 3)),
        **kwargs,
    )


def _cfg(**kwargs) -> dict:
    return inline_cfg(first_conv="stem.proj", classifier="head.fc", **kwargs)


default_cfgs = generate_default_cfgs({
    "inline_swin_tiny.official_in1k": _cfg(),
    "inline_swin_small.official_in1k": _cfg(),
    "inline_swin_base.official_in1k": _cfg(),
    # cfgs/inline_swin_b_384.yaml evaluates without a crop (TEST.CROP False); no checkpoint is released
    "inline_swin_base_384.official_in1k": _cfg(input_size=(3, 384, 384), crop_pct=1.0),
})

PAPER_FACTS = register_paper_facts({
    "inline_swin_tiny.official_in1k": inline_facts(
        "InLine-Swin-T", top1=82.4, checkpoint="32810869fcc34410966b", params_m=30, gflops=4.5),
    "inline_swin_small.official_in1k": inline_facts(
        "InLine-Swin-S", top1=83.6, checkpoint="e9657fd247c04c7cb1a1", params_m=50, gflops=8.7),
    "inline_swin_base.official_in1k": inline_facts(
        "InLine-Swin-B", top1=84.1, checkpoint="bf23564bb64c420aafe1", params_m=88, gflops=15.4),
    "inline_swin_base_384.official_in1k": inline_facts("InLine-Swin-B-384", top1=None, checkpoint=None),
})


@register_model
def inline_swin_tiny(pretrained: bool = False, **kwargs) -> InLineSwin:
    """InLine-Swin-T (official attn_type 'IIIS': InLine in stages 1-3, window softmax in stage 4)."""
    model_args = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24),
                      mixers=("inline", "inline", "inline", "window"))
    return _create_inline_swin("inline_swin_tiny", pretrained, **dict(model_args, **kwargs))


@register_model
def inline_swin_small(pretrained: bool = False, **kwargs) -> InLineSwin:
    """InLine-Swin-S (official attn_type 'IISS': InLine in stages 1-2, window softmax in stages 3-4)."""
    model_args = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24),
                      mixers=("inline", "inline", "window", "window"))
    return _create_inline_swin("inline_swin_small", pretrained, **dict(model_args, **kwargs))


@register_model
def inline_swin_base(pretrained: bool = False, **kwargs) -> InLineSwin:
    """InLine-Swin-B (official attn_type 'IIMS2': stage 3 opens with 2 InLine blocks, then 16 window softmax)."""
    model_args = dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32),
                      mixers=("inline", "inline", ("inline",) * 2 + ("window",) * 16, "window"))
    return _create_inline_swin("inline_swin_base", pretrained, **dict(model_args, **kwargs))


@register_model
def inline_swin_base_384(pretrained: bool = False, **kwargs) -> InLineSwin:
    """InLine-Swin-B at 384 ('IIMS2'; softmax windows of 12 = max(7, 96 // 8))."""
    model_args = dict(img_size=384, embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32),
                      mixers=("inline", "inline", ("inline",) * 2 + ("window",) * 16, "window"),
                      softmax_window_size=12)
    return _create_inline_swin("inline_swin_base_384", pretrained, **dict(model_args, **kwargs))


# Reduced configurations for the contract tests: windowed and global InLine, a mixed stage, shifted
# and padded softmax windows, on a non-square input.
REDUCED_CONFIGS = {
    "inline_swin_*": dict(
        kwargs=dict(img_size=128, embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=8,
                    softmax_window_size=4, mixers=("inline", "inline", ("inline", "window"), "window")),
        input_size=(3, 64, 96),
    ),
}
