"""LightNet: an isotropic image classifier whose every token mixer is one additive-recurrence scan.

Qin et al., "You Only Scan Once: Efficient Multi-dimension Sequential Modeling with LightNet",
arXiv:2405.21022. The official repository (https://github.com/OpenNLPLab/LightNet) could not be obtained and
no official vision model definition or weights are known (``../shared/specs/lightnet.md`` §0, §5), so this is
the paper's recipe as the spec records it, re-implemented, not copied:

- patch embedding (a linear map of each 16×16 patch), then **MD-TPE** once on the patch grid, replacing the
  embedding (:class:`vitzoo.layers.lightnet_pe.MdTpe`, the first author's code; paper §1);
- pre-norm blocks ``x + LNA(norm(x))``, ``x + GLU(norm(x))`` with the ``lightnet`` mixer
  (:class:`vitzoo.mixers.lightnet.LightNetMixer`, non-causal layout of spec §9) and **MD-LRPE on q and k**
  in every LNA (paper §1: "applied to q and k in every LNA"; ``lrpe=False`` turns it off);
- mean pooling of the tokens (no cls token), RMSNorm of the pooled feature, linear head (the group's HGRN
  ImageNet template, spec §5 [team-template]).

Sizes, GLU width, norms and the θ initialisation are not known from the paper; the choices (DeiT widths, GLU
width 2·D, RMSNorm) are recorded in ``model_cards/lightnet.md`` and are all constructor arguments. The class is
the zoo's plain ViT (:class:`~vitzoo.models.vzvit.VzViT`) in this configuration, so ``mixer=`` takes any zoo
mixer as in vzvit: ``timm.create_model("lightnet_tiny", mixer="softmax")`` is the same classifier with
softmax attention.
"""

from __future__ import annotations

from typing import Any, Optional

from timm.models import generate_default_cfgs

from ._builder import build_vitzoo_model, make_cfg
from ._registry import register_model
from .vzvit import VzViT, checkpoint_filter_fn

__all__ = ["LightNet"]

# LightNet's configuration of VzViT (spec §5); every entry stays a constructor argument.
LIGHTNET_DEFAULTS: dict[str, Any] = dict(
    mixer="lightnet",
    class_token=False,
    global_pool="avg",
    pos_embed="md_tpe",
    mlp_layer="glu",
    mlp_ratio=2.0,
    norm_layer="rmsnorm",
    fc_norm=True,
)


class LightNet(VzViT):
    """VzViT in LightNet's configuration (:data:`LIGHTNET_DEFAULTS`); every argument is :class:`VzViT`'s, plus

    Args:
        lrpe: MD-LRPE on q and k in every ``lightnet`` mixer (``use_lrpe=True``; paper §1). Blocks with another
            mixer are unaffected; ``mixer_kwargs`` that set ``use_lrpe`` themselves win.
    """

    model_name = "LightNet"

    def __init__(self, *, lrpe: bool = True, **kwargs: Any):
        if not isinstance(lrpe, bool):
            raise ValueError(f"lrpe must be True or False, got {lrpe!r}")
        self.lrpe = lrpe
        super().__init__(**dict(LIGHTNET_DEFAULTS, **kwargs))

    def _block_mixer_kwargs(self, mixer: str, mixer_kwargs: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
        if mixer != "lightnet":
            return mixer_kwargs
        return dict(dict(use_lrpe=self.lrpe), **(mixer_kwargs or {}))


def _create_lightnet(variant: str, pretrained: bool = False, **kwargs) -> LightNet:
    return build_vitzoo_model(
        LightNet, variant, pretrained,
        checkpoint_filter_fn=checkpoint_filter_fn,
        weight_keys=("model", "state_dict"),
        feature_cfg=dict(out_indices=3, feature_cls="getter"),
        **kwargs,
    )


def _cfg(**kwargs) -> dict:
    return make_cfg(
        first_conv="patch_embed.proj",
        classifier="head",
        license="unknown",
        paper_ids="arXiv:2405.21022",
        origin_url="https://github.com/OpenNLPLab/LightNet",
        description="no released weights (random init); sizes chosen by vitzoo, see model_cards/lightnet.md",
        **kwargs,
    )


default_cfgs = generate_default_cfgs({
    "lightnet_tiny.untrained": _cfg(),
    "lightnet_small.untrained": _cfg(),
    "lightnet_base.untrained": _cfg(),
})


@register_model
def lightnet_tiny(pretrained: bool = False, **kwargs) -> LightNet:
    """LightNet at DeiT-Tiny widths (192 wide, 12 deep, 3 heads), GLU width 384."""
    model_args = dict(embed_dim=192, depth=12, num_heads=3)
    return _create_lightnet("lightnet_tiny", pretrained, **dict(model_args, **kwargs))


@register_model
def lightnet_small(pretrained: bool = False, **kwargs) -> LightNet:
    """LightNet at DeiT-Small widths (384 wide, 12 deep, 6 heads), GLU width 768."""
    model_args = dict(embed_dim=384, depth=12, num_heads=6)
    return _create_lightnet("lightnet_small", pretrained, **dict(model_args, **kwargs))


@register_model
def lightnet_base(pretrained: bool = False, **kwargs) -> LightNet:
    """LightNet at DeiT-Base widths (768 wide, 12 deep, 12 heads), GLU width 1536."""
    model_args = dict(embed_dim=768, depth=12, num_heads=12)
    return _create_lightnet("lightnet_base", pretrained, **dict(model_args, **kwargs))


# Reduced configurations for fast contract tests and examples: same code paths, tiny widths.
REDUCED_CONFIGS = {
    "lightnet_*": dict(kwargs=dict(embed_dim=32, depth=3, num_heads=2, img_size=64), input_size=(3, 64, 96)),
}
