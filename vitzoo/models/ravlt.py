"""RAVLT and MAViT: one hierarchical hybrid backbone whose per-stage token mixers are arguments.

RAVLT: Qihang Fan, Huaibo Huang, Ran He, "Breaking the Low-Rank Dilemma of Linear Attention",
CVPR 2025, arXiv:2411.07635, https://github.com/qhfan/RALA. MAViT: Qihang Fan, Huaibo Huang,
Yuang Ai, Ran He, "Rectifying Magnitude Neglect in Linear Attention", ICCV 2025, arXiv:2507.00698,
https://github.com/qhfan/MALA (the code calls the model ``MALA``). Neither repository has a license
file; this is a re-implementation, not a copy.

The two official repositories are near copies that differ in one attention class and the head
width, so here they are one class, :class:`RAVLT`. A 4-conv stem (stride 4) feeds four stages of
blocks ``x + CPE(x)``, ``x + γ1·mixer(LN(x))``, ``x + γ2·ConvFFN(LN(x))``, with a 3×3 stride-2 conv +
BatchNorm merge before stages 2-4, and the head is 1×1 conv → BatchNorm → SiLU at the last stride,
then average pooling and the classifier. Both papers' models are hybrids: the linear mixer
(``rala`` for RAVLT, ``mala`` for MAViT) in stages 1-2 and global softmax attention with 2-D RoPE,
LePE and the output gate (``rala_softmax``) in stages 3-4. Every entrypoint states this layout; the
``mixers`` argument changes it (e.g. all-linear for high resolution).
"""

from __future__ import annotations

import logging
import re
from functools import partial
from typing import Any, Optional, Sequence, Union

import torch
from timm.layers import DropPath, LayerNorm2d
from timm.models import generate_default_cfgs
from timm.models._features import feature_take_indices
from torch import nn

from ..layers import DepthwiseConv2d, fold_batchnorm, fold_batchnorm_sequence, fuse_linear, trunc_normal_init
from ..mixers import create_mixer
from ._builder import build_vitzoo_model, make_cfg
from ._checkpoint import CheckpointError, unwrap_state_dict
from ._facts import PaperFacts, register_paper_facts
from ._factory import takes_device_dtype
from ._hierarchical import (HierarchicalBackbone, MixerLayout, Stage, classifier_head_keys, expand_mixers, per_stage,
                            stage_drop_path_rates)
from ._registry import register_model

__all__ = ["RAVLT", "checkpoint_filter_fn"]

_logger = logging.getLogger(__name__)


class ConvStem(nn.Module):
    """Four 3×3 convs (strides 2, 1, 1, 2) with BatchNorm and GELU in between: stride 4, any input size.

    BatchNorm2d here and in the merges, where the official detection copy has SyncBatchNorm (same keys;
    ``nn.SyncBatchNorm.convert_sync_batchnorm`` gives it back for multi-GPU training).
    """

    def __init__(self, in_chans: int, dim: int):
        super().__init__()
        half = dim // 2
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, half, 3, 2, 1), nn.BatchNorm2d(half), nn.GELU(),
            nn.Conv2d(half, half, 3, 1, 1), nn.BatchNorm2d(half), nn.GELU(),
            nn.Conv2d(half, half, 3, 1, 1), nn.BatchNorm2d(half), nn.GELU(),
            nn.Conv2d(half, dim, 3, 2, 1), nn.BatchNorm2d(dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)

    def fuse(self) -> "ConvStem":
        """Inference: each BatchNorm folded into the conv before it (timm's ``fuse()`` convention)."""
        self.proj = fold_batchnorm_sequence(self.proj)
        return self


