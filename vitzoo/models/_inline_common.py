"""What the four InLine backbone families share: the pre-norm block, the official ``attn_type`` strings
as mixer layouts, and the pretrained-cfg facts. The three hierarchical ones (PVT, Swin, CSwin) stand on
:class:`~vitzoo.models._hierarchical.HierarchicalBackbone`.

Han et al., "Bridging the Divide: Reconsidering Softmax and Linear Attention", NeurIPS 2024,
arXiv:2412.06590. Origin: https://github.com/LeapLabTHU/InLine (no license file; re-implemented).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional, Sequence

import torch
from timm.layers import DropPath, Mlp
from torch import nn

from ..layers import trunc_normal_init
from ..mixers import create_mixer
from ._builder import make_cfg
from ._facts import PaperFacts

__all__ = ["Block", "mixers_from_attn_type", "inline_cfg", "inline_facts", "init_weights", "INLINE_INPUT_MULTIPLE",
           "INLINE_WEIGHT_KEYS", "detection_weights"]

_logger = logging.getLogger(__name__)

PAPER_ID = "arXiv:2412.06590"
ORIGIN_URL = "https://github.com/LeapLabTHU/InLine"
CHECKPOINT_URL = "https://cloud.tsinghua.edu.cn/f/{}/?dl=1"

# every InLine backbone needs sides divisible by its total stride
INLINE_INPUT_MULTIPLE = 32

# after each family's own choice ('model' or 'state_dict_ema'): an mmdet / mmseg detector's 'state_dict'
INLINE_WEIGHT_KEYS = ("state_dict",)


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


def inline_cfg(**kwargs: Any) -> dict[str, Any]:
    """Pretrained cfg of an InLine variant. Evaluation resizes the image to a square of
    ``input / crop_pct`` (aspect ratio not kept) and centre-crops: timm's ``crop_mode="squash"``."""
    return make_cfg(**{
        "crop_pct": 0.875,
        "crop_mode": "squash",
        "interpolation": "bicubic",
        "license": "unknown",
        "paper_ids": PAPER_ID,
        "origin_url": ORIGIN_URL,
        **kwargs,
    })


def inline_facts(name: str, *, top1: Optional[float], checkpoint: Optional[str], **kwargs: Any) -> PaperFacts:
    """Paper facts of an InLine variant; ``checkpoint`` is the TsinghuaCloud share id of the README's
    'pretrained weights' (None where no checkpoint is released)."""
    if checkpoint is not None:
        kwargs.update(checkpoint_name=f"{name} (README 'pretrained weights', TsinghuaCloud {checkpoint})",
                      checkpoint_url=CHECKPOINT_URL.format(checkpoint))
    return PaperFacts(top1=top1, **kwargs)


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


def detection_weights(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Classification weights made to fit a detection backbone (a model built with ``out_norms``).

    The official repository has no detection code, so vitzoo's InLine detection backbones follow the
    official RAVLT / L²ViT mmdet backbones: per-output norms and no final norm. A classification
    checkpoint loaded into one drops its final ``norm.*`` and leaves the output norms at their initial
    values (logged), as those backbones load ImageNet weights; a detection checkpoint passes unchanged.
    """
    if getattr(model, "out_norms", None) is None or any(key.startswith("out_norms.") for key in state_dict):
        return state_dict
    out = {key: value for key, value in state_dict.items() if not key.startswith("norm.")}
    out.update({key: value for key, value in model.state_dict().items() if key.startswith("out_norms.")})
    _logger.info("%s: classification weights into a detection backbone; its output norms keep their init",
                 getattr(model, "model_name", type(model).__name__))
    return out
