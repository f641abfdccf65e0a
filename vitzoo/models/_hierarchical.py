"""The one base of the hierarchical backbones: stem -> stages -> optional per-stage output norms -> final
norm -> head, with the whole timm model contract written once.

InLine-PVT/Swin/CSwin, RAVLT/MAViT and L²ViT (and the detection adapters and LightNet after them) are
subclasses. A family builds ``self.stem`` (images -> first map) and ``self.stages`` (:class:`Stage`
modules, NCHW map in and out), then calls :meth:`HierarchicalBackbone.init_backbone`, which adds the
final norm, the per-stage output norms of the official detection backbones (``out_norms.{i}``) and
timm's ``ClassifierHead`` (``head.fc``), and records ``feature_info``. Everything else —
``forward_features`` / ``forward_head``, ``forward_intermediates`` and ``prune_intermediate_layers``
with timm's full semantics (``indices``, ``norm``, ``stop_early``, NCHW and NHWC, ``intermediates_only``),
gradient checkpointing, ``group_matcher``, ``reset_classifier`` — lives here.

Shared helpers for the family files: :func:`expand_mixers` (one mixer name per block from one name,
one per stage, or one list per stage), :func:`per_stage` and :func:`stage_drop_path_rates` (timm's
``calculate_drop_path_rates`` split per stage).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Optional, Sequence, Union

import torch
from timm.layers import ClassifierHead, LayerNorm2d, calculate_drop_path_rates
from timm.models._features import feature_take_indices
from timm.models._manipulate import checkpoint
from torch import nn

from ..mixers import map_to_tokens, tokens_to_map
from ._helpers import check_image_input, check_image_size

__all__ = ["HierarchicalBackbone", "Stage", "MixerLayout", "classifier_head_keys", "expand_mixers", "per_stage",
           "stage_drop_path_rates", "stage_out_norms"]

MixerLayout = Union[str, Sequence[Union[str, Sequence[str]]]]


def per_stage(value: Any, num_stages: int, name: str) -> list:
    """``value`` repeated for every stage, or a per-stage list/tuple checked for length."""
    if isinstance(value, (list, tuple)):
        if len(value) != num_stages:
            raise ValueError(f"{name} needs one value per stage ({num_stages}), got {len(value)}: {value!r}")
        return list(value)
    return [value] * num_stages


def expand_mixers(mixers: MixerLayout, depths: Sequence[int]) -> list[list[str]]:
    """One mixer name per block: ``mixers`` is one name for every block, or one entry per stage that is
    a name (every block of the stage) or a sequence with one name per block."""
    layout = []
    for stage, (entry, depth) in enumerate(zip(per_stage(mixers, len(depths), "mixers"), depths)):
        names = [entry] * depth if isinstance(entry, str) else list(entry)
        if len(names) != depth:
            raise ValueError(f"stage {stage} has {depth} blocks but {len(names)} mixers were given: {names}")
        layout.append(names)
    return layout


def stage_drop_path_rates(rate: float, depths: Sequence[int]) -> list[list[float]]:
    """Stochastic depth rising linearly from 0 to ``rate`` over all blocks (timm's
    ``calculate_drop_path_rates``, the official ``torch.linspace``), one list per stage."""
    rates = calculate_drop_path_rates(rate, sum(depths), stagewise=False)
    out, start = [], 0
    for depth in depths:
        out.append(list(rates[start:start + depth]))
        start += depth
    return out


def stage_out_norms(out_norms: Union[bool, Sequence[int], None], num_stages: int) -> tuple[int, ...]:
    """Stage indices that get an output norm: ``True`` for all, ``False`` / None for none, or indices."""
    if out_norms is None or out_norms is False:
        return ()
    if out_norms is True:
        return tuple(range(num_stages))
    indices = tuple(sorted(set(int(i) for i in out_norms)))
    if any(not 0 <= i < num_stages for i in indices):
        raise ValueError(f"out_norms must be stage indices in [0, {num_stages}) or True, got {tuple(out_norms)}")
    return indices


def classifier_head_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official (and earlier vitzoo) ``head.weight`` / ``head.bias`` -> timm ``ClassifierHead``'s
    ``head.fc.*``; idempotent."""
    return {f"head.fc.{key[5:]}" if key in ("head.weight", "head.bias") else key: value
            for key, value in state_dict.items()}


