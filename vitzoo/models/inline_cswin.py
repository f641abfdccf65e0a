"""InLine-CSwin: CSWin Transformer with injective linear attention in its first two stages.

Han et al., "Bridging the Divide: Reconsidering Softmax and Linear Attention", NeurIPS 2024,
arXiv:2412.06590. Origin: https://github.com/LeapLabTHU/InLine (``models/inline_cswin.py``; no
license file, built on CSWin Transformer, MIT). Re-implemented, not copied.

A CSWin skeleton: a 7×7 stride-4 convolutional stem, four stages joined by 3×3 stride-2 convolutions,
final norm and average pool. Official configurations use attn_type 'IISS': stages 1-2 are InLine over
the whole map plus both local terms (the dynamic 3×3 residual and CSWin's LePE), stage 3 is two-branch
stripe softmax attention with LePE (the shared ``cswin`` mixer), stage 4 is single-branch softmax.
InLine-CSwin's kernel generator reads the mean of the *un-normalised* block input, so its InLine
mixers own the block's first LayerNorm (``norm_in_mixer``).
"""

from __future__ import annotations

import re
from typing import Sequence, Union

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

__all__ = ["InLineCSwin"]

# the four InLine backbones share one model card, model_cards/inline.md
CARDS = {"inline": "*"}


class ConvEmbed(nn.Module):
    """Convolution then LayerNorm over channels; map in, map out. The stem is (7, stride 4, padding 2),
    the merges between stages are (3, stride 2, padding 1)."""

    def __init__(self, in_chans: int, dim: int, kernel_size: int, stride: int, padding: int):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, dim, kernel_size, stride, padding)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class InLineCSwin(HierarchicalBackbone):
    """InLine-CSwin.

    Args:
        img_size: construction size. A ``cswin`` block whose stripe covers its stage's map at this size
            (or any block of the last stage) attends over the whole map with one branch, as officially;
            other input sizes (multiples of 32) keep the branches and pad the stripes.
        in_chans, num_classes: input channels and classes (0 for no head).
        global_pool: ``"avg"`` or ``""`` (no pooling).
        embed_dim: width of stage 1; stage i has ``embed_dim * 2**i``.
        depths, num_heads: blocks and heads per stage.
        split_sizes: stripe width of ``cswin`` blocks per stage (unused by InLine stages).
        mixers: per stage, a mixer name or one name per block: ``"inline"`` (global InLine + dynamic
            residual + LePE, normalising inside the mixer) or ``"cswin"``.
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
            embed_dim: int = 64,
            depths: Sequence[int] = (2, 4, 18, 1),
            num_heads: Sequence[int] = (2, 4, 8, 16),
            split_sizes: Sequence[int] = (1, 2, 7, 7),
            mixers: MixerLayout = ("inline", "inline", "cswin", "cswin"),
            mlp_ratio: float = 4.0,
            qkv_bias: bool = True,
            drop_rate: float = 0.0,
            drop_path_rate: float = 0.0,
            out_norms: Union[bool, Sequence[int], None] = None,
    ):
        super().__init__()
        if not len(depths) == len(num_heads) == len(split_sizes) == 4:
            raise ValueError("InLine-CSwin has 4 stages: give 4 depths, num_heads and split_sizes")
        names = expand_mixers(mixers, depths)
        self.mixers = tuple(tuple(n) for n in names)
        dims = [embed_dim * 2 ** i for i in range(4)]
        dpr = stage_drop_path_rates(drop_path_rate, depths)
        img_size = check_image_size(img_size, multiple_of=INLINE_INPUT_MULTIPLE, model="InLine-CSwin")
        base_resolution = min(img_size) // 4
        self.stem = ConvEmbed(in_chans, embed_dim, 7, 4, 2)
        stages = []
        for s in range(4):
            resolution = base_resolution // 2 ** s
            blocks = []
            for i, name in enumerate(names[s]):
                kwargs = {} if qkv_bias else dict(qkv_bias=False)
                if name == "inline":
                    kwargs["lepe"] = True
                elif name == "cswin":
                    single = s == 3 or split_sizes[s] == resolution
                    kwargs.update(split_size=split_sizes[s], num_branches=1 if single else 2)
                blocks.append(Block(dims[s], num_heads[s], name, kwargs, mlp_ratio, dpr[s][i], nn.LayerNorm,
                                    norm_in_mixer=name == "inline", proj_drop=drop_rate))
            downsample = nn.Identity() if s == 0 else ConvEmbed(dims[s - 1], dims[s], 3, 2, 1)
            stages.append(Stage(downsample, blocks))
        self.stages = nn.ModuleList(stages)
        self.init_backbone(embed_dims=dims, reductions=(4, 8, 16, 32), in_chans=in_chans, num_classes=num_classes,
                           global_pool=global_pool, drop_rate=drop_rate, model_name="InLine-CSwin", img_size=img_size,
                           norm=None if stage_out_norms(out_norms, 4) else LayerNorm2d(dims[-1], eps=1e-5),
                           out_norms=out_norms, input_multiple=INLINE_INPUT_MULTIPLE)
        self.apply(init_weights)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return set()


def _block_key(rest: str, inline: bool) -> str:
    """One official CSWinBlock key (after ``stage{s}.{j}.``) -> vitzoo's key inside ``Block``."""
    if inline:
        rest = re.sub(r"^norm1\.", "attn.norm.", rest)
        rest = re.sub(r"^attns\.0\.get_v\.", "attn.lepe.", rest)
        rest = re.sub(r"^attns\.0\.residual\.", "attn.residual.", rest)
    else:
        rest = re.sub(r"^attns\.(\d+)\.get_v\.", r"attn.lepe.\1.", rest)
    return re.sub(r"^(qkv|proj)\.", r"attn.\1.", rest)


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: InLineCSwin) -> dict[str, torch.Tensor]:
    """Official InLine-CSwin keys -> vitzoo: ``stage1_conv_embed.0/.2`` -> ``stem.conv/.norm``,
    ``merge{i}`` -> ``stages.{i}.downsample``, ``stage{s}.j`` -> ``stages.{s-1}.blocks.j`` with the
    block's ``qkv``/``proj`` moved into its mixer (``attn``), ``attns.b.get_v`` -> ``attn.lepe``, and,
    in InLine blocks (those with ``attns.0.residual``), ``norm1`` -> ``attn.norm``."""
    state_dict = classifier_head_keys(unwrap_state_dict(state_dict))
    inline_blocks = {m[1] for k in state_dict if (m := re.match(r"^(stage\d\.\d+)\.attns\.0\.residual\.", k))}
    out = {}
    for key, value in state_dict.items():
        block = re.match(r"^stage(\d)\.(\d+)\.(.*)$", key)
        if block:
            stage, index, rest = int(block[1]), block[2], block[3]
            key = f"stages.{stage - 1}.blocks.{index}." + _block_key(rest, f"stage{stage}.{index}" in inline_blocks)
        else:
            key = re.sub(r"^stage1_conv_embed\.0\.", "stem.conv.", key)
            key = re.sub(r"^stage1_conv_embed\.2\.", "stem.norm.", key)
            key = re.sub(r"^merge(\d)\.", r"stages.\1.downsample.", key)
        out[key] = value
    return detection_weights(out, model)


def _create_inline_cswin(variant: str, pretrained: bool = False, **kwargs) -> InLineCSwin:
    return build_vitzoo_model(
        InLineCSwin, variant, pretrained,
        checkpoint_filter_fn=checkpoint_filter_fn,
        # main_ema.py trains with model EMA and reports the EMA network last; take its weights when the
        # file has them (state_dict_ema), else the raw model
        weight_keys=("state_dict_ema", "model") + INLINE_WEIGHT_KEYS,
        feature_cfg=dict(feature_cls="getter", out_indices=(0, 1, 2, 3)),
        **kwargs,
    )


def _cfg(**kwargs) -> dict:
    return inline_cfg(first_conv="stem.conv", classifier="head.fc", **kwargs)


default_cfgs = generate_default_cfgs({
    "inline_cswin_tiny.official_in1k": _cfg(),
    "inline_cswin_small.official_in1k": _cfg(),
    "inline_cswin_base.official_in1k": _cfg(),
    # the paper's table lists 85.7 at 384; no checkpoint is released. Its yaml keeps TEST.CROP (0.875)
    "inline_cswin_base_384.official_in1k": _cfg(input_size=(3, 384, 384)),
})

# params_m: the paper's table (figures/fig2_cls.png), which matches the code; the README's 25/43/96M do not
PAPER_FACTS = register_paper_facts({
    "inline_cswin_tiny.official_in1k": inline_facts(
        "InLine-CSwin-T", top1=83.2, checkpoint="49fa2ecc543647c4b970", params_m=21, gflops=4.3),
    "inline_cswin_small.official_in1k": inline_facts(
        "InLine-CSwin-S", top1=83.8, checkpoint="59f4e65f776f4052b93c", params_m=33, gflops=6.8),
    "inline_cswin_base.official_in1k": inline_facts(
        "InLine-CSwin-B", top1=84.5, checkpoint="91e17121df284ae38521", params_m=73, gflops=14.9),
    "inline_cswin_base_384.official_in1k": inline_facts(
        "InLine-CSwin-B-384", top1=85.7, checkpoint=None, params_m=73, gflops=46.3),
})


@register_model
def inline_cswin_tiny(pretrained: bool = False, **kwargs) -> InLineCSwin:
    """InLine-CSwin-T (official attn_type 'IISS': InLine in stages 1-2, stripe softmax in stages 3-4)."""
    model_args = dict(embed_dim=64, depths=(2, 4, 18, 1), num_heads=(2, 4, 8, 16), split_sizes=(1, 2, 7, 7),
                      mixers=("inline", "inline", "cswin", "cswin"))
    return _create_inline_cswin("inline_cswin_tiny", pretrained, **dict(model_args, **kwargs))


@register_model
def inline_cswin_small(pretrained: bool = False, **kwargs) -> InLineCSwin:
    """InLine-CSwin-S (official attn_type 'IISS')."""
    model_args = dict(embed_dim=64, depths=(3, 6, 29, 2), num_heads=(2, 4, 8, 16), split_sizes=(1, 2, 7, 7),
                      mixers=("inline", "inline", "cswin", "cswin"))
    return _create_inline_cswin("inline_cswin_small", pretrained, **dict(model_args, **kwargs))


@register_model
def inline_cswin_base(pretrained: bool = False, **kwargs) -> InLineCSwin:
    """InLine-CSwin-B (official attn_type 'IISS')."""
    model_args = dict(embed_dim=96, depths=(3, 6, 29, 2), num_heads=(4, 8, 16, 32), split_sizes=(1, 2, 7, 7),
                      mixers=("inline", "inline", "cswin", "cswin"))
    return _create_inline_cswin("inline_cswin_base", pretrained, **dict(model_args, **kwargs))


@register_model
def inline_cswin_base_384(pretrained: bool = False, **kwargs) -> InLineCSwin:
    """InLine-CSwin-B at 384 (official attn_type 'IISS', stripes of 12)."""
    model_args = dict(img_size=384, embed_dim=96, depths=(3, 6, 29, 2), num_heads=(4, 8, 16, 32),
                      split_sizes=(1, 2, 12, 12), mixers=("inline", "inline", "cswin", "cswin"))
    return _create_inline_cswin("inline_cswin_base_384", pretrained, **dict(model_args, **kwargs))


# Reduced configuration for the contract tests: two-branch stripes that need padding on a non-square input.
REDUCED_CONFIGS = {
    "inline_cswin_*": dict(
        kwargs=dict(img_size=64, embed_dim=16, depths=(1, 2, 2, 1), num_heads=(1, 2, 4, 4), split_sizes=(1, 2, 3, 2),
                    mixers=("inline", "inline", "cswin", "cswin")),
        input_size=(3, 64, 96),
    ),
}
