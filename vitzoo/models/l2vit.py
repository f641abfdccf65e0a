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
import torch.nn.functional as F
from timm.layers import DropPath, Mlp
from timm.models import generate_default_cfgs
from timm.models._features import feature_take_indices
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..layers import ConvPosEnc, LocalConcentration, drop_path_rates, trunc_normal_init
from ..mixers import create_mixer, map_to_tokens, tokens_to_map
from ._builder import build_vitzoo_model, make_cfg
from ._checkpoint import CheckpointError
from ._helpers import check_image_input
from ._registry import register_model

__all__ = ["L2ViT", "LWABlock", "LGABlock", "checkpoint_filter_fn"]

_logger = logging.getLogger(__name__)


def _pad_right_bottom(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad an NCHW map on the right and bottom up to multiples of ``multiple``."""
    height, width = x.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    return F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x


class ConvStem(nn.Module):
    """Stride-4 stem: zero-pad the image right/bottom to a multiple of 4, then conv 3×3/2 -> BN -> ReLU
    -> conv 3×3/2 -> BN, flatten to tokens and LayerNorm.

    ``forward(images [B, C_in, H, W]) -> (tokens [B, ⌈H/4⌉·⌈W/4⌉, C], (⌈H/4⌉, ⌈W/4⌉))``.
    """

    def __init__(self, in_chans: int, dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, dim // 2, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(dim // 2)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(dim // 2, dim, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = _pad_right_bottom(x, 4)
        x = self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))
        return self.norm(map_to_tokens(x)), (x.shape[2], x.shape[3])


class Downsample(nn.Module):
    """Stride-2 patch merging in the official order: LayerNorm of the *incoming* width on the tokens,
    zero-pad odd maps right/bottom to even, then a 2×2/2 convolution (no norm after it).

    ``forward(tokens [B, H·W, C_in], (H, W)) -> (tokens [B, ⌈H/2⌉·⌈W/2⌉, C_out], (⌈H/2⌉, ⌈W/2⌉))``.
    """

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        self.proj = nn.Conv2d(in_dim, dim, 2, stride=2)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(_pad_right_bottom(tokens_to_map(self.norm(x), size), 2))
        return map_to_tokens(x), (x.shape[2], x.shape[3])


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


class L2ViTStage(nn.Module):
    """Optional stride-2 downsampling, then blocks that alternate LWA (even index) and LGA (odd index)."""

    def __init__(
            self,
            in_dim: int,
            dim: int,
            depth: int,
            num_heads: int,
            *,
            downsample: bool,
            mlp_ratio: float,
            drop_path: Sequence[float],
            local_mixer: str,
            local_mixer_kwargs: dict,
            global_mixer: str,
            global_mixer_kwargs: dict,
    ):
        super().__init__()
        self.downsample = Downsample(in_dim, dim) if downsample else None
        self.blocks = nn.ModuleList([
            LWABlock(dim, num_heads, local_mixer, local_mixer_kwargs, mlp_ratio, drop_path[j]) if j % 2 == 0 else
            LGABlock(dim, num_heads, global_mixer, global_mixer_kwargs, mlp_ratio, drop_path[j])
            for j in range(depth)
        ])
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        if self.downsample is not None:
            x, size = self.downsample(x, size)
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
                x = checkpoint(block, x, size, use_reentrant=False)
            else:
                x = block(x, size)
        return x, size


def _per_stage(value: Union[float, Sequence[float]], num_stages: int, name: str) -> list[float]:
    values = [value] * num_stages if isinstance(value, (int, float)) else list(value)
    if len(values) != num_stages:
        raise ValueError(f"{name} needs one value per stage ({num_stages}), got {values}")
    return values


class L2ViT(nn.Module):
    """L²ViT backbone and classifier.

    Args:
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
        out_norms: stage indices whose outputs get their own LayerNorm in ``forward_intermediates`` /
            ``features_only``, as in the official mmdet/mmseg backbone (keys ``norm{i}`` there,
            ``out_norms.{i}`` here). That backbone has no final norm, so with ``out_norms`` there is
            none either; build it with ``num_classes=0``.
    """

    def __init__(
            self,
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
            out_norms: Optional[Sequence[int]] = None,
    ):
        super().__init__()
        num_stages = len(depths)
        if len(dims) != num_stages or len(num_heads) != num_stages:
            raise ValueError(f"depths {tuple(depths)}, dims {tuple(dims)} and num_heads {tuple(num_heads)} "
                             "need one entry per stage")
        if global_pool not in ("avg", ""):
            raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
        out_norms = sorted(set(out_norms)) if out_norms is not None else []
        if any(not 0 <= i < num_stages for i in out_norms):
            raise ValueError(f"out_norms must be stage indices in [0, {num_stages}), got {out_norms}")
        mlp_ratios = _per_stage(mlp_ratio, num_stages, "mlp_ratio")
        local_kwargs = dict(window_size=window_size, relative_position_bias=False, shift_size=0) \
            if local_mixer == "window" else {}
        local_kwargs.update(local_mixer_kwargs or {})

        self.num_classes = num_classes
        self.global_pool = global_pool
        self.in_chans = in_chans
        self.dims = tuple(dims)
        self.num_features = self.head_hidden_size = dims[-1]
        self.window_size = window_size
        self.stem = ConvStem(in_chans, dims[0])
        dpr = drop_path_rates(drop_path_rate, list(depths))
        self.stages = nn.ModuleList([
            L2ViTStage(
                dims[i - 1] if i else dims[0], dims[i], depths[i], num_heads[i],
                downsample=i > 0, mlp_ratio=mlp_ratios[i], drop_path=dpr[i],
                local_mixer=local_mixer, local_mixer_kwargs=local_kwargs,
                global_mixer=global_mixer, global_mixer_kwargs=dict(global_mixer_kwargs or {}),
            )
            for i in range(num_stages)
        ])
        self.out_norms = nn.ModuleDict({str(i): nn.LayerNorm(dims[i]) for i in out_norms})
        # the official detection backbone has per-output norms and no final norm
        self.norm = nn.Identity() if out_norms else nn.LayerNorm(dims[-1])
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.feature_info = [
            dict(num_chs=dims[i], reduction=4 * 2 ** i, module=f"stages.{i}") for i in range(num_stages)
        ]
        # the classification file's init (the mmdet file uses kaiming for convs; it always starts from weights)
        self.apply(trunc_normal_init(types=(nn.Linear, nn.Conv2d)))
        if isinstance(self.head, nn.Linear):
            with torch.no_grad():
                self.head.weight.mul_(head_init_scale)
                self.head.bias.mul_(head_init_scale)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        # none: the official optimizer decays every tensor of 2+ dims, the [heads, 1, 1] temperature included
        return set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(
            stem=r"^stem",
            blocks=r"^stages\.(\d+)" if coarse else [
                (r"^stages\.(\d+)\.downsample", (0,)),
                (r"^stages\.(\d+)\.blocks\.(\d+)", None),
                (r"^norm|^out_norms", (99999,)),
            ],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            if global_pool not in ("avg", ""):
                raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
            self.global_pool = global_pool
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def _stem(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        check_image_input(x, self.in_chans, model="l2vit")
        return self.stem(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images [B, C_in, H, W] -> final-norm features [B, C, ⌈H/32⌉, ⌈W/32⌉]."""
        x, size = self._stem(x)
        for stage in self.stages:
            x, size = stage(x, size)
        return tokens_to_map(self.norm(x), size)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=(2, 3))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, list[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = "NCHW",
            intermediates_only: bool = False,
    ):
        """Stage outputs for dense tasks (timm's ``forward_intermediates`` contract).

        Stage i gives [B, C_i, ⌈H/2^(i+2)⌉, ⌈W/2^(i+2)⌉] for any input size (odd sizes are padded as the
        official code pads them). A stage listed in ``out_norms`` goes through its own LayerNorm (the
        official detection outputs); otherwise ``norm=True`` applies the final norm to the last stage.

        Returns ``(final_features, intermediates)`` or, with ``intermediates_only``, the list alone.
        """
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        last = len(self.stages) - 1
        stages = self.stages if torch.jit.is_scripting() or not stop_early else self.stages[:max_index + 1]
        x, size = self._stem(x)
        intermediates = []
        for i, stage in enumerate(stages):
            x, size = stage(x, size)
            if i in take_indices:
                if str(i) in self.out_norms:
                    feature = self.out_norms[str(i)](x)
                elif norm and i == last:
                    feature = self.norm(x)
                else:
                    feature = x
                feature = tokens_to_map(feature, size)
                intermediates.append(feature.permute(0, 2, 3, 1) if output_fmt == "NHWC" else feature)
        if intermediates_only:
            return intermediates
        return tokens_to_map(self.norm(x), size), intermediates

    def prune_intermediate_layers(self, indices: Union[int, list[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop stages (and their output norms) after the last wanted index; optionally the norm and head."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[:max_index + 1]
        for key in [k for k in self.out_norms if int(k) > max_index]:
            del self.out_norms[key]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices


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
    if any(key.startswith("backbone.") for key in state_dict):
        state_dict = {key[len("backbone."):]: value for key, value in state_dict.items() if key.startswith("backbone.")}
    out = {_rename(key): value for key, value in state_dict.items()}
    checkpoint_norms = tuple(sorted({int(key.split(".")[1]) for key in out if key.startswith("out_norms.")}))
    model_norms = tuple(sorted(int(key) for key in model.out_norms))
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


def _cfg(checkpoint_name: Optional[str] = None, **kwargs) -> dict:
    return make_cfg(
        first_conv="stem.conv1",
        classifier="head",
        license="mit",
        paper_ids="arXiv:2501.16182",
        origin_url="https://github.com/ChuanyangZheng/L2ViT",
        checkpoint_name=checkpoint_name,
        checkpoint_url=_RELEASE + checkpoint_name if checkpoint_name else None,
        **kwargs,
    )


default_cfgs = generate_default_cfgs({
    "l2vit_tiny.official_in1k": _cfg(
        "L2ViT-Tiny-checkpoint-best-ema.pth", paper_top1=83.1, paper_gflops=4.7, paper_params_m=29),
    "l2vit_small.official_in1k": _cfg(
        "L2ViT-Small-checkpoint-best-ema.pth", paper_top1=84.1, paper_gflops=9.0, paper_params_m=50),
    "l2vit_base.official_in1k": _cfg(
        "L2ViT-Base-checkpoint-best-ema.pth", paper_top1=84.4, paper_gflops=15.9, paper_params_m=89),
    "l2vit_base.official_in22k_ft_in1k": _cfg(
        "L2ViT-Base-22k21k-finetune-224-checkpoint-best.pth", paper_top1=86.0, paper_gflops=15.9, paper_params_m=89),
    "l2vit_base.official_in22k": _cfg(
        "L2ViT-Base-22k-pretrain-checkpoint-best.pth", num_classes=21841, paper_gflops=15.9, paper_params_m=89),
    # resolution >= 384: the official evaluation warps the image to 384x384 without a crop
    "l2vit_base_384.official_in22k_ft_in1k": _cfg(
        "L2ViT-Base-22k21k-finetune-384-checkpoint-best.pth", input_size=(3, 384, 384), crop_pct=1.0,
        crop_mode="squash", paper_top1=87.0, paper_gflops=47.5, paper_params_m=89),
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
    model_args = dict(depths=(2, 2, 18, 2), dims=(128, 256, 512, 1024), num_heads=(4, 8, 16, 32), window_size=12)
    return _create_l2vit("l2vit_base_384", pretrained, **dict(model_args, **kwargs))


# Reduced configurations for fast contract tests: the golden tiny config on a non-square input that
# pads in the stem (70 -> 72), in the downsamplers (23 -> 24, 9 -> 10) and in every window.
REDUCED_CONFIGS = {
    "l2vit_base_384": dict(kwargs=dict(depths=(2, 2, 2, 2), dims=(16, 32, 48, 64), num_heads=(2, 2, 3, 4),
                                       window_size=12), input_size=(3, 70, 90)),
    "l2vit_*": dict(kwargs=dict(depths=(2, 2, 2, 2), dims=(16, 32, 48, 64), num_heads=(2, 2, 3, 4)),
                    input_size=(3, 70, 90)),
}