def _check_pool(global_pool: str, num_classes: int) -> None:
    if global_pool not in ("avg", ""):
        raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
    if global_pool == "" and num_classes > 0:
        raise ValueError("global_pool='' leaves a feature map; a classifier needs global_pool='avg' or num_classes=0")


class Stage(nn.Module):
    """``downsample`` (map -> map; Identity for none), then ``blocks`` on tokens; NCHW maps in and out.

    Every block is called as ``block(tokens [B, H·W, C], (H, W))``. :meth:`tokens` is the hook where a
    stage adds to the tokens before its blocks (InLine-PVT's position embedding).
    """

    def __init__(self, downsample: Optional[nn.Module], blocks: Sequence[nn.Module]):
        super().__init__()
        self.downsample = downsample if downsample is not None else nn.Identity()
        self.blocks = nn.ModuleList(blocks)
        self.grad_checkpointing = False

    def tokens(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Map [B, C, H, W] -> tokens [B, H·W, C] for the blocks."""
        return map_to_tokens(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        size = (x.shape[2], x.shape[3])
        x = self.tokens(x, size)
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, size)
            else:
                x = block(x, size)
        return tokens_to_map(x, size)


class HierarchicalBackbone(nn.Module):
    """timm plumbing of a multi-stage backbone; see the module docstring for what a family provides.

    Class attributes a family may change: ``stem_pattern`` (``group_matcher``'s stem),
    ``final_is_norm`` (False when the final module is not a norm, e.g. RAVLT's head projection, so
    ``forward_intermediates(norm=True)`` does not apply it).
    """

    stem_pattern = r"^stem"
    final_is_norm = True

    def init_backbone(
            self,
            *,
            embed_dims: Sequence[int],
            reductions: Sequence[int],
            in_chans: int,
            num_classes: int,
            global_pool: str,
            drop_rate: float,
            model_name: str,
            norm: Optional[nn.Module] = None,
            out_norms: Union[bool, Sequence[int], None] = None,
            out_norm_layer: Callable[[int], nn.Module] = partial(LayerNorm2d, eps=1e-5),
            num_features: Optional[int] = None,
            input_multiple: int = 1,
            img_size: Union[int, tuple[int, int]] = 224,
    ) -> None:
        """Finish a family's ``__init__`` once ``self.stem`` and ``self.stages`` exist.

        Args:
            embed_dims: channels of each stage's output map.
            reductions: stride of each stage's output map relative to the input.
            in_chans, num_classes, global_pool (``"avg"`` or ``""``), drop_rate: timm's meanings.
            model_name: the name errors use (e.g. ``"InLine-Swin"``).
            norm: the final norm on the last map (map -> map); None for none.
            out_norms: stages whose dense outputs get their own norm (``out_norm_layer``), as in the
                official detection backbones: True for all, indices, or None.
            out_norm_layer: LayerNorm over channels with ``nn.LayerNorm``'s eps 1e-5 (what the official
                detection backbones use) unless the family says otherwise; timm's ``LayerNorm2d`` alone
                defaults to 1e-6.
            num_features: channels of ``forward_features`` when the family's final module changes them
                (RAVLT's head projection); the last stage's width otherwise.
            input_multiple: inputs must have sides divisible by this (32 for the InLine backbones).
            img_size: the construction (training) size, an int or (H, W), kept as ``self.img_size``; timm's
                ``img_size`` argument, which every family takes. It must be a valid input size; families
                whose layers depend on it check it first with :func:`check_image_size`.
        """
        _check_pool(global_pool, num_classes)
        if len(embed_dims) != len(self.stages) or len(reductions) != len(self.stages):
            raise ValueError(f"{model_name}: give one embed_dim and reduction per stage ({len(self.stages)})")
        self.model_name = model_name
        self.img_size = check_image_size(img_size, multiple_of=input_multiple, model=model_name)
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.embed_dims = tuple(embed_dims)
        self.input_multiple = input_multiple
        self.norm = norm if norm is not None else nn.Identity()
        indices = stage_out_norms(out_norms, len(self.stages))
        self.out_norms = nn.ModuleList([
            out_norm_layer(dim) if i in indices else nn.Identity() for i, dim in enumerate(embed_dims)
        ]) if indices else None
        self.num_features = self.head_hidden_size = num_features or embed_dims[-1]
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate)
        self.feature_info = [dict(num_chs=dim, reduction=reduction, module=f"stages.{i}")
                             for i, (dim, reduction) in enumerate(zip(embed_dims, reductions))]

    @property
    def global_pool(self) -> str:
        return self.head.global_pool.pool_type

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        if coarse:
            return dict(stem=self.stem_pattern, blocks=r"^stages\.(\d+)")
        blocks = [(r"^stages\.(\d+)\.blocks\.(\d+)", None), (r"^stages\.(\d+)\.(?:downsample|pos_embed)", (0,))]
        # every other top-level module with parameters runs after the stages (norm, out_norms, RAVLT's proj)
        finals = [name for name, module in self.named_children()
                  if name not in ("stem", "stages", "head") and any(True for _ in module.parameters())]
        if finals:
            blocks.append(("|".join(f"^{name}" for name in finals), (99999,)))
        return dict(stem=self.stem_pattern, blocks=blocks)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        pool = self.global_pool if global_pool is None else global_pool
        _check_pool(pool, num_classes)
        self.num_classes = num_classes
        self.head.reset(num_classes, pool_type=pool)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """Check the images [B, in_chans, H, W] and run the stem."""
        check_image_input(x, self.in_chans, multiple_of=self.input_multiple, min_size=self.input_multiple,
                          model=self.model_name)
        return self.stem(x)

    def forward_final(self, x: torch.Tensor) -> torch.Tensor:
        """What follows the last stage in ``forward_features``: the final norm (families may add to it)."""
        return self.norm(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images [B, in_chans, H, W] -> last map [B, num_features, H', W'] after the final norm."""
        x = self.forward_stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.forward_final(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

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
    ) -> Union[list[torch.Tensor], tuple[torch.Tensor, list[torch.Tensor]]]:
        """Stage outputs for dense tasks (timm's ``forward_intermediates`` contract).

        Stage i gives [B, embed_dims[i], H_i, W_i] (NHWC with ``output_fmt="NHWC"``), through its output
        norm when the model has one (``out_norms``, the official detection features).

        Args:
            x: images [B, in_chans, H, W].
            indices: the last n stages if an int, these stages if a list, all if None.
            norm: apply the final norm to the last stage's output when it is taken (and it is a norm).
            stop_early: stop after the last wanted stage (the final features are then that stage's map).
            output_fmt: ``"NCHW"`` or ``"NHWC"``.
            intermediates_only: return only the list.

        Returns:
            ``(final features, intermediates)``, or the intermediates alone.
        """
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        last = len(self.stages) - 1
        stages = self.stages[:max_index + 1] if stop_early else self.stages
        x = self.forward_stem(x)
        intermediates = []
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take_indices:
                feature = self.out_norms[i](x) if self.out_norms is not None else x
                if norm and i == last and self.final_is_norm:
                    feature = self.norm(feature)
                intermediates.append(feature.permute(0, 2, 3, 1) if output_fmt == "NHWC" else feature)
        if intermediates_only:
            return intermediates
        return (self.forward_final(x) if len(stages) == len(self.stages) else x), intermediates

    def prune_intermediate_layers(self, indices: Union[int, list[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the stages after the last wanted one and the output norms of stages not wanted (so no
        parameter goes unused in training); ``prune_norm`` drops the final norm, ``prune_head`` the
        classifier (and pooling)."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[:max_index + 1]
        if self.out_norms is not None:
            self.out_norms = nn.ModuleList([
                module if i in take_indices else nn.Identity() for i, module in enumerate(self.out_norms[:max_index + 1])
            ])
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices
