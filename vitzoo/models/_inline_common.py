"""What the four InLine backbone families share: the pre-norm block, the timm plumbing of the three
hierarchical backbones (PVT, Swin, CSwin), the per-stage mixer lists, and the pretrained-cfg facts.

Han et al., "Bridging the Divide: Reconsidering Softmax and Linear Attention", NeurIPS 2024,
arXiv:2412.06590. Origin: https://github.com/LeapLabTHU/InLine (no license file; re-implemented).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

import torch
from timm.layers import DropPath, Mlp
from timm.models._features import feature_take_indices
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..layers import trunc_normal_init
from ..mixers import create_mixer
from ._builder import make_cfg
from ._helpers import check_image_input

__all__ = ["Block", "Stage", "InLineHierarchical", "stage_mixers", "mixers_from_attn_type", "strip_wrappers",
           "inline_cfg", "init_weights"]

PAPER_ID = "arXiv:2412.06590"
ORIGIN_URL = "https://github.com/LeapLabTHU/InLine"
CHECKPOINT_URL = "https://cloud.tsinghua.edu.cn/f/{}/?dl=1"

StageMixers = Sequence[Union[str, Sequence[str]]]


def stage_mixers(mixers: Union[str, StageMixers], depths: Sequence[int]) -> list[list[str]]:
    """One mixer name per block: ``mixers`` is one name for every block, or one entry per stage that
    is a name (every block of the stage) or a sequence with one name per block."""
    if isinstance(mixers, str):
        mixers = [mixers] * len(depths)
    if len(mixers) != len(depths):
        raise ValueError(f"got {len(mixers)} stage mixer entries for {len(depths)} stages")
    out = []
    for stage, (entry, depth) in enumerate(zip(mixers, depths)):
        names = [entry] * depth if isinstance(entry, str) else list(entry)
        if len(names) != depth:
            raise ValueError(f"stage {stage} has {depth} blocks but {len(names)} mixers: {names}")
        out.append(names)
    return out


def mixers_from_attn_type(attn_type: str, depths: Sequence[int], *, inline: str = "inline",
                          softmax: str = "window") -> list[list[str]]:
    """Translate an official ``attn_type`` string into per-block mixer names.

    One letter per stage: ``I`` = InLine, ``S`` = softmax, ``M`` = mixed, with the number after the
    stage letters giving the InLine blocks that open each mixed stage ('IIMS2': stage 3 has two
    InLine blocks, then softmax).
    """
    letters, count = attn_type[:len(depths)], attn_type[len(depths):]
    if len(letters) != len(depths) or set(letters) - set("ISM") or ("M" in letters) != bool(count):
        raise ValueError(f"attn_type {attn_type!r} does not describe {len(depths)} stages as I/S/M (+ a count for M)")
    names = {"I": inline, "S": softmax}
    return [[names[letter]] * depth if letter != "M" else [inline if i < int(count) else softmax for i in range(depth)]
            for letter, depth in zip(letters, depths)]


def strip_wrappers(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep only a detector's ``backbone.`` weights (prefix removed) when present."""
    if any(k.startswith("backbone.") for k in state_dict):
        return {k[len("backbone."):]: v for k, v in state_dict.items() if k.startswith("backbone.")}
    return dict(state_dict)


def inline_cfg(*, top1: Optional[float], checkpoint: Optional[str], name: str, **kwargs: Any) -> dict[str, Any]:
    """Pretrained cfg of an InLine variant. Evaluation resizes the image to a square of
    ``input / crop_pct`` (aspect ratio not kept) and centre-crops: timm's ``crop_mode="squash"``."""
    if checkpoint is not None:
        kwargs.update(checkpoint_name=f"{name} (README 'pretrained weights', TsinghuaCloud {checkpoint})",
                      checkpoint_url=CHECKPOINT_URL.format(checkpoint))
    return make_cfg(**{
        "crop_pct": 0.875,
        "crop_mode": "squash",
        "interpolation": "bicubic",
        "license": "unknown",
        "paper_ids": PAPER_ID,
        "origin_url": ORIGIN_URL,
        "paper_top1": top1,
        **kwargs,
    })


# the official init of Linear layers (truncated normal, std 0.02; zero biases)
init_weights = trunc_normal_init()


