"""L²ViT: "The Linear Attention Resurrection in Vision Transformer" (Zheng, arXiv:2501.16182).

A four-stage hierarchical backbone whose stages alternate an LWA block (softmax attention in
non-overlapping 7×7 windows, no relative bias, no shift) and an LGA block (the enhanced linear
global attention over the whole map, then a local concentration module), with conditional position
encodings instead of a position embedding. Every block is linear in the number of tokens.

Origin: https://github.com/ChuanyangZheng/L2ViT (MIT license); re-implemented, not copied. The
classification model and the mmdet/mmseg backbone of the official repository are one class here:
``out_norms`` adds the detection backbone's per-output LayerNorms.
"""

from __future__ import annotations

import logging
import re
from typing import Callable, Optional, Sequence, Union

import torch
from timm.layers import DropPath, LayerNorm2d, Mlp
from timm.models import generate_default_cfgs
from torch import nn

from ..layers import ConvPosEnc, LocalConcentration, fold_batchnorm, pad_to_multiple, trunc_normal_init
from ..mixers import create_mixer
from ._builder import build_vitzoo_model, make_cfg
from ._checkpoint import CheckpointError, unwrap_state_dict
from ._facts import PaperFacts, register_paper_facts
from ._factory import takes_device_dtype
from ._hierarchical import (HierarchicalBackbone, Stage, classifier_head_keys, per_stage, stage_drop_path_rates,
                            stage_out_norms)
from ._registry import register_model

__all__ = ["L2ViT", "LWABlock", "LGABlock", "checkpoint_filter_fn"]

_logger = logging.getLogger(__name__)


class ConvStem(nn.Module):
    """Stride-4 stem: zero-pad the image right/bottom to a multiple of 4, then conv 3×3/2 -> BN -> ReLU
    -> conv 3×3/2 -> BN -> LayerNorm over channels. Images [B, C_in, H, W] -> map [B, C, ⌈H/4⌉, ⌈W/4⌉]."""

    def __init__(self, in_chans: int, dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, dim // 2, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(dim // 2)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(dim // 2, dim, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(dim)
        self.norm = LayerNorm2d(dim, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pad_to_multiple(x, 4)
        return self.norm(self.bn2(self.conv2(self.act(self.bn1(self.conv1(x))))))

    def fuse(self) -> "ConvStem":
        """Inference: both BatchNorms folded into their convs (timm's ``fuse()`` convention)."""
        self.conv1, self.bn1 = fold_batchnorm(self.conv1, self.bn1), nn.Identity()
        self.conv2, self.bn2 = fold_batchnorm(self.conv2, self.bn2), nn.Identity()
        return self


class Downsample(nn.Module):
    """Stride-2 patch merging in the official order: LayerNorm of the *incoming* width, zero-pad odd maps
    right/bottom to even, then a 2×2/2 convolution (no norm after it). Map [B, C_in, H, W] ->
    [B, C_out, ⌈H/2⌉, ⌈W/2⌉]."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.norm = LayerNorm2d(in_dim, eps=1e-5)
        self.proj = nn.Conv2d(in_dim, dim, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(pad_to_multiple(self.norm(x), 2))


class LWABlock(nn.Module):
    """Local window attention block.

    x = CPE(x); x = x + mixer(norm1(x)); x = CPE'(x); x = x + mlp(norm2(x)). With the default mixer
    (``"window"`` with ``window_size``, no relative bias, no shift) the map is zero-padded right/bottom
    to whole windows after norm1 and the padded tokens are not masked, as in the official code.
    """

    def __init__(
            self,
            dim: int,
            num_heads: int,
            mixer: str = "window",
            mixer_kwargs: Optional[dict] = None,
            mlp_ratio: float = 4.0,
            drop_path: float = 0.0,
            norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
    ):
        super().__init__()
        self.cpe = nn.ModuleList([ConvPosEnc(dim, 3), ConvPosEnc(dim, 3)])
        self.norm1 = norm_layer(dim)
        self.attn = create_mixer(mixer, dim, num_heads, **(mixer_kwargs or {}))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = self.cpe[0](x, size)
        x = x + self.drop_path(self.attn(self.norm1(x), size))
        x = self.cpe[1](x, size)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class LGABlock(nn.Module):
    """Linear global attention block with the local concentration module (the paper's enhanced LGA).

    x = CPE(x); x = x + mixer(norm1(x)); x = x + LCM(norm3(x)); x = x + mlp(norm2(x)).
    ``norm3`` keeps its official name although it runs before ``norm2``.
    """

    def __init__(
            self,
            dim: int,
            num_heads: int,
            mixer: str = "l2vit",
            mixer_kwargs: Optional[dict] = None,
            mlp_ratio: float = 4.0,
            drop_path: float = 0.0,
            norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
    ):
        super().__init__()
        self.cpe = nn.ModuleList([ConvPosEnc(dim, 3)])
        self.norm1 = norm_layer(dim)
        self.attn = create_mixer(mixer, dim, num_heads, **(mixer_kwargs or {}))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm3 = norm_layer(dim)
        self.lcm = LocalConcentration(dim, 7)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = self.cpe[0](x, size)
        x = x + self.drop_path(self.attn(self.norm1(x), size))
        x = x + self.drop_path(self.lcm(self.norm3(x), size))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class L2ViT(HierarchicalBackbone):
    """L²ViT backbone and classifier.

    Args:
        img_size: training size (an int or (H, W)), reported as the cfg's ``input_size``; any input size
            works (the stem, downsamplers and windows pad).
        in_chans: input channels.
        num_classes: classifier outputs; 0 for none.
        global_pool: ``"avg"`` (mean over tokens, as the official head) or ``""``.
        depths, dims, num_heads: per-stage block counts, widths and heads.
        mlp_ratio: MLP expansion, one value or one per stage.
        window_size: side of the LWA windows (7; 12 for the 384 fine-tune).
        drop_rate: dropout before the head (0 in the official code).
        drop_path_rate: stochastic depth, rising linearly over all blocks.
        head_init_scale: multiplies the initial head weight and bias (official default 1).
        local_mixer, global_mixer: mixers of the LWA and LGA blocks, by name (``"window"`` and
            ``"l2vit"``); e.g. ``global_mixer="softmax"`` gives the same backbone with softmax global
            attention, the quadratic baseline of the benchmark.
        local_mixer_kwargs, global_mixer_kwargs: extra mixer arguments. The ``"window"`` mixer gets
            ``window_size`` with no relative position bias and no shift unless these override it.
        out_norms: stage indices (or True for all) whose outputs get their own LayerNorm in
            ``forward_intermediates`` / ``features_only``, as in the official mmdet/mmseg backbone (keys
            ``norm{i}`` there, ``out_norms.{i}`` here). That backbone has no final norm, so with
            ``out_norms`` there is none either; build it with ``num_classes=0``.
    """

    @takes_device_dtype
    def __init__(
            self,
            img_size: Union[int, tuple[int, int]] = 224,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = "avg",
            depths: Sequence[int] = (2, 2, 6, 2),
            dims: Sequence[int] = (96, 192, 384, 768),
            num_heads: Sequence[int] = (3, 6, 12, 24),
            mlp_ratio: Union[float, Sequence[float]] = 4.0,
            window_size: int = 7,
            drop_rate: float = 0.0,
            drop_path_rate: float = 0.0,
            head_init_scale: float = 1.0,
            local_mixer: str = "window",
            global_mixer: str = "l2vit",
            local_mixer_kwargs: Optional[dict] = None,
            global_mixer_kwargs: Optional[dict] = None,
            out_norms: Union[bool, Sequence[int], None] = None,
    ):
        super().__init__()
        num_stages = len(depths)
        if len(dims) != num_stages or len(num_heads) != num_stages:
            raise ValueError(f"depths {tuple(depths)}, dims {tuple(dims)} and num_heads {tuple(num_heads)} "
                             "need one entry per stage")
        has_out_norms = bool(stage_out_norms(out_norms, num_stages))
        mlp_ratios = per_stage(mlp_ratio, num_stages, "mlp_ratio")
        local_kwargs = dict(window_size=window_size, relative_position_bias=False, shift_size=0) \
            if local_mixer == "window" else {}
        local_kwargs.update(local_mixer_kwargs or {})
        global_kwargs = dict(global_mixer_kwargs or {})

        self.dims = tuple(dims)
        self.window_size = window_size
        self.stem = ConvStem(in_chans, dims[0])
        dpr = stage_drop_path_rates(drop_path_rate, depths)
        # blocks alternate LWA (even index) and LGA (odd index)
        self.stages = nn.ModuleList([
            Stage(Downsample(dims[i - 1], dims[i]) if i > 0 else None, [
                LWABlock(dims[i], num_heads[i], local_mixer, local_kwargs, mlp_ratios[i], dpr[i][j]) if j % 2 == 0
                else LGABlock(dims[i], num_heads[i], global_mixer, global_kwargs, mlp_ratios[i], dpr[i][j])
                for j in range(depths[i])
            ])
            for i in range(num_stages)
        ])
        # the official detection backbone has per-output norms and no final norm
        self.init_backbone(
            embed_dims=dims, reductions=[4 * 2 ** i for i in range(num_stages)], in_chans=in_chans,
            num_classes=num_classes, global_pool=global_pool, drop_rate=drop_rate, model_name="l2vit",
            norm=None if has_out_norms else LayerNorm2d(dims[-1], eps=1e-5), out_norms=out_norms, img_size=img_size,
        )
        # the classification file's init (the mmdet file uses kaiming for convs; it always starts from weights)
        self.apply(trunc_normal_init(types=(nn.Linear, nn.Conv2d)))
        if num_classes > 0:
            with torch.no_grad():
                self.head.fc.weight.mul_(head_init_scale)
                self.head.fc.bias.mul_(head_init_scale)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        # none: the official optimizer decays every tensor of 2+ dims, the [heads, 1, 1] temperature included
        return set()


# official key -> vitzoo key; none of the patterns matches a vitzoo key, so the filter is idempotent
_KEY_MAP = [
    (r"^downsample_layers\.0\.proj\.proj\.0\.", "stem.conv1."),
    (r"^downsample_layers\.0\.proj\.proj\.1\.", "stem.bn1."),
    (r"^downsample_layers\.0\.proj\.proj\.3\.", "stem.conv2."),
    (r"^downsample_layers\.0\.proj\.proj\.4\.", "stem.bn2."),
    (r"^downsample_layers\.0\.norm\.", "stem.norm."),
    (r"^downsample_layers\.(\d+)\.", r"stages.\1.downsample."),
    (r"^stages\.(\d+)\.(\d+)\.", r"stages.\1.blocks.\2."),
    (r"\.local_mp\.", ".lcm."),
    (r"^norm(\d+)\.", r"out_norms.\1."),
]


def _rename(key: str) -> str:
    for pattern, replacement in _KEY_MAP:
        key = re.sub(pattern, replacement, key)
    return key


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: L2ViT) -> dict[str, torch.Tensor]:
    """Official L²ViT weights (classification ``model`` / ``model_ema`` or an mmdet/mmseg
    ``state_dict``) to vitzoo keys; vitzoo weights pass unchanged.

    A detection/segmentation checkpoint keeps its ``backbone.`` part. Into a model built with
    ``out_norms``, a classification checkpoint loads as the official backbone loads it: its final
    ``norm`` is dropped and the output norms keep their initial values (logged); with
    ``num_classes=0`` the loader drops its head as well.
    """
    out = classifier_head_keys({_rename(key): value for key, value in unwrap_state_dict(state_dict).items()})
    checkpoint_norms = tuple(sorted({int(key.split(".")[1]) for key in out if key.startswith("out_norms.")}))
    model_norms = tuple(i for i, norm in enumerate(model.out_norms or ()) if not isinstance(norm, nn.Identity))
    if checkpoint_norms and checkpoint_norms != model_norms:
        raise CheckpointError(
            f"the checkpoint is a detection backbone with output norms for stages {checkpoint_norms}; build the "
            f"model with out_norms={checkpoint_norms} and num_classes=0 (it has out_norms={model_norms})"
        )
    if model_norms and not checkpoint_norms:
        out = {key: value for key, value in out.items() if not key.startswith("norm.")}
        out.update({key: value for key, value in model.state_dict().items() if key.startswith("out_norms.")})
        _logger.info("l2vit: classification weights into a detection backbone; output norms %s keep their init",
                     model_norms)
    return out


def _create_l2vit(variant: str, pretrained: bool = False, **kwargs) -> L2ViT:
    return build_vitzoo_model(
        L2ViT, variant, pretrained,
        checkpoint_filter_fn=checkpoint_filter_fn,
        # the README's evaluation (main.py --eval --resume) loads checkpoint['model'], also from the
        # "-best-ema" files; mmdet/mmseg files keep the weights under 'state_dict'
        weight_keys=("model", "state_dict"),
        feature_cfg=dict(out_indices=(0, 1, 2, 3), feature_cls="getter"),
        **kwargs,
    )


_RELEASE = "https://github.com/ChuanyangZheng/L2ViT/releases/download/v1.0/"


def _cfg(**kwargs) -> dict:
    return make_cfg(first_conv="stem.conv1", classifier="head.fc", license="mit", paper_ids="arXiv:2501.16182",
                    origin_url="https://github.com/ChuanyangZheng/L2ViT", **kwargs)


default_cfgs = generate_default_cfgs({
    "l2vit_tiny.official_in1k": _cfg(),
    "l2vit_small.official_in1k": _cfg(),
    "l2vit_base.official_in1k": _cfg(),
    "l2vit_base.official_in22k_ft_in1k": _cfg(),
    "l2vit_base.official_in22k": _cfg(num_classes=21841),
    # resolution >= 384: the official evaluation warps the image to 384x384 without a crop
    "l2vit_base_384.official_in22k_ft_in1k": _cfg(input_size=(3, 384, 384), crop_pct=1.0, crop_mode="squash"),
})


def _facts(checkpoint_name: str, **kwargs) -> PaperFacts:
    return PaperFacts(checkpoint_name=checkpoint_name, checkpoint_url=_RELEASE + checkpoint_name, **kwargs)


PAPER_FACTS = register_paper_facts({
    "l2vit_tiny.official_in1k": _facts("L2ViT-Tiny-checkpoint-best-ema.pth", top1=83.1, gflops=4.7, params_m=29),
    "l2vit_small.official_in1k": _facts("L2ViT-Small-checkpoint-best-ema.pth", top1=84.1, gflops=9.0, params_m=50),
    "l2vit_base.official_in1k": _facts("L2ViT-Base-checkpoint-best-ema.pth", top1=84.4, gflops=15.9, params_m=89),
    "l2vit_base.official_in22k_ft_in1k": _facts(
        "L2ViT-Base-22k21k-finetune-224-checkpoint-best.pth", top1=86.0, gflops=15.9, params_m=89),
    "l2vit_base.official_in22k": _facts("L2ViT-Base-22k-pretrain-checkpoint-best.pth", gflops=15.9, params_m=89),
    "l2vit_base_384.official_in22k_ft_in1k": _facts(
        "L2ViT-Base-22k21k-finetune-384-checkpoint-best.pth", top1=87.0, gflops=47.5, params_m=89),
})


@register_model
def l2vit_tiny(pretrained: bool = False, **kwargs) -> L2ViT:
    """L²ViT-T: depths (2, 2, 6, 2), widths 96-768, window 7."""
    model_args = dict(depths=(2, 2, 6, 2), dims=(96, 192, 384, 768), num_heads=(3, 6, 12, 24))
    return _create_l2vit("l2vit_tiny", pretrained, **dict(model_args, **kwargs))


@register_model
def l2vit_small(pretrained: bool = False, **kwargs) -> L2ViT:
    """L²ViT-S: depths (2, 2, 18, 2), widths 96-768, window 7."""
    model_args = dict(depths=(2, 2, 18, 2), dims=(96, 192, 384, 768), num_heads=(3, 6, 12, 24))
    return _create_l2vit("l2vit_small", pretrained, **dict(model_args, **kwargs))


@register_model
def l2vit_base(pretrained: bool = False, **kwargs) -> L2ViT:
    """L²ViT-B: depths (2, 2, 18, 2), widths 128-1024, window 7."""
    model_args = dict(depths=(2, 2, 18, 2), dims=(128, 256, 512, 1024), num_heads=(4, 8, 16, 32))
    return _create_l2vit("l2vit_base", pretrained, **dict(model_args, **kwargs))


@register_model
def l2vit_base_384(pretrained: bool = False, **kwargs) -> L2ViT:
    """L²ViT-B at 384 (the IN-22k -> 1k fine-tune): window 12."""
    model_args = dict(img_size=384, depths=(2, 2, 18, 2), dims=(128, 256, 512, 1024), num_heads=(4, 8, 16, 32),
                      window_size=12)
    return _create_l2vit("l2vit_base_384", pretrained, **dict(model_args, **kwargs))


# Reduced configurations for fast contract tests: the golden tiny config on a non-square input that
# pads in the stem (70 -> 72), in the downsamplers (23 -> 24, 9 -> 10) and in every window.
REDUCED_CONFIGS = {
    "l2vit_base_384": dict(kwargs=dict(depths=(2, 2, 2, 2), dims=(16, 32, 48, 64), num_heads=(2, 2, 3, 4),
                                       window_size=12), input_size=(3, 70, 90)),
    "l2vit_*": dict(kwargs=dict(depths=(2, 2, 2, 2), dims=(16, 32, 48, 64), num_heads=(2, 2, 3, 4)),
                    input_size=(3, 70, 90)),
}
