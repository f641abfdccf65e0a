"""InLine-DeiT: DeiT with injective linear attention in every block.

Han et al., "Bridging the Divide: Reconsidering Softmax and Linear Attention", NeurIPS 2024,
arXiv:2412.06590. Origin: https://github.com/LeapLabTHU/InLine (``models/inline_deit.py``; no
license file, built on timm 0.4.12's ViT, Apache-2.0). Re-implemented, not copied.

InLine-DeiT is the zoo's plain ViT (:class:`~vitzoo.models.vzvit.VzViT`) with the ``inline`` mixer:
16×16 patches, a cls token, an absolute position embedding, pre-norm blocks (LayerNorm eps 1e-6),
final norm, logits from the cls token. The cls token takes part in every InLine sum and mean but gets
no local residual. The official state dict keys are vitzoo's keys. The widths are InLine's own: T is
192 wide with 6 heads, S 320 wide at 288 px, B 384 wide at 448 px; the position embedding of S and B
has the grid of their training size and is resampled bicubically for other inputs.
"""

from __future__ import annotations

from typing import Any

from timm.models import generate_default_cfgs

from ._builder import build_vitzoo_model
from ._facts import register_paper_facts
from ._inline_common import inline_cfg, inline_facts
from ._registry import register_model
# official InLine-DeiT keys are vzvit's; its filter resamples the position embedding to the model's grid
from .vzvit import VzViT, checkpoint_filter_fn

__all__ = ["InLineDeiT", "checkpoint_filter_fn"]

# the four InLine backbones share one model card, model_cards/inline.md
CARDS = {"inline": "*"}


class InLineDeiT(VzViT):
    """VzViT with ``mixer="inline"`` by default; every other argument is :class:`VzViT`'s."""

    model_name = "InLine-DeiT"

    def __init__(self, *, mixer: Any = "inline", **kwargs: Any):
        super().__init__(mixer=mixer, **kwargs)


def _create_inline_deit(variant: str, pretrained: bool = False, **kwargs) -> InLineDeiT:
    return build_vitzoo_model(
        InLineDeiT, variant, pretrained,
        checkpoint_filter_fn=checkpoint_filter_fn,
        # main.py evaluates checkpoint['model']; the InLine-DeiT trainer keeps no EMA
        weight_keys=("model", "state_dict_ema"),
        feature_cfg=dict(feature_cls="getter", out_indices=3),
        **kwargs,
    )


def _cfg(**kwargs) -> dict:
    return inline_cfg(first_conv="patch_embed.proj", classifier="head", **kwargs)


default_cfgs = generate_default_cfgs({
    "inline_deit_tiny.official_in1k": _cfg(),
    "inline_deit_small.official_in1k": _cfg(input_size=(3, 288, 288)),
    "inline_deit_base.official_in1k": _cfg(input_size=(3, 448, 448)),
})

PAPER_FACTS = register_paper_facts({
    "inline_deit_tiny.official_in1k": inline_facts(
        "InLine-DeiT-T", top1=74.5, checkpoint="1d6b8191ad6d4114b291", params_m=6.5, gflops=1.1),
    "inline_deit_small.official_in1k": inline_facts(
        "InLine-DeiT-S", top1=80.2, checkpoint="2f3898b07e9247f3beb3", params_m=16.7, gflops=5.0),
    "inline_deit_base.official_in1k": inline_facts(
        "InLine-DeiT-B", top1=82.3, checkpoint="10bdd726d4b0435eb34e", params_m=23.8, gflops=17.2),
})


@register_model
def inline_deit_tiny(pretrained: bool = False, **kwargs) -> InLineDeiT:
    """InLine-DeiT-T: 192 wide, 12 blocks, 6 heads, InLine in every block, 224 px."""
    model_args = dict(img_size=224, embed_dim=192, depth=12, num_heads=6, mixer="inline")
    return _create_inline_deit("inline_deit_tiny", pretrained, **dict(model_args, **kwargs))


@register_model
def inline_deit_small(pretrained: bool = False, **kwargs) -> InLineDeiT:
    """InLine-DeiT-S: 320 wide, 12 blocks, 10 heads, InLine in every block, 288 px."""
    model_args = dict(img_size=288, embed_dim=320, depth=12, num_heads=10, mixer="inline")
    return _create_inline_deit("inline_deit_small", pretrained, **dict(model_args, **kwargs))


@register_model
def inline_deit_base(pretrained: bool = False, **kwargs) -> InLineDeiT:
    """InLine-DeiT-B: 384 wide, 12 blocks, 12 heads, InLine in every block, 448 px."""
    model_args = dict(img_size=448, embed_dim=384, depth=12, num_heads=12, mixer="inline")
    return _create_inline_deit("inline_deit_base", pretrained, **dict(model_args, **kwargs))


# Reduced configuration for the contract tests: tiny widths, a non-square input (resampled position embedding).
REDUCED_CONFIGS = {
    "inline_deit_*": dict(kwargs=dict(embed_dim=32, depth=3, num_heads=2, img_size=64), input_size=(3, 64, 96)),
}