class Downsample(nn.Module):
    """Patch merging: 3×3 stride-2 conv + BatchNorm, [B, C_in, H, W] -> [B, C_out, ⌈H/2⌉, ⌈W/2⌉]."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.reduction = nn.Conv2d(in_dim, out_dim, 3, 2, 1)
        self.norm = nn.BatchNorm2d(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.reduction(x))

    def fuse(self) -> "Downsample":
        """Inference: the BatchNorm folded into the merge conv (timm's ``fuse()`` convention)."""
        self.reduction, self.norm = fold_batchnorm(self.reduction, self.norm), nn.Identity()
        return self


class ConvFFN(nn.Module):
    """fc1 → GELU → x + DWConv3×3(x) → fc2 on tokens (the official 1×1 convs are ``nn.Linear`` here)."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.dwconv = DepthwiseConv2d(hidden_dim, 3)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = self.act(self.fc1(x))
        x = x + self.dwconv.tokens(x, size)
        return self.fc2(x)

    def fuse(self) -> "ConvFFN":
        """timm's inference-fusion hook (returns the module to use): the GELU becomes a post-op of ``fc1``
        (:func:`vitzoo.layers.fuse_linear`)."""
        if not isinstance(self.act, nn.Identity):
            self.fc1, self.act = fuse_linear(self.fc1, "gelu"), nn.Identity()
        return self


class Block(nn.Module):
    """``x + CPE(x)``, then ``x + γ1·mixer(LN(x))``, then ``x + γ2·FFN(LN(x))`` on tokens [B, H·W, C]."""

    def __init__(
            self,
            dim: int,
            num_heads: int,
            mixer: str,
            mixer_kwargs: Optional[dict[str, Any]] = None,
            mlp_ratio: float = 3.5,
            init_values: Optional[float] = 1.0,
            drop_path: float = 0.0,
    ):
        super().__init__()
        self.pos = DepthwiseConv2d(dim, 3)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = create_mixer(mixer, dim, num_heads, **(mixer_kwargs or {}))
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.ffn = ConvFFN(dim, int(dim * mlp_ratio))
        # [1, 1, C] rather than timm's 1-D LayerScale: timm's optimizer factory exempts 1-D parameters
        # from weight decay, and the official 4-D [1, C, 1, 1] gammas are decayed
        if init_values is not None:
            self.gamma_1 = nn.Parameter(torch.full((1, 1, dim), float(init_values)))
            self.gamma_2 = nn.Parameter(torch.full((1, 1, dim), float(init_values)))
        else:
            self.gamma_1 = self.gamma_2 = None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = x + self.pos.tokens(x, size)
        attn = self.attn(self.norm1(x), size)
        x = x + self.drop_path(attn if self.gamma_1 is None else self.gamma_1 * attn)
        ffn = self.ffn(self.norm2(x), size)
        return x + self.drop_path(ffn if self.gamma_2 is None else self.gamma_2 * ffn)


class RAVLT(HierarchicalBackbone):
    """The RAVLT / MAViT backbone (timm model contract).

    Args:
        img_size: training size (an int or (H, W)), reported as the cfg's ``input_size``; any input size works.
        in_chans: input channels.
        num_classes: classifier outputs; 0 for none.
        global_pool: ``"avg"`` or ``""`` (no pooling; then ``num_classes`` must be 0).
        embed_dims, depths, num_heads: per-stage width, blocks and heads (head width divisible by 4).
        mixers: the token mixer of every block: one registered name for all, one per stage, or one
            list of names per stage. The papers' layout is ``("rala" | "mala", same,
            "rala_softmax", "rala_softmax")``.
        mixer_kwargs: keyword arguments for every mixer.
        mlp_ratios: FFN hidden width / width, one value or one per stage.
        projection: width of the head's 1×1 conv + BatchNorm + SiLU before pooling (1024 for RAVLT,
            2048 / 2560 for MAViT); 0 for none (pooled features are the last stage's). Pass 0, not
            None, through ``timm.create_model``, which drops None-valued arguments.
        init_values: layer-scale init, one value or one per stage; None for no layer scale.
        out_norms: the detection backbone's LayerNorm on stage outputs (``out_norms.{i}``; official
            ``extra_norms.{i}``), applied by ``forward_intermediates`` / ``features_only``: True for
            every stage (the default under ``features_only``), stage indices, or None.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, rising linearly over all blocks.
    """

    stem_pattern = r"^stem"
    # the module after the last stage is the head projection (1×1 conv, BatchNorm, SiLU), not a norm
    final_is_norm = False

    @takes_device_dtype
    def __init__(
            self,
            img_size: Union[int, tuple[int, int]] = 224,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = "avg",
            embed_dims: Sequence[int] = (64, 128, 256, 512),
            depths: Sequence[int] = (2, 2, 6, 2),
            num_heads: Sequence[int] = (1, 2, 4, 8),
            mixers: MixerLayout = ("rala", "rala", "rala_softmax", "rala_softmax"),
            mixer_kwargs: Optional[dict[str, Any]] = None,
            mlp_ratios: Union[float, Sequence[float]] = 3.5,
            projection: Optional[int] = 1024,
            init_values: Union[Optional[float], Sequence[Optional[float]]] = 1.0,
            out_norms: Union[bool, Sequence[int], None] = None,
            drop_rate: float = 0.0,
            drop_path_rate: float = 0.0,
    ):
        super().__init__()
        num_stages = len(depths)
        if len(embed_dims) != num_stages or len(num_heads) != num_stages:
            raise ValueError(f"embed_dims {tuple(embed_dims)}, depths {tuple(depths)} and num_heads "
                             f"{tuple(num_heads)} need one entry per stage")
        self.mixers = tuple(tuple(stage) for stage in expand_mixers(mixers, depths))
        mlp_ratios = per_stage(mlp_ratios, num_stages, "mlp_ratios")
        init_values = per_stage(init_values, num_stages, "init_values")
        dpr = stage_drop_path_rates(drop_path_rate, depths)

        self.stem = ConvStem(in_chans, embed_dims[0])
        self.stages = nn.Sequential(*[
            Stage(Downsample(embed_dims[i - 1], embed_dims[i]) if i > 0 else None, [
                Block(embed_dims[i], num_heads[i], mixer, mixer_kwargs, mlp_ratios[i], init_values[i], rate)
                for mixer, rate in zip(self.mixers[i], dpr[i])
            ])
            for i in range(num_stages)
        ])
        self.projection = int(projection or 0)
        # the head projection runs at the last stride before pooling, in the official order:
        # 1×1 conv, BatchNorm (``norm``, the final module), swish
        self.proj = nn.Conv2d(embed_dims[-1], self.projection, 1) if self.projection else nn.Identity()
        self.act = nn.SiLU() if self.projection else nn.Identity()
        # MAViT is this backbone with MALA mixers; errors name the paper's model
        model_name = "MAViT" if any(name == "mala" for stage in self.mixers for name in stage) else "RAVLT"
        self.init_backbone(
            embed_dims=embed_dims, reductions=[4 * 2 ** i for i in range(num_stages)], in_chans=in_chans,
            num_classes=num_classes, global_pool=global_pool, drop_rate=drop_rate, model_name=model_name,
            norm=nn.BatchNorm2d(self.projection) if self.projection else None, out_norms=out_norms,
            out_norm_layer=partial(LayerNorm2d, eps=1e-6), num_features=self.projection or None, img_size=img_size,
        )
        # official init: truncated normal (std .02) for every conv (here also the Linear layers that
        # replace its 1×1 convs), zero biases; norms keep PyTorch's defaults
        self.apply(trunc_normal_init(types=(nn.Conv2d, nn.Linear)))

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return set()

    def forward_final(self, x: torch.Tensor) -> torch.Tensor:
        """The head projection: [B, C, H, W] -> [B, projection, H, W] (identity without one)."""
        return self.act(self.norm(self.proj(x)))

    def reparameterize(self) -> None:
        """Inference: the head projection's BatchNorm (``norm``) folded into its 1×1 conv; called on the model
        itself by :func:`vitzoo.models.fuse` (timm's ``reparameterize_model`` visits children only)."""
        if isinstance(self.norm, nn.modules.batchnorm._BatchNorm):
            self.proj, self.norm = fold_batchnorm(self.proj, self.norm), nn.Identity()

    def prune_intermediate_layers(self, indices: Union[int, list[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """As the base; the head projection goes with the head (``prune_head``), and keeping the head
        needs the last stage, which the projection reads."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        if not prune_head and max_index < len(self.stages) - 1:
            raise ValueError("the head projection needs the last stage; prune the head too (prune_head=True)")
        take_indices = super().prune_intermediate_layers(indices, prune_norm=prune_norm, prune_head=prune_head)
        if prune_head:
            self.projection = 0
            self.proj, self.norm, self.act = nn.Identity(), nn.Identity(), nn.Identity()
            self.num_features = self.head_hidden_size = self.embed_dims[len(self.stages) - 1]
        return take_indices


_ROPE_BUFFER = re.compile(r"^layers\.\d+\.RoPE\.angle$")
_RENAMES = (
    # official layers[i] ends with the merge that feeds stage i + 1; here stages[i + 1] starts with it
    (re.compile(r"^layers\.(\d+)\.downsample\."), lambda m: f"stages.{int(m.group(1)) + 1}.downsample."),
    (re.compile(r"^layers\.(\d+)\.blocks\."), lambda m: f"stages.{m.group(1)}.blocks."),
    # the official LayerNorm2d wraps an nn.LayerNorm as .norm
    (re.compile(r"\.(norm1|norm2)\.norm\."), lambda m: f".{m.group(1)}."),
    (re.compile(r"^extra_norms\.(\d+)\.(?:norm\.)?"), lambda m: f"out_norms.{m.group(1)}."),
    (re.compile(r"^patch_embed\."), lambda m: "stem."),
)
_HEAD_PROJECTION = re.compile(r"^(proj|norm)\.")


def _drop_unit_dims(value: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Reshape e.g. a 1×1 conv weight [O, I, 1, 1] to a Linear's [O, I] or a gamma [1, C, 1, 1] to
    [1, 1, C]: only when the two shapes differ by size-1 dimensions."""
    if [d for d in value.shape if d != 1] == [d for d in shape if d != 1]:
        return value.reshape(shape)
    return value


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Official RAVLT / MAViT weights (classification, or an mmdet detection checkpoint) to vitzoo's.

    Idempotent on vitzoo weights. ``model`` may be a :class:`RAVLT` or any of its submodules (a
    block, a mixer): renames apply to official full-model keys, and 1×1-conv weights and gammas are
    reshaped to the shapes ``model`` holds. For a :class:`RAVLT` it also fits the checkpoint to the
    head the model was built with.

    - mmdet checkpoints: ``backbone.*`` is kept without the prefix; neck and detection heads are dropped.
    - ``layers.{i}.RoPE.angle`` (a derivable buffer) is dropped.
    - Stage merges move from the end of ``layers.{i}`` to the start of ``stages.{i+1}``; ``patch_embed``
      is ``stem``; ``head`` is timm's ``ClassifierHead`` (``head.fc``).
    - ``*.norm{1,2}.norm.*`` lose the inner ``.norm``; ``extra_norms.{i}.norm.*`` are ``out_norms.{i}.*``.
    - A model without the head projection (``features_only``) drops ``proj.*``/``norm.*``.
    - A model with ``out_norms`` loading a classification checkpoint gets them at weight 1, bias 0,
      the official detection backbone's start; one without them drops a detection checkpoint's.
    """
    state_dict = classifier_head_keys(unwrap_state_dict(state_dict))
    own = model.state_dict()
    out = {}
    for key, value in state_dict.items():
        if _ROPE_BUFFER.match(key):
            continue
        for pattern, replace in _RENAMES:
            key = pattern.sub(replace, key)
        if key in own and value.shape != own[key].shape:
            value = _drop_unit_dims(value, own[key].shape)
        out[key] = value
    if isinstance(model, RAVLT):
        out = _fit_head_and_norms(out, model, own)
    return out


def _fit_head_and_norms(out: dict[str, torch.Tensor], model: RAVLT,
                        own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    has_out_norms = any(key.startswith("out_norms.") for key in out)
    has_projection = "proj.weight" in out
    if model.projection and not has_projection and has_out_norms:
        raise CheckpointError(
            "this is a detection backbone checkpoint without the classification head (no proj.*, norm.*, "
            "head.*); load it with features_only=True (or projection=0, num_classes=0)"
        )
    if not model.projection and has_projection:
        _logger.info("dropping the checkpoint's head projection (proj.*, norm.*): the model has none")
        out = {key: value for key, value in out.items() if not _HEAD_PROJECTION.match(key)}
    if model.out_norms is not None and not has_out_norms:
        _logger.info("classification checkpoint: out_norms start at weight 1, bias 0, "
                     "like the official detection backbone")
        for key in own:
            if key.startswith("out_norms."):
                out[key] = torch.ones_like(own[key]) if key.endswith(".weight") else torch.zeros_like(own[key])
    elif has_out_norms:
        wanted = {key for key in own if key.startswith("out_norms.")}
        dropped = [key for key in out if key.startswith("out_norms.") and key not in wanted]
        if dropped:
            _logger.info("dropping the checkpoint's output norms the model was built without: %s", dropped[:4])
            out = {key: value for key, value in out.items() if key not in dropped}
    return out


def _create_ravlt(variant: str, pretrained: bool = False, **kwargs) -> RAVLT:
    if kwargs.get("features_only"):
        # dense features never use the classification head; building without it lets detection
        # checkpoints (which have none) load strictly, and gives the detection backbone's norms
        kwargs.update(projection=0, num_classes=0)
        kwargs.setdefault("out_norms", True)
    return build_vitzoo_model(
        RAVLT, variant, pretrained,
        checkpoint_filter_fn=checkpoint_filter_fn,
        # the official evaluation (DeiT-style main.py --eval) and the mmdet initialisation both use
        # 'model', not 'model_ema'; mmdet detection checkpoints hold 'state_dict'
        weight_keys=("model", "state_dict"),
        feature_cfg=dict(out_indices=(0, 1, 2, 3), feature_cls="getter"),
        **kwargs,
    )


def _cfg(**kwargs) -> dict:
    # the official registered functions attach timm's ViT defaults (mean/std 0.5, crop 0.9); the real
    # evaluation transform is ImageNet mean/std, Resize(256, bicubic), CenterCrop(224): make_cfg's defaults
    return make_cfg(first_conv="stem.proj.0", classifier="head.fc", license="unknown", **kwargs)


_RAVLT = dict(paper_ids="arXiv:2411.07635", origin_url="https://github.com/qhfan/RALA")
_MAVIT = dict(paper_ids="arXiv:2507.00698", origin_url="https://github.com/qhfan/MALA")
_WEIGHTS = "official ImageNet-1k checkpoint, 'model' weights (not EMA), as the official eval uses"

default_cfgs = generate_default_cfgs({
    **{f"ravlt_{size}.official_in1k": _cfg(**_RAVLT) for size in "tsbl"},
    **{f"mavit_{size}.official_in1k": _cfg(**_MAVIT) for size in "tsbl"},
})


def _ravlt_facts(size: str, **kwargs) -> PaperFacts:
    return PaperFacts(checkpoint_name=f"RAVLT_{size}.pth", weights=_WEIGHTS,
                      checkpoint_url=f"https://huggingface.co/aldjalkdf/RAVLT/blob/main/RAVLT_{size}.pth", **kwargs)


def _mavit_facts(**kwargs) -> PaperFacts:
    return PaperFacts(checkpoint_name="unlisted (see the MAViT Hugging Face repository)", weights=_WEIGHTS,
                      checkpoint_url="https://huggingface.co/aldjalkdf/MAViT/tree/main", **kwargs)


PAPER_FACTS = register_paper_facts({
    "ravlt_t.official_in1k": _ravlt_facts("T", top1=82.8, gflops=2.4, params_m=15),
    "ravlt_s.official_in1k": _ravlt_facts("S", top1=84.4, gflops=4.6, params_m=26),
    "ravlt_b.official_in1k": _ravlt_facts("B", top1=85.5, gflops=9.9, params_m=48),
    "ravlt_l.official_in1k": _ravlt_facts("L", top1=85.8, gflops=16.0, params_m=95),
    # MAViT-T's 82.9 is the ELU+1 row of the paper's kernel ablation, quoted second-hand (unverified)
    "mavit_t.official_in1k": _mavit_facts(top1=82.9, gflops=2.5, params_m=16),
    "mavit_s.official_in1k": _mavit_facts(top1=84.7, gflops=4.6, params_m=27),
    "mavit_b.official_in1k": _mavit_facts(top1=85.7, gflops=9.9, params_m=50),
    "mavit_l.official_in1k": _mavit_facts(top1=86.0, gflops=16.1, params_m=98),
})


@register_model
def ravlt_t(pretrained: bool = False, **kwargs) -> RAVLT:
    """RAVLT-T: RALA in stages 1-2, RoPE softmax attention in stages 3-4 (official layout)."""
    model_args = dict(embed_dims=(64, 128, 256, 512), depths=(2, 2, 6, 2), num_heads=(1, 2, 4, 8),
                      mixers=("rala", "rala", "rala_softmax", "rala_softmax"), projection=1024,
                      init_values=1.0, drop_path_rate=0.1)
    return _create_ravlt("ravlt_t", pretrained, **dict(model_args, **kwargs))


@register_model
def ravlt_s(pretrained: bool = False, **kwargs) -> RAVLT:
    """RAVLT-S: RALA in stages 1-2, RoPE softmax attention in stages 3-4 (official layout)."""
    model_args = dict(embed_dims=(64, 128, 320, 512), depths=(3, 5, 9, 3), num_heads=(1, 2, 5, 8),
                      mixers=("rala", "rala", "rala_softmax", "rala_softmax"), projection=1024,
                      init_values=1.0, drop_path_rate=0.15)
    return _create_ravlt("ravlt_s", pretrained, **dict(model_args, **kwargs))


@register_model
def ravlt_b(pretrained: bool = False, **kwargs) -> RAVLT:
    """RAVLT-B: RALA in stages 1-2, RoPE softmax attention in stages 3-4 (official layout)."""
    model_args = dict(embed_dims=(96, 192, 384, 512), depths=(4, 6, 12, 6), num_heads=(1, 2, 6, 8),
                      mixers=("rala", "rala", "rala_softmax", "rala_softmax"), projection=1024,
                      init_values=(1.0, 1.0, 1e-6, 1e-6), drop_path_rate=0.4)
    return _create_ravlt("ravlt_b", pretrained, **dict(model_args, **kwargs))


@register_model
def ravlt_l(pretrained: bool = False, **kwargs) -> RAVLT:
    """RAVLT-L: RALA in stages 1-2, RoPE softmax attention in stages 3-4 (official layout)."""
    model_args = dict(embed_dims=(96, 192, 448, 640), depths=(4, 7, 19, 8), num_heads=(1, 2, 7, 10),
                      mixers=("rala", "rala", "rala_softmax", "rala_softmax"), projection=1024,
                      init_values=1e-6, drop_path_rate=0.55)
    return _create_ravlt("ravlt_l", pretrained, **dict(model_args, **kwargs))


@register_model
def mavit_t(pretrained: bool = False, **kwargs) -> RAVLT:
    """MAViT-T: MALA in stages 1-2, RoPE softmax attention in stages 3-4 (official layout)."""
    model_args = dict(embed_dims=(64, 128, 256, 512), depths=(2, 2, 6, 2), num_heads=(1, 2, 4, 8),
                      mixers=("mala", "mala", "rala_softmax", "rala_softmax"), projection=2048,
                      init_values=1.0, drop_path_rate=0.1)
    return _create_ravlt("mavit_t", pretrained, **dict(model_args, **kwargs))


@register_model
def mavit_s(pretrained: bool = False, **kwargs) -> RAVLT:
    """MAViT-S: MALA in stages 1-2, RoPE softmax attention in stages 3-4 (official layout)."""
    model_args = dict(embed_dims=(64, 128, 320, 512), depths=(3, 5, 9, 3), num_heads=(1, 2, 5, 8),
                      mixers=("mala", "mala", "rala_softmax", "rala_softmax"), projection=2048,
                      init_values=1.0, drop_path_rate=0.15)
    return _create_ravlt("mavit_s", pretrained, **dict(model_args, **kwargs))


@register_model
def mavit_b(pretrained: bool = False, **kwargs) -> RAVLT:
    """MAViT-B: MALA in stages 1-2, RoPE softmax attention in stages 3-4 (official layout)."""
    model_args = dict(embed_dims=(96, 192, 384, 512), depths=(4, 6, 12, 6), num_heads=(1, 2, 6, 8),
                      mixers=("mala", "mala", "rala_softmax", "rala_softmax"), projection=2048,
                      init_values=(1.0, 1.0, 1e-6, 1e-6), drop_path_rate=0.4)
    return _create_ravlt("mavit_b", pretrained, **dict(model_args, **kwargs))


@register_model
def mavit_l(pretrained: bool = False, **kwargs) -> RAVLT:
    """MAViT-L: MALA in stages 1-2, RoPE softmax attention in stages 3-4 (official layout)."""
    model_args = dict(embed_dims=(96, 192, 448, 640), depths=(4, 7, 19, 8), num_heads=(1, 2, 7, 10),
                      mixers=("mala", "mala", "rala_softmax", "rala_softmax"), projection=2560,
                      init_values=1e-6, drop_path_rate=0.55)
    return _create_ravlt("mavit_l", pretrained, **dict(model_args, **kwargs))


# Reduced configurations for fast contract tests and examples: the golden tiny model's sizes (same
# code paths, both mixer kinds), a non-square input and an odd one.
_REDUCED = dict(
    kwargs=dict(embed_dims=(16, 32, 48, 64), depths=(1, 2, 2, 1), num_heads=(1, 2, 3, 4), projection=64,
                drop_path_rate=0.0),
    input_size=(3, 64, 96),
    alt_input_size=(3, 45, 61),
)
REDUCED_CONFIGS = {"ravlt_*": _REDUCED, "mavit_*": _REDUCED}

# two model cards from this one module (see vitzoo.cards)
CARDS = {"ravlt": "ravlt_*", "mavit": "mavit_*"}