class Block(nn.Module):
    """Pre-norm block: x + mixer(norm1(x)), then x + mlp(norm2(x)).

    With ``norm_in_mixer`` the mixer receives the raw input and normalises it itself (it is built
    with ``norm_layer``); InLine-CSwin needs this because its kernel generator reads the mean of the
    un-normalised block input.
    """

    def __init__(
            self,
            dim: int,
            num_heads: int,
            mixer: str,
            mixer_kwargs: Optional[dict] = None,
            mlp_ratio: float = 4.0,
            drop_path: float = 0.0,
            norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
            norm_in_mixer: bool = False,
            proj_drop: float = 0.0,
    ):
        super().__init__()
        mixer_kwargs = dict(mixer_kwargs or {})
        if norm_in_mixer:
            mixer_kwargs["norm_layer"] = norm_layer
        if proj_drop:
            mixer_kwargs["proj_drop"] = proj_drop
        self.norm1 = nn.Identity() if norm_in_mixer else norm_layer(dim)
        self.attn = create_mixer(mixer, dim, num_heads, **mixer_kwargs)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=proj_drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x), size))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class Stage(nn.Module):
    """A downsampling layer (``downsample``: map [B, C_in, H, W] -> tokens [B, N, C] and size) and blocks."""

    def __init__(self, downsample: nn.Module, blocks: Sequence[nn.Module]):
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.ModuleList(blocks)
        self.grad_checkpointing = False

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.downsample(x)  # [B, C, H, W]
        return x.flatten(2).transpose(1, 2), (x.shape[2], x.shape[3])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = self.embed(x)
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
                x = checkpoint(block, x, size, use_reentrant=False)
            else:
                x = block(x, size)
        return x.transpose(1, 2).reshape(x.shape[0], -1, *size)


class InLineHierarchical(nn.Module):
    """timm plumbing of a four-stage backbone: ``stem`` -> ``stages`` (maps [B, C, H, W] between
    stages) -> ``norm`` over channels -> average pool -> ``head``.

    Subclasses build ``self.stem``, ``self.stages`` (:class:`Stage` modules) and ``self.norm``, then call
    :meth:`_init_head`. Inputs must have sides divisible by 32 (the total stride).
    """

    stem_pattern = r"^stem"

    def _init_head(self, embed_dims: Sequence[int], in_chans: int, num_classes: int, global_pool: str,
                   drop_rate: float, model: str) -> None:
        if global_pool not in ("avg", ""):
            raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
        self.model_name = model
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.embed_dims = tuple(embed_dims)
        self.num_features = self.head_hidden_size = embed_dims[-1]
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.feature_info = [dict(num_chs=dim, reduction=4 * 2 ** i, module=f"stages.{i}")
                             for i, dim in enumerate(embed_dims)]

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        stages = [(r"^stages\.(\d+)\.blocks\.(\d+)", None), (r"^stages\.(\d+)\.(?:downsample|pos_embed)", (0,))]
        if any(True for _ in self.norm.parameters()):
            stages.append((r"^norm", (99999,)))
        return dict(stem=self.stem_pattern, blocks=r"^stages\.(\d+)" if coarse else stages)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        if global_pool is not None:
            if global_pool not in ("avg", ""):
                raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def _norm_map(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.norm, nn.Identity):
            return x
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def _check(self, x: torch.Tensor) -> None:
        check_image_input(x, self.in_chans, multiple_of=32, min_size=32, model=self.model_name)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images [B, in_chans, H, W] -> last-stage map [B, C, H/32, W/32] after the final norm."""
        self._check(x)
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self._norm_map(x)

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
        """Stage outputs [B, C_i, H/2^(i+2), W/2^(i+2)] (timm's ``forward_intermediates`` contract).

        ``norm`` applies the final norm to the last stage's map when it is taken. Returns
        ``(final_features, intermediates)`` or only the intermediates.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        self._check(x)
        x = self.stem(x)
        stages = self.stages if not stop_early else self.stages[:max_index + 1]
        last = len(self.stages) - 1
        intermediates = []
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take_indices:
                intermediates.append(self._norm_map(x) if norm and i == last else x)
        if intermediates_only:
            return intermediates
        return self._norm_map(x) if len(stages) == len(self.stages) else x, intermediates

    def prune_intermediate_layers(self, indices: Union[int, list[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop stages after the last wanted index (and optionally the norm and head)."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[:max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices
